"""Scoring a spoken PIN against the member's own digit takes (issue 19, item 4).

A PIN answer is a second or two of digits, while the voiceprint is made of whatever the
member said at enrollment. For so little speech the words matter to the encoder: the same
voice saying digits lands nearer the same voice saying other digits than its sentences. The
guided digit enrollment (voice/digits) already records the member saying digit strings; its
takes' speaker embeddings are kept beside the digit templates, and an answer is scored
against both:

    score = max(cosine to the voiceprint, cosine to the centroid of the digit takes)

The maximum of two scores is higher for impostors too, so it is not compared with the band's
threshold but with the threshold plus `delta`, fitted so that impostors saying digits pass
no more often than they did against the voiceprint alone at the shipped threshold (equal
false-match rate on the fitting speakers). scripts/fit_digit_print.py fits `delta` and writes
digit_print.json, and measures both scorings by k-fold over speakers (docs/voice.md, "PIN
answers against the digit takes").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.errors import Unavailable

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
FORMAT = "purchase-guard/digit-print"
VERSION = 1
# delta is searched on this grid; a fit that needs more than MAX_DELTA says the digit takes
# do not help and the file is written with `use: false`.
DELTA_STEP = 0.001
MAX_DELTA = 0.1


@dataclass(frozen=True)
class DigitPrintCalibration:
    """Whether, and with what threshold shift, an answer is scored against the digit takes."""

    encoder: str
    use: bool
    delta: float
    rule: str
    fitted_on: dict[str, Any]
    # The scoring the delta was fitted for (thresholds' back-end and VAD): with any other, the
    # shift means nothing and the digit takes are not used.
    backend: str = "cosine/centroid/none"
    vad: str = "energy/1"

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> DigitPrintCalibration:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError("not a digit-print calibration file of a known version")
        delta = float(data["delta"])
        if not 0.0 <= delta <= MAX_DELTA:
            raise ValueError(f"digit-print delta {delta} outside [0, {MAX_DELTA}]")
        return cls(
            str(data["encoder"]),
            bool(data["use"]),
            delta,
            str(data["rule"]),
            dict(data["fitted_on"]),
            str(data["backend"]),
            str(data["vad"]),
        )

    def to_mapping(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "encoder": self.encoder,
            "use": self.use,
            "delta": round(self.delta, 6),
            "rule": self.rule,
            "fitted_on": self.fitted_on,
            "backend": self.backend,
            "vad": self.vad,
        }

    @classmethod
    def load(cls, encoder: str, path: Path | None = None) -> DigitPrintCalibration | None:
        """The calibration for `encoder`, None when none was fitted for it (answers are then
        scored against the voiceprint alone, as before). A damaged file is Unavailable."""
        try:
            if path is None:
                text = resources.files("purchase_guard.voice").joinpath("digit_print.json").read_text("utf-8")
            else:
                text = path.read_text("utf-8")
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(text)
            entries = doc["encoders"]
            if encoder not in entries:
                return None
            return cls.from_mapping(entries[encoder])
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable(f"digit-print calibration is damaged: {exc}") from exc


def unit_rows(x: FloatArray) -> FloatArray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(n, 1e-12), dtype=np.float64)


def centroid(embeddings: Sequence[Sequence[float]] | FloatArray) -> FloatArray:
    """Length-normalised mean of length-normalised embeddings."""
    rows = unit_rows(np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1))
    out: FloatArray = unit_rows(rows.mean(axis=0, keepdims=True))[0]
    return out


def combined(voiceprint_score: FloatArray | float, digit_score: FloatArray | float) -> FloatArray:
    """The answer's score when digit takes exist: the better of the two."""
    return np.maximum(
        np.asarray(voiceprint_score, dtype=np.float64), np.asarray(digit_score, dtype=np.float64)
    )


def fit_delta(
    impostor_voiceprint: FloatArray,
    impostor_digits: FloatArray,
    thresholds: FloatArray,
) -> tuple[float, bool]:
    """Smallest delta on the grid with FMR(max-score >= t + delta) <= FMR(voiceprint >= t).

    Each impostor trial carries the threshold of its band (`thresholds`). Returns (delta,
    usable): usable is False when no delta up to MAX_DELTA keeps the false-match rate.
    """
    a = np.asarray(impostor_voiceprint, dtype=np.float64)
    c = combined(a, impostor_digits)
    t = np.asarray(thresholds, dtype=np.float64)
    if not a.shape == c.shape == t.shape or a.size == 0:
        raise ValueError("impostor scores and thresholds must be non-empty and of one length")
    allowed = int(np.sum(a >= t))
    steps = round(MAX_DELTA / DELTA_STEP)
    for k in range(steps + 1):
        delta = k * DELTA_STEP
        if int(np.sum(c >= t + delta)) <= allowed:
            return delta, True
    return MAX_DELTA, False
