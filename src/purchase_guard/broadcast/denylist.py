"""Known broadcast clips: stored prints and a cached index to search them.

`ClipStore` is the protocol; `SqliteClipStore` (the default: its own table, own
connection, in a file of its own or the main store's file) and `RedisClipStore` persist
across restarts, `MemoryClipStore` is the fake for unit tests. `Denylist` keeps an index of
the live clips and, whenever the store's generation counter moves, applies what changed
(new clips' segments indexed inline, removed clips no longer counted), so a clip registered
or removed through one replica is enforced by every replica on its next check; the whole
index is rebuilt by a background compaction no check waits for.

Registered clips keep their audio (16 kHz PCM16) beside the print: they are operators' ad
and news material, not a household's, and without it a clip printed by an older method
could not be searched after an upgrade that changes the print (PRINT_VERSION); the clip
would silently stop protecting anyone until an operator registered it again. `Denylist`
re-prints such clips in memory with the running method and leaves the stored print alone,
so replicas still on the old version keep searching it during a rolling upgrade. Promoted
clips come from households' utterances: they keep only their print (docs/privacy.md) and
lapse with their 48 h lifetime.

A clip can be much longer than an utterance, and an utterance may hold any part of it, so
each clip is searched as overlapping segments through the fleet window's inverted index of
sub-print keys (`index.py`: `stored_keys`, `query_lookups`, `vote`, `MemoryPostings`, the
same code, not a copy). A segment is one entry of the postings: the clip's keys from 1.3 s
before its reference frame to 4.4 s after it, with references every 2.4 s, so any part of
the clip a query can start in lies within the vote's bounded offset (`KeyParams.max_shift`,
1.28 s: about the scan's reach) of one reference and finds its whole 3.07 s there. The
entries most voted for go to the fine check against the whole clip (`match.best_offset`,
`DENYLIST_MATCH`): the rule is the same as before, only the way candidates are found
changed. A match costs lookups and votes over the postings the query's keys hold, not a
score for every 0.5 s of every clip: at 10,000 clips about a tenth of the CPU of the coarse
scan it replaced (`search="scan"`, kept as the bench's baseline; figures and the command in
docs/broadcast.md, "Fleet scale").
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from purchase_guard.broadcast.fingerprint import (
    DEFAULT_PARAMS,
    PRINT_VERSION,
    Fingerprint,
    FingerprintParams,
    fingerprint,
)
from purchase_guard.broadcast.index import (
    DEFAULT_KEYS,
    QUERY_FRAMES,
    I64Array,
    KeyParams,
    MemoryPostings,
    U32Array,
    query_lookups,
    stored_keys,
    vote,
)
from purchase_guard.broadcast.match import (
    COARSE_STEP,
    DEFAULT_MATCH,
    FineMatch,
    MatchParams,
    PrintIndex,
    anchor,
    best_offset,
)
from purchase_guard.errors import AudioError, Unavailable
from purchase_guard.logs import get_logger
from purchase_guard.voice.audio import pcm16_to_pcm

log = get_logger("purchase_guard.broadcast.denylist")

REGISTERED = "registered"
PROMOTED = "promoted"
SEGMENT_STEP = 64  # frames (0.51 s) between the scan's segment starts
# The denylist's keys: the fleet's layout and offset bound, with one flipped unreliable bit
# per looked-up key instead of two. A registered clip is a clean print, so a copy's keys agree
# with it more often than two rooms' copies agree with each other; two flips cost four times
# the CPU. Chosen on the tuning split (`scripts/bench_fleet.py --only denylist --split tune`
# with --deny-keys settings, docs/broadcast.md "Fleet scale"): of the settings tried, the
# cheapest whose detection there is at least the scan's; longer offset bounds tied within
# the runs' spread, and the tie went to the fleet's own bound.
# Its 32 candidates were chosen with the rest (64 found no more copies on tune).
DENYLIST_KEYS: KeyParams = replace(DEFAULT_KEYS, max_flips=1, max_candidates=32)
# Every utterance is compared with every registered clip, so false matches grow with the number
# of clips: at 10,000 clips a per-pair rate of 5e-6 meets a false match in one Evaluate in
# twenty. The denylist is therefore graded. A match by DENYLIST_MATCH (the fleet's rule) asks
# for a step-up (SUSPECTED_BROADCAST): a broadcast cannot answer a challenge that must be
# heard, and a parent whose order merely resembles a clip confirms it. Only a match by the much
# stricter DENYLIST_REFUSE refuses outright (KNOWN_BROADCAST). Chosen on the tuning split
# (`scripts/bench_fleet.py --deny-sweep tune`, docs/broadcast.md "The graded denylist"): of
# the swept rules whose false refusals, modelled from the false pairs' tail, are within 1e-5
# per Evaluate at 10,000 clips, the one refusing the most 5 dB copies (9.3e-6 there; 1.7e-5
# on the test split, whose bootstrap upper bound, 4.4e-4, is what the pairs can support).
DENYLIST_MATCH: MatchParams = DEFAULT_MATCH


@dataclass(frozen=True, slots=True)
class RefusalRule:
    """When a clip match (already a match by the denylist's rule) refuses outright.

    `match`: a stricter error-rate limit and minimum of compared bits. `min_coverage`: the share
    of the query's reliable bits the match compares. A home's copy of a broadcast is the
    broadcast from end to end, so its match covers most of the utterance (on the tuning split
    half or more for 95 % of 5 dB copies); the strongest false matches there were short
    stretches of a longer utterance (a fifth of it) that happened to agree."""

    match: MatchParams
    min_coverage: float = 0.0

    def refuses(self, fine: FineMatch, query_bits: int) -> bool:
        return self.match.accepts(fine) and fine.bits >= self.min_coverage * query_bits


DENYLIST_REFUSE = RefusalRule(replace(DEFAULT_MATCH, ber_limit=0.13, min_bits=600), 0.5)


@dataclass(frozen=True, slots=True)
class Clip:
    clip_id: str
    label: str
    source: str  # REGISTERED or PROMOTED
    created_at: datetime
    expires_at: datetime | None
    fp: Fingerprint = field(repr=False)
    households: int = 0  # promoted clips: households in the cluster when it was confirmed
    print_version: int = PRINT_VERSION  # how `fp` was computed
    audio_kept: bool = False  # the store holds the clip's audio, so it can be re-printed

    @property
    def voiced_seconds(self) -> float:
        return self.fp.voiced_seconds

    @property
    def enforced(self) -> bool:
        """Searched by this version: printed by the current method, or re-printable from its
        kept audio. Otherwise it waits for an operator to register it again."""
        return self.print_version == PRINT_VERSION or self.audio_kept

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class ClipMatch:
    clip: Clip
    match: FineMatch  # the clip's lowest error rate among its matches
    refuses: bool = True  # one of the clip's matches passes the refusal rule (`Denylist(refuse=)`)


class ClipStore(Protocol):
    def put(self, clip: Clip, audio: bytes | None = None) -> None:
        """Add or replace a clip, with its 16 kHz PCM16 audio or none (then any kept audio goes)."""
        ...

    def delete(self, clip_id: str) -> bool:
        """Remove the clip and its audio; False when there was none."""
        ...

    def audio(self, clip_id: str) -> bytes | None:
        """The clip's kept audio, or None."""
        ...

    def all(self) -> list[Clip]: ...

    def generation(self) -> int:
        """A number that changes whenever a clip is added or removed."""
        ...


def _meta(clip: Clip) -> dict[str, Any]:
    return {
        "clip_id": clip.clip_id,
        "label": clip.label,
        "source": clip.source,
        "created_at": clip.created_at.isoformat(),
        "expires_at": clip.expires_at.isoformat() if clip.expires_at else None,
        "households": clip.households,
        "print_version": clip.print_version,
        "audio_kept": clip.audio_kept,
    }


def _from_meta(meta: dict[str, Any], blob: bytes) -> Clip:
    expires = meta.get("expires_at")
    return Clip(
        clip_id=str(meta["clip_id"]),
        label=str(meta["label"]),
        source=str(meta["source"]),
        created_at=datetime.fromisoformat(str(meta["created_at"])),
        expires_at=datetime.fromisoformat(str(expires)) if expires else None,
        fp=Fingerprint.from_bytes(blob),
        households=int(meta.get("households", 0)),
        print_version=int(meta.get("print_version", 1)),
        audio_kept=bool(meta.get("audio_kept", False)),
    )


class MemoryClipStore:
    def __init__(self) -> None:
        self._clips: dict[str, Clip] = {}
        self._audio: dict[str, bytes] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def put(self, clip: Clip, audio: bytes | None = None) -> None:
        with self._lock:
            self._clips[clip.clip_id] = clip
            if audio is None:
                self._audio.pop(clip.clip_id, None)
            else:
                self._audio[clip.clip_id] = audio
            self._generation += 1

    def delete(self, clip_id: str) -> bool:
        with self._lock:
            found = self._clips.pop(clip_id, None) is not None
            self._audio.pop(clip_id, None)
            self._generation += 1
            return found

    def audio(self, clip_id: str) -> bytes | None:
        with self._lock:
            return self._audio.get(clip_id)

    def all(self) -> list[Clip]:
        with self._lock:
            return list(self._clips.values())

    def generation(self) -> int:
        with self._lock:
            return self._generation


_SCHEMA = """
CREATE TABLE IF NOT EXISTS broadcast_clips (
    clip_id TEXT PRIMARY KEY,
    meta TEXT NOT NULL,
    fingerprint BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS broadcast_clip_audio (
    clip_id TEXT PRIMARY KEY,
    pcm16 BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS broadcast_clips_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT OR IGNORE INTO broadcast_clips_generation (id, generation) VALUES (1, 0);
"""


class SqliteClipStore:
    """Clips in their own tables, through their own connection (WAL, busy timeout)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open the broadcast clip store at {path}: {exc}") from exc

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> int:
        """Run the statements and bump the generation in one transaction; rows the first changed."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                changed = [self._conn.execute(sql, args).rowcount for sql, args in statements]
                self._conn.execute(
                    "UPDATE broadcast_clips_generation SET generation = generation + 1 WHERE id = 1"
                )
                self._conn.execute("COMMIT")
                return int(changed[0])
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise Unavailable("the broadcast clip store is unavailable") from exc

    def put(self, clip: Clip, audio: bytes | None = None) -> None:
        keep_audio = (
            (
                "INSERT OR REPLACE INTO broadcast_clip_audio (clip_id, pcm16) VALUES (?, ?)",
                (clip.clip_id, audio),
            )
            if audio is not None
            else ("DELETE FROM broadcast_clip_audio WHERE clip_id = ?", (clip.clip_id,))
        )
        self._write(
            (
                "INSERT OR REPLACE INTO broadcast_clips (clip_id, meta, fingerprint) VALUES (?, ?, ?)",
                (clip.clip_id, json.dumps(_meta(clip)), clip.fp.to_bytes()),
            ),
            keep_audio,
        )

    def delete(self, clip_id: str) -> bool:
        return (
            self._write(
                ("DELETE FROM broadcast_clips WHERE clip_id = ?", (clip_id,)),
                ("DELETE FROM broadcast_clip_audio WHERE clip_id = ?", (clip_id,)),
            )
            > 0
        )

    def audio(self, clip_id: str) -> bytes | None:
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT pcm16 FROM broadcast_clip_audio WHERE clip_id = ?", (clip_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise Unavailable("the broadcast clip store is unavailable") from exc
        return bytes(row[0]) if row else None

    def all(self) -> list[Clip]:
        with self._lock:
            try:
                rows = self._conn.execute("SELECT meta, fingerprint FROM broadcast_clips").fetchall()
            except sqlite3.Error as exc:
                raise Unavailable("the broadcast clip store is unavailable") from exc
        return [_from_meta(json.loads(meta), bytes(blob)) for meta, blob in rows]

    def generation(self) -> int:
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT generation FROM broadcast_clips_generation WHERE id = 1"
                ).fetchone()
            except sqlite3.Error as exc:
                raise Unavailable("the broadcast clip store is unavailable") from exc
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class RedisClipStore:
    """Clips in one Redis hash (`{prefix}:clips`), their kept audio in another (read only to
    re-print), and a generation counter beside them."""

    def __init__(self, client: Any, prefix: str = "purchase-guard:broadcast") -> None:
        self._redis = client
        self._clips = f"{prefix}:clips"
        self._audio = f"{prefix}:clips:audio"
        self._gen = f"{prefix}:clips:generation"

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise Unavailable("the broadcast clip store (Redis) is unavailable") from exc
            raise

    def put(self, clip: Clip, audio: bytes | None = None) -> None:
        meta = json.dumps(_meta(clip)).encode()
        blob = len(meta).to_bytes(4, "little") + meta + clip.fp.to_bytes()
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._clips, clip.clip_id, blob)
        if audio is None:
            pipe.hdel(self._audio, clip.clip_id)
        else:
            pipe.hset(self._audio, clip.clip_id, audio)
        pipe.incr(self._gen)
        self._call(pipe.execute)

    def delete(self, clip_id: str) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self._clips, clip_id)
        pipe.hdel(self._audio, clip_id)
        pipe.incr(self._gen)
        removed, _, _ = self._call(pipe.execute)
        return bool(removed)

    def audio(self, clip_id: str) -> bytes | None:
        blob = self._call(self._redis.hget, self._audio, clip_id)
        return bytes(blob) if blob is not None else None

    def all(self) -> list[Clip]:
        out = []
        for blob in self._call(self._redis.hvals, self._clips):
            size = int.from_bytes(blob[:4], "little")
            out.append(_from_meta(json.loads(blob[4 : 4 + size]), bytes(blob[4 + size :])))
        return out

    def generation(self) -> int:
        return int(self._call(self._redis.get, self._gen) or 0)


# What identifies one stored version of a clip: every field a verdict reads, and the stored
# print's length and a digest of its first 64 frames, so a clip replaced under the same id
# (another print version, other audio) is a removal and an addition, not the same clip.
ClipKey = tuple[str, str, str, datetime, datetime | None, int, int, bool, int, int]


def clip_key(clip: Clip) -> ClipKey:
    # The first frames only: other audio differs from its first frames on, and a digest of
    # whole prints made the key most of the cost of following one change at 10,000 clips
    # (scripts/bench_fleet.py --only denylist, "registration").
    bits = clip.fp.bits
    return (
        clip.clip_id,
        clip.label,
        clip.source,
        clip.created_at,
        clip.expires_at,
        clip.households,
        clip.print_version,
        clip.audio_kept,
        int(bits.shape[0]),
        zlib.crc32(np.ascontiguousarray(bits[:64]).tobytes()),
    )


@dataclass(frozen=True, slots=True)
class _Segment:
    key: ClipKey  # the stored clip's (`clip` may carry a print re-computed from its audio)
    clip: Clip
    start: int  # clip frame the segment is read from (scan) or its postings count from (index)


class _ScanSearch:
    """The coarse scan over every segment row (`match.PrintIndex`), segments every 0.51 s:
    the search before the index, kept as the baseline the bench measures it against. It is
    only ever rebuilt whole (no `kill`)."""

    def __init__(self, params: MatchParams) -> None:
        self._index: PrintIndex[_Segment] = PrintIndex(params)
        self.clips = 0

    def add(self, clip: Clip, key: ClipKey) -> None:
        self.clips += 1
        first = anchor(clip.fp)
        if first is None:
            return
        voiced = np.flatnonzero(clip.fp.mask)
        starts: set[int] = set()
        for start in range(first, max(first + 1, clip.fp.n_frames - COARSE_STEP), SEGMENT_STEP):
            # A segment that starts in a pause would anchor nothing useful; move it to
            # the next voiced frame.
            following = voiced[voiced >= start]
            if following.size and int(following[0]) not in starts:
                starts.add(int(following[0]))
                self._index.add(_Segment(key, clip, int(following[0])), clip.fp, int(following[0]))

    def seal(self) -> None:
        """Nothing to do: rows are indexed as they are added."""

    def kill(self, key: ClipKey) -> bool:
        raise NotImplementedError("the scan is rebuilt whole")

    def find(self, fp: Fingerprint, start: int) -> list[tuple[ClipKey, Clip, FineMatch]]:
        return [(cand.item.key, cand.item.clip, fine) for cand, fine in self._index.matches(fp, start)]


class _KeySearch:
    """The fleet window's inverted index (`index.py`) over clip segments, then the same fine
    check against the whole clip.

    A segment is one posting-store entry: the clip's keys from `max_shift` frames before its
    reference frame to `max_shift` + 3.07 s after it, frames counted from the reference. A
    query anchored within `max_shift` of a reference finds all of its 3.07 s in that segment,
    at an offset the vote counts; references every 2 (`max_shift` - `bin_frames`) frames leave
    every anchor within half a step of one, with the vote's edge bin to spare. All segments
    live in one bucket: clips do not expire by arrival. Clips can be added after a seal (each
    seal is one more sorted run) and removed (`kill`: their entries stop counting at once;
    their postings stay until the index is rebuilt)."""

    def __init__(self, params: MatchParams, keys: KeyParams) -> None:
        self._params = params
        self._keys = keys
        self._postings: MemoryPostings[_Segment] = MemoryPostings(keys)
        self._segments: list[_Segment] = []  # added, not yet sealed into the postings
        self._seg_keys: list[U32Array] = []
        self._seg_frames: list[I64Array] = []
        self._entries_of: dict[ClipKey, list[int]] = {}  # sealed clips' entry numbers
        self._dead: set[int] = set()  # entries of killed clips
        self._widened = keys

    @property
    def clips(self) -> int:
        """Clips indexed and not killed."""
        return len(self._entries_of)

    def add(self, clip: Clip, key: ClipKey) -> None:
        self._entries_of.setdefault(key, [])
        first = anchor(clip.fp)
        if first is None:
            return
        # The clip's keys once (frames from its anchor), then each segment's share of them.
        keys, frames = stored_keys(clip.fp, self._keys)
        frames = frames + first
        reach = self._keys.max_shift
        # Every anchor within half a step of a reference, the vote's edge bin to spare.
        step = 2 * (reach - self._keys.bin_frames)
        for ref in range(first, clip.fp.n_frames + step // 2, step):
            inside = (frames >= ref - reach) & (frames < ref + reach + QUERY_FRAMES)
            if inside.any():
                self._segments.append(_Segment(key, clip, ref))
                self._seg_keys.append(keys[inside])
                self._seg_frames.append(frames[inside] - ref)

    def seal(self) -> None:
        """Index the added segments (one sorted run)."""
        numbers = self._postings.add_many(0, self._segments, self._seg_keys, self._seg_frames)
        for seg, number in zip(self._segments, numbers, strict=True):
            self._entries_of[seg.key].append(number)
        self._segments, self._seg_keys, self._seg_frames = [], [], []

    def kill(self, key: ClipKey) -> bool:
        """Stop the clip's entries from counting; False when this index does not hold it."""
        numbers = self._entries_of.pop(key, None)
        if numbers is None:
            return False
        self._dead.update(numbers)
        # Dead entries still take part in the vote; the vote keeps that many more candidates
        # so that they never crowd a live clip out of the fine check.
        self._widened = replace(self._keys, max_candidates=self._keys.max_candidates + len(self._dead))
        return True

    def find(self, fp: Fingerprint, start: int) -> list[tuple[ClipKey, Clip, FineMatch]]:
        keys, frames, weights = query_lookups(fp, start, self._keys)
        voted = vote(self._postings.lookup([0], keys), frames, self._widened, weights)
        voted = [v for v in voted if v[0] not in self._dead][: self._keys.max_candidates]
        found = self._postings.entries([number for number, _, _ in voted])
        reach = self._keys.bin_frames + 8  # the bin's width plus the fine check's own reach
        out: list[tuple[ClipKey, Clip, FineMatch]] = []
        for number, shift, _ in voted:
            seg = found.get(number)
            if seg is None:
                continue
            offset = shift + seg.start - start  # clip frame = query frame + offset
            fine = best_offset(fp, seg.clip.fp, range(offset - 8, offset + reach + 1), self._params)
            if fine is not None and self._params.accepts(fine):
                out.append((seg.key, seg.clip, fine))
        return out


_Search = _ScanSearch | _KeySearch


class Denylist:
    """Searches the live clips of a `ClipStore`; thread-safe.

    The store is the source of truth: every match first reads its generation counter, and
    when it has moved, the clips, and compares them (`clip_key`) with the ones indexed. With
    `refresh="incremental"` (the index's default) a change costs what changed, inline: the
    new clips' segments go into a small second index (`delta`), and a removed clip's entries
    stop counting at once. So a clip registered through any replica matches from the first
    check that sees the generation move, and a removed one never again. Once the changes
    since the main index was built reach `compact_fraction` of its clips, a background
    thread builds a new main index from the live clips and swaps it in under the lock,
    reconciling what changed meanwhile; a match never waits for it, and a failed compaction
    leaves the live index as it was (still right, only larger). `refresh="rebuild"` rebuilds
    the whole index inline on the first match after any change: the behaviour before, kept
    as the bench's baseline, and the scan's only mode.

    `search="scan"` is the coarse scan the index replaced, kept for the bench's comparison."""

    def __init__(
        self,
        store: ClipStore,
        params: MatchParams = DENYLIST_MATCH,
        print_params: FingerprintParams = DEFAULT_PARAMS,
        keys: KeyParams = DENYLIST_KEYS,
        search: Literal["index", "scan"] = "index",
        refresh: Literal["incremental", "rebuild"] | None = None,
        compact_fraction: float = 0.05,
        refuse: RefusalRule = DENYLIST_REFUSE,
    ) -> None:
        if search == "scan" and refresh == "incremental":
            raise ValueError("the scan is only rebuilt whole (refresh='rebuild')")
        if (
            refuse.match.ber_limit > params.ber_limit
            or refuse.match.ber_slack < params.ber_slack
            or refuse.match.min_bits < params.min_bits
        ):
            # Only matches by `params` are found; a looser refusal rule would read as stricter.
            raise ValueError("the refusal rule must be at least as strict as the match rule")
        self._store = store
        self._params = params
        self._refuse = refuse
        self._print_params = print_params
        self._keys = keys
        self._search = search
        self._refresh_mode = refresh or ("incremental" if search == "index" else "rebuild")
        self._compact_fraction = compact_fraction
        self._lock = threading.Lock()
        self._generation: int | None = None
        # The live clips as of `_generation`, by stored key, with prints of the running
        # method (re-printed from kept audio when stored with another): re-prints are made
        # once per stored version, not at every change.
        self._live: dict[ClipKey, Clip] = {}
        self._base: _Search | None = None
        self._delta: _KeySearch | None = None
        self._changes = 0  # clips added or removed since `_base` was built
        self._epoch = 0  # bumped whenever `_base` is replaced; a compaction of an older one is dropped
        self._broken = False  # a change was half applied: the next refresh rebuilds whole
        self._compacting: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self.compactions = 0
        self.compaction_failures = 0

    def _empty(self) -> _Search:
        return _ScanSearch(self._params) if self._search == "scan" else _KeySearch(self._params, self._keys)

    @property
    def store(self) -> ClipStore:
        return self._store

    @property
    def pending_changes(self) -> int:
        """Clips added or removed since the main index was built (0 once compacted)."""
        with self._lock:
            return self._changes

    def _build(self, clips: list[tuple[ClipKey, Clip]]) -> _Search:
        """A whole index of the given (already current) clips."""
        index = self._empty()
        for key, clip in clips:
            index.add(clip, key)
        index.seal()
        return index

    def _refresh(self) -> None:
        generation = self._store.generation()
        if generation == self._generation:
            return
        stored = {clip_key(clip): clip for clip in self._store.all()}
        if self._refresh_mode == "rebuild" or self._base is None or self._broken:
            self._rebuild(stored, generation)
            return
        base = self._base
        added = [(key, clip) for key, clip in stored.items() if key not in self._live]
        removed = [key for key in self._live if key not in stored]
        # Everything that can fail on the store (a re-print reads kept audio) before any change.
        current = [(key, cur) for key, clip in added if (cur := self._current(key, clip)) is not None]
        self._broken = True
        delta = self._delta or _KeySearch(self._params, self._keys)
        for key, cur in current:
            delta.add(cur, key)
            self._live[key] = cur
        delta.seal()
        self._delta = delta if delta.clips else None
        for key in removed:
            if not base.kill(key) and self._delta is not None:
                self._delta.kill(key)
            del self._live[key]
        self._changes += len(current) + len(removed)
        self._generation = generation
        self._broken = False
        if current or removed:
            log.info("broadcast_denylist_updated", added=len(current), removed=len(removed))
        if self._compaction_due():
            self._start_compaction()

    def _compaction_due(self) -> bool:
        return self._base is not None and self._changes >= max(1.0, self._compact_fraction * self._base.clips)

    def _rebuild(self, stored: dict[ClipKey, Clip], generation: int) -> None:
        live = {key: cur for key, clip in stored.items() if (cur := self._current(key, clip)) is not None}
        self._base = self._build(list(live.items()))
        self._delta = None
        self._live = live
        self._changes = 0
        self._epoch += 1
        self._generation = generation
        self._broken = False

    def _current(self, key: ClipKey, clip: Clip) -> Clip | None:
        """The clip with a print of the running method, or None when it cannot have one."""
        known = self._live.get(key)
        if known is not None:
            return known
        if clip.print_version == PRINT_VERSION:
            return clip
        fp: Fingerprint | None = None
        if clip.audio_kept:
            audio = self._store.audio(clip.clip_id)  # Unavailable propagates: the check fails closed
            try:
                fp = fingerprint(pcm16_to_pcm(audio), self._print_params) if audio else None
            except AudioError:
                fp = None
            if fp is not None:
                log.info("broadcast_clip_reprinted", clip_id=clip.clip_id, print_version=clip.print_version)
        if fp is None:
            log.warning(
                "broadcast_clip_outdated",
                clip_id=clip.clip_id,
                print_version=clip.print_version,
                hint="register the clip again",
            )
            return None
        return replace(clip, fp=fp, print_version=PRINT_VERSION)

    def compact(self) -> None:
        """Start a background compaction now unless one is running (the bench; tests)."""
        with self._lock:
            if self._refresh_mode == "incremental" and self._base is not None:
                self._start_compaction()

    def wait_compacted(self, timeout: float | None = None) -> bool:
        """True once no compaction is running (False if `timeout` passed first)."""
        return self._idle.wait(timeout)

    def _start_compaction(self) -> None:
        if self._compacting is not None:
            return  # the running one reconciles; the next change starts another if needed
        thread = threading.Thread(
            target=self._compact,
            args=(list(self._live.items()), self._epoch),
            name="denylist-compaction",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the live index stays right, only larger
            log.exception("broadcast_denylist_compaction_failed", error="RuntimeError")
            self.compaction_failures += 1
            return
        self._idle.clear()
        self._compacting = thread

    def _compact(self, snapshot: list[tuple[ClipKey, Clip]], epoch: int) -> None:
        """Build a new main index of `snapshot` off the lock, then swap it in under the lock
        with the clips added or removed since the snapshot applied to it."""
        try:
            index: _Search | None = self._build(snapshot)
        except Exception as exc:  # the live index is still right: keep it, retry on the next change
            log.exception("broadcast_denylist_compaction_failed", error=type(exc).__name__)
            index = None
        with self._lock:
            self._compacting = None
            try:
                if index is None:
                    self.compaction_failures += 1
                elif epoch == self._epoch and not self._broken:
                    self._swap(index, snapshot)
            finally:
                # Changes that came in while it ran may be due another (not after a failure:
                # the next change retries).
                if index is not None and self._compaction_due():
                    self._start_compaction()
                if self._compacting is None:
                    self._idle.set()

    def _swap(self, index: _Search, snapshot: list[tuple[ClipKey, Clip]]) -> None:
        seen = {key for key, _ in snapshot}
        late = [(key, clip) for key, clip in self._live.items() if key not in seen]
        gone = [key for key in seen if key not in self._live]
        delta: _KeySearch | None = None
        if late:
            delta = _KeySearch(self._params, self._keys)
            for key, clip in late:
                delta.add(clip, key)
            delta.seal()
        for key in gone:
            index.kill(key)
        self._base, self._delta = index, delta
        self._changes = len(late) + len(gone)
        self._epoch += 1
        self.compactions += 1
        log.info("broadcast_denylist_compacted", clips=index.clips, carried=self._changes)

    def preload(self) -> None:
        """Build the index now (at start, on a thread of its own), so the first check does not
        build it inline: at 10,000 clips that is seconds. A failure is logged and left to the
        next check, which builds again and raises if it still cannot (fails closed)."""
        try:
            with self._lock:
                self._refresh()
        except Exception as exc:  # the next match retries and raises: nothing is skipped
            log.warning("broadcast_denylist_preload_failed", error=type(exc).__name__)

    def match(self, fp: Fingerprint, now: datetime) -> list[ClipMatch]:
        """Live clips the print matches (by `params`), best first, one entry per clip, each
        saying whether it is strong enough to refuse (by `refuse`)."""
        start = anchor(fp)
        if start is None:
            return []
        with self._lock:
            self._refresh()
            assert self._base is not None  # set by the refresh, or it raised
            found = self._base.find(fp, start)
            if self._delta is not None:
                found += self._delta.find(fp, start)
            # Only clips live in the store as of this check: a removed clip is never matched,
            # whatever an index still holds.
            found = [(key, clip, fine) for key, clip, fine in found if key in self._live]
        best: dict[str, ClipMatch] = {}
        query_bits = fp.reliable_bits if found else 0  # most checks find nothing
        for _, clip, fine in found:
            if not clip.live(now.astimezone(UTC)):
                continue
            known = best.get(clip.clip_id)
            # The refusal rule asks more bits than the lowest error rate may have: any of the
            # clip's matches passing it refuses.
            refuses = self._refuse.refuses(fine, query_bits) or (known is not None and known.refuses)
            if known is None or fine.ber < known.match.ber:
                best[clip.clip_id] = ClipMatch(clip, fine, refuses)
            elif refuses:
                best[clip.clip_id] = replace(known, refuses=True)
        return sorted(best.values(), key=lambda m: m.match.ber)
