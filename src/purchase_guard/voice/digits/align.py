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


def align(local: FloatArray, units: Sequence[UnitInstance], final_level: int, stay_penalty: float) -> Alignment:
    """Best path through `units` over all frames of `local` (frames x columns), ending at `final_level`.

    Within a template a step may stay on a frame (paying `stay_penalty`), move one frame or
    skip one, so a template can be spoken at half to any multiple of its own pace. A unit is
    entered at level `level_in` and, after its last state, hands over to `level_out`.
    """
    n_frames = local.shape[0]
    if n_frames == 0 or not units:
        return Alignment(_INF, ())
    cols = np.concatenate([u.columns for u in units])
    unit_of = np.concatenate([np.full(u.columns.shape[0], i) for i, u in enumerate(units)])
    pos = np.concatenate([np.arange(u.columns.shape[0]) for u in units])
    level_in = np.array([u.level_in for u in units])[unit_of]
    lengths = np.array([u.columns.shape[0] for u in units])
    is_exit = pos == (lengths[unit_of] - 1)
    exit_states = np.flatnonzero(is_exit)
    exit_level = np.array([u.level_out for u in units])[unit_of[exit_states]]
    n_levels = 1 + max(max(u.level_in, u.level_out) for u in units)
    entry_states = np.flatnonzero(pos == 0)
    entry_level = level_in[entry_states]
    can_step = pos >= 1
    can_skip = pos >= 2
    # Staying on the first frame of a multi-frame template is as free as staying in a pause
    # would be only for one-state units; templates pay for every repeated frame.
    stay_cost = np.where(lengths[unit_of] > 1, stay_penalty, 0.0)
    exits_by_level = [exit_states[exit_level == lv] for lv in range(n_levels)]

    cost_t = local[:, cols]
    n_states = cols.shape[0]
    # Word-link records: record r says "at frame rec_time[r] a new unit begins at level
    # rec_level[r]; the unit that ended just before is rec_unit[r], entered by record rec_prev[r]".
    rec_time: list[int] = [0]
    rec_prev: list[int] = [-1]
    rec_unit: list[int] = [-1]
    d = np.full(n_states, _INF)
    bp = np.full(n_states, -1, dtype=np.int64)
    entry_cost = np.full(n_levels, _INF)
    entry_rec = np.full(n_levels, -1, dtype=np.int64)
    entry_cost[0] = 0.0
    entry_rec[0] = 0
    for t in range(n_frames):
        if t > 0:
            entry_cost[:] = _INF
            entry_rec[:] = -1
            for lv in range(n_levels):
                ex = exits_by_level[lv]
                if ex.size == 0:
                    continue
                k = int(np.argmin(d[ex]))
                best = d[ex[k]]
                if np.isfinite(best):
                    rec_time.append(t)
                    rec_prev.append(int(bp[ex[k]]))
                    rec_unit.append(int(unit_of[ex[k]]))
                    entry_cost[lv] = best
                    entry_rec[lv] = len(rec_time) - 1
        cand = np.empty((4, n_states))
        cand[0] = d + stay_cost
        cand[1, 0] = _INF
        cand[1, 1:] = d[:-1]
        cand[1, ~can_step] = _INF
        cand[2, :2] = _INF
        cand[2, 2:] = d[:-2]
        cand[2, ~can_skip] = _INF
        cand[3] = _INF
        cand[3, entry_states] = entry_cost[entry_level]
        choice = np.argmin(cand, axis=0)
        best = cand[choice, np.arange(n_states)]
        src_bp = np.empty((4, n_states), dtype=np.int64)
        src_bp[0] = bp
        src_bp[1, 0] = -1
        src_bp[1, 1:] = bp[:-1]
        src_bp[2, :2] = -1
        src_bp[2, 2:] = bp[:-2]
        src_bp[3] = -1
        src_bp[3, entry_states] = entry_rec[entry_level]
        bp = src_bp[choice, np.arange(n_states)]
        d = best + cost_t[t]
    finals = exits_by_level[final_level] if final_level < n_levels else np.zeros(0, dtype=np.int64)
    if finals.size == 0:
        return Alignment(_INF, ())
    k = int(np.argmin(d[finals]))
    total = float(d[finals[k]])
    if not np.isfinite(total):
        return Alignment(_INF, ())
    segments: list[Segment] = []
    unit = int(unit_of[finals[k]])
    r = int(bp[finals[k]])
    end = n_frames - 1
    while r >= 0:
        start = rec_time[r]
        segments.append(Segment(units[unit].label, start, end))
        end = start - 1
        unit = rec_unit[r]
        r = rec_prev[r]
        if unit < 0:
            break
    segments.reverse()
    return Alignment(total, tuple(_merge(segments)))


def _merge(segments: list[Segment]) -> list[Segment]:
    """Consecutive frames of the same one-state unit read as one pause or filler stretch."""
    out: list[Segment] = []
    for s in segments:
        if out and s.label in (PAUSE, FILLER) and out[-1].label == s.label and out[-1].end + 1 == s.start:
            out[-1] = Segment(s.label, out[-1].start, s.end)
        else:
            out.append(s)
    return out
