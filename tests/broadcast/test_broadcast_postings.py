"""The inverted-index window, with postings in process and in Redis: the same tests for both."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from unit.broadcast.broadcast_synth import hear, programme

from purchase_guard.broadcast.denylist import Denylist, MemoryClipStore
from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.broadcast.guard import BroadcastGuard
from purchase_guard.broadcast.index import (
    DEFAULT_KEYS,
    IndexedWindow,
    MemoryPostings,
    PostingStore,
    query_keys,
    stored_keys,
)
from purchase_guard.broadcast.match import anchor
from purchase_guard.broadcast.postings_redis import RedisPostings
from purchase_guard.broadcast.window import WindowEntry, trim_for_window
from purchase_guard.clock import SequentialIds
from purchase_guard.domain import ReasonCode
from purchase_guard.errors import Unavailable

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "redis"])
def postings(request: pytest.FixtureRequest) -> Iterator[PostingStore]:
    """Each posting store in turn; Redis through the suite's shared fixture (fails, not skips,
    under PURCHASE_GUARD_REQUIRE_SERVICES=1)."""
    if request.param == "memory":
        yield MemoryPostings()
        return
    client, prefix = request.getfixturevalue("bc_redis")
    yield RedisPostings(client, prefix, timedelta(minutes=10))


def entry(n: int, hh: str, fp: Fingerprint, at: datetime, source: str | None = None) -> WindowEntry:
    return WindowEntry(f"e{n}", hh, "dev", f"dec{n}", at, fp, source or f"src{n}")


def test_query_keys_include_the_stored_keys_of_the_same_print() -> None:
    """A print's own stored keys are among the keys its query looks up (no flips needed)."""
    fp, start = trim_for_window(fingerprint(hear(programme(40), seed=1))) or (None, 0)
    assert fp is not None
    stored, frames = stored_keys(fp)
    looked, _ = query_keys(fp, start)
    in_query = frames[(frames >= start) & (frames < start + 384)]
    assert in_query.size > 50
    assert set(stored[(frames >= start) & (frames < start + 384)].tolist()) <= set(looked.tolist())


def test_a_copy_is_found_among_unrelated_prints(postings: PostingStore) -> None:
    """Through the index: a copy heard in another room is found, at the right offset, among
    200 unrelated prints, and none of those is returned."""
    window = IndexedWindow(postings)
    rng = np.random.default_rng(0)
    base = fingerprint(hear(programme(41), seed=1))
    for k in range(200):
        key = np.uint32(rng.integers(1, 2**32))
        window.add(entry(k, f"hh{k}", Fingerprint(base.bits ^ key, base.mask, base.hop_s), T0))
    window.add(entry(500, "hh500", fingerprint(hear(programme(41), seed=2)), T0))
    query = fingerprint(hear(programme(41), seed=3))
    found = window.match_and_add(entry(501, "hh501", query, T0 + timedelta(seconds=1)))
    assert [m.entry.entry_id for m in found] == ["e500"]
    assert found[0].entry.source == "src500"  # the source survives storage


def test_entries_outside_the_search_span_are_not_read(postings: PostingStore) -> None:
    """A copy added 2 minutes before the query is outside the 30 s span: not matched."""
    window = IndexedWindow(postings, search_span=timedelta(seconds=30))
    window.add(entry(1, "hh1", fingerprint(hear(programme(42), seed=1)), T0))
    late = window.match_and_add(
        entry(2, "hh2", fingerprint(hear(programme(42), seed=2)), T0 + timedelta(minutes=2))
    )
    assert late == []
    soon = window.match_and_add(
        entry(3, "hh3", fingerprint(hear(programme(42), seed=3)), T0 + timedelta(minutes=2, seconds=5))
    )
    assert [m.entry.entry_id for m in soon] == ["e2"]


def test_a_broadcast_cluster_forms_through_the_index(postings: PostingStore) -> None:
    """The guard on the indexed window: the third household's copy is BROADCAST_MATCH."""
    guard = BroadcastGuard(IndexedWindow(postings), Denylist(MemoryClipStore()), SequentialIds())
    prog = programme(43)
    results = [
        guard.check(
            f"hh{k}", "d", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k), caller_id="backend"
        )
        for k in range(3)
    ]
    assert [[r.code for r in c.reasons] for c in results] == [[], [], [ReasonCode.BROADCAST_MATCH]]
    assert set(results[2].cluster_decisions) == {("hh0", "dec0"), ("hh1", "dec1")}


def test_buckets_expire_with_the_window() -> None:
    """In process, buckets older than the window are dropped when a later entry arrives."""
    postings = MemoryPostings()
    window = IndexedWindow(postings, window=timedelta(minutes=2), search_span=timedelta(seconds=30))
    window.match_and_add(entry(1, "hh1", fingerprint(hear(programme(44), seed=1)), T0))
    assert len(postings) == 1
    window.match_and_add(entry(2, "hh2", fingerprint(hear(programme(45), seed=1)), T0 + timedelta(minutes=5)))
    assert len(postings) == 1


def test_redis_keys_carry_hash_tags_and_expire(bc_redis: tuple[Any, str]) -> None:
    """Every Redis key has a hash tag (one slot per bucket and shard) and a TTL no longer than
    the window plus one bucket."""
    client, prefix = bc_redis
    window = IndexedWindow(RedisPostings(client, prefix, timedelta(minutes=10)))
    window.match_and_add(entry(1, "hh1", fingerprint(hear(programme(46), seed=1)), T0))
    keys = [k.decode() for k in client.scan_iter(match=prefix + "*")]
    assert len(keys) > 20
    assert all("{" in k[len(prefix) :] and "}" in k for k in keys)
    ttls = [client.ttl(k) for k in keys if not k.endswith("{seq}")]
    assert all(0 < t <= 600 + DEFAULT_KEYS.bucket_seconds + 1 for t in ttls)


def test_redis_failure_is_unavailable() -> None:
    """A Redis that cannot be reached raises Unavailable (the pipeline then fails closed)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    window = IndexedWindow(RedisPostings(client, "x"))
    fp = fingerprint(hear(programme(47), seed=1))
    assert anchor(fp) is not None
    with pytest.raises(Unavailable):
        window.match_and_add(entry(1, "hh1", fp, T0))
