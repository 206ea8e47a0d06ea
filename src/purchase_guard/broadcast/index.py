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
no older entry can count for a verdict. Expiry drops whole buckets.

The storage of postings is a small protocol (`PostingStore`) with two implementations: in
process (`MemoryPostings`, sorted runs merged as they grow) and in Redis
(`window_redis.RedisPostings`, keys hash-tagged by bucket and shard for Redis Cluster). The
voting and the fine check are written once, here (`IndexedWindow`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from purchase_guard.broadcast.fingerprint import Fingerprint
from purchase_guard.broadcast.match import (
    DEFAULT_MATCH,
    MatchParams,
    best_offset,
)
from purchase_guard.broadcast.window import WindowEntry, WindowMatch, trim_for_window

U32Array = np.ndarray[Any, np.dtype[np.uint32]]
I64Array = np.ndarray[Any, np.dtype[np.int64]]

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
    max_candidates: int = 32  # fine-checked per query, most votes first
    bucket_seconds: float = 30.0
    # A key held by more postings than this in one bucket (silence-like shapes every print
    # has) says nothing about which entry is a copy: it is skipped at query time.
    stop_postings: int = 20_000

    def __post_init__(self) -> None:
        if any(len(t) > 24 for t in self.tables) or len(self.tables) > 255:
            raise ValueError("at most 255 tables of at most 24 bits")


DEFAULT_KEYS = KeyParams()


def _gather(words: U32Array, bits: Sequence[int]) -> U32Array:
    out = np.zeros(words.shape, dtype=np.uint32)
    for i, b in enumerate(bits):
        out |= ((words >> np.uint32(b)) & np.uint32(1)) << np.uint32(i)
    return out


def stored_keys(fp: Fingerprint, params: KeyParams = DEFAULT_KEYS) -> tuple[U32Array, I64Array]:
    """(keys, frames) of a windowed print: table number in the high bits, one key per voiced
    frame and table; a run of frames with the same key is stored once (its first frame),
    since the print changes slowly and the repeats would only add postings."""
    frames = np.flatnonzero(fp.mask)
    keys: list[U32Array] = []
    where: list[I64Array] = []
    for t, bits in enumerate(params.tables):
        k = _gather(fp.bits[frames], bits)
        keep = np.ones(len(frames), dtype=bool)
        keep[1:] = (k[1:] != k[:-1]) | (frames[1:] != frames[:-1] + 1)
        keys.append(k[keep] | np.uint32(t << 24))
        where.append(frames[keep].astype(np.int64))
    if not keys:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    return np.concatenate(keys), np.concatenate(where)


def _flip_sets(n: int, max_flips: int) -> list[tuple[int, ...]]:
    return [c for r in range(max_flips + 1) for c in itertools.combinations(range(n), r)]


def query_keys(fp: Fingerprint, start: int, params: KeyParams = DEFAULT_KEYS) -> tuple[U32Array, I64Array]:
    """(keys, frames) a query looks up: every voiced frame of its first 3.07 s, each key with
    its variants of up to `max_flips` unreliable bits flipped."""
    frames = np.arange(start, min(fp.n_frames, start + QUERY_FRAMES))
    frames = frames[fp.mask[frames] != 0]
    keys: list[U32Array] = []
    where: list[I64Array] = []
    for t, bits in enumerate(params.tables):
        k = _gather(fp.bits[frames], bits) | np.uint32(t << 24)
        reliable = _gather(fp.mask[frames], bits)
        for flips in _flip_sets(len(bits), params.max_flips):
            sel = np.ones(len(frames), dtype=bool)
            pattern = np.uint32(0)
            for b in flips:
                sel &= ((reliable >> np.uint32(b)) & np.uint32(1)) == 0
                pattern |= np.uint32(1 << b)
            keys.append(k[sel] ^ pattern)
            where.append(frames[sel].astype(np.int64))
    return np.concatenate(keys), np.concatenate(where)


@dataclass(frozen=True, slots=True)
class Hits:
    """Postings found for a query's keys: for each, the query frame it was looked up for."""

    entries: I64Array
    frames: I64Array
    query_frames: I64Array


EMPTY = Hits(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))


class PostingStore(Protocol):
    """Where postings and entries live; `bucket` numbers are arrival time // bucket_seconds."""

    def add(self, bucket: int, entry: WindowEntry, keys: U32Array, frames: I64Array) -> None: ...

    def lookup(self, buckets: Sequence[int], keys: U32Array, query_frames: I64Array, stop: int) -> Hits: ...

    def entries(self, numbers: Sequence[int]) -> dict[int, WindowEntry]: ...

    def expire(self, oldest_bucket: int) -> None:
        """Drop every bucket before `oldest_bucket`."""
        ...

    def __len__(self) -> int: ...


def expand(
    lo: I64Array,
    hi: I64Array,
    entries: np.ndarray[Any, Any],
    frames: np.ndarray[Any, Any],
    query_frames: I64Array,
    stop: int,
) -> Hits:
    """The hits of query keys whose postings are entries[lo[i]:hi[i]] (and frames), each with
    its query frame; keys with more than `stop` postings are skipped (too common to tell)."""
    count = hi - lo
    count[count > stop] = 0
    total = int(count.sum())
    if total == 0:
        return EMPTY
    pos = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(total)
    return Hits(entries[pos].astype(np.int64), frames[pos].astype(np.int64), np.repeat(query_frames, count))


def join(parts: Sequence[Hits]) -> Hits:
    parts = [p for p in parts if p.entries.size]
    if not parts:
        return EMPTY
    return Hits(
        np.concatenate([p.entries for p in parts]),
        np.concatenate([p.frames for p in parts]),
        np.concatenate([p.query_frames for p in parts]),
    )


def vote(hits: Hits, params: KeyParams, exclude: int | None = None) -> list[tuple[int, int, int]]:
    """(entry number, offset in frames, votes) of the entries most voted for, best first.

    A vote is a distinct query frame whose key (or a variant) hit the entry at an offset in
    the bin; a bin also counts the votes of its neighbour, since an offset near a bin edge
    splits its votes over two."""
    if hits.entries.size == 0:
        return []
    offsets = hits.frames - hits.query_frames
    bins = np.floor_divide(offsets, params.bin_frames) + (1 << 20)
    # One vote per query frame and (entry, bin), however many of its variants hit. Sorting
    # beats numpy's hash-based unique on these sizes.
    code = np.sort(((hits.entries << 22) | bins) * 4096 + (hits.query_frames & 4095))
    code = code[np.concatenate(([True], code[1:] != code[:-1]))] // 4096
    starts = np.flatnonzero(np.concatenate(([True], code[1:] != code[:-1])))
    cells = code[starts]
    votes = np.diff(np.append(starts, code.size))
    # Add each cell's right neighbour (same entry, next bin) to it.
    pos = np.searchsorted(cells, cells + 1)
    has = (pos < cells.size) & (cells[np.minimum(pos, cells.size - 1)] == cells + 1)
    merged = votes + np.where(has, votes[np.minimum(pos, cells.size - 1)], 0)
    order = np.argsort(-merged, kind="stable")
    out: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    for k in order.tolist():
        if merged[k] < params.min_votes or len(out) >= params.max_candidates:
            break
        entry = int(cells[k] >> 22)
        if entry in seen or entry == exclude:
            continue
        seen.add(entry)
        out.append((entry, int((cells[k] & ((1 << 22) - 1)) - (1 << 20)) * params.bin_frames, int(merged[k])))
    return out


class IndexedWindow:
    """A `FleetWindow` over a `PostingStore`: lookups and votes, then the exact fine check.

    `search_span` (the cluster rule's spread) bounds what a query reads; entries are kept for
    `window` and expire with their bucket."""

    def __init__(
        self,
        postings: PostingStore,
        window: timedelta = timedelta(minutes=10),
        search_span: timedelta = timedelta(seconds=30),
        params: MatchParams = DEFAULT_MATCH,
        keys: KeyParams = DEFAULT_KEYS,
    ) -> None:
        self._postings = postings
        self._window = window
        self._span = min(search_span, window)
        self._params = params
        self._keys = keys
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._postings)

    def _bucket(self, at: datetime) -> int:
        return int(at.timestamp() // self._keys.bucket_seconds)

    def match(self, entry: WindowEntry) -> list[WindowMatch]:
        trimmed = trim_for_window(entry.fp)
        if trimmed is None:
            return []
        fp, start = trimmed
        keys, frames = query_keys(fp, start, self._keys)
        order = np.argsort(keys, kind="stable")  # sorted lookups read each run in order
        keys, frames = keys[order], frames[order]
        buckets = list(range(self._bucket(entry.at - self._span), self._bucket(entry.at + self._span) + 1))
        hits = self._postings.lookup(buckets, keys, frames, self._keys.stop_postings)
        voted = vote(hits, self._keys)
        if not voted:
            return []
        found = self._postings.entries([e for e, _, _ in voted])
        lo, hi = entry.at - self._span, entry.at + self._span
        reach = self._keys.bin_frames + 8  # the bin's width plus the fine check's own reach
        out: list[WindowMatch] = []
        for number, offset, _ in voted:
            cand = found.get(number)
            if cand is None or cand.entry_id == entry.entry_id or not lo <= cand.at <= hi:
                continue
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

    def match_and_add(self, entry: WindowEntry) -> list[WindowMatch]:
        with self._lock:
            self._postings.expire(self._bucket(entry.at - self._window))
            found = self.match(entry)
            self.add(entry)
            return found


@dataclass
class _Run:
    keys: U32Array
    entries: np.ndarray[Any, np.dtype[np.uint32]]
    frames: np.ndarray[Any, np.dtype[np.int16]]


def _merge(a: _Run, b: _Run) -> _Run:
    keys = np.concatenate([a.keys, b.keys])
    order = np.argsort(keys, kind="stable")
    entries = np.concatenate([a.entries, b.entries])[order]
    return _Run(keys[order], entries, np.concatenate([a.frames, b.frames])[order])


class _Bucket:
    """Sorted runs, merged like a binary counter: at most log2(postings) runs to search."""

    def __init__(self) -> None:
        self.runs: list[_Run] = []
        self.entries: dict[int, WindowEntry] = {}

    def add(self, run: _Run) -> None:
        self.runs.append(run)
        while len(self.runs) >= 2 and self.runs[-2].keys.size <= 2 * self.runs[-1].keys.size:
            b = self.runs.pop()
            a = self.runs.pop()
            self.runs.append(_merge(a, b))


class MemoryPostings:
    """In-process postings: right for one replica (each replica sees only its own traffic).
    About 10 bytes a posting; not thread-safe (IndexedWindow locks)."""

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._next = 0

    def __len__(self) -> int:
        return sum(len(b.entries) for b in self._buckets.values())

    def add(self, bucket: int, entry: WindowEntry, keys: U32Array, frames: I64Array) -> None:
        number = self._next
        self._next += 1
        b = self._buckets.setdefault(bucket, _Bucket())
        b.entries[number] = entry
        order = np.argsort(keys, kind="stable")
        b.add(
            _Run(
                keys[order],
                np.full(keys.size, number, dtype=np.uint32),
                frames[order].astype(np.int16),
            )
        )

    def lookup(self, buckets: Sequence[int], keys: U32Array, query_frames: I64Array, stop: int) -> Hits:
        parts: list[Hits] = []
        for n in buckets:
            b = self._buckets.get(n)
            if b is None:
                continue
            for run in b.runs:
                lo = np.searchsorted(run.keys, keys, "left")
                hi = np.searchsorted(run.keys, keys, "right")
                parts.append(expand(lo, hi, run.entries, run.frames, query_frames, stop))
        return join(parts)

    def entries(self, numbers: Sequence[int]) -> dict[int, WindowEntry]:
        out: dict[int, WindowEntry] = {}
        for n in numbers:
            for b in self._buckets.values():
                e = b.entries.get(n)
                if e is not None:
                    out[n] = e
                    break
        return out

    def expire(self, oldest_bucket: int) -> None:
        for n in [n for n in self._buckets if n < oldest_bucket]:
            del self._buckets[n]

    def postings(self) -> int:
        return sum(run.keys.size for b in self._buckets.values() for run in b.runs)
