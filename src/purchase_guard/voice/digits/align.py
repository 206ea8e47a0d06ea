"""One-pass connected-word alignment (Ney's one-stage DTW) over digit templates.

A grammar is a set of unit instances, each a template (a sequence of frames) or a one-state
unit (pause, filler), that moves the path from one level to another: a digit moves it one
level on, a pause or filler keeps it where it is. The same engine then answers both questions
the check asks:

- forced: the expected digits in order, pauses between them, filler only before and after;
- free: any sequence of digits, pauses and filler (the best competing explanation).

The difference of their costs is the evidence that the audio says the expected digits and not
something else. Costs are sums of per-frame local distances, so both passes explain every
frame of the same audio and are directly comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from purchase_guard.voice.digits import _kernel

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

PAUSE = "pause"
FILLER = "filler"
_INF = np.inf


@dataclass(frozen=True)
class UnitInstance:
    """One unit placed in the grammar: `column`s index the utterance's local-cost matrix."""

    label: str  # a digit "0".."9", PAUSE or FILLER
    columns: IntArray  # local-cost columns of its states, first to last
    level_in: int
    level_out: int


@dataclass(frozen=True)
class Segment:
    label: str
    start: int  # first frame
    end: int  # last frame (inclusive)


@dataclass(frozen=True)
class Alignment:
    cost: float  # inf when the grammar cannot explain the audio (e.g. too short)
    segments: tuple[Segment, ...]

    @property
    def digits(self) -> str:
        return "".join(s.label for s in self.segments if s.label.isdigit())

    def digit_span(self) -> tuple[int, int] | None:
        spans = [s for s in self.segments if s.label.isdigit()]
        if not spans:
            return None
        return spans[0].start, spans[-1].end


def align(
    local: FloatArray, units: Sequence[UnitInstance], final_level: int, stay_penalty: float
) -> Alignment:
    """Best path through `units` over all frames of `local` (frames x columns), ending at `final_level`.

    Within a template a step may stay on a frame (paying `stay_penalty`), move one frame or
    skip one, so a template can be spoken at half to any multiple of its own pace. A unit is
    entered at level `level_in` and, after its last state, hands over to `level_out`.
    """
    n_frames = local.shape[0]
    if n_frames == 0 or not units:
        return Alignment(_INF, ())
    cols = np.concatenate([u.columns for u in units]).astype(np.int64)
    unit_of = np.concatenate([np.full(u.columns.shape[0], i, dtype=np.int64) for i, u in enumerate(units)])
    pos = np.concatenate([np.arange(u.columns.shape[0], dtype=np.int64) for u in units])
    lengths = np.array([u.columns.shape[0] for u in units], dtype=np.int64)
    level_in = np.array([u.level_in for u in units], dtype=np.int64)[unit_of]
    level_out = np.array([u.level_out for u in units], dtype=np.int64)[unit_of]
    is_exit = pos == (lengths[unit_of] - 1)
    n_levels = int(1 + max(max(u.level_in, u.level_out) for u in units))
    stay_cost = np.where(lengths[unit_of] > 1, stay_penalty, 0.0)
    cost, final_state, rec_time, rec_prev, rec_unit, final_bp = _kernel.one_pass(
        np.ascontiguousarray(local, dtype=np.float64),
        cols,
        unit_of,
        pos,
        level_in,
        level_out,
        is_exit,
        stay_cost,
        n_levels,
        final_level,
    )
    if final_state < 0 or not np.isfinite(cost):
        return Alignment(_INF, ())
    segments: list[Segment] = []
    unit = int(unit_of[final_state])
    r = int(final_bp)
    end = n_frames - 1
    while r >= 0:
        start = int(rec_time[r])
        segments.append(Segment(units[unit].label, start, end))
        end = start - 1
        unit = int(rec_unit[r])
        r = int(rec_prev[r])
        if unit < 0:
            break
    segments.reverse()
    return Alignment(float(cost), tuple(_merge(segments)))


def _merge(segments: list[Segment]) -> list[Segment]:
    """Consecutive frames of the same one-state unit read as one pause or filler stretch."""
    out: list[Segment] = []
    for s in segments:
        if out and s.label in (PAUSE, FILLER) and out[-1].label == s.label and out[-1].end + 1 == s.start:
            out[-1] = Segment(s.label, out[-1].start, s.end)
        else:
            out.append(s)
    return out
