"""The fleet window: every recent utterance's print, shared by all guard replicas.

`FleetWindow` is the protocol the broadcast guard uses; `MemoryWindow` is the in-process
default and `RedisWindow` shares one window between replicas. Both search with the same
`PrintIndex`: the Redis window keeps a local index per replica and, before each search,
pulls the entries other replicas added since its last look (one round trip), so search
cost does not depend on Redis.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from purchase_guard.broadcast.fingerprint import PRINT_VERSION, Fingerprint
from purchase_guard.broadcast.match import DEFAULT_MATCH, FineMatch, MatchParams, PrintIndex, anchor
from purchase_guard.errors import Unavailable


@dataclass(frozen=True, slots=True)
class WindowEntry:
    entry_id: str
    household_id: str
    device_id: str
    decision_id: str
    at: datetime
    fp: Fingerprint = field(repr=False)
    # Who sent it, as authenticated (the caller and the device it names; `guard.source_of`).
    # Clusters count distinct sources: household ids are what a request claims.
    source: str = ""

    def with_print(self, fp: Fingerprint) -> WindowEntry:
        return WindowEntry(
            self.entry_id, self.household_id, self.device_id, self.decision_id, self.at, fp, self.source
        )


@dataclass(frozen=True, slots=True)
class WindowMatch:
    entry: WindowEntry
    match: FineMatch


class FleetWindow(Protocol):
    def match_and_add(self, entry: WindowEntry) -> list[WindowMatch]:
        """Entries of the last `window` before `entry.at` that match it, best first; then add it."""
        ...

    def __len__(self) -> int: ...


# Frames kept around a print's anchor: the search reads 3.07 s after it, shifted by up to
# 1.02 s either way, and the fine check looks 64 ms further. The rest of a long utterance
# is never read, so it is not kept.
_KEEP_BEFORE = 150
_KEEP_AFTER = 560


def trim_for_window(fp: Fingerprint) -> tuple[Fingerprint, int] | None:
    """The part of a print the window can ever compare, and its anchor within it."""
    start = anchor(fp)
    if start is None:
        return None
    lo = max(0, start - _KEEP_BEFORE)
    hi = min(fp.n_frames, start + _KEEP_AFTER)
    trimmed = Fingerprint(fp.bits[lo:hi].copy(), fp.mask[lo:hi].copy(), fp.hop_s)
    return trimmed, start - lo


class _LocalWindow:
    """An index of window entries plus expiry; callers hold the lock.

    With `max_in_span` (0: no cap) a match older than the `max_in_span`-th newest entry does
    not count, as in the inverted index (index.IndexedWindow): at peak traffic a query's
    span shrinks to the last seconds, so its chance matches do not grow with the traffic."""

    def __init__(self, window: timedelta, params: MatchParams, max_in_span: int = 0) -> None:
        if max_in_span < 0:
            raise ValueError("max_in_span must be 0 (no cap) or positive")
        self.window = window
        self.index: PrintIndex[WindowEntry] = PrintIndex(params)
        self._last_expiry: datetime | None = None
        self._cap = max_in_span
        self._times: list[float] = []  # arrival of every held entry, ascending

    def expire(self, now: datetime) -> None:
        # Scanning every slot per call would cost more than the search; every few seconds is
        # enough, and the matches are filtered by age anyway.
        if self._last_expiry is not None and now - self._last_expiry < timedelta(seconds=5):
            return
        self._last_expiry = now
        cutoff = now - self.window
        self.index.remove_where(lambda e: e.at < cutoff)
        del self._times[: bisect.bisect_left(self._times, cutoff.timestamp())]

    def add(self, entry: WindowEntry) -> None:
        trimmed = trim_for_window(entry.fp)
        if trimmed is None:
            return
        fp, start = trimmed
        self.index.add(entry.with_print(fp), fp, start)
        bisect.insort(self._times, entry.at.timestamp())

    def match(self, entry: WindowEntry) -> list[WindowMatch]:
        trimmed = trim_for_window(entry.fp)
        if trimmed is None:
            return []
        fp, start = trimmed
        cutoff = entry.at - self.window
        if self._cap and len(self._times) >= self._cap:
            newest = bisect.bisect_right(self._times, entry.at.timestamp())
            if newest >= self._cap:
                oldest = datetime.fromtimestamp(self._times[newest - self._cap], entry.at.tzinfo)
                cutoff = max(cutoff, oldest)
        return [
            WindowMatch(cand.item, fine)
            for cand, fine in self.index.matches(fp, start)
            if cutoff <= cand.item.at <= entry.at + self.window and cand.item.entry_id != entry.entry_id
        ]


class MemoryWindow:
    """In-process window: right for one replica; each replica would see only its own traffic."""

    def __init__(
        self,
        window: timedelta = timedelta(minutes=10),
        params: MatchParams = DEFAULT_MATCH,
        max_in_span: int = 0,
    ) -> None:
        self._local = _LocalWindow(window, params, max_in_span)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._local.index)

    def match_and_add(self, entry: WindowEntry) -> list[WindowMatch]:
        with self._lock:
            self._local.expire(entry.at)
            found = self._local.match(entry)
            self._local.add(entry)
            return found

    def add(self, entry: WindowEntry) -> None:
        """Add without searching (loading a window for a measurement)."""
        with self._lock:
            self._local.add(entry)


def encode_entry(entry: WindowEntry) -> bytes:
    head = json.dumps(
        {
            "id": entry.entry_id,
            "hh": entry.household_id,
            "dev": entry.device_id,
            "dec": entry.decision_id,
            "src": entry.source,
            "at": entry.at.timestamp(),
            "v": PRINT_VERSION,
        },
        separators=(",", ":"),
    ).encode()
    return len(head).to_bytes(4, "little") + head + entry.fp.to_bytes()


def decode_entry(blob: bytes) -> WindowEntry | None:
    """The entry, or None when another print version wrote it (a replica not yet upgraded)."""
    size = int.from_bytes(blob[:4], "little")
    head = json.loads(blob[4 : 4 + size])
    if head.get("v", 1) != PRINT_VERSION:
        return None
    return WindowEntry(
        entry_id=str(head["id"]),
        household_id=str(head["hh"]),
        device_id=str(head["dev"]),
        decision_id=str(head["dec"]),
        at=datetime.fromtimestamp(float(head["at"]), UTC),
        fp=Fingerprint.from_bytes(blob[4 + size :]),
        source=str(head.get("src", "")),
    )


class RedisWindow:
    """A window shared through Redis by every replica that uses the same `prefix`.

    Layout: `{prefix}:seq` (counter), `{prefix}:log` (sorted set: member = encoded entry
    with its trimmed print, score = sequence number), `{prefix}:time` (sorted set: member =
    sequence number, score = entry time) for trimming. Each replica mirrors the log into its
    own index, reading only sequence numbers it has not seen. Two replicas adding copies of
    the same broadcast within one round trip of each other may not see each other's entry;
    the next copy sees both, and the late catch cancels what the earlier ones were issued.
    """

    def __init__(
        self,
        client: Any,
        prefix: str = "purchase-guard:broadcast",
        window: timedelta = timedelta(minutes=10),
        params: MatchParams = DEFAULT_MATCH,
        max_in_span: int = 0,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._local = _LocalWindow(window, params, max_in_span)
        self._seen = 0
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisWindow:
        import redis  # only needed when a Redis window is configured

        return cls(redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0), **kwargs)

    def __len__(self) -> int:
        return len(self._local.index)

    def _key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    def _sync(self, now: datetime) -> None:
        blobs: Sequence[tuple[bytes, float]] = self._redis.zrangebyscore(
            self._key("log"), f"({self._seen}", "+inf", withscores=True
        )
        cutoff = now - self._local.window
        for blob, score in blobs:
            self._seen = max(self._seen, int(score))
            entry = decode_entry(blob)
            if entry is not None and entry.at >= cutoff:
                self._local.add(entry)

    def _trim(self, now: datetime) -> None:
        cutoff = (now - self._local.window).timestamp()
        old = self._redis.zrangebyscore(self._key("time"), "-inf", f"({cutoff}")
        if not old:
            return
        newest_old = max(int(s) for s in old)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zremrangebyscore(self._key("log"), "-inf", newest_old)
        pipe.zremrangebyscore(self._key("time"), "-inf", f"({cutoff}")
        pipe.execute()

    def match_and_add(self, entry: WindowEntry) -> list[WindowMatch]:
        trimmed = trim_for_window(entry.fp)
        with self._lock:
            try:
                self._sync(entry.at)
                self._local.expire(entry.at)
                found = self._local.match(entry)
                if trimmed is not None:
                    stored = entry.with_print(trimmed[0])
                    seq = int(self._redis.incr(self._key("seq")))
                    ttl = int(self._local.window.total_seconds() * 2) + 60
                    pipe = self._redis.pipeline(transaction=True)
                    pipe.zadd(self._key("log"), {encode_entry(stored): seq})
                    pipe.zadd(self._key("time"), {str(seq): entry.at.timestamp()})
                    for name in ("seq", "log", "time"):
                        pipe.expire(self._key(name), ttl)
                    pipe.execute()
                self._trim(entry.at)
            except Exception as exc:
                if type(exc).__module__.startswith("redis"):
                    raise Unavailable("the shared broadcast window (Redis) is unavailable") from exc
                raise
            return found
