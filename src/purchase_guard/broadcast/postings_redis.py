"""The fleet window's postings in Redis, shared by every replica; no replica holds the window.

Key layout (every key under `prefix`, each with a Redis Cluster hash tag in braces, so the
keys one command touches share a slot and the rest spread over the cluster):

    {prefix}:{seq}                        entry-number counter
    {prefix}:{p2:<bucket>:<shard>}:<key>  postings of one sub-print key in one time bucket:
                                          packed (entry number u32, frame i16) pairs, APPENDed;
                                          frames count from the print's first voiced frame
                                          ("p2": the first layout, "p", counted from the
                                          trimmed print's start, is never read)
    {prefix}:{e:<shard>}:<entry number>   the entry: ids, time, source and trimmed print
    {prefix}:{n:<bucket>}                 entries added in the bucket (for `len`)

shard = key (or entry number) mod `shards`. Every key expires `window` plus one bucket after
its bucket began, so Redis holds the window and nothing older, without a sweeper. A query
reads the buckets within the search span with one MGET per (bucket, shard) in one pipeline,
then one MGET per entry shard for its candidates: two round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from purchase_guard.broadcast.index import DEFAULT_KEYS, I64Array, Segment, U32Array
from purchase_guard.broadcast.window import WindowEntry, decode_entry, encode_entry
from purchase_guard.errors import Unavailable

_POSTING = np.dtype([("e", "<u4"), ("f", "<i2")])


def _unavailable(exc: Exception) -> Exception:
    if type(exc).__module__.startswith("redis"):
        return Unavailable("the shared broadcast window (Redis) is unavailable")
    return exc


class RedisPostings:
    """`index.PostingStore` in Redis (redis-py client, plain or cluster)."""

    def __init__(
        self,
        client: Any,
        prefix: str = "purchase-guard:broadcast",
        window: timedelta = timedelta(minutes=10),
        bucket_seconds: float = DEFAULT_KEYS.bucket_seconds,  # must be the window's KeyParams'
        shards: int = 16,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = int(window.total_seconds() + bucket_seconds) + 1
        self._buckets_kept = int(window.total_seconds() // bucket_seconds) + 1
        self._shards = shards
        self._last_bucket = 0

    def _posting_key(self, bucket: int, key: int) -> str:
        return f"{self._prefix}:{{p2:{bucket}:{key % self._shards}}}:{key:x}"

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
            order = np.argsort(keys, kind="stable")
            uniq, first = np.unique(keys[order], return_index=True)
            bounds = [*first.tolist(), keys.size]
            for i, key in enumerate(uniq.tolist()):
                name = self._posting_key(bucket, int(key))
                pipe.append(name, packed[order[bounds[i] : bounds[i + 1]]].tobytes())
                pipe.expire(name, self._ttl)
            pipe.execute()
        except Exception as exc:
            raise _unavailable(exc) from exc

    def lookup(self, buckets: Sequence[int], keys: U32Array) -> list[Segment]:
        uniq, inverse = np.unique(keys, return_inverse=True)
        by_shard: dict[int, list[int]] = {}
        for i, key in enumerate(uniq.tolist()):
            by_shard.setdefault(int(key) % self._shards, []).append(i)
        calls: list[tuple[int, list[int]]] = []
        try:
            pipe = self._redis.pipeline(transaction=False)
            for bucket in buckets:
                for members in by_shard.values():
                    pipe.mget([self._posting_key(bucket, int(uniq[i])) for i in members])
                    calls.append((bucket, members))
            replies = pipe.execute()
        except Exception as exc:
            raise _unavailable(exc) from exc
        per_bucket: dict[int, list[bytes]] = {b: [b""] * uniq.size for b in buckets}
        for (bucket, members), values in zip(calls, replies, strict=True):
            slot = per_bucket[bucket]
            for i, value in zip(members, values, strict=True):
                if value:
                    slot[i] = value
        out: list[Segment] = []
        for blobs in per_bucket.values():
            sizes = np.fromiter((len(b) // _POSTING.itemsize for b in blobs), np.int64, len(blobs))
            if not sizes.any():
                continue
            # One bucket's postings in one segment: an entry's postings are all in its bucket.
            flat = np.frombuffer(b"".join(blobs), dtype=_POSTING)
            entries = np.ascontiguousarray(flat["e"])
            ends = np.cumsum(sizes)
            out.append(
                Segment(
                    entries,
                    np.ascontiguousarray(flat["f"]),
                    (ends - sizes)[inverse],
                    ends[inverse],
                    int(entries.min()),
                    int(entries.max()),
                )
            )
        return out

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
