"""Compiled popcount loops for the broadcast search (numba).

numpy has to materialise every `row & query` and every popcount as a temporary array, and
its per-call overhead dominates for short rows; at 10,000 windowed prints the search spent
65 ms (CPU p99) in those temporaries. A fused loop reads each stored word once per shift
and keeps the counts in registers. The loops are single-threaded on purpose: the guard
serves requests on its own threads, and a query's cost should be its own CPU time.

`cache=True` writes the compiled code beside this file (or numba's cache directory) so a
restart does not pay the compile again; `warm_up()` compiles ahead of the first request.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


def _ctpop(typingctx: Any, x: Any) -> Any:
    """LLVM's ctpop: one POPCNT instruction on x86-64 and arm64."""
    sig = types.int64(types.uint64)  # a count (<= 64): int64 keeps the sums integer

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


# Called from compiled code only, with one argument (numba supplies the typing context).
_popcount = cast("Callable[[Any], Any]", intrinsic(_ctpop))


@njit(cache=True, nogil=True)
def coarse_scores(
    rows: Any, n: int, agree_q: Any, disagree_q: Any, stride: int, n_shifts: int, best_z: Any, best_shift: Any
) -> None:
    """For each of the first `n` rows: the best (agree - disagree) / sqrt(compared) over shifts.

    Query word j at shift s reads stored column s + stride * j; results go to best_z and
    best_shift (the shift index, 0..n_shifts-1). The innermost loop runs over shifts, which
    read neighbouring columns, so LLVM vectorises it (twice as fast as looping over words).
    """
    n_words = agree_q.shape[0]
    acc_a = np.zeros(n_shifts, dtype=np.int64)
    acc_d = np.zeros(n_shifts, dtype=np.int64)
    for i in range(n):
        acc_a[:] = 0
        acc_d[:] = 0
        row = rows[i]
        for j in range(n_words):
            qa = agree_q[j]
            qd = disagree_q[j]
            base = stride * j
            for s in range(n_shifts):
                w = row[base + s]
                acc_a[s] += _popcount(w & qa)
                acc_d[s] += _popcount(w & qd)
        top = -1e30
        top_s = 0
        for s in range(n_shifts):
            total = acc_a[s] + acc_d[s]
            z = (acc_a[s] - acc_d[s]) / math.sqrt(total if total > 0 else 1)
            if z > top:
                top = z
                top_s = s
        best_z[i] = top
        best_shift[i] = top_s


@njit(cache=True, nogil=True)
def offset_counts(
    a_bits: Any, a_mask: Any, b_bits: Any, b_mask: Any, lo: int, hi: int, errors: Any, compared: Any
) -> None:
    """Bits compared and bits differing between print a and print b shifted by each offset.

    Offset k (lo <= k <= hi) pairs a's frame t with b's frame t + k; frames outside either
    print are not compared.
    """
    na = a_bits.shape[0]
    nb = b_bits.shape[0]
    for k in range(lo, hi + 1):
        e = 0
        c = 0
        t0 = max(0, -k)
        t1 = min(na, nb - k)
        for t in range(t0, t1):
            m = np.uint64(a_mask[t] & b_mask[t + k])
            c += _popcount(m)
            e += _popcount(np.uint64(a_bits[t] ^ b_bits[t + k]) & m)
        errors[k - lo] = e
        compared[k - lo] = c


def warm_up() -> None:
    """Compile (or load from cache) both loops with the argument types the matcher uses."""
    rows = np.zeros((1, 4), dtype=np.uint64)
    q = np.zeros(2, dtype=np.uint64)
    z = np.zeros(1, dtype=np.float64)
    s = np.zeros(1, dtype=np.int64)
    coarse_scores(rows, 1, q, q, 1, 2, z, s)
    bits = np.zeros(3, dtype=np.uint32)
    out = np.zeros(3, dtype=np.int64)
    offset_counts(bits, bits, bits, bits, -1, 1, out, out.copy())
