"""The print index and the in-process fleet window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from unit.broadcast.broadcast_synth import hear, programme

from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.broadcast.match import (
    DEFAULT_MATCH,
    FineMatch,
    MatchParams,
    PrintIndex,
    anchor,
    best_offset,
    effective_bits,
)
from purchase_guard.broadcast.window import MemoryWindow, WindowEntry

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def test_index_finds_the_copy_among_many_unrelated_prints() -> None:
    """Among 1,100 unrelated prints (past the rough pre-filter size), only the copy matches."""
    index: PrintIndex[int] = PrintIndex()
    bases = [fingerprint(hear(programme(100 + k), seed=k)) for k in range(10)]
    rng = np.random.default_rng(0)
    for k in range(1100):
        base = bases[k % 10]
        # XOR with a per-item constant: unrelated to every other item, same bit statistics.
        key = np.uint32(0) if k == 123 else np.uint32(rng.integers(1, 2**32))
        index.add(k, Fingerprint(base.bits ^ key, base.mask, base.hop_s), anchor(base) or 0)
    query = fingerprint(hear(programme(100 + 3), seed=999, snr_db=10))
    start = anchor(query)
    assert start is not None
    found = [cand.item for cand, _ in index.matches(query, start)]
    assert found == [123]


def test_removed_items_are_not_found_and_compaction_keeps_the_rest() -> None:
    """After removing most items (forcing compaction), a kept one is still found and a removed one is not."""
    index: PrintIndex[int] = PrintIndex()
    prints = {k: fingerprint(hear(programme(200 + k), seed=k)) for k in range(10)}
    for k, fp in prints.items():
        index.add(k, fp, anchor(fp) or 0)
    assert index.remove_where(lambda k: k != 7) == 9
    assert len(index) == 1
    for k, expect in ((7, [7]), (3, [])):
        q = fingerprint(hear(programme(200 + k), seed=50 + k))
        assert [c.item for c, _ in index.matches(q, anchor(q) or 0)] == expect


def _entry(n: int, hh: str, prog_seed: int, at: datetime) -> WindowEntry:
    return WindowEntry(f"e{n}", hh, "dev", f"dec{n}", at, fingerprint(hear(programme(prog_seed), seed=n)))


def test_window_matches_recent_copies_only() -> None:
    """A copy heard within the window matches; once the window has passed it is forgotten."""
    window = MemoryWindow(timedelta(minutes=10))
    assert window.match_and_add(_entry(1, "hh1", 7, T0)) == []
    found = window.match_and_add(_entry(2, "hh2", 7, T0 + timedelta(minutes=1)))
    assert [m.entry.household_id for m in found] == ["hh1"]
    late = window.match_and_add(_entry(3, "hh3", 7, T0 + timedelta(minutes=10, seconds=30)))
    assert [m.entry.household_id for m in late] == ["hh2"]


def test_threshold_tightens_as_the_comparison_is_worth_fewer_independent_bits() -> None:
    """A comparison worth few independent bits must agree more closely; under the minimum of
    compared bits nothing matches, however many effective bits are claimed."""
    rule = MatchParams(ber_limit=0.3, ber_slack=1.5, min_bits=300)
    assert rule.max_ber(100) == 0.3 - 1.5 / 10.0
    assert rule.max_ber(36) < rule.max_ber(100) < rule.max_ber(1_000) < 0.3
    assert rule.accepts(FineMatch(0.1, 0, 1_000, 400.0))  # threshold 0.225
    assert not rule.accepts(FineMatch(0.1, 0, 1_000, 36.0))  # threshold 0.05
    assert not rule.accepts(FineMatch(0.0, 0, 299, 299.0))


def _steady(rng: np.random.Generator, frames: int, run: int) -> np.ndarray:
    """Random 32-bit sub-prints that hold each value for `run` frames (a held sound)."""
    words = rng.integers(0, 2**32, -(-frames // run), dtype=np.uint64).astype(np.uint32)
    return np.repeat(words, run)[:frames]


def test_effective_bits_count_runs_not_repeats() -> None:
    """Independent bits count about fully; the same bits held for 25 frames count about as
    their runs do, and the count is the same whichever print is a."""
    rng = np.random.default_rng(11)
    full = np.full(200, 0xFFFFFFFF, dtype=np.uint32)
    a = Fingerprint(rng.integers(0, 2**32, 200, dtype=np.uint64).astype(np.uint32), full)
    b = Fingerprint(rng.integers(0, 2**32, 200, dtype=np.uint64).astype(np.uint32), full.copy())
    independent = effective_bits(a, b, 0)
    assert 0.8 * 6_400 < independent < 1.2 * 6_400
    c = Fingerprint(_steady(rng, 200, 25), full.copy())
    d = Fingerprint(_steady(rng, 200, 25), full.copy())
    held = effective_bits(c, d, 0)
    assert held < 0.1 * 6_400
    assert held == effective_bits(d, c, 0)
    assert effective_bits(a, b, 10) < independent  # fewer frames overlap
    assert effective_bits(a, b, 200) == 0.0  # no overlap at all


def test_a_held_sound_agreeing_over_many_bits_is_not_a_match() -> None:
    """0.56 s of one held spectral shape, 8 reliable bits a frame, agreeing on 96 % of 560
    bits (the shape of a measured false match between two strangers) is rejected; the same
    error rate over the same bits of changing shapes, as in a real copy, is a match."""
    rng = np.random.default_rng(12)
    frames = 70
    mask = np.full(frames, 0x000000FF, dtype=np.uint32)  # 8 reliable bits a frame
    one_bit = np.zeros(frames, dtype=np.uint32)
    one_bit[:21] = 1  # one bit differs in 21 frames: 21 errors in 560 bits

    held = np.full(frames, rng.integers(0, 2**32, dtype=np.uint64), dtype=np.uint32)
    a, b = Fingerprint(held, mask), Fingerprint(held ^ one_bit, mask.copy())
    steady = best_offset(a, b, range(0, 1))
    assert steady is not None
    assert (steady.bits, steady.ber) == (560, 0.0375)
    assert steady.effective_bits < 20
    assert not DEFAULT_MATCH.accepts(steady)

    changing = rng.integers(0, 2**32, frames, dtype=np.uint64).astype(np.uint32)
    c, d = Fingerprint(changing, mask.copy()), Fingerprint(changing ^ one_bit, mask.copy())
    copy = best_offset(c, d, range(0, 1))
    assert copy is not None
    assert (copy.bits, copy.ber) == (560, 0.0375)
    assert DEFAULT_MATCH.accepts(copy)


def test_fine_check_prefers_strong_long_alignment_over_a_perfect_sliver() -> None:
    """The fine check keeps the offset with the strongest agreement, not a few-bit edge offset
    whose raw error rate is lower."""
    rng = np.random.default_rng(5)
    n = 100
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    flips = np.zeros(n, dtype=np.uint32)
    for t in range(n):  # 4 of 32 bits wrong per frame: BER 0.125 at the true offset
        for bit in rng.choice(32, 4, replace=False):
            flips[t] |= np.uint32(1 << int(bit))
    copy = bits ^ flips
    copy[90:] = bits[:10]  # at offset 90, b's last frames equal a's first ones exactly
    full = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    a, b = Fingerprint(bits, full), Fingerprint(copy, full.copy())
    rule = MatchParams(ber_limit=0.29, ber_slack=4.8, min_bits=300)
    m = best_offset(a, b, range(0, 91), rule)
    assert m is not None
    assert (m.offset, m.bits) == (0, 32 * n)
    assert rule.accepts(m)
    sliver = best_offset(a, b, range(90, 91), rule)
    assert sliver is not None
    assert (sliver.ber, sliver.bits) == (0.0, 320)
