"""Score an utterance against a household's voiceprints and decide who (if anyone) spoke.

The threshold depends on how much speech the utterance holds: a 2 s spoken PIN carries far
less speaker information than a 10 s request, so one global threshold would either reject
most PINs or accept impostors on long requests. Bands and thresholds come from
`thresholds.json`, written by the calibration (scripts/calibrate_voice.py), keyed by encoder
name so a model swap cannot silently reuse another model's operating points. The entry
also names the VAD whose net speech picks the band and the scoring back-end the
thresholds apply to; a verifier built with another VAD or back-end refuses to start.

A voiceprint may carry its enrollment takes' embeddings (`Voiceprint.templates`); the
back-end then scores against all of them (voice/backend.py), else against the centroid.

Embeddings and audio are never logged or returned; SpeakerResult carries scores only.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from purchase_guard.domain import Role, SpeakerResult, Voiceprint
from purchase_guard.errors import Unavailable
from purchase_guard.voice.adaptation import model_rows
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.backend import ScoringBackend, identity_backend
from purchase_guard.voice.digit_print import DigitPrintCalibration, centroid
from purchase_guard.voice.encoder import Embedding, SpeakerEncoder
from purchase_guard.voice.vad import EnergyVad, SpeechDetector, clipped_fraction


@dataclass(frozen=True)
class Band:
    """Utterances with net speech up to `max_speech_s` (inclusive) use `threshold`."""

    name: str
    max_speech_s: float  # math.inf for the last band
    threshold: float


@dataclass(frozen=True)
class Thresholds:
    encoder: str
    bands: tuple[Band, ...]  # ordered by max_speech_s
    vad: str = EnergyVad.name  # the VAD whose net speech the bands were calibrated on
    backend: str = "cosine/centroid/none"  # ScoringBackend.name the thresholds apply to
    # Impostor-score normalisation by net speech and SNR (kfold.QualityNorm mapping), or None.
    quality: Mapping[str, Any] | None = None
    # Cosine to the original enrollment a confirmed purchase needs to adapt a print
    # (voice/adaptation.py), fitted on training speakers by scripts/eval_adaptation.py; None: no
    # adaptation.
    drift_floor: float | None = None
    # How far over the band threshold the score against the original enrollment alone must be
    # (same script, same fit); None: that check is left out (what ships, docs/voice.md).
    adapt_margin: float | None = None

    def __post_init__(self) -> None:
        if not self.bands:
            raise ValueError("Thresholds need at least one band")
        edges = [b.max_speech_s for b in self.bands]
        if edges != sorted(edges) or edges[-1] != float("inf"):
            raise ValueError("bands must be ordered by max_speech_s and the last must be unbounded")

    def band_for(self, net_speech_s: float) -> Band:
        for band in self.bands:
            if net_speech_s <= band.max_speech_s:
                return band
        return self.bands[-1]

    @classmethod
    def from_mapping(cls, encoder: str, data: Mapping[str, Any]) -> Thresholds:
        bands = tuple(
            Band(
                name=str(b["name"]),
                max_speech_s=float("inf") if b["max_speech_s"] is None else float(b["max_speech_s"]),
                threshold=float(b["threshold"]),
            )
            for b in data["bands"]
        )
        adaptation = data.get("adaptation")
        return cls(
            encoder=encoder,
            bands=bands,
            vad=str(data.get("vad", EnergyVad.name)),
            backend=str(data.get("backend", "cosine/centroid/none")),
            quality=data.get("quality"),
            drift_floor=(
                float(data["adaptation"]["drift_floor"])
                if isinstance(data.get("adaptation"), Mapping)
                else None
            ),
            adapt_margin=(
                float(adaptation["margin"])
                if isinstance(adaptation, Mapping) and adaptation.get("margin") is not None
                else None
            ),
        )

    @classmethod
    def load(cls, encoder: str, path: Path | None = None) -> Thresholds:
        """Thresholds for `encoder` from `path`, or from the packaged voice/thresholds.json."""
        try:
            if path is None:
                text = resources.files("purchase_guard.voice").joinpath("thresholds.json").read_text("utf-8")
            else:
                text = path.read_text("utf-8")
            doc = json.loads(text)
        except (OSError, ValueError) as exc:
            raise Unavailable(f"speaker thresholds could not be read: {exc}") from exc
        entry = doc.get("encoders", {}).get(encoder)
        if entry is None:
            raise Unavailable(f"no calibrated speaker thresholds for encoder {encoder}; run calibration")
        try:
            return cls.from_mapping(encoder, entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable(f"speaker thresholds for {encoder} are damaged: {exc}") from exc


@dataclass(frozen=True)
class Heard:
    """What was measured on a scored utterance, for voice/adaptation.py. Never logged."""

    embedding: tuple[float, ...] = field(repr=False)
    net_speech_s: float = 0.0
    snr_db: float = 0.0
    clipped: float = 0.0


@dataclass(frozen=True)
class _Scored:
    """One utterance scored by VoiceVerifier._score. Never logged."""

    net: float
    band: Band
    embedding: Embedding = field(repr=False)
    snr: float
    result: SpeakerResult


class ChildDetector(Protocol):
    def likelihood(self, embedding: Embedding) -> float:
        """Probability-like score in [0, 1] that the embedding is a child's voice."""
        ...


def _child_likelihood(det: ChildDetector, embedding: Embedding, samples: Any) -> float:
    # Detectors with acoustic measures (child.LogisticChildDetector format 2) need the audio.
    if getattr(det, "uses_audio", False):
        return float(det.likelihood_audio(embedding, samples))  # type: ignore[attr-defined]
    return float(det.likelihood(embedding))


def _unit(v: Sequence[float] | np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    a = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(a))
    return a / n if n > 0 else a


class VoiceVerifier:
    def __init__(
        self,
        encoder: SpeakerEncoder,
        thresholds: Thresholds,
        min_speech_s: float = 0.5,
        child_detector: ChildDetector | None = None,
        *,
        backend: ScoringBackend | None = None,
        vad: SpeechDetector | None = None,
        digit_print: DigitPrintCalibration | None = None,
    ) -> None:
        if thresholds.encoder != encoder.name:
            raise ValueError(f"thresholds are for {thresholds.encoder}, encoder is {encoder.name}")
        self.vad: SpeechDetector = vad if vad is not None else EnergyVad()
        self.backend = backend if backend is not None else identity_backend(encoder.name, encoder.dim)
        if self.backend.encoder != encoder.name:
            raise ValueError(f"scoring back-end is for {self.backend.encoder}, encoder is {encoder.name}")
        # Thresholds are only meaningful for the VAD and back-end they were calibrated with.
        if thresholds.vad != self.vad.name:
            raise ValueError(
                f"thresholds were calibrated with VAD {thresholds.vad}, verifier uses {self.vad.name}"
            )
        if thresholds.backend != self.backend.name:
            raise ValueError(
                f"thresholds were calibrated for back-end {thresholds.backend}, "
                f"verifier uses {self.backend.name}"
            )
        self.encoder = encoder
        self.thresholds = thresholds
        self.min_speech_s = min_speech_s
        self.child_detector = child_detector
        # Scoring spoken digits against the member's digit takes is only calibrated for the
        # thresholds' own scoring; anything else keeps the voiceprint alone.
        usable = (
            digit_print is not None
            and digit_print.use
            and digit_print.encoder == encoder.name
            and digit_print.backend == thresholds.backend
            and digit_print.vad == thresholds.vad
            and thresholds.quality is None
        )
        self.digit_print = digit_print if usable else None
        self._quality = None
        if thresholds.quality is not None:
            from purchase_guard.voice.kfold import QualityNorm

            self._quality = QualityNorm.from_mapping(thresholds.quality)

    def embed_pcm(self, pcm: Pcm) -> Embedding:
        """Embedding of the voiced part of `pcm` (raises AudioError when nothing is voiced)."""
        return self.encoder.embed(self.vad.trim(pcm).samples)

    def verify(self, pcm: Pcm, voiceprints: Sequence[Voiceprint], roles: Mapping[str, Role]) -> SpeakerResult:
        """Best-matching member among `voiceprints`; verified when the score clears the band threshold."""
        return self.verify_against(pcm, voiceprints, roles, allowed_member_ids=None)

    def verify_sample(
        self, pcm: Pcm, voiceprints: Sequence[Voiceprint], roles: Mapping[str, Role]
    ) -> tuple[SpeakerResult, Heard | None]:
        """`verify`, and what a voiceprint adaptation needs of the utterance (None when it was
        not scored): its embedding, net speech, SNR and clipped share. Same result as `verify`."""
        scored = self._score(pcm, voiceprints, roles, None, measure_snr=True)
        if isinstance(scored, SpeakerResult):
            return scored, None
        heard = Heard(
            tuple(float(v) for v in scored.embedding), scored.net, scored.snr, clipped_fraction(pcm)
        )
        return scored.result, heard

    def verify_against(
        self,
        pcm: Pcm,
        voiceprints: Sequence[Voiceprint],
        roles: Mapping[str, Role],
        allowed_member_ids: Collection[str] | None,
    ) -> SpeakerResult:
        """Like `verify`, scoring only members in `allowed_member_ids` (None: everyone).

        Used by a challenge answer to ask "is this one of the household's adults?".
        """
        scored = self._score(pcm, voiceprints, roles, allowed_member_ids)
        return scored if isinstance(scored, SpeakerResult) else scored.result

    def verify_digits(
        self,
        pcm: Pcm,
        voiceprint: Voiceprint,
        roles: Mapping[str, Role],
        digit_takes: Sequence[Sequence[float]],
        takes_encoder: str,
    ) -> SpeakerResult:
        """Is the voice saying digits in `pcm` this member's? Scored against the voiceprint and,
        when the member's digit takes were made by this encoder and a calibration is installed,
        against the takes' centroid too: the better score, at the band threshold plus the
        calibrated shift (voice/digit_print.py)."""
        scored = self._score(pcm, [voiceprint], roles, None)
        if isinstance(scored, SpeakerResult):
            return scored
        plain = scored.result
        cal = self.digit_print
        if cal is None or not digit_takes or takes_encoder != self.encoder.name:
            return plain
        own = float(centroid(digit_takes) @ _unit(scored.embedding))
        score = max(plain.score, own)
        threshold = scored.band.threshold + cal.delta
        verified = score >= threshold
        return replace(
            plain,
            member_id=voiceprint.member_id if verified else None,
            role=roles.get(voiceprint.member_id) if verified else None,
            score=score,
            threshold=threshold,
            verified=verified,
            problem="" if verified else f"no enrolled voice matched ({scored.band.name} band, digit takes)",
        )

    def _score(
        self,
        pcm: Pcm,
        voiceprints: Sequence[Voiceprint],
        roles: Mapping[str, Role],
        allowed_member_ids: Collection[str] | None,
        *,
        measure_snr: bool = False,
    ) -> SpeakerResult | _Scored:
        """Trim, check there is enough speech and a usable print, embed once and score: an
        unverified result when it stops early, else what was measured with the result."""
        if measure_snr or self._quality is not None:
            # One call: the energy VAD finds the speech and the SNR in one pass over the frames.
            net, trimmed, snr = self.vad.speech_trim_and_snr(pcm)
        else:
            (net, trimmed), snr = self.vad.speech_and_trim(pcm), 0.0
        band = self.thresholds.band_for(net)
        if net < self.min_speech_s:
            return self._unverified(
                band.threshold, f"only {net:.1f} s of speech, need at least {self.min_speech_s:.1f} s", False
            )
        prints = self._usable_prints(voiceprints, allowed_member_ids)
        if isinstance(prints, str):
            return self._unverified(band.threshold, prints, True)
        embedding = self.encoder.embed(trimmed.samples)
        result = self.score_embedding(embedding, net, prints, roles, samples=trimmed.samples, snr=snr)
        return _Scored(net, band, embedding, snr, result)

    def templates_of(self, vp: Voiceprint) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The print's take embeddings when it has them, else its centroid (one row), then its
        adapted embeddings (weighted by `model_rows`)."""
        return model_rows(vp)[0]

    def score_embedding(
        self,
        embedding: Embedding,
        net_speech_s: float,
        voiceprints: Sequence[Voiceprint],
        roles: Mapping[str, Role],
        *,
        samples: Any = None,
        snr: float = 0.0,
    ) -> SpeakerResult:
        """Score an already computed embedding against prints made by this encoder.

        `samples` (the trimmed audio the embedding came from) is needed by a child detector
        with acoustic measures; `snr` by quality-normalised thresholds.
        """
        band = self.thresholds.band_for(net_speech_s)
        prints = [vp for vp in voiceprints if vp.encoder == self.encoder.name]
        if not prints:
            return self._unverified(band.threshold, "no voiceprints for this encoder", True)
        models = [model_rows(vp) for vp in prints]
        raw = self.backend.score_models(
            np.asarray(embedding, dtype=np.float64)[None, :], [m[0] for m in models], [m[1] for m in models]
        )[0]
        if self._quality is not None:
            raw = self._quality.apply(raw, np.full(raw.shape, net_speech_s), np.full(raw.shape, snr))
        scores = [float(v) for v in raw]
        best = int(np.argmax(scores))
        score = scores[best]
        verified = score >= band.threshold
        member = prints[best].member_id
        child = -1.0
        if self.child_detector is not None:
            child = _child_likelihood(self.child_detector, embedding, samples)
        # An unverified result names nobody: downstream code must not be able to act on
        # "closest member" as if it were an identification.
        return SpeakerResult(
            member_id=member if verified else None,
            role=roles.get(member) if verified else None,
            score=score,
            threshold=band.threshold,
            verified=verified,
            child_likelihood=child,
            encoder=self.encoder.name,
            usable=True,
            problem="" if verified else f"no enrolled voice matched ({band.name} band)",
        )

    def enrollment_score(
        self, embedding: Sequence[float], net_speech_s: float, snr: float, vp: Voiceprint
    ) -> float:
        """The score `score_embedding` would give `embedding` against `vp`'s ORIGINAL enrollment
        alone (its adapted rows left out): same back-end and quality normalisation, so it is
        comparable with the band threshold. For the adaptation rule (voice/adaptation.py)."""
        if vp.encoder != self.encoder.name:
            raise ValueError("the voiceprint was made by another encoder")
        rows, weights = model_rows(replace(vp, adapted=()))
        probe = np.asarray(embedding, dtype=np.float64)[None, :]
        raw = self.backend.score_models(probe, [rows], [weights])[0]
        if self._quality is not None:
            raw = self._quality.apply(raw, np.full(raw.shape, net_speech_s), np.full(raw.shape, snr))
        return float(raw[0])

    def _usable_prints(
        self, voiceprints: Sequence[Voiceprint], allowed: Collection[str] | None
    ) -> list[Voiceprint] | str:
        candidates = [vp for vp in voiceprints if allowed is None or vp.member_id in allowed]
        if not candidates:
            return "no enrolled voiceprints to compare against"
        mine = [vp for vp in candidates if vp.encoder == self.encoder.name]
        if not mine:
            others = ", ".join(sorted({vp.encoder for vp in candidates}))
            return f"voiceprints were made by encoder {others}; re-enrollment required"
        return mine

    def _unverified(self, threshold: float, problem: str, usable: bool) -> SpeakerResult:
        return SpeakerResult(
            member_id=None,
            role=None,
            score=0.0,
            threshold=threshold,
            verified=False,
            child_likelihood=-1.0,
            encoder=self.encoder.name,
            usable=usable,
            problem=problem,
        )


def make_vad(name: str) -> SpeechDetector:
    """The VAD a thresholds entry names; Unavailable when it cannot be built exactly so."""
    if name == EnergyVad.name:
        return EnergyVad()
    if name.startswith("silero-vad/"):
        from purchase_guard.voice.silero import SileroVad

        try:
            threshold = float(name.rsplit("/t", 1)[1])
        except (IndexError, ValueError) as exc:
            raise Unavailable(f"thresholds name an unknown Silero VAD setting {name!r}") from exc
        vad = SileroVad(threshold=threshold)
        if vad.name != name:
            raise Unavailable(f"thresholds were calibrated with {name}, installed is {vad.name}; recalibrate")
        return vad
    raise Unavailable(f"thresholds name an unknown VAD {name!r}")


def build_verifier(
    encoder: SpeakerEncoder,
    thresholds_path: Path | None = None,
    child_detector: ChildDetector | None = None,
    backend_path: Path | None = None,
    min_speech_s: float = 0.5,
    digit_print_path: Path | None = None,
) -> VoiceVerifier:
    """The verifier exactly as calibrated: thresholds, and the VAD and back-end they name.

    Every part missing or not matching (VAD model, back-end file) raises Unavailable, so the
    server does not start with operating points that do not belong to its scores.
    """
    from purchase_guard.voice.backend import packaged_backend

    thresholds = Thresholds.load(encoder.name, thresholds_path)
    vad = make_vad(thresholds.vad)
    backend = identity_backend(encoder.name, encoder.dim)
    if thresholds.backend != backend.name:
        found = (
            ScoringBackend.load(backend_path) if backend_path is not None else packaged_backend(encoder.name)
        )
        if found is None:
            raise Unavailable(
                f"thresholds need scoring back-end {thresholds.backend}, which is not installed"
            )
        if found.name != thresholds.backend or found.encoder != encoder.name:
            raise Unavailable(
                f"thresholds need scoring back-end {thresholds.backend} for {encoder.name}; "
                f"found {found.name} for {found.encoder}"
            )
        backend = found
    digit_print = DigitPrintCalibration.load(encoder.name, digit_print_path)
    try:
        return VoiceVerifier(
            encoder,
            thresholds,
            min_speech_s,
            child_detector,
            backend=backend,
            vad=vad,
            digit_print=digit_print,
        )
    except ValueError as exc:
        raise Unavailable(str(exc)) from exc
