"""Building a template bank from speakers of ../shared/data (used by train_digits.py and the eval).

FSDD takes are joined into the enrollment prompt strings and cut where the join put each
digit, so bank templates are normalised in the same context as answers (a string with
pauses), not as isolated words. speechocean strings have no digit boundaries: they are cut by
forced alignment, first against the FSDD templates, then once more against FSDD plus the
other speechocean speakers' cuts (never a speaker's own), which fits children's digits better.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.digits import dtw
from purchase_guard.voice.digits.checker import ENROLLMENT_PROMPTS
from purchase_guard.voice.digits.corpus import Utterance, fsdd_join, load_flac
from purchase_guard.voice.digits.features import FRAME_S, mfcc

# Takes 0-2 of each digit make FSDD enrollment and bank strings; answers use 10-49.
ENROLL_TAKES = (0, 1, 2)


@dataclass(frozen=True)
class Cut:
    speaker: str
    template: dtw.Template


def fsdd_enrollment(
    data: Path, speaker: str, seed: int = 0
) -> list[tuple[Pcm, str, list[tuple[float, float]]]]:
    """The four prompts spoken by an FSDD speaker, from takes ENROLL_TAKES (each digit once per take)."""
    rng = random.Random(f"{speaker}/{seed}")  # noqa: S311 - reproducible gaps, not a secret
    seen: dict[str, int] = {}
    out = []
    for prompt in ENROLLMENT_PROMPTS:
        takes = []
        for d in prompt:
            takes.append(ENROLL_TAKES[seen.get(d, 0) % len(ENROLL_TAKES)])
            seen[d] = seen.get(d, 0) + 1
        pcm, bounds = fsdd_join(data, speaker, prompt, takes, rng)
        out.append((pcm, prompt, bounds))
    return out


def cut_known(pcm: Pcm, digits: str, bounds: Sequence[tuple[float, float]]) -> list[dtw.Template]:
    """Templates cut at known digit boundaries (seconds), trimmed of silent edges."""
    feats = mfcc(pcm.samples)
    from purchase_guard.voice.digits.features import log_energy

    energy = log_energy(pcm.samples)[: feats.shape[0]]
    out = []
    for d, (a, b) in zip(digits, bounds, strict=True):
        lo, hi = int(a / FRAME_S), min(int(b / FRAME_S) + 1, feats.shape[0])
        e = energy[lo:hi]
        voiced = np.flatnonzero(e > e.max() - 5.0)
        if voiced.size == 0:
            continue
        s, t = lo + max(0, int(voiced[0]) - 2), lo + min(hi - lo, int(voiced[-1]) + 3)
        if t - s >= 8:
            out.append(dtw.Template(d, np.ascontiguousarray(feats[s:t])))
    return out


def cut_aligned(
    pcm: Pcm, digits: str, bank: Sequence[dtw.Template], params: dtw.DtwParams
) -> list[dtw.Template]:
    """Templates cut by forced alignment of `digits` against `bank`; [] when it cannot align."""
    prep = dtw.prepare(pcm, [dtw.TemplateSet.of(bank)], params)
    if not dtw.enough_voice(prep):
        return []
    path = dtw.forced(prep, digits, params)
    if not np.isfinite(path.cost):
        return []
    feats = mfcc(pcm.samples)
    return [
        dtw.Template(s.label, np.ascontiguousarray(feats[s.start : s.end + 1]))
        for s in path.segments
        if s.label.isdigit() and 8 <= s.end - s.start + 1 <= 200
    ]


def build_bank(
    data: Path,
    fsdd_speakers: Sequence[str],
    so_strings: Sequence[Utterance],
    params: dtw.DtwParams,
    audio: dict[str, Pcm] | None = None,
) -> list[Cut]:
    """Bank cuts from these FSDD speakers' enrollment strings and these speechocean digit strings."""
    cuts: list[Cut] = []
    for spk in fsdd_speakers:
        for pcm, prompt, bounds in fsdd_enrollment(data, spk):
            cuts += [Cut(spk, t) for t in cut_known(pcm, prompt, bounds)]
    fsdd_bank = [c.template for c in cuts]
    cache = audio if audio is not None else {}

    def pcm_of(u: Utterance) -> Pcm:
        if u.utt_id not in cache:
            cache[u.utt_id] = load_flac(u.path)
        return cache[u.utt_id]

    first: dict[str, list[Cut]] = {}
    for u in so_strings:
        first.setdefault(u.speaker, []).extend(
            Cut(u.speaker, t) for t in cut_aligned(pcm_of(u), u.digits, fsdd_bank, params)
        )
    second: list[Cut] = []
    for u in so_strings:
        others = fsdd_bank + [c.template for spk, cs in first.items() if spk != u.speaker for c in cs]
        second += [Cut(u.speaker, t) for t in cut_aligned(pcm_of(u), u.digits, others, params)]
    return cuts + second
