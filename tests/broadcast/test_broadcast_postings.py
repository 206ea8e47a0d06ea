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
    IndexedWindow,
    KeyParams,
    MemoryPostings,
    PostingStore,
    Segment,
    query_keys,
    query_lookups,
    stored_keys,
    vote,
)
from purchase_guard.broadcast.match import anchor
from purchase_guard.broadcast.postings_redis import EPOCH_SECONDS, RedisPostings
from purchase_guard.broadcast.window import MemoryWindow, WindowEntry, trim_for_window
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


@pytest.mark.parametrize(("max_flips", "stride"), [(0, 1), (1, 1), (2, 1), (2, 2), (2, 4)])
def test_compiled_flip_variants_equal_the_numpy_reference(max_flips: int, stride: int) -> None:
    """The compiled variant builder looks up exactly the keys, frames and order of the numpy
    passes it replaced, for each number of flips and two-flip stride."""
    fp, start = trim_for_window(fingerprint(hear(programme(40), seed=1))) or (None, 0)
    assert fp is not None
    params = KeyParams(max_flips=max_flips, flip2_stride=stride)
    fast = query_lookups(fp, start, params)
    slow = query_lookups(fp, start, params, compiled=False)
    assert fast[0].size > 100
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)


def test_query_keys_include_the_stored_keys_of_the_same_print() -> None:
    """A print's own stored keys are among the keys its query looks up (no flips needed), and
    both count frames from the print's first voiced frame."""
    fp, start = trim_for_window(fingerprint(hear(programme(40), seed=1))) or (None, 0)
    assert fp is not None
    stored, frames = stored_keys(fp)
    looked, looked_frames = query_keys(fp, start)
    assert frames.min() == 0
    assert looked_frames.min() == 0
    in_query = frames < 384
    assert in_query.sum() > 50
    assert set(stored[in_query].tolist()) <= set(looked.tolist())


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


def _busy(window: Any, n: int, at: datetime, seed: int = 0) -> None:
    """`n` unrelated prints (bit-scrambled copies of one print) arriving at `at`."""
    rng = np.random.default_rng(seed)
    base = fingerprint(hear(programme(60), seed=9))
    for k in range(n):
        key = np.uint32(rng.integers(1, 2**32))
        window.add(entry(1000 + k, f"busy{k}", Fingerprint(base.bits ^ key, base.mask, base.hop_s), at))


def test_with_a_cap_only_the_newest_entries_count(postings: PostingStore) -> None:
    """The span's cap: a copy 6 s before the query, within the 30 s spread, is not counted
    once 150 newer entries (more than the cap of 100) arrived after it; with the same traffic
    and no cap, it is."""
    for cap, expected in ((100, []), (0, ["e1"])):
        window = IndexedWindow(postings, search_span=timedelta(seconds=30), max_in_span=cap)
        base = T0 + timedelta(hours=1 + cap)  # each pass in its own buckets of the shared store
        window.add(entry(1, "hh1", fingerprint(hear(programme(61), seed=1)), base))
        _busy(window, 150, base + timedelta(seconds=4))
        query = entry(2, "hh2", fingerprint(hear(programme(61), seed=2)), base + timedelta(seconds=6))
        assert [m.entry.entry_id for m in window.match(query)] == expected


def test_with_a_cap_a_copy_among_the_newest_is_found(postings: PostingStore) -> None:
    """Under the cap nothing changes: a copy 2 s before the query is found with 50 other
    entries newer than it and a cap of 100."""
    window = IndexedWindow(postings, search_span=timedelta(seconds=30), max_in_span=100)
    window.add(entry(1, "hh1", fingerprint(hear(programme(62), seed=1)), T0))
    _busy(window, 50, T0 + timedelta(seconds=1))
    query = entry(2, "hh2", fingerprint(hear(programme(62), seed=2)), T0 + timedelta(seconds=2))
    assert [m.entry.entry_id for m in window.match(query)] == ["e1"]


def test_with_a_cap_a_replica_holds_about_the_cap() -> None:
    """In process, expiry drops the buckets beyond the cap: after 600 entries in each of ten
    2 s buckets (too many to merge), a replica with a cap of 900 holds the newest two buckets
    (1,200), and one without a cap all ten, which are within the 30 s spread."""
    for cap, held in ((900, 1200), (0, 6000)):
        postings = MemoryPostings()
        window = IndexedWindow(postings, search_span=timedelta(seconds=30), max_in_span=cap)
        for b in range(10):
            _busy(window, 600, T0 + timedelta(seconds=2 * b), seed=b)
        window.expire(T0 + timedelta(seconds=19))
        assert len(postings) == held


def test_merged_quiet_buckets_still_keep_to_the_span() -> None:
    """Quiet traffic merges closed buckets into one group; a copy inside it is still found 25 s
    later, and no longer 40 s later (older than the 30 s spread) though its group is held."""
    window = IndexedWindow(MemoryPostings(), search_span=timedelta(seconds=30))
    window.add(entry(1, "hh1", fingerprint(hear(programme(64), seed=1)), T0))
    for k in range(10):
        _busy(window, 3, T0 + timedelta(seconds=2 * k + 1), seed=k)
    soon = entry(2, "hh2", fingerprint(hear(programme(64), seed=2)), T0 + timedelta(seconds=25))
    assert [m.entry.entry_id for m in window.match(soon)] == ["e1"]
    late = entry(3, "hh3", fingerprint(hear(programme(64), seed=3)), T0 + timedelta(seconds=40))
    assert window.match(late) == []


def test_the_scanning_window_applies_the_same_cap() -> None:
    """The scanning window (the default search) counts only the newest `max_in_span` entries
    too: the copy 6 s earlier is not matched behind 150 newer entries with a cap of 100, and is
    without the cap."""
    for cap, expected in ((100, []), (0, ["e1"])):
        window = MemoryWindow(max_in_span=cap)
        window.add(entry(1, "hh1", fingerprint(hear(programme(63), seed=1)), T0))
        _busy(window, 150, T0 + timedelta(seconds=4))
        query = entry(2, "hh2", fingerprint(hear(programme(63), seed=2)), T0 + timedelta(seconds=6))
        assert [m.entry.entry_id for m in window.match_and_add(query)] == expected


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
    """Every Redis key has a hash tag (one slot per epoch and shard) and a TTL no longer than
    the window plus one epoch (60 s of buckets)."""
    client, prefix = bc_redis
    store = RedisPostings(client, prefix, timedelta(minutes=10))
    window = IndexedWindow(store)
    window.match_and_add(entry(1, "hh1", fingerprint(hear(programme(46), seed=1)), T0))
    keys = [k.decode() for k in client.scan_iter(match=prefix + "*")]
    assert len(keys) > 20
    assert all("{" in k[len(prefix) :] and "}" in k for k in keys)
    ttls = [client.ttl(k) for k in keys if not k.endswith("{seq}")]
    assert all(0 < t <= store.ttl_seconds for t in ttls)
    assert store.ttl_seconds <= 600 + EPOCH_SECONDS + 1


def test_redis_failure_is_unavailable() -> None:
    """A Redis that cannot be reached raises Unavailable (the pipeline then fails closed)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    window = IndexedWindow(RedisPostings(client, "x"))
    fp = fingerprint(hear(programme(47), seed=1))
    assert anchor(fp) is not None
    with pytest.raises(Unavailable):
        window.match_and_add(entry(1, "hh1", fp, T0))


def _segment(entries: list[int], frames: list[int], keys: list[int], looked: list[int]) -> Segment:
    """A one-run segment holding (key, entry, frame) postings, looked up for `looked` keys."""
    order = np.argsort(np.asarray(keys), kind="stable")
    sorted_keys = np.asarray(keys, dtype=np.uint32)[order]
    q = np.asarray(looked, dtype=np.uint32)
    return Segment(
        np.asarray(entries, dtype=np.uint32)[order],
        np.asarray(frames, dtype=np.int16)[order],
        np.searchsorted(sorted_keys, q, "left").astype(np.int64),
        np.searchsorted(sorted_keys, q, "right").astype(np.int64),
        min(entries),
        max(entries),
    )


def test_votes_count_distinct_query_frames_at_one_offset() -> None:
    """Entry 7 is hit by 4 query frames at offset +10 (one of them through two keys, counted
    once): 4 votes at that offset's bin. Entry 8's 6 hits are spread over offsets 100 frames
    apart: never 4 in one bin pair, so it is no candidate."""
    params = KeyParams(min_votes=4)
    keys = [1, 2, 3, 4, 5, 11, 12, 13, 14, 15, 16]
    entries = [7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8]
    # query frames: key k is looked up for frame 10 * k (keys 4 and 5 for the same frame, 40)
    qframes = {1: 10, 2: 20, 3: 30, 4: 40, 5: 40, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0, 16: 0}
    frames = [qframes[k] + 10 for k in keys[:5]] + [-120, -20, 80, 180, 280, 380]
    looked = sorted(qframes)
    seg = _segment(entries, frames, keys, looked)
    voted = vote([seg], np.asarray([qframes[k] for k in looked], dtype=np.int64), params)
    assert [(e, v) for e, _, v in voted] == [(7, 4)]
    shift = voted[0][1]
    assert shift <= 10 < shift + 2 * params.bin_frames


def test_offsets_beyond_the_search_reach_get_no_votes() -> None:
    """Hits agreeing on an offset beyond `max_shift` (as far as the scanning search reaches)
    are not counted, however many."""
    params = KeyParams(min_votes=4)
    far = params.max_shift + 3 * params.bin_frames
    keys = list(range(1, 9))
    seg = _segment([3] * 8, [10 * k + far for k in keys], keys, keys)
    assert vote([seg], np.asarray([10 * k for k in keys], dtype=np.int64), params) == []
    near = _segment([3] * 8, [10 * k + 40 for k in keys], keys, keys)
    assert [
        (e, v) for e, _, v in vote([near], np.asarray([10 * k for k in keys], dtype=np.int64), params)
    ] == [(3, 8)]


def test_large_runs_look_up_through_the_direct_table_with_the_same_result() -> None:
    """Once merged runs are large enough for a direct key table, the copy is found as before,
    and the table is in use (the query path without binary searches)."""
    postings = MemoryPostings()
    window = IndexedWindow(postings)
    rng = np.random.default_rng(1)
    base = fingerprint(hear(programme(48), seed=1))
    for k in range(300):
        key = np.uint32(rng.integers(1, 2**32))
        window.add(entry(k, f"hh{k}", Fingerprint(base.bits ^ key, base.mask, base.hop_s), T0))
    window.add(entry(900, "hh900", fingerprint(hear(programme(48), seed=2)), T0))
    assert postings.table_bytes() > 0
    found = window.match(entry(901, "hh901", fingerprint(hear(programme(48), seed=3)), T0))
    assert [m.entry.entry_id for m in found] == ["e900"]


def test_query_runs_look_up_a_repeated_key_once_with_its_length_as_weight() -> None:
    """With query_runs, frames in a row looking up one key are one lookup at the first frame,
    weighted by their count; without, every frame is a lookup of weight 1. The lookups are
    sorted by key either way, and the runs stand for exactly the frames they replace."""
    fp, start = trim_for_window(fingerprint(hear(programme(49), seed=1))) or (None, 0)
    assert fp is not None
    keys, frames, weights = query_lookups(fp, start)
    assert (weights == 1).all()
    assert (np.diff(keys.astype(np.int64)) >= 0).all()
    run_keys, run_frames, run_weights = query_lookups(fp, start, KeyParams(query_runs=True))
    assert run_keys.size < keys.size
    assert int(run_weights.sum()) == keys.size
    assert (run_weights > 1).any()
    assert (np.diff(run_keys.astype(np.int64)) >= 0).all()
    # Each run's first frame is one of the frames looking up its key.
    assert set(zip(run_keys.tolist(), run_frames.tolist(), strict=True)) <= set(
        zip(keys.tolist(), frames.tolist(), strict=True)
    )


def test_a_weighted_lookup_votes_its_weight() -> None:
    """One lookup standing for 5 query frames gives its entry 5 votes at that offset."""
    seg = _segment([4], [30], [9], [9])
    voted = vote(
        [seg], np.asarray([20], dtype=np.int64), KeyParams(min_votes=4), np.asarray([5], dtype=np.int64)
    )
    assert [(e, v) for e, _, v in voted] == [(4, 5)]


def test_a_lookup_reads_only_the_buckets_asked_for(postings: PostingStore) -> None:
    """Two entries with the same keys in buckets 3 apart (one Redis epoch key holds both):
    a lookup of the later bucket returns only the later entry's postings, a lookup of both
    buckets both entries', and a lookup of an empty bucket nothing."""
    fp, _ = trim_for_window(fingerprint(hear(programme(50), seed=1))) or (None, 0)
    assert fp is not None
    keys, frames = stored_keys(fp)
    first = 6 * 400_000  # the first bucket of an epoch of six
    postings.add(first, entry(1, "hh1", fp, T0), keys, frames)
    postings.add(first + 3, entry(2, "hh2", fp, T0 + timedelta(seconds=30)), keys, frames)
    looked = np.unique(keys)

    def found(buckets: list[int]) -> set[int]:
        segs = postings.lookup(buckets, looked)
        return {int(e) for s in segs for i in range(looked.size) for e in s.entries[s.lo[i] : s.hi[i]]}

    later = found([first + 3])
    both = found([first, first + 3])
    assert len(later) == 1
    assert len(both) == 2
    assert later == {max(both)}
    assert found([first + 4]) == set()


def _voted_ids(
    store: PostingStore, buckets: list[int], fp: Fingerprint, start: int
) -> list[tuple[str, int, int]]:
    """The store's votes for a query print, as (entry id, offset, votes), best first."""
    keys, frames, weights = query_lookups(fp, start)
    voted = vote(store.lookup(buckets, keys), frames, KeyParams(), weights)
    found = store.entries([e for e, _, _ in voted])
    return [(found[e].entry_id, shift, votes) for e, shift, votes in voted]


def _fill_both(stores: list[PostingStore]) -> tuple[list[int], list[tuple[Fingerprint, int]]]:
    """The same entries, in the same buckets, into every store: four homes' copies of three
    programmes and 40 unrelated prints, over 8 buckets of 2 s straddling a 60 s epoch's end
    (so a query reads two Redis epochs). Returns the buckets and queries (other homes' copies)."""
    first = 30 * 400_000 - 4  # 4 buckets before an epoch of 30 buckets starts
    buckets = list(range(first, first + 8))
    rng = np.random.default_rng(5)
    base = fingerprint(hear(programme(70), seed=9))
    prints: list[Fingerprint] = [
        fingerprint(hear(programme(71 + p), seed=h)) for p in range(3) for h in range(4)
    ]
    prints += [
        Fingerprint(base.bits ^ np.uint32(rng.integers(1, 2**32)), base.mask, base.hop_s) for _ in range(40)
    ]
    for k, fp in enumerate(prints):
        trimmed = trim_for_window(fp)
        assert trimmed is not None
        keys, frames = stored_keys(trimmed[0])
        at = T0 + timedelta(seconds=k)
        for store in stores:
            store.add(buckets[k % 8], entry(k, f"hh{k}", trimmed[0], at), keys, frames)
    queries = []
    for p in range(3):
        trimmed = trim_for_window(fingerprint(hear(programme(71 + p), seed=20)))
        assert trimmed is not None
        queries.append(trimmed)
    return buckets, queries


def test_redis_reads_vote_as_the_in_process_postings(bc_redis: tuple[Any, str]) -> None:
    """On the same entries, the Redis store's reads (the bitmap of written keys, and the
    plain MGET of every looked-up key) give exactly the in-process store's votes: the same
    entries, offsets and counts, in the same order, across two epochs."""
    client, prefix = bc_redis
    memory: MemoryPostings[WindowEntry] = MemoryPostings()
    present = RedisPostings(client, prefix, timedelta(minutes=10))
    mget = RedisPostings(client, prefix, timedelta(minutes=10), reads="mget")
    buckets, queries = _fill_both([memory, present])
    for fp, start in queries:
        expected = _voted_ids(memory, buckets, fp, start)
        assert len(expected) >= 4  # the programme's four copies, at least
        assert _voted_ids(present, buckets, fp, start) == expected
        assert _voted_ids(mget, buckets, fp, start) == expected


def test_redis_shards_without_a_bitmap_are_read_whole(bc_redis: tuple[Any, str]) -> None:
    """Postings written before the bitmaps of written keys (none beside them) are still all
    read: with every bitmap deleted, the votes are the in-process store's."""
    client, prefix = bc_redis
    memory: MemoryPostings[WindowEntry] = MemoryPostings()
    store = RedisPostings(client, prefix, timedelta(minutes=10))
    buckets, queries = _fill_both([memory, store])
    bitmaps = list(client.scan_iter(match=prefix + "*:present"))
    assert len(bitmaps) == 2 * 16  # two epochs of 16 shards
    client.delete(*bitmaps)
    fp, start = queries[0]
    expected = _voted_ids(memory, buckets, fp, start)
    assert expected
    assert _voted_ids(store, buckets, fp, start) == expected


def test_redis_error_during_a_lookup_is_unavailable(bc_redis: tuple[Any, str]) -> None:
    """An error reply in the lookup's own reads (here a bitmap key of the wrong type) raises
    Unavailable, so the check fails closed."""
    client, prefix = bc_redis
    store = RedisPostings(client, prefix, timedelta(minutes=10))
    buckets, queries = _fill_both([store])
    (bitmap, *_) = list(client.scan_iter(match=prefix + "*:present"))
    client.delete(bitmap)
    client.rpush(bitmap, b"not a bitmap")
    keys, _, _ = query_lookups(*queries[0])
    with pytest.raises(Unavailable):
        store.lookup(buckets, keys)
