"""The template digit checker: one-pass DTW of the answer against digit templates.

Evidence for "this audio says 4-7-1-9" is the cost of the best path that must say exactly
those digits (forced) minus the cost of the best path that may say anything (free: any
digits, pauses, or filler for speech that matches no digit). A genuine answer makes both paths
the same (difference 0); a changed digit forces the wrong template onto a stretch the right
one fits; other words are cheaper to explain as filler than as digits. The score is minus that
difference per expected digit, so higher is better and 0 is the best possible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.digits.align import FILLER, PAUSE, Alignment, UnitInstance, align
from purchase_guard.voice.digits.features import DIM, FRAME_S, log_energy, mfcc
from purchase_guard.voice.digits.templates import DIGITS, DigitTemplates, Frames

FEATURES = "mfcc13d-100-3800-cmvn/1"
# Frames this far (natural log of band energy) above the quietest tenth count as voiced;
# about 13 dB, well above the dither floor of digital silence.
_VOICED_LOG_MARGIN = 3.0
_MIN_VOICED_FRAMES = 20  # 0.2 s: less than one short digit


@dataclass(frozen=True)
class DtwParams:
    filler_cost: float  # per frame, in units of the local distance
    stay_penalty: float  # per repeated template frame
    threshold_member: float  # on the score, when the member's own templates are used
    threshold_generic: float  # on the score, with the packaged templates only
    threshold_enroll: float  # an enrollment take, against the member's other takes
    threshold_enroll_generic: float  # an enrollment take whose digits the other takes lack, vs the bank


@dataclass(frozen=True)
class Template:
    label: str
    frames: Frames


@dataclass(frozen=True)
class Prepared:
    """An answer's frames and the local costs against one template set, computed once."""

    n_frames: int
    voiced_frames: int
    local: np.ndarray[Any, np.dtype[np.float64]]  # frames x (template frames + pause + filler)
    template_columns: tuple[np.ndarray[Any, np.dtype[np.int64]], ...]
    labels: tuple[str, ...]

    @property
    def pause_column(self) -> int:
        return int(self.local.shape[1]) - 2

    @property
    def filler_column(self) -> int:
        return int(self.local.shape[1]) - 1


@dataclass(frozen=True)
class Scored:
    score: float  # -(forced - free) / n digits; -inf when the digits cannot be fitted
    forced: Alignment
    free: Alignment
    voiced_frames: int


def bank_templates(labels: str, frames: Sequence[Frames]) -> list[Template]:
    return [Template(lab, f) for lab, f in zip(labels, frames, strict=True)]


def member_templates(templates: DigitTemplates | None) -> list[Template]:
    if templates is None:
        return []
    return [Template(d, f) for d in DIGITS for f in templates.by_digit.get(d, ())]


@dataclass(frozen=True)
class TemplateSet:
    """Templates concatenated once (the packaged bank is fixed), so each answer costs one matrix product."""

    frames: Frames  # (total frames, dim) float32
    sq_norms: np.ndarray[Any, np.dtype[np.float32]]
    columns: tuple[np.ndarray[Any, np.dtype[np.int64]], ...]
    labels: tuple[str, ...]

    @classmethod
    def of(cls, templates: Sequence[Template]) -> TemplateSet:
        if not templates:
            return cls(np.zeros((0, DIM), np.float32), np.zeros(0, np.float32), (), ())
        frames = np.ascontiguousarray(np.concatenate([t.frames for t in templates]), dtype=np.float32)
        cols: list[np.ndarray[Any, np.dtype[np.int64]]] = []
        offset = 0
        for t in templates:
            cols.append(np.arange(offset, offset + t.frames.shape[0], dtype=np.int64))
            offset += t.frames.shape[0]
        return cls(frames, (frames * frames).sum(axis=1), tuple(cols), tuple(t.label for t in templates))

    def distances(self, x: Frames) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Euclidean frame distances scaled by 1/sqrt(dim): a random pair of normalised frames is ~1.4."""
        sq = (x * x).sum(axis=1)[:, None] + self.sq_norms[None, :] - 2.0 * (x @ self.frames.T)
        return np.asarray(np.sqrt(np.maximum(sq, 0.0) / np.float32(x.shape[1])), dtype=np.float32)


def prepare(pcm: Pcm, sets: Sequence[TemplateSet], params: DtwParams) -> Prepared:
    feats = mfcc(pcm.samples)
    n = int(feats.shape[0])
    sets = [s for s in sets if s.labels]
    if n == 0 or not sets:
        return Prepared(n, 0, np.zeros((n, 2)), (), ())
    energy = log_energy(pcm.samples)[:n]
    quiet = float(np.percentile(energy, 10))
    voiced = int(np.count_nonzero(energy > quiet + _VOICED_LOG_MARGIN))
    total = sum(s.frames.shape[0] for s in sets)
    local = np.empty((n, total + 2), dtype=np.float64)
    cols: list[np.ndarray[Any, np.dtype[np.int64]]] = []
    labels: list[str] = []
    offset = 0
    for s in sets:
        local[:, offset : offset + s.frames.shape[0]] = s.distances(feats)
        cols += [c + offset for c in s.columns]
        labels += s.labels
        offset += s.frames.shape[0]
    # The pause model is the answer's own quiet frames: whatever the line noise is, a pause
    # sounds like the quietest tenth of this recording.
    quiet_frames = feats[energy <= np.percentile(energy, 15)]
    pause_vec = quiet_frames.mean(axis=0, keepdims=True) if quiet_frames.shape[0] else feats[:1]
    local[:, offset] = TemplateSet.of([Template(PAUSE, pause_vec.astype(np.float32))]).distances(feats)[:, 0]
    local[:, offset + 1] = params.filler_cost
    return Prepared(n, voiced, local, tuple(cols), tuple(labels))


def _forced_units(prep: Prepared, expected: str) -> tuple[list[UnitInstance], int]:
    pause = np.array([prep.pause_column])
    filler = np.array([prep.filler_column])
    n = len(expected)
    units = [UnitInstance(FILLER, filler, 0, 0), UnitInstance(FILLER, filler, n, n)]
    units += [UnitInstance(PAUSE, pause, k, k) for k in range(n + 1)]
    for k, digit in enumerate(expected):
        units += [
            UnitInstance(lab, c, k, k + 1)
            for lab, c in zip(prep.labels, prep.template_columns, strict=True)
            if lab == digit
        ]
    return units, n


def _free_units(prep: Prepared, n_digits: int | None) -> tuple[list[UnitInstance], int]:
    pause = np.array([prep.pause_column])
    filler = np.array([prep.filler_column])
    if n_digits is None:
        units = [UnitInstance(FILLER, filler, 0, 0), UnitInstance(PAUSE, pause, 0, 0)]
        units += [
            UnitInstance(lab, c, 0, 0) for lab, c in zip(prep.labels, prep.template_columns, strict=True)
        ]
        return units, 0
    n = n_digits
    units = [UnitInstance(FILLER, filler, 0, 0), UnitInstance(FILLER, filler, n, n)]
    units += [UnitInstance(PAUSE, pause, k, k) for k in range(n + 1)]
    for k in range(n):
        units += [
            UnitInstance(lab, c, k, k + 1) for lab, c in zip(prep.labels, prep.template_columns, strict=True)
        ]
    return units, n


def forced(prep: Prepared, expected: str, params: DtwParams) -> Alignment:
    units, final = _forced_units(prep, expected)
    return align(prep.local, units, final, params.stay_penalty)


def free(prep: Prepared, params: DtwParams, n_digits: int | None = None) -> Alignment:
    units, final = _free_units(prep, n_digits)
    return align(prep.local, units, final, params.stay_penalty)


def score(prep: Prepared, expected: str, params: DtwParams, free_path: Alignment | None = None) -> Scored:
    """Score of `expected` (any length >= 1) on prepared audio; `free_path` may be reused across calls."""
    open_path = free_path if free_path is not None else free(prep, params)
    if prep.n_frames == 0 or not prep.labels or not set(expected) <= set(prep.labels):
        return Scored(-np.inf, Alignment(np.inf, ()), open_path, prep.voiced_frames)
    path = forced(prep, expected, params)
    if not np.isfinite(path.cost) or not np.isfinite(open_path.cost):
        return Scored(-np.inf, path, open_path, prep.voiced_frames)
    # The free grammar contains every forced path, so the difference is >= 0 up to rounding.
    diff = max(0.0, path.cost - open_path.cost)
    return Scored(-diff / len(expected), path, open_path, prep.voiced_frames)


def span_seconds(path: Alignment) -> tuple[float, float]:
    span = path.digit_span()
    if span is None:
        return (0.0, 0.0)
    return (span[0] * FRAME_S, (span[1] + 1) * FRAME_S)


def enough_voice(prep: Prepared) -> bool:
    return prep.voiced_frames >= _MIN_VOICED_FRAMES
