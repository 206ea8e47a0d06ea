"""The compiled search loops agree with a plain numpy statement of what they compute."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from purchase_guard.broadcast._kernels import (
    coarse_scores,
    effective_bits_at,
    offset_counts,
    run_counts,
    warm_up,
)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).astype(np.int64)


def _coarse_reference(rows: np.ndarray, qa: np.ndarray, qd: np.ndarray, stride: int, n_shifts: int):
    z = np.empty((rows.shape[0], n_shifts))
    for s in range(n_shifts):
        cols = rows[:, s : s + stride * (qa.shape[0] - 1) + 1 : stride]
        a = _popcount(cols & qa).sum(axis=1)
        d = _popcount(cols & qd).sum(axis=1)
        z[:, s] = (a - d) / np.sqrt(np.maximum(a + d, 1))
    return z.max(axis=1), z.argmax(axis=1)


@pytest.mark.parametrize(("n_words", "stride", "n_shifts"), [(24, 2, 33), (5, 1, 3), (1, 3, 1)])
def test_coarse_scores_match_numpy(n_words: int, stride: int, n_shifts: int) -> None:
    """Best score and best shift per row equal the numpy computation, for several shapes."""
    rng = np.random.default_rng(n_words * 100 + stride)
    width = stride * (n_words - 1) + n_shifts
    rows = rng.integers(0, 2**63, size=(300, width), dtype=np.uint64)
    rows[7] = 0  # a removed slot: compares no bits
    qa = rng.integers(0, 2**63, size=n_words, dtype=np.uint64)
    qd = (qa << np.uint64(32)) | (qa >> np.uint64(32))
    z = np.full(300, np.nan)
    shift = np.full(300, -1, dtype=np.int64)
    coarse_scores(rows, 300, qa, qd, stride, n_shifts, z, shift)
    ref_z, ref_shift = _coarse_reference(rows, qa, qd, stride, n_shifts)
    np.testing.assert_allclose(z, ref_z)
    np.testing.assert_array_equal(shift, ref_shift)
    assert z[7] == 0.0


def test_coarse_scores_only_touch_the_first_n_rows() -> None:
    """Rows past `n` (spare capacity in the index) are neither read nor written."""
    rows = np.ones((4, 3), dtype=np.uint64)
    q = np.ones(2, dtype=np.uint64)
    z = np.full(4, -7.0)
    shift = np.full(4, -7, dtype=np.int64)
    coarse_scores(rows, 2, q, q * 0, 1, 2, z, shift)
    assert z[2:].tolist() == [-7.0, -7.0]
    assert z[:2].tolist() == [pytest.approx(np.sqrt(2.0))] * 2


def test_offset_counts_match_numpy() -> None:
    """Errors and compared bits at each offset equal a direct count, including offsets past either end."""
    rng = np.random.default_rng(3)
    a_bits = rng.integers(0, 2**32, size=50, dtype=np.uint32)
    a_mask = rng.integers(0, 2**32, size=50, dtype=np.uint32)
    b_bits = rng.integers(0, 2**32, size=40, dtype=np.uint32)
    b_mask = rng.integers(0, 2**32, size=40, dtype=np.uint32)
    lo, hi = -60, 60
    errors = np.zeros(hi - lo + 1, dtype=np.int64)
    compared = np.zeros(hi - lo + 1, dtype=np.int64)
    offset_counts(a_bits, a_mask, b_bits, b_mask, lo, hi, errors, compared)
    for k in range(lo, hi + 1):
        e = c = 0
        for t in range(50):
            if 0 <= t + k < 40:
                m = int(a_mask[t]) & int(b_mask[t + k])
                c += m.bit_count()
                e += ((int(a_bits[t]) ^ int(b_bits[t + k])) & m).bit_count()
        assert (errors[k - lo], compared[k - lo]) == (e, c), k
    assert compared[0] == 0  # no overlap at -60 frames
    assert compared[-1] == 0


@pytest.mark.parametrize("offset", [-45, -3, 0, 7, 39, 40])
def test_run_counts_match_a_direct_count(offset: int) -> None:
    """Per bit position, the compared frames and each print's value changes between consecutive
    compared frames equal a direct count, with sparse masks and overlaps down to none."""
    rng = np.random.default_rng(4)
    a_bits = rng.integers(0, 2**32, size=50, dtype=np.uint32)
    a_mask = rng.integers(0, 2**32, size=50, dtype=np.uint32) & rng.integers(
        0, 2**32, size=50, dtype=np.uint32
    )
    b_bits = rng.integers(0, 2**32, size=40, dtype=np.uint32)
    b_mask = rng.integers(0, 2**32, size=40, dtype=np.uint32)
    compared, flips_a, flips_b = (np.zeros(32, dtype=np.int64) for _ in range(3))
    run_counts(a_bits, a_mask, b_bits, b_mask, offset, compared, flips_a, flips_b)
    for m in range(32):
        frames = [
            t
            for t in range(50)
            if 0 <= t + offset < 40 and (int(a_mask[t]) & int(b_mask[t + offset])) >> m & 1
        ]
        va = [int(a_bits[t]) >> m & 1 for t in frames]
        vb = [int(b_bits[t + offset]) >> m & 1 for t in frames]
        assert compared[m] == len(frames), m
        assert flips_a[m] == sum(x != y for x, y in itertools.pairwise(va)), m
        assert flips_b[m] == sum(x != y for x, y in itertools.pairwise(vb)), m
    if offset >= 40:
        assert compared.sum() == 0


def test_effective_bits_follow_the_run_counts() -> None:
    """The compiled effective-bit count equals the formula applied to the run counts: each
    position's n (1 - r) / (1 + r), r the product of both prints' lag-one correlations and
    never below 0, so no position counts for more than its compared bits."""
    rng = np.random.default_rng(8)
    a_bits = rng.integers(0, 2**32, size=60, dtype=np.uint32)
    b_bits = a_bits ^ (rng.integers(0, 2**32, size=60, dtype=np.uint32) & np.uint32(0x0F0F0F0F))
    a_bits[:30] = a_bits[0]  # a held stretch: long runs in a
    a_mask = rng.integers(0, 2**32, size=60, dtype=np.uint32)
    b_mask = rng.integers(0, 2**32, size=60, dtype=np.uint32)
    compared, flips_a, flips_b = (np.zeros(32, dtype=np.int64) for _ in range(3))
    run_counts(a_bits, a_mask, b_bits, b_mask, 2, compared, flips_a, flips_b)
    expected = 0.0
    for n, fa, fb in zip(compared, flips_a, flips_b, strict=True):
        if n:
            r = max((1 - 2 * (fa + 0.5) / n) * (1 - 2 * (fb + 0.5) / n), 0.0)
            expected += n * (1 - r) / (1 + r)
    assert effective_bits_at(a_bits, a_mask, b_bits, b_mask, 2) == pytest.approx(expected)
    assert 0 < expected < compared.sum()  # the held stretch counts for less than its bits


def test_warm_up_calls_every_loop_with_its_current_arguments() -> None:
    """The server compiles the loops at start (`warm_up`); a loop whose arguments changed
    without warm_up following would fail there, at start, not at the first request."""
    warm_up()
