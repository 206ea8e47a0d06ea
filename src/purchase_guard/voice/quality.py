"""Enrollment gates: decide which takes may form a voiceprint, and say why the others may not.

A voiceprint is used for every later purchase, so one bad take (a cough, a clipped shout,
the TV, or a sibling answering instead) would weaken every decision afterwards. Each take
is checked on its own (speech length, clipping, SNR), then the takes are compared with each
other so a take by a different voice is dropped instead of being averaged in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from purchase_guard.errors import EnrollmentRejected
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.encoder import Embedding, SpeakerEncoder, l2_normalise
from purchase_guard.voice.vad import EnergyVad, SpeechDetector, clipped_fraction

# Measured with GE2E on fit-split speechocean762 adults and LibriSpeech test-other
# (docs/voice.md): the similarity of a take to the centroid of 3 other takes of the same
# speaker is >= 0.731 for 99% of takes (5th percentile 0.795), while a take by another adult
# scores below 0.68 in 90% of cases (median 0.572). 0.70 rejects about 1% of genuine takes.
MIN_CONSISTENCY = 0.70


# Below this RMS level a take without speech is reported as silent rather than noisy.
_SILENT_DBFS = -50.0


def _level_dbfs(pcm: Pcm) -> float:
    x = pcm.samples.astype(np.float64)
    return float(10.0 * np.log10(np.mean(x * x) + 1e-12)) if x.size else -120.0


@dataclass(frozen=True)
class TakeReport:
    index: int
    accepted: bool
    problem: str  # "" when accepted
    speech_seconds: float
    snr_db: float
    clipped_fraction: float
    consistency: float | None  # None when the take failed a signal gate before comparison


@dataclass(frozen=True)
class EnrollmentResult:
    centroid: Embedding  # L2-normalised mean of accepted takes
    takes: tuple[TakeReport, ...]
    # Embeddings of the accepted takes, in take order: Voiceprint.templates, so the verifier
    # can score against every take instead of only the centroid.
    templates: tuple[Embedding, ...] = ()

    @property
    def n_accepted(self) -> int:
        return sum(1 for t in self.takes if t.accepted)


def _signal_problem(
    index: int,
    *,
    speech: float,
    snr: float,
    clipped: float,
    min_speech_s: float,
    max_clipped: float,
    min_snr: float,
    level_dbfs: float,
) -> str:
    if speech == 0.0:
        if level_dbfs < _SILENT_DBFS:
            return f"take {index}: silent"
        return f"take {index}: no speech heard over the background noise"
    if clipped > max_clipped:
        return (
            f"take {index}: {clipped * 100:.1f}% of samples clipped; speak a little further from the device"
        )
    if speech < min_speech_s:
        return f"take {index}: only {speech:.1f} s of speech, need at least {min_speech_s:.1f} s"
    if snr < min_snr:
        return f"take {index}: too noisy (SNR {snr:.0f} dB, need {min_snr:.0f} dB); find a quieter place"
    return ""


def check_take(
    pcm: Pcm,
    *,
    min_speech_s: float = 1.0,
    max_clipped: float = 0.01,
    min_snr_db: float = 10.0,
    vad: SpeechDetector | None = None,
) -> TakeReport:
    """One take's signal checks, with assess_enrollment's defaults and wording: live feedback
    while a person records, before the takes are compared with each other."""
    vad = vad if vad is not None else EnergyVad()
    speech, _, snr = vad.speech_trim_and_snr(pcm)
    clipped = clipped_fraction(pcm)
    problem = _signal_problem(
        0,
        speech=speech,
        snr=snr,
        clipped=clipped,
        min_speech_s=min_speech_s,
        max_clipped=max_clipped,
        min_snr=min_snr_db,
        level_dbfs=_level_dbfs(pcm),
    )
    # A single take is not "take 0" to the person recording it.
    problem = problem.removeprefix("take 0: ")
    return TakeReport(0, not problem, problem, speech, snr, clipped, None)


def leave_one_out(embeddings: Sequence[Embedding]) -> list[float]:
    """Cosine of each embedding to the normalised mean of the others."""
    stack = np.stack([np.asarray(e, dtype=np.float64) for e in embeddings])
    total = stack.sum(axis=0)
    out = []
    for i in range(stack.shape[0]):
        rest = total - stack[i]
        norm = float(np.linalg.norm(rest))
        out.append(float(stack[i] @ rest / norm) if norm > 0 else 0.0)
    return out


def assess_enrollment(
    pcms: Sequence[Pcm],
    encoder: SpeakerEncoder,
    *,
    min_takes: int = 3,
    min_speech_s: float = 1.0,
    max_clipped: float = 0.01,
    min_snr_db: float = 10.0,
    min_consistency: float = MIN_CONSISTENCY,
    vad: SpeechDetector | None = None,
) -> EnrollmentResult:
    """Check every take; raise EnrollmentRejected unless at least `min_takes` pass.

    `vad` should be the verifier's (VoiceVerifier.vad), so takes are trimmed as requests are.
    """
    vad = vad if vad is not None else EnergyVad()
    n = len(pcms)
    cut = [vad.speech_trim_and_snr(p) for p in pcms]
    speech = [c[0] for c in cut]
    snrs = [c[2] for c in cut]
    clips = [clipped_fraction(p) for p in pcms]
    problems = [
        _signal_problem(
            i,
            speech=speech[i],
            snr=snrs[i],
            clipped=clips[i],
            min_speech_s=min_speech_s,
            max_clipped=max_clipped,
            min_snr=min_snr_db,
            level_dbfs=_level_dbfs(pcms[i]),
        )
        for i in range(n)
    ]
    consistency: list[float | None] = [None] * n

    passing = [i for i in range(n) if not problems[i]]
    embeddings: dict[int, Embedding] = {}
    if passing:
        for i, e in zip(passing, encoder.embed_batch([cut[i][1].samples for i in passing]), strict=True):
            embeddings[i] = e

    # Drop the single least consistent take, then re-measure: with one stranger among four
    # takes, the stranger also drags down everyone else's leave-one-out score until removed.
    remaining = list(passing)
    while len(remaining) >= 3:
        scores = leave_one_out([embeddings[i] for i in remaining])
        for i, s in zip(remaining, scores, strict=True):
            consistency[i] = s
        worst = int(np.argmin(scores))
        if scores[worst] >= min_consistency:
            break
        idx = remaining.pop(worst)
        problems[idx] = (
            f"take {idx}: voice differs from the other takes "
            f"(similarity {scores[worst]:.2f}, need {min_consistency:.2f})"
        )
    if len(remaining) == 2:
        # With two takes we cannot tell which one is the stranger, so a mismatch rejects both.
        a, b = remaining
        sim = float(np.asarray(embeddings[a], dtype=np.float64) @ np.asarray(embeddings[b], dtype=np.float64))
        consistency[a] = consistency[b] = sim
        if sim < min_consistency:
            for idx in (a, b):
                problems[idx] = (
                    f"take {idx}: the two usable takes sound like different voices "
                    f"(similarity {sim:.2f}, need {min_consistency:.2f})"
                )
            remaining = []

    reports = tuple(
        TakeReport(
            index=i,
            accepted=not problems[i],
            problem=problems[i],
            speech_seconds=speech[i],
            snr_db=snrs[i],
            clipped_fraction=clips[i],
            consistency=consistency[i],
        )
        for i in range(n)
    )
    accepted = [i for i in range(n) if not problems[i]]
    if len(accepted) < min_takes:
        listed = tuple((i, problems[i]) for i in range(n) if problems[i])
        detail = "; ".join(p for _, p in listed) or f"only {n} takes were sent"
        raise EnrollmentRejected(
            f"{len(accepted)} of {n} takes are usable, need at least {min_takes}: {detail}", problems=listed
        )
    centroid = l2_normalise(np.mean([embeddings[i] for i in accepted], axis=0))
    return EnrollmentResult(
        centroid=centroid, takes=reports, templates=tuple(embeddings[i] for i in accepted)
    )
