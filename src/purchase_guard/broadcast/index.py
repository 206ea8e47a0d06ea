"""An inverted index of sub-print keys for the fleet window: a query costs lookups, not a scan.

Every windowed print is stored as postings: for each voiced frame and each key table, the
frame's key (16 of its 32 sub-print bits, `KeyParams.tables`) -> (entry number, frame). A
query looks up the keys of its first 3.07 s, and of each key also the variants with one or
two of its *unreliable* bits flipped (the bits the print's own mask says noise decides:
Haitsma-Kalker's soft bits), then votes: a true copy's hits agree on one time offset, chance
hits spread over all of them. The few entries with most votes in one offset bin go to the
same exact fine check the scanning index uses (`match.best_offset`, `MatchParams.accepts`).

Why flips: at 5 dB two rooms' copies share a median of 6 exact 16-bit half-prints per 3 s
(docs/broadcast.md), too few to find every pair; most disagreeing bits are the unreliable
ones, and flipping them recovers the missing hits (measured by `make bench-fleet`).

Why time buckets: postings live in buckets of `bucket_seconds` by arrival; a query reads
only the buckets within the cluster rule's spread (guard.ClusterRule.max_spread), because
no older entry can count for a verdict. Expiry drops whole buckets, as soon as they are
older than the spread, so a replica's memory follows the traffic of the spread, not of the
window.

Why a cap on the span (`max_in_span`): a query meets two chance matches with probability
about (n p)^2 / 2 for n entries in its span, so false verdicts grow with the square of the
traffic, and so do a query's postings and a replica's memory. Copies of one broadcast arrive
within seconds of each other, and when the fleet is busy the last `max_in_span` entries
span those seconds. With the cap a query reads the newest buckets back from its own only
until they hold `max_in_span` entries (or the spread is reached), and counts no match older
than that horizon: n, the postings read and what a replica holds stay bounded whatever the
traffic (docs/broadcast.md "Fleet scale").

The storage of postings is a small protocol (`PostingStore`) with two implementations: in
process (`MemoryPostings`, sorted runs merged as they grow) and in Redis
(`postings_redis.RedisPostings`, keys hash-tagged by epoch and shard for Redis Cluster). The
voting and the fine check are written once, here (`IndexedWindow`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from purchase_guard.broadcast._kernels import flip_variants, key_ranges, vote_postings
from purchase_guard.broadcast.fingerprint import Fingerprint
from purchase_guard.broadcast.match import (
    DEFAULT_MATCH,
    MatchParams,
    anchor,
    best_offset,
)
from purchase_guard.broadcast.window import WindowEntry, WindowMatch, trim_for_window

U32Array = np.ndarray[Any, np.dtype[np.uint32]]
I16Array = np.ndarray[Any, np.dtype[np.int16]]
I64Array = np.ndarray[Any, np.dtype[np.int64]]

E = TypeVar("E")  # what a posting store keeps per entry: a window entry, a denylist segment

QUERY_FRAMES = 384  # the query's first 3.07 s from its anchor, as the scanning search reads


def _tables() -> tuple[tuple[int, ...], ...]:
    # Interleaved halves: neighbouring bands' bits are correlated (they share a band), so
    # each table takes every other bit and the two tables' errors are closer to independent.
    return (tuple(range(0, 32, 2)), tuple(range(1, 32, 2)))


@dataclass(frozen=True, slots=True)
class KeyParams:
    tables: tuple[tuple[int, ...], ...] = field(default_factory=_tables)
    max_flips: int = 2  # unreliable bits flipped per looked-up key variant
    bin_frames: int = 8  # offset votes are counted in bins of this many frames (64 ms)
    min_votes: int = 4  # distinct query frames voting for one entry and offset bin
    # Fine-checked per query, most votes first. With the span's cap full (5,000 entries) chance
    # votes compete with a copy's for these: on the tuning split at 100,000 a query found
    # 92.8 % of its copies with 32 and 93.1 % with 48, 64 or 96; the smallest of those is kept
    # (`scripts/bench_fleet.py --split tune --only fleet --sizes 100000 --max-in-span 5000
    # --fleet-keys max_candidates=32 --fleet-keys max_candidates=48 ...`, docs/broadcast.md).
    max_candidates: int = 48
    # A run of query frames looking up the same key (the print changes slowly) is looked up
    # once, at its first frame, and votes with its length as weight.
    query_runs: bool = False
    # Two-flip variants are most of the lookups; looking them up only at every n-th
    # query frame saves time but loses copies (measured by scripts/fleet_key_variants.py, not
    # adopted: docs/broadcast.md "Fleet scale"). 1: at every frame.
    flip2_stride: int = 1
    # Offsets voted for, in frames (1.28 s), relative to the two prints' first voiced frames:
    # chance hits at other offsets are not counted at all. On the tuning split every true
    # pair's anchor offset was within 157 frames (99 % within 111); the scanning search
    # reaches 136 (scripts/bench_fleet.py material, docs/broadcast.md "Fleet scale").
    max_shift: int = 160
    # A query reads whole buckets: at most the span plus one bucket of entries. Short
    # buckets let the span's cap (IndexedWindow max_in_span) cut close to its count at
    # peak traffic; a query at low traffic reads more of them (measured by make bench-fleet).
    bucket_seconds: float = 2.0
    # A key held by more postings than this in one run (silence-like shapes every print
    # has) says nothing about which entry is a copy: it is skipped at query time.
    stop_postings: int = 20_000

    def __post_init__(self) -> None:
        if any(len(t) > 24 for t in self.tables) or len(self.tables) > 255:
            raise ValueError("at most 255 tables of at most 24 bits")
        if self.flip2_stride < 1:
            raise ValueError("flip2_stride must be at least 1")
        if self.bin_frames < 1 or self.bin_frames & (self.bin_frames - 1):
            raise ValueError("bin_frames must be a power of two")

    @property
    def bin_shift(self) -> int:
        return self.bin_frames.bit_length() - 1

    @property
    def shift_lo(self) -> int:
        """The lowest voted offset, on the bin grid (bins are counted from here)."""
        return -self.bin_frames * (-(-self.max_shift // self.bin_frames))

    @property
    def n_bins(self) -> int:
        return 2 * (-self.shift_lo // self.bin_frames) + 1


DEFAULT_KEYS = KeyParams()


def _gather(words: U32Array, bits: Sequence[int]) -> U32Array:
    out = np.zeros(words.shape, dtype=np.uint32)
    for i, b in enumerate(bits):
        out |= ((words >> np.uint32(b)) & np.uint32(1)) << np.uint32(i)
    return out


def stored_keys(fp: Fingerprint, params: KeyParams = DEFAULT_KEYS) -> tuple[U32Array, I64Array]:
    """(keys, frames) of a windowed print: table number in the high bits, one key per voiced
    frame and table; a run of frames with the same key is stored once (its first frame),
    since the print changes slowly and the repeats would only add postings. Frames count
    from the print's first voiced frame (its anchor), so a vote's offset says how far the two
    prints' anchors are misaligned, which the search bounds (`KeyParams.max_shift`)."""
    frames = np.flatnonzero(fp.mask)
    if frames.size == 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    keys: list[U32Array] = []
    where: list[I64Array] = []
    for t, bits in enumerate(params.tables):
        k = _gather(fp.bits[frames], bits)
        keep = np.ones(len(frames), dtype=bool)
        keep[1:] = (k[1:] != k[:-1]) | (frames[1:] != frames[:-1] + 1)
        keys.append(k[keep] | np.uint32(t << 24))
        where.append((frames[keep] - frames[0]).astype(np.int64))
    return np.concatenate(keys), np.concatenate(where)


def _flip_sets(n: int, max_flips: int) -> list[tuple[int, ...]]:
    return [c for r in range(max_flips + 1) for c in itertools.combinations(range(n), r)]


def query_keys(fp: Fingerprint, start: int, params: KeyParams = DEFAULT_KEYS) -> tuple[U32Array, I64Array]:
    """(keys, frames from `start`) a query looks up: every voiced frame of its first 3.07 s,
    each key with its variants of up to `max_flips` unreliable bits flipped."""
    keys, frames, _ = query_lookups(fp, start, params)
    return keys, frames


def _flip_variants_numpy(
    k: U32Array, reliable: U32Array, rel_frames: I64Array, n_bits: int, params: KeyParams
) -> tuple[U32Array, I64Array]:
    """`_kernels.flip_variants` for any number of flips (one numpy pass per flip set)."""
    keys: list[U32Array] = []
    where: list[I64Array] = []
    for flips in _flip_sets(n_bits, params.max_flips):
        sel = np.ones(len(k), dtype=bool)
        if len(flips) >= 2 and params.flip2_stride > 1:
            sel &= rel_frames % params.flip2_stride == 0
        pattern = np.uint32(0)
        for b in flips:
            sel &= ((reliable >> np.uint32(b)) & np.uint32(1)) == 0
            pattern |= np.uint32(1 << b)
        keys.append(k[sel] ^ pattern)
        where.append(rel_frames[sel])
    return np.concatenate(keys), np.concatenate(where)


def query_lookups(
    fp: Fingerprint, start: int, params: KeyParams = DEFAULT_KEYS, *, compiled: bool = True
) -> tuple[U32Array, I64Array, I64Array]:
    """(keys, frames from `start`, weights) a query looks up, sorted by key. With
    `query_runs`, consecutive frames looking up the same key are one lookup at the first of
    them, weighted by how many they are; otherwise every weight is 1. The variants are built
    by a compiled loop up to two flips (`compiled=False`: the numpy passes, the reference)."""
    frames = np.arange(start, min(fp.n_frames, start + QUERY_FRAMES))
    frames = frames[fp.mask[frames] != 0]
    rel_frames = (frames - start).astype(np.int64)
    keys: list[U32Array] = []
    where: list[I64Array] = []
    for t, bits in enumerate(params.tables):
        k = _gather(fp.bits[frames], bits) | np.uint32(t << 24)
        reliable = _gather(fp.mask[frames], bits)
        if compiled and params.max_flips <= 2:
            vk, vf = flip_variants(k, reliable, rel_frames, len(bits), params.max_flips, params.flip2_stride)
        else:
            vk, vf = _flip_variants_numpy(k, reliable, rel_frames, len(bits), params)
        keys.append(vk)
        where.append(vf)
    all_keys = np.concatenate(keys)
    all_frames = np.concatenate(where)
    # By key, then frame: one sort of both packed in a word (frames are 0..QUERY_FRAMES).
    order = np.argsort((all_keys.astype(np.uint64) << np.uint64(32)) | all_frames.astype(np.uint64))
    all_keys, all_frames = all_keys[order], all_frames[order]
    if not params.query_runs or all_keys.size == 0:
        return all_keys, all_frames, np.ones(all_keys.size, dtype=np.int64)
    first = np.ones(all_keys.size, dtype=bool)
    first[1:] = (all_keys[1:] != all_keys[:-1]) | (all_frames[1:] != all_frames[:-1] + 1)
    starts = np.flatnonzero(first)
    weights = np.diff(np.append(starts, all_keys.size)).astype(np.int64)
    return all_keys[starts], all_frames[starts], weights


@dataclass(frozen=True, slots=True)
class Segment:
    """Postings a store found for a query's keys, in one run: looked-up key i holds
    entries[lo[i]:hi[i]] (and their frames). Every posting of one entry is in one segment.
    `first_entry` and `last_entry` bound the entry numbers it holds."""

    entries: np.ndarray[Any, np.dtype[np.uint32]]
    frames: I16Array
    lo: I64Array
    hi: I64Array
    first_entry: int
    last_entry: int


class PostingStore(Protocol[E]):
    """Where postings and entries live; `bucket` numbers are arrival time // bucket_seconds."""

    def add(self, bucket: int, entry: E, keys: U32Array, frames: I64Array) -> None: ...

    def lookup(self, buckets: Sequence[int], keys: U32Array) -> list[Segment]:
        """The postings of `keys` in the given buckets, as segments (`Segment`); a store may
        include postings of neighbouring buckets kept together with them (the window keeps
        only matches within its span)."""
        ...

    def entries(self, numbers: Sequence[int]) -> dict[int, E]: ...

    def counts(self, buckets: Sequence[int]) -> list[int]:
        """Entries added in each of `buckets` (0 for a bucket not held)."""
        ...

    def expire(self, oldest_bucket: int) -> None:
        """Drop every bucket before `oldest_bucket`."""
        ...

    def __len__(self) -> int: ...


def vote(
    segments: Sequence[Segment],
    query_frames: I64Array,
    params: KeyParams = DEFAULT_KEYS,
    weights: I64Array | None = None,
) -> list[tuple[int, int, int]]:
    """(entry number, offset in frames between anchors, votes) of the entries most voted for,
    best first (most votes, then the lower entry number).

    A vote is a distinct query frame whose key (or a variant) hit the entry at an offset in
    the bin; a bin also counts the votes of its right neighbour, since an offset near a bin
    edge splits its votes over two; each entry is represented by its best bin. Counted by a
    compiled loop into dense (entry, bin) cells: the hits are never materialised or sorted
    (`_kernels.vote_postings`)."""
    segments = [s for s in segments if s.entries.size]
    if not segments:
        return []
    n_bins = params.n_bins
    # Stable, so keys keep their order within a frame; as int16 (a query's frames are
    # 0..QUERY_FRAMES), numpy sorts by radix.
    small = query_frames.size == 0 or 0 <= int(query_frames.min()) <= int(query_frames.max()) < 1 << 15
    order = np.argsort(query_frames.astype(np.int16) if small else query_frames, kind="stable")
    if weights is None:
        weights = np.ones(query_frames.size, dtype=np.int64)
    widest = max(s.last_entry - s.first_entry + 1 for s in segments)
    cells = np.empty(widest * n_bins, dtype=np.int32)
    found_entry: list[I64Array] = []
    found_bin: list[I64Array] = []
    found_votes: list[I64Array] = []
    for s in segments:
        width = s.last_entry - s.first_entry + 1
        out_entry = np.empty(width, dtype=np.int64)
        out_bin = np.empty(width, dtype=np.int64)
        out_votes = np.empty(width, dtype=np.int64)
        n = vote_postings(
            s.entries,
            s.frames,
            s.lo,
            s.hi,
            query_frames,
            weights,
            order,
            s.first_entry,
            s.last_entry,
            params.shift_lo,
            params.bin_shift,
            n_bins,
            params.stop_postings,
            params.min_votes,
            cells,
            out_entry,
            out_bin,
            out_votes,
        )
        found_entry.append(out_entry[:n])
        found_bin.append(out_bin[:n])
        found_votes.append(out_votes[:n])
    entry = np.concatenate(found_entry)
    votes = np.concatenate(found_votes)
    bins = np.concatenate(found_bin)
    # Most votes first, then the lower entry number.
    top = np.lexsort((entry, -votes))[: params.max_candidates]
    return [
        (int(entry[k]), int(bins[k]) * params.bin_frames + params.shift_lo, int(votes[k]))
        for k in top.tolist()
    ]


class IndexedWindow:
    """A `FleetWindow` over a `PostingStore`: lookups and votes, then the exact fine check.

    `search_span` (the cluster rule's spread) bounds what a query reads and what is kept:
    entries expire with their bucket once it is older than the span (`expire`). With
    `max_in_span` (0: no cap) a query reads back from its own bucket only until the buckets
    read hold that many entries, and matches older than the oldest bucket read do not
    count: the span shrinks as traffic grows."""

    def __init__(
        self,
        postings: PostingStore[WindowEntry],
        window: timedelta = timedelta(minutes=10),
        search_span: timedelta = timedelta(seconds=30),
        params: MatchParams = DEFAULT_MATCH,
        keys: KeyParams = DEFAULT_KEYS,
        max_in_span: int = 0,
    ) -> None:
        if max_in_span < 0:
            raise ValueError("max_in_span must be 0 (no cap) or positive")
        self._postings = postings
        self._window = window
        self._span = min(search_span, window)
        self._params = params
        self._keys = keys
        self._cap = max_in_span
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._postings)

    def _bucket(self, at: datetime) -> int:
        return int(at.timestamp() // self._keys.bucket_seconds)

    def span_buckets(self, at: datetime) -> list[int]:
        """The buckets a query at `at` reads: its own and any later one (in live traffic
        empty or filling), then older ones back to the spread, stopping once the buckets taken
        hold `max_in_span` entries."""
        here = self._bucket(at)
        newer = list(range(here, self._bucket(at + self._span) + 1))
        older = list(range(here - 1, self._bucket(at - self._span) - 1, -1))
        if not self._cap:
            return older[::-1] + newer
        counts = self._postings.counts(newer + older)
        held = sum(counts[: len(newer)])
        taken: list[int] = []
        for bucket, count in zip(older, counts[len(newer) :], strict=True):
            if held >= self._cap:
                break
            taken.append(bucket)
            held += count
        return taken[::-1] + newer

    def horizon(self, at: datetime, buckets: Sequence[int]) -> datetime:
        """The oldest arrival a query at `at` reading `buckets` counts."""
        oldest = datetime.fromtimestamp(buckets[0] * self._keys.bucket_seconds, at.tzinfo)
        return max(at - self._span, oldest)

    def match(self, entry: WindowEntry, buckets: Sequence[int] | None = None) -> list[WindowMatch]:
        """Entries of the span that match `entry`, best first; `buckets`: the span's buckets
        when the caller has them already (`span_buckets`)."""
        trimmed = trim_for_window(entry.fp)
        if trimmed is None:
            return []
        fp, start = trimmed
        keys, frames, weights = query_lookups(fp, start, self._keys)  # sorted: each run read in order
        if buckets is None:
            buckets = self.span_buckets(entry.at)
        voted = vote(self._postings.lookup(buckets, keys), frames, self._keys, weights)
        if not voted:
            return []
        found = self._postings.entries([e for e, _, _ in voted])
        lo, hi = self.horizon(entry.at, buckets), entry.at + self._span
        reach = self._keys.bin_frames + 8  # the bin's width plus the fine check's own reach
        out: list[WindowMatch] = []
        for number, shift, _ in voted:
            cand = found.get(number)
            if cand is None or cand.entry_id == entry.entry_id or not lo <= cand.at <= hi:
                continue
            cand_start = anchor(cand.fp)
            if cand_start is None:
                continue
            offset = shift + cand_start - start  # frames of the two trimmed prints
            fine = best_offset(fp, cand.fp, range(offset - 8, offset + reach + 1), self._params)
            if fine is not None and self._params.accepts(fine):
                out.append(WindowMatch(cand, fine))
        out.sort(key=lambda m: m.match.ber)
        return out

    def add(self, entry: WindowEntry) -> None:
        trimmed = trim_for_window(entry.fp)
        if trimmed is None:
            return
        fp, _ = trimmed
        keys, frames = stored_keys(fp, self._keys)
        self._postings.add(self._bucket(entry.at), entry.with_print(fp), keys, frames)

    def expire(self, now: datetime) -> None:
        """Drop the buckets no query at `now` or later reads: older than the search span, or
        beyond the span's cap (a later query has at least as many newer entries before them).

        Nothing older can count for a verdict, so a replica holds the traffic of the span
        (plus one bucket), and at most about `max_in_span` entries, however long `window` is."""
        self._postings.expire(self.span_buckets(now)[0])

    def match_and_add(self, entry: WindowEntry) -> list[WindowMatch]:
        with self._lock:
            # One read of the bucket counts serves both: what expires and what is searched.
            buckets = self.span_buckets(entry.at)
            self._postings.expire(buckets[0])
            found = self.match(entry, buckets)
            self.add(entry)
            return found


# A run this large gets a direct table from key to its postings (CSR offsets), so a lookup
# is two reads instead of a binary search; smaller runs are searched.
_DIRECT_MIN_POSTINGS = 1 << 15
_DIRECT_MAX_KEYS = 1 << 22


@dataclass
class _Run:
    keys: U32Array
    entries: np.ndarray[Any, np.dtype[np.uint32]]
    frames: I16Array
    first_entry: int
    last_entry: int
    starts: I64Array | None = None  # direct table: postings of dense key d are starts[d]:starts[d + 1]


class _Bucket(Generic[E]):
    """Sorted runs, merged like a binary counter: at most log2(postings) runs to search.
    Holds buckets `first`..`last` (one, or consecutive closed ones merged)."""

    def __init__(self, key_bits: int, tables: int, first: int = 0) -> None:
        self.runs: list[_Run] = []
        self.entries: dict[int, E] = {}
        self._key_bits = key_bits
        self._tables = tables
        self.last = first

    def absorb(self, later: _Bucket[E]) -> None:
        """Take in the next group's postings and buckets, as one run."""
        self.runs.extend(later.runs)
        self.entries.update(later.entries)
        self.last = max(self.last, later.last)
        self.compact()

    def compact(self) -> None:
        """All runs merged into one: a closed bucket is read by every later query of its span,
        and each run costs a pass over the query's keys."""
        if len(self.runs) > 1:
            runs, self.runs = self.runs, []
            self.runs.append(
                self.sorted(
                    _Run(
                        np.concatenate([r.keys for r in runs]),
                        np.concatenate([r.entries for r in runs]),
                        np.concatenate([r.frames for r in runs]),
                        min(r.first_entry for r in runs),
                        max(r.last_entry for r in runs),
                    )
                )
            )

    def add(self, run: _Run) -> None:
        self.runs.append(run)
        while len(self.runs) >= 2 and self.runs[-2].keys.size <= 2 * self.runs[-1].keys.size:
            b = self.runs.pop()
            a = self.runs.pop()
            self.runs.append(self._merge(a, b))

    def _merge(self, a: _Run, b: _Run) -> _Run:
        return self.sorted(
            _Run(
                np.concatenate([a.keys, b.keys]),
                np.concatenate([a.entries, b.entries]),
                np.concatenate([a.frames, b.frames]),
                min(a.first_entry, b.first_entry),
                max(a.last_entry, b.last_entry),
            )
        )

    def sorted(self, unsorted: _Run) -> _Run:
        """The run's postings sorted by key (stable), with a direct table when it is large."""
        order = np.argsort(unsorted.keys, kind="stable")
        keys = unsorted.keys[order]
        run = _Run(
            keys, unsorted.entries[order], unsorted.frames[order], unsorted.first_entry, unsorted.last_entry
        )
        if keys.size >= _DIRECT_MIN_POSTINGS and (self._tables << self._key_bits) <= _DIRECT_MAX_KEYS:
            run.starts = np.searchsorted(keys, _sparse_keys(self._key_bits, self._tables)).astype(np.int64)
        return run


def _sparse_keys(key_bits: int, tables: int) -> U32Array:
    """Every possible key in increasing order, and one past the last (the direct table's
    bounds): table t's keys are t << 24 | k for k < 2**key_bits."""
    k = np.arange(1 << key_bits, dtype=np.uint32)
    every = np.concatenate([k | np.uint32(t << 24) for t in range(tables)])
    return np.append(every, np.uint32(tables << 24))


def _dense(keys: U32Array, key_bits: int) -> I64Array:
    return ((keys >> np.uint32(24)).astype(np.int64) << key_bits) | (keys & np.uint32((1 << key_bits) - 1))


# Closed neighbouring buckets are merged into one group while it holds at most this many
# entries: every run costs a query a pass over its keys, so a quiet fleet's span is a few
# runs, not one per bucket; a busy fleet's buckets stay apart, so the span's cap cuts close.
_GROUP_ENTRIES = 1000


class MemoryPostings(Generic[E]):
    """In-process postings: right for one replica (each replica sees only its own traffic).
    About 10 bytes a posting; not thread-safe (IndexedWindow and the denylist lock).

    Postings live in groups of consecutive buckets (`_buckets`, keyed by a group's first
    bucket): a bucket is its own group while arrivals fill it; once they move on it is
    compacted into one run and merged with the closed group before it while the two hold at
    most `_GROUP_ENTRIES` entries. A lookup reads the groups that overlap the buckets asked
    for, so it may return a few postings of neighbouring buckets; `IndexedWindow` keeps
    only matches within its span."""

    def __init__(self, keys: KeyParams = DEFAULT_KEYS) -> None:
        self._buckets: dict[int, _Bucket[E]] = {}
        self._counts: dict[int, int] = {}  # entries added per bucket
        self._next = 0
        self._newest = 0  # the newest bucket added to; older ones are closed when it moves
        self._key_bits = max(len(t) for t in keys.tables)
        self._tables = len(keys.tables)

    def __len__(self) -> int:
        return sum(len(b.entries) for b in self._buckets.values())

    def _group(self, bucket: int) -> _Bucket[E]:
        for first, g in self._buckets.items():
            if first <= bucket <= g.last:
                return g
        g = _Bucket[E](self._key_bits, self._tables, bucket)
        self._buckets[bucket] = g
        self._buckets = dict(sorted(self._buckets.items()))
        return g

    def _close_before(self, bucket: int) -> None:
        merged: dict[int, _Bucket[E]] = {}
        prev: _Bucket[E] | None = None
        for first, g in self._buckets.items():
            if g.last < bucket:
                g.compact()
                if prev is not None and len(prev.entries) + len(g.entries) <= _GROUP_ENTRIES:
                    prev.absorb(g)
                    continue
            merged[first] = g
            prev = g if g.last < bucket else None
        self._buckets = merged

    def add(self, bucket: int, entry: E, keys: U32Array, frames: I64Array) -> None:
        number = self._next
        self._next += 1
        if bucket > self._newest:
            # Arrivals have moved on to a new bucket: the earlier ones are closed (a late
            # arrival into one adds a run, merged again when arrivals next move on).
            self._newest = bucket
            self._close_before(bucket)
        self._counts[bucket] = self._counts.get(bucket, 0) + 1
        b = self._group(bucket)
        b.entries[number] = entry
        order = np.argsort(keys, kind="stable")
        b.add(
            _Run(
                keys[order],
                np.full(keys.size, number, dtype=np.uint32),
                frames[order].astype(np.int16),
                number,
                number,
            )
        )

    def add_many(
        self, bucket: int, entries: Sequence[E], keys: Sequence[U32Array], frames: Sequence[I64Array]
    ) -> range:
        """`add` for many entries at once, as one run: sorted once, its direct table built once
        (the denylist's rebuild; adding one by one would merge and re-table as it grows).
        Returns the entry numbers given, in the order of `entries`."""
        first = self._next
        if not entries:
            return range(first, first)
        self._next += len(entries)
        self._counts[bucket] = self._counts.get(bucket, 0) + len(entries)
        b = self._group(bucket)
        numbers = [np.full(k.size, first + i, dtype=np.uint32) for i, k in enumerate(keys)]
        for i, entry in enumerate(entries):
            b.entries[first + i] = entry
        run = _Run(
            np.concatenate(keys),
            np.concatenate(numbers),
            np.concatenate(frames).astype(np.int16),
            first,
            self._next - 1,
        )
        b.add(b.sorted(run))
        return range(first, self._next)

    def lookup(self, buckets: Sequence[int], keys: U32Array) -> list[Segment]:
        out: list[Segment] = []
        dense: I64Array | None = None
        ascending = bool(np.all(keys[1:] >= keys[:-1]))  # IndexedWindow looks up sorted keys
        if not buckets:
            return out
        lo_bucket, hi_bucket = min(buckets), max(buckets)
        for first, b in self._buckets.items():
            if b.last < lo_bucket or first > hi_bucket:
                continue
            for run in b.runs:
                if run.starts is not None:
                    if dense is None:
                        dense = _dense(keys, self._key_bits)
                    lo, hi = run.starts[dense], run.starts[dense + 1]
                elif ascending:
                    lo = np.empty(keys.size, dtype=np.int64)
                    hi = np.empty(keys.size, dtype=np.int64)
                    key_ranges(run.keys, keys, lo, hi)
                else:
                    lo = np.searchsorted(run.keys, keys, "left").astype(np.int64)
                    hi = np.searchsorted(run.keys, keys, "right").astype(np.int64)
                out.append(Segment(run.entries, run.frames, lo, hi, run.first_entry, run.last_entry))
        return out

    def entries(self, numbers: Sequence[int]) -> dict[int, E]:
        out: dict[int, E] = {}
        for n in numbers:
            for b in self._buckets.values():
                e = b.entries.get(n)
                if e is not None:
                    out[n] = e
                    break
        return out

    def counts(self, buckets: Sequence[int]) -> list[int]:
        return [self._counts.get(n, 0) for n in buckets]

    def expire(self, oldest_bucket: int) -> None:
        """Drop every group whose buckets are all before `oldest_bucket` (a merged group
        reaching past it is kept whole until it is all older: at most _GROUP_ENTRIES)."""
        self._buckets = {n: b for n, b in self._buckets.items() if b.last >= oldest_bucket}
        self._counts = {n: c for n, c in self._counts.items() if n >= oldest_bucket}

    def postings(self) -> int:
        return sum(run.keys.size for b in self._buckets.values() for run in b.runs)

    def table_bytes(self) -> int:
        """Bytes held by the direct tables of the large runs."""
        return sum(
            run.starts.nbytes for b in self._buckets.values() for run in b.runs if run.starts is not None
        )
