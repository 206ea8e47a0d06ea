"""The print index and the in-process fleet window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from unit.broadcast.broadcast_synth import hear, programme

from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.broadcast.match import MatchParams, PrintIndex, anchor, best_offset
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


def test_threshold_tightens_as_fewer_bits_are_compared() -> None:
    """A short comparison must agree more closely than a long one; under the minimum nothing matches."""
    rule = MatchParams(ber_limit=0.3, ber_slack=5.0, min_bits=300)
    assert rule.max_ber(400) == 0.3 - 5.0 / 20.0
    assert rule.max_ber(400) < rule.max_ber(1_000) < rule.max_ber(10_000) < 0.3
    assert rule.accepts(0.1, 2_500)  # threshold 0.2
    assert not rule.accepts(0.1, 400)  # threshold 0.05
    assert not rule.accepts(0.0, 299)


def test_fine_check_prefers_strong_long_alignment_over_a_perfect_sliver() -> None:
    """The fine check keeps the offset furthest under the threshold, not a few-bit edge offset
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
    assert rule.accepts(m.ber, m.bits)
    sliver = best_offset(a, b, range(90, 91), rule)
    assert sliver is not None
    assert (sliver.ber, sliver.bits) == (0.0, 320)
