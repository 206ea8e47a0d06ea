"""The fleet window's postings in Redis, shared by every replica; no replica holds the window.

Key layout (every key under `prefix`, each with a Redis Cluster hash tag in braces, so the
keys one command touches share a slot and the rest spread over the cluster):

    {prefix}:{seq}                        entry-number counter
    {prefix}:{p3:<epoch>:<shard>}:<key>   postings of one sub-print key in one epoch (a run of
                                          `buckets_per_key` time buckets, 60 s by default):
                                          packed (entry number u32, frame i16, bucket u16 mod
                                          2**16) records, APPENDed; frames count from the
                                          print's first voiced frame. ("p3": the earlier
                                          layouts, "p" and "p2", one key per bucket and 6-byte
                                          records, are never read.)
    {prefix}:{p3:<epoch>:<shard>}:present bitmap of the keys written in the epoch and shard
                                          (bit: table << 16 | low 16 bits, over `shards`)
    {prefix}:{e:<shard>}:<entry number>   the entry: ids, time, source and trimmed print
    {prefix}:{n:<bucket>}                 entries added in the bucket (`len`, and which buckets
                                          a query needs to read)

shard = key (or entry number) mod `shards`; epoch = bucket // `buckets_per_key`. Every key's
TTL is `window` plus one epoch, refreshed on each write, so Redis holds the window and
nothing much older, without a sweeper.

Why epochs: the index's buckets are short (2 s; 10 s when this was measured), so a query's
span covers many of them, and one Redis key per bucket made a query read each looked-up key
seven times (about 120,000 key reads at 17,000 distinct keys; most of the cost was naming,
sending and decoding them). A key per epoch holds several buckets' postings
and each record names its bucket, so a query reads each looked-up key once per epoch it
touches (one or two) and drops the records of buckets outside its span before the vote:
the same postings are voted as in process. A query is three pipelined round trips: GETs of
the span's bucket counts (an empty bucket, such as the span's future in live traffic, is not
read) and of the bitmaps of its epochs, one MGET per (epoch, shard), then one MGET per entry
shard for its candidates.

Why the bitmaps: of a query's looked-up keys (flip variants included) fewer than half exist
in an epoch (43 % at 10,000 in bench_fleet's state), and reading the others was much of
Redis's time. A query reads only the keys the bitmap marks; a shard without a bitmap
(postings written before them) is read whole. Keys sharing a bit (wider keys than the
default tables') cost an extra read, never a missed one. The bitmap is written before the
postings in the same pipeline and expires with them, so a key with postings has its bit.

Why not the vote (or the reads) in a Lua script per (epoch, shard): the vote counts a query
frame once per entry and offset however many of its keys hit, and a frame's keys are in
every shard, so per-shard votes cannot be summed into the same counts; and a read script
that named the keys itself and returned the postings joined (tried, bench_fleet.py in the
same run) was slower than MGET: Redis's Lua spent more building names than the replica saved.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, Literal

import numpy as np

from purchase_guard.broadcast.index import DEFAULT_KEYS, I64Array, Segment, U32Array
from purchase_guard.broadcast.window import WindowEntry, decode_entry, encode_entry
from purchase_guard.errors import Unavailable

# One posting key holds an epoch of this many seconds of buckets (see the module docstring).
EPOCH_SECONDS = 60.0

_POSTING = np.dtype([("e", "<u4"), ("f", "<i2"), ("b", "<u2")])
_NONE = np.zeros(0, dtype=np.int64)


def _unavailable(exc: Exception) -> Exception:
    if type(exc).__module__.startswith("redis"):
        return Unavailable("the shared broadcast window (Redis) is unavailable")
    return exc


@functools.cache
def _tail_table() -> np.ndarray[Any, np.dtype[np.bytes_]]:
    """The name tail ("}:<key in hex>") of every key the default key tables make: built
    once a process (about 1 MiB), since formatting each looked-up key's name per query was
    one of the replica's larger costs in a cProfile of a Redis query."""
    bits = max(len(t) for t in DEFAULT_KEYS.tables)
    every = [(t << 24) | k for t in range(len(DEFAULT_KEYS.tables)) for k in range(1 << bits)]
    return np.array([f"}}:{k:x}".encode() for k in every], dtype=np.bytes_)


def _tails(keys: U32Array) -> np.ndarray[Any, np.dtype[np.bytes_]]:
    """The name tails of `keys`: from the table when it holds them all, else formatted."""
    table = _tail_table()
    bits = max(len(t) for t in DEFAULT_KEYS.tables)
    low = keys & np.uint32(0xFFFFFF)
    dense = ((keys >> np.uint32(24)).astype(np.int64) << bits) | low.astype(np.int64)
    if keys.size and int(low.max()) < 1 << bits and int(dense.max()) < table.size:
        found: np.ndarray[Any, np.dtype[np.bytes_]] = table[dense]
        return found
    return np.array([f"}}:{k:x}".encode() for k in keys.tolist()], dtype=np.bytes_)


def _marked(bitmap: bytes, bits: I64Array) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which of `bits` are set in a Redis bitmap (bit 0 is the first byte's highest bit)."""
    raw = np.frombuffer(bitmap, dtype=np.uint8)
    inside = bits < raw.size * 8
    out = np.zeros(bits.size, dtype=bool)
    at = bits[inside]
    out[inside] = (raw[at >> 3] >> (7 - (at & 7)).astype(np.uint8)) & 1 == 1
    return out


class RedisPostings:
    """`index.PostingStore` in Redis (redis-py client, plain or cluster)."""

    def __init__(
        self,
        client: Any,
        prefix: str = "purchase-guard:broadcast",
        window: timedelta = timedelta(minutes=10),
        bucket_seconds: float = DEFAULT_KEYS.bucket_seconds,  # must be the window's KeyParams'
        shards: int = 16,
        buckets_per_key: int | None = None,  # default: an epoch of EPOCH_SECONDS
        reads: Literal["present", "mget"] = "present",
    ) -> None:
        if buckets_per_key is None:
            buckets_per_key = max(1, round(EPOCH_SECONDS / bucket_seconds))
        if buckets_per_key < 1:
            raise ValueError("buckets_per_key must be at least 1")
        if reads not in ("present", "mget"):
            raise ValueError("reads must be 'present' or 'mget'")
        self._redis = client
        self._prefix = prefix
        self._ttl = int(window.total_seconds() + buckets_per_key * bucket_seconds) + 1
        self._buckets_kept = int(window.total_seconds() // bucket_seconds) + 1
        self._shards = shards
        self._per_key = buckets_per_key
        self._last_bucket = 0
        self._reads = reads
        self.keys_read = 0  # posting keys read by lookups (for the bench)

    @property
    def ttl_seconds(self) -> int:
        """The TTL every key is given (refreshed on each write): window plus one epoch."""
        return self._ttl

    def _epoch(self, bucket: int) -> int:
        return bucket // self._per_key

    def _posting_head(self, epoch: int, shard: int) -> str:
        return f"{self._prefix}:{{p3:{epoch}:{shard}"

    def _present_key(self, epoch: int, shard: int) -> str:
        # Not a posting key's name: those end in hex digits only.
        return f"{self._posting_head(epoch, shard)}}}:present"

    def _present_bits(self, keys: U32Array) -> I64Array:
        """Each key's bit in its (epoch, shard)'s bitmap of keys written: table and low 16
        bits, over the shards (bits 16-23 of a wider key share a bit: an extra read, never
        a missed one)."""
        folded = ((keys >> np.uint32(24)).astype(np.int64) << 16) | (keys & np.uint32(0xFFFF)).astype(
            np.int64
        )
        return folded // self._shards

    def _entry_key(self, number: int) -> str:
        return f"{self._prefix}:{{e:{number % self._shards}}}:{number}"

    def _count_key(self, bucket: int) -> str:
        return f"{self._prefix}:{{n:{bucket}}}"

    def __len__(self) -> int:
        keys = [self._count_key(self._last_bucket - k) for k in range(self._buckets_kept)]
        try:
            # One key per command: the count keys live in different slots.
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            return sum(int(v) for v in pipe.execute() if v is not None)
        except Exception as exc:
            raise _unavailable(exc) from exc

    def add(self, bucket: int, entry: WindowEntry, keys: U32Array, frames: I64Array) -> None:
        self._last_bucket = max(self._last_bucket, bucket)
        try:
            number = int(self._redis.incr(f"{self._prefix}:{{seq}}"))
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self._entry_key(number), encode_entry(entry), ex=self._ttl)
            pipe.incr(self._count_key(bucket))
            pipe.expire(self._count_key(bucket), self._ttl)
            packed = np.zeros(keys.size, dtype=_POSTING)
            packed["e"] = number
            packed["f"] = frames
            packed["b"] = bucket & 0xFFFF
            order = np.argsort(keys, kind="stable")
            uniq, first = np.unique(keys[order], return_index=True)
            bounds = [*first.tolist(), keys.size]
            epoch = self._epoch(bucket)
            heads = [self._posting_head(epoch, s) for s in range(self._shards)]
            # The bitmaps first: a key appended to is marked present even if the pipeline
            # breaks after it (Redis runs a connection's commands in order).
            shard_of = (uniq % np.uint32(self._shards)).tolist()
            bits = self._present_bits(uniq).tolist()
            ops: dict[int, list[Any]] = {}
            for shard, bit in zip(shard_of, bits, strict=True):
                ops.setdefault(shard, []).extend(("SET", "u1", bit, 1))
            for shard, args in ops.items():
                name = self._present_key(epoch, shard)
                pipe.execute_command("BITFIELD", name, *args)
                pipe.expire(name, self._ttl)
            for i, key in enumerate(uniq.tolist()):
                name = f"{heads[key % self._shards]}}}:{key:x}"
                pipe.append(name, packed[order[bounds[i] : bounds[i + 1]]].tobytes())
                pipe.expire(name, self._ttl)
            pipe.execute()
        except Exception as exc:
            raise _unavailable(exc) from exc

    def counts(self, buckets: Sequence[int]) -> list[int]:
        try:
            pipe = self._redis.pipeline(transaction=False)  # the count keys live in different slots
            for bucket in buckets:
                pipe.get(self._count_key(bucket))
            return [int(v) if v is not None else 0 for v in pipe.execute()]
        except Exception as exc:
            raise _unavailable(exc) from exc

    def lookup(self, buckets: Sequence[int], keys: U32Array) -> list[Segment]:
        wanted = list(buckets)
        if not wanted or keys.size == 0:
            return []
        uniq, inverse = np.unique(keys, return_inverse=True)
        shard_of = (uniq % np.uint32(self._shards)).astype(np.int64)
        perm = np.argsort(shard_of, kind="stable")  # looked-up keys grouped by shard
        bounds = np.searchsorted(shard_of[perm], np.arange(self._shards + 1)).tolist()
        try:
            # First round trip: which of the buckets hold any entry (an empty one, such as the
            # span's future in live traffic, costs no key reads).
            # With the bitmaps of keys written in the epochs they may need (one per shard).
            pipe = self._redis.pipeline(transaction=False)
            for bucket in wanted:
                pipe.get(self._count_key(bucket))
            maybe = sorted({self._epoch(b) for b in wanted}) if self._reads == "present" else []
            for epoch in maybe:
                for s in range(self._shards):
                    pipe.get(self._present_key(epoch, s))
            replies = pipe.execute()
            counts = replies[: len(wanted)]
            bitmaps = {
                (epoch, s): replies[len(wanted) + i * self._shards + s]
                for i, epoch in enumerate(maybe)
                for s in range(self._shards)
            }
            live = [b for b, c in zip(wanted, counts, strict=True) if c is not None and int(c) > 0]
            if not live:
                return []
            epochs = sorted({self._epoch(b) for b in live})
            # Second round trip: each (epoch, shard)'s postings of the looked-up keys, each key
            # once whatever the number of buckets it holds, in shard order.
            if self._reads == "present":
                fetched = self._fetch_present(epochs, uniq[perm], bounds, bitmaps)
            else:
                fetched = self._fetch_mget(epochs, uniq[perm], bounds)
        except Exception as exc:
            raise _unavailable(exc) from exc
        where = np.empty(uniq.size, dtype=np.int64)
        where[perm] = np.arange(uniq.size)  # unique key -> its place in shard order
        out: list[Segment] = []
        for epoch, (blob, sizes) in zip(epochs, fetched, strict=True):
            if not blob:
                continue
            # One epoch's postings in one segment: an entry's postings are all in its epoch.
            flat = np.frombuffer(blob, dtype=_POSTING)
            ends = np.cumsum(sizes)
            lo_at, hi_at = (ends - sizes)[where][inverse], ends[where][inverse]
            held = [b & 0xFFFF for b in live if self._epoch(b) == epoch]
            keep = np.isin(flat["b"], np.asarray(held, dtype=np.uint16))
            if not keep.all():  # postings of buckets outside the span (or empty) are not voted
                before = np.concatenate([np.zeros(1, np.int64), np.cumsum(keep, dtype=np.int64)])
                lo_at, hi_at = before[lo_at], before[hi_at]
                flat = flat[keep]
            if flat.size == 0:
                continue
            entries = np.ascontiguousarray(flat["e"])
            out.append(
                Segment(
                    entries,
                    np.ascontiguousarray(flat["f"]),
                    lo_at,
                    hi_at,
                    int(entries.min()),
                    int(entries.max()),
                )
            )
        return out

    def _shard_runs(
        self, epochs: Sequence[int], bounds: Sequence[int]
    ) -> Iterator[tuple[int, int, int, int]]:
        """(epoch, shard, lo, hi) for each (epoch, shard) holding looked-up keys: those at
        places lo..hi of the keys in shard order."""
        for epoch in epochs:
            for s in range(self._shards):
                if bounds[s] < bounds[s + 1]:
                    yield epoch, s, bounds[s], bounds[s + 1]

    def _fetch_mget(
        self, epochs: Sequence[int], ordered: U32Array, bounds: Sequence[int]
    ) -> list[tuple[bytes, I64Array]]:
        """Per epoch: its postings (the looked-up keys' values, joined in `ordered` order) and
        each key's count of postings, read by one MGET per (epoch, shard)."""
        tails = [f"}}:{k:x}" for k in ordered.tolist()]
        pipe = self._redis.pipeline(transaction=False)
        calls: list[int] = []
        for epoch, s, lo, hi in self._shard_runs(epochs, bounds):
            head = self._posting_head(epoch, s)
            pipe.mget([head + t for t in tails[lo:hi]])
            calls.append(epoch)
            self.keys_read += hi - lo
        per_epoch: dict[int, list[bytes]] = {e: [] for e in epochs}
        for epoch, values in zip(calls, pipe.execute(), strict=True):
            per_epoch[epoch].extend(v or b"" for v in values)  # a missing key is no postings
        out: list[tuple[bytes, I64Array]] = []
        for blobs in per_epoch.values():
            sizes = np.fromiter(map(len, blobs), np.int64, len(blobs)) // _POSTING.itemsize
            out.append((b"".join(blobs), sizes))
        return out

    def _fetch_present(
        self,
        epochs: Sequence[int],
        ordered: U32Array,
        bounds: Sequence[int],
        bitmaps: dict[tuple[int, int], bytes | None],
    ) -> list[tuple[bytes, I64Array]]:
        """`_fetch_mget`'s result, reading only the keys their (epoch, shard)'s bitmap marks
        as written (all of a shard's when it has none: written before the bitmaps); the
        names made by numpy from a table of every key's name tail (`_tails`)."""
        tails = _tails(ordered)
        bits = self._present_bits(ordered)
        pipe = self._redis.pipeline(transaction=False)
        calls: list[tuple[int, I64Array]] = []  # (epoch, places in `ordered` read)
        for epoch, s, lo, hi in self._shard_runs(epochs, bounds):
            place = np.arange(lo, hi)
            bitmap = bitmaps.get((epoch, s))
            if bitmap is not None:
                place = place[_marked(bitmap, bits[lo:hi])]
                if place.size == 0:
                    continue
            head = np.bytes_(self._posting_head(epoch, s).encode())
            pipe.mget(np.strings.add(head, tails[place]).tolist())
            calls.append((epoch, place))
            self.keys_read += place.size
        sizes = {e: np.zeros(ordered.size, dtype=np.int64) for e in epochs}
        blobs: dict[int, list[bytes]] = {e: [] for e in epochs}
        for (epoch, place), values in zip(calls, pipe.execute(), strict=True):
            # A missing key (expired, or a bit shared with another key) is no postings.
            sizes[epoch][place] = np.fromiter((len(v) if v else 0 for v in values), np.int64, len(values))
            blobs[epoch].append(b"".join(filter(None, values)))
        return [(b"".join(blobs[e]), sizes[e] // _POSTING.itemsize) for e in epochs]

    def entries(self, numbers: Sequence[int]) -> dict[int, WindowEntry]:
        by_shard: dict[int, list[int]] = {}
        for n in numbers:
            by_shard.setdefault(n % self._shards, []).append(n)
        try:
            pipe = self._redis.pipeline(transaction=False)
            for members in by_shard.values():
                pipe.mget([self._entry_key(n) for n in members])
            replies = pipe.execute()
        except Exception as exc:
            raise _unavailable(exc) from exc
        out: dict[int, WindowEntry] = {}
        for members, values in zip(by_shard.values(), replies, strict=True):
            for n, blob in zip(members, values, strict=True):
                entry = decode_entry(blob) if blob else None
                if entry is not None:
                    out[n] = entry
        return out

    def expire(self, oldest_bucket: int) -> None:
        """Nothing to do: every key carries its own TTL."""
