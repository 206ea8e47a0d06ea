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


@njit(cache=True, nogil=True)
def run_counts(
    a_bits: Any, a_mask: Any, b_bits: Any, b_mask: Any, offset: int, compared: Any, flips_a: Any, flips_b: Any
) -> None:
    """Per bit position (32): how many frames compare it at `offset`, and how often a's and
    b's value there changes from one compared frame to the next (frames where the position is
    not compared are skipped, not counted as a change)."""
    na = a_bits.shape[0]
    nb = b_bits.shape[0]
    last_a = np.zeros(32, dtype=np.uint32)
    last_b = np.zeros(32, dtype=np.uint32)
    for t in range(max(0, -offset), min(na, nb - offset)):
        both = a_mask[t] & b_mask[t + offset]
        if both == 0:
            continue
        va = a_bits[t]
        vb = b_bits[t + offset]
        for m in range(32):
            if (both >> m) & 1:
                xa = (va >> m) & 1
                xb = (vb >> m) & 1
                if compared[m] > 0:
                    flips_a[m] += xa != last_a[m]
                    flips_b[m] += xb != last_b[m]
                last_a[m] = xa
                last_b[m] = xb
                compared[m] += 1


@njit(cache=True, nogil=True)
def effective_bits_at(a_bits: Any, a_mask: Any, b_bits: Any, b_mask: Any, offset: int) -> float:
    """The effective bits of the comparison at `offset` (`match.effective_bits` says why):
    the sum over bit positions of n (1 - r) / (1 + r), with r = ra * rb and each print's
    lag-one correlation estimated as 1 - 2 (flips + 0.5) / n. A negative r (one print
    alternating) is taken as 0: a position never counts for more than its compared bits."""
    compared = np.zeros(32, dtype=np.int64)
    flips_a = np.zeros(32, dtype=np.int64)
    flips_b = np.zeros(32, dtype=np.int64)
    run_counts(a_bits, a_mask, b_bits, b_mask, offset, compared, flips_a, flips_b)
    total = 0.0
    for m in range(32):
        n = compared[m]
        if n == 0:
            continue
        r = (1.0 - 2.0 * (flips_a[m] + 0.5) / n) * (1.0 - 2.0 * (flips_b[m] + 0.5) / n)
        r = max(r, 0.0)
        total += n * (1.0 - r) / (1.0 + r)
    return total


@njit(cache=True, nogil=True)
def vote_postings(
    entries: Any,
    frames: Any,
    lo: Any,
    hi: Any,
    query_frames: Any,
    weights: Any,
    order: Any,
    first_entry: int,
    last_entry: int,
    shift_lo: int,
    bin_shift: int,
    n_bins: int,
    stop: int,
    min_votes: int,
    cells: Any,
    out_entry: Any,
    out_bin: Any,
    out_votes: Any,
) -> int:
    """Offset votes of one run of postings; writes each voted entry's best bin and votes to
    out_* and returns how many.

    Query key i (visited in `order`, grouped by query frame) holds postings lo[i]:hi[i] of
    (entries, frames); a key with more than `stop` postings is skipped. A hit votes for the
    cell (entry, bin of stored frame - query frame - shift_lo; bins of 2**bin_shift frames)
    when that bin is within n_bins, once per query frame however many of its keys hit the
    cell, with the key's weight (the query frames it stands for). A cell (int32) holds its
    votes in the low 16 bits and the last query frame + 1 that voted in the high bits: one
    memory access per hit.

    An entry's best bin counts its right neighbour's votes too (an offset near a bin edge
    splits its votes over two), the lowest such bin on a tie; entries reaching min_votes are
    written out, in increasing entry number."""
    width = last_entry - first_entry + 1
    cells[: width * n_bins] = 0
    span = np.uint64(n_bins << bin_shift)
    for oi in range(order.shape[0]):
        i = order[oi]
        a = lo[i]
        b = hi[i]
        if b <= a or b - a > stop:
            continue
        qf = query_frames[i]
        w = np.int32(weights[i])
        base_d = qf + shift_lo
        mark = np.int32((qf + 1) << 16)
        for p in range(a, b):
            d = np.int64(frames[p]) - base_d
            if np.uint64(d) >= span:  # negative d wraps around: out of range too
                continue
            cell = (np.int64(entries[p]) - first_entry) * n_bins + (d >> bin_shift)
            v = cells[cell]
            if (v & np.int32(-65536)) != mark:
                cells[cell] = mark | ((v & np.int32(0xFFFF)) + w)
    n = 0
    for e in range(width):
        base = e * n_bins
        top = -1
        top_bin = 0
        for bn in range(n_bins):
            v2 = int(cells[base + bn] & 0xFFFF)
            if bn + 1 < n_bins:
                v2 += int(cells[base + bn + 1] & 0xFFFF)
            if v2 > top:
                top = v2
                top_bin = bn
        if top >= min_votes:
            out_entry[n] = first_entry + e
            out_bin[n] = top_bin
            out_votes[n] = top
            n += 1
    return n


@njit(cache=True, nogil=True)
def key_ranges(run_keys: Any, query_keys: Any, lo: Any, hi: Any) -> None:
    """For each of the (ascending) query keys, the range lo:hi of its postings in the
    (ascending) run keys: one merge pass over both, not a binary search per key."""
    n = run_keys.shape[0]
    j = 0
    for i in range(query_keys.shape[0]):
        k = query_keys[i]
        while j < n and run_keys[j] < k:
            j += 1
        e = j
        while e < n and run_keys[e] == k:
            e += 1
        lo[i] = j
        hi[i] = e


@njit(cache=True, nogil=True)
def flip_variants(
    keys: Any, reliable: Any, rel_frames: Any, n_bits: int, max_flips: int, flip2_stride: int
) -> tuple[Any, Any]:
    """Every looked-up variant of each query frame's key: the key, the key with each of its
    unreliable bits (0 in `reliable`) flipped (max_flips >= 1), and with each pair of them
    flipped (max_flips >= 2, only at frames whose offset from the query's start is a multiple
    of flip2_stride). Returns (variant keys, their frames), in no particular order; the
    numpy loop over flip sets it replaces spent about 14 ms a query building them."""
    n = keys.shape[0]
    total = 0
    for i in range(n):
        u = 0
        for b in range(n_bits):
            if (reliable[i] >> np.uint32(b)) & np.uint32(1) == 0:
                u += 1
        total += 1
        if max_flips >= 1:
            total += u
        if max_flips >= 2 and rel_frames[i] % flip2_stride == 0:
            total += u * (u - 1) // 2
    out_keys = np.empty(total, dtype=np.uint32)
    out_frames = np.empty(total, dtype=np.int64)
    weak = np.empty(n_bits, dtype=np.uint32)
    k = 0
    for i in range(n):
        u = 0
        for b in range(n_bits):
            if (reliable[i] >> np.uint32(b)) & np.uint32(1) == 0:
                weak[u] = np.uint32(1) << np.uint32(b)
                u += 1
        key = keys[i]
        f = rel_frames[i]
        out_keys[k] = key
        out_frames[k] = f
        k += 1
        if max_flips >= 1:
            for a in range(u):
                out_keys[k] = key ^ weak[a]
                out_frames[k] = f
                k += 1
        if max_flips >= 2 and f % flip2_stride == 0:
            for a in range(u):
                for c in range(a + 1, u):
                    out_keys[k] = key ^ weak[a] ^ weak[c]
                    out_frames[k] = f
                    k += 1
    return out_keys, out_frames


def warm_up() -> None:
    """Compile (or load from cache) the loops with the argument types the matcher uses."""
    rows = np.zeros((1, 4), dtype=np.uint64)
    q = np.zeros(2, dtype=np.uint64)
    z = np.zeros(1, dtype=np.float64)
    s = np.zeros(1, dtype=np.int64)
    coarse_scores(rows, 1, q, q, 1, 2, z, s)
    bits = np.zeros(3, dtype=np.uint32)
    out = np.zeros(3, dtype=np.int64)
    offset_counts(bits, bits, bits, bits, -1, 1, out, out.copy())
    counts = np.zeros(32, dtype=np.int64)
    run_counts(bits, bits, bits, bits, 0, counts, counts.copy(), counts.copy())
    effective_bits_at(bits, bits, bits, bits, 0)
    one = np.zeros(1, dtype=np.int64)
    cells = np.zeros(2, dtype=np.int32)
    entries = np.zeros(1, np.uint32)
    frames = np.zeros(1, np.int16)
    vote_postings(
        entries, frames, one, one, one, one, one, 0, 0, 0, 0, 2, 1, 1, cells, one, one.copy(), one.copy()
    )
    flip_variants(bits, bits, out, 16, 2, 1)
