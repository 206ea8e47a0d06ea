"""The one-pass alignment loop, compiled (numba): the frame-synchronous DP over every template state.

numpy would spend most of its time in per-frame call overhead on arrays of a few thousand
states; the fused loop is two orders of magnitude faster and keeps the check's CPU cost small
next to the speaker check. `cache=True` keeps the compiled code across restarts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

_INF = np.inf


@njit(cache=True, nogil=True)
def one_pass(
    local: Any,
    cols: Any,
    unit_of: Any,
    pos: Any,
    level_in: Any,
    level_out: Any,
    is_exit: Any,
    stay_cost: Any,
    n_levels: int,
    final_level: int,
) -> Any:
    """Returns (cost, final state, record times, record predecessors, record units, final record).

    Record r: at frame rec_time[r] a unit begins; the unit that ended just before is
    rec_unit[r], which had been entered through record rec_prev[r]. Record 0 is the start.
    """
    n_frames = local.shape[0]
    n_states = cols.shape[0]
    max_rec = 1 + n_frames * n_levels
    rec_time = np.zeros(max_rec, dtype=np.int64)
    rec_prev = np.full(max_rec, -1, dtype=np.int64)
    rec_unit = np.full(max_rec, -1, dtype=np.int64)
    n_rec = 1
    d = np.full(n_states, _INF)
    nd = np.empty(n_states)
    bp = np.full(n_states, -1, dtype=np.int64)
    nbp = np.empty(n_states, dtype=np.int64)
    entry_cost = np.full(n_levels, _INF)
    entry_rec = np.full(n_levels, -1, dtype=np.int64)
    entry_cost[0] = 0.0
    entry_rec[0] = 0
    for t in range(n_frames):
        if t > 0:
            best_c = np.full(n_levels, _INF)
            best_s = np.full(n_levels, -1, dtype=np.int64)
            for s in range(n_states):
                if is_exit[s]:
                    lv = level_out[s]
                    if d[s] < best_c[lv]:
                        best_c[lv] = d[s]
                        best_s[lv] = s
            for lv in range(n_levels):
                entry_cost[lv] = _INF
                entry_rec[lv] = -1
                if best_s[lv] >= 0 and best_c[lv] < _INF:
                    rec_time[n_rec] = t
                    rec_prev[n_rec] = bp[best_s[lv]]
                    rec_unit[n_rec] = unit_of[best_s[lv]]
                    entry_cost[lv] = best_c[lv]
                    entry_rec[lv] = n_rec
                    n_rec += 1
        row = local[t]
        for s in range(n_states):
            c = d[s] + stay_cost[s]
            b = bp[s]
            p = pos[s]
            if p >= 1 and d[s - 1] < c:
                c = d[s - 1]
                b = bp[s - 1]
            if p >= 2 and d[s - 2] < c:
                c = d[s - 2]
                b = bp[s - 2]
            if p == 0:
                e = entry_cost[level_in[s]]
                if e < c:
                    c = e
                    b = entry_rec[level_in[s]]
            nd[s] = c + row[cols[s]]
            nbp[s] = b
        d, nd = nd, d
        bp, nbp = nbp, bp
    best = _INF
    final_state = -1
    for s in range(n_states):
        if is_exit[s] and level_out[s] == final_level and d[s] < best:
            best = d[s]
            final_state = s
    final_bp = bp[final_state] if final_state >= 0 else -1
    return best, final_state, rec_time[:n_rec], rec_prev[:n_rec], rec_unit[:n_rec], final_bp
