"""Replays: audio a household sent before, sent again (a recorded answer, a request sent twice).

The random-digit challenge is meant to defeat a recording of a parent; a spoken PIN is the same
digits every time, so a saved answer would pass every PIN challenge, and a saved request would
buy again and again. Every Evaluate's and every answer's audio is fingerprinted (the broadcast
fingerprint: band-energy differences, never audio) and compared with the household's own prints
of the last `window`; a match is a replay. Household-scoped: another home's audio is the fleet
window's business (broadcast/guard.py), not this one's.

The rule is the broadcast fine check's, made stricter (`REPLAY_MATCH`): a replay is the same
recording, played digitally or through a speaker into the same kind of microphone, so it agrees
more closely than two rooms' copies of one broadcast; and the same person saying the same words
again must not be taken for a recording of themselves. Both sides are measured by
`make eval-answers` (docs/challenges.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from purchase_guard.broadcast.fingerprint import N_BITS, Fingerprint
from purchase_guard.broadcast.match import ROW_WIDTH, MatchParams, PrintIndex, anchor, stored_row

# Far stricter than the fleet rule (ber_limit 0.25): at 400 effective bits a replay must agree
# to within 0.045. The same speaker saying the same digits again came no closer than 0.039 (and
# mostly 0.15 or more); a digital copy agrees to under 0.01, a copy through 10 dB of room noise
# mostly under 0.04. The two sides are measured by `make eval-answers`.
REPLAY_MATCH = MatchParams(ber_limit=0.06, ber_slack=0.3, min_bits=300)
# Too little voiced audio to tell a recording apart from a new utterance of the same words.
MIN_VOICED_SECONDS = 0.8


@dataclass(frozen=True, slots=True)
class EarlierAudio:
    """One earlier print of the household, with what every comparison derives from it made once
    (its voiced stretch for the exact-copy check, its anchor and coarse row for the tolerant
    one), so a cached EarlierAudio costs nothing to compare again (`EarlierAudioCache`)."""

    print_id: str
    decision_id: str
    kind: str  # "evaluate" | "confirm"
    fp: Fingerprint
    span: bytes = field(init=False, repr=False, compare=False)
    # The same bytes seen as one 64-bit word per frame (no copy), for the exact-copy search.
    frames: np.ndarray[Any, np.dtype[np.uint64]] = field(init=False, repr=False, compare=False)
    start: int | None = field(init=False, repr=False, compare=False)
    _row: np.ndarray[Any, np.dtype[np.uint64]] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "span", _voiced_span(self.fp) if self.fp.voiced_frames else b"")
        object.__setattr__(self, "frames", np.frombuffer(self.span, dtype="<u8"))
        object.__setattr__(self, "start", anchor(self.fp))

    def row(self) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """The coarse row of the tolerant search, made the first time it is needed (a short
        answer is only checked for exact copies, which never need it)."""
        if self._row is None:
            if self.start is None:
                raise ValueError("a print without voiced frames has no coarse row")
            object.__setattr__(self, "_row", stored_row(self.fp, self.start))
        assert self._row is not None
        return self._row

    @property
    def nbytes(self) -> int:
        """Memory held by the print and what was derived from it (the coarse row counted as
        made, so the cache's bound holds once it is)."""
        return self.fp.bits.nbytes + self.fp.mask.nbytes + len(self.span) + 8 * ROW_WIDTH + 200


@dataclass(frozen=True, slots=True)
class Replay:
    """The earlier audio this audio replays, and how closely (for the reason's detail)."""

    decision_id: str
    kind: str
    ber: float
    effective_bits: float


def find_replay(
    fp: Fingerprint, earlier: Sequence[EarlierAudio], params: MatchParams = REPLAY_MATCH
) -> Replay | None:
    """The closest earlier audio that `fp` is a copy of, or None (also for audio too short to tell
    apart from a new utterance of the same words, unless it is a bit-exact copy)."""
    if not earlier or fp.voiced_frames == 0:
        return None
    exact = _exact_copy(fp, earlier)
    if exact is not None:
        return exact
    start = anchor(fp)
    if start is None or fp.voiced_seconds < MIN_VOICED_SECONDS:
        return None
    index: PrintIndex[EarlierAudio] = PrintIndex(params, capacity=max(16, len(earlier)))
    for item in earlier:
        if item.start is not None:
            index.add(item, item.fp, item.start, item.row())
    found = index.matches(fp, start)
    if not found:
        return None
    candidate, fine = found[0]
    return Replay(candidate.item.decision_id, candidate.item.kind, fine.ber, fine.effective_bits)


def _voiced_span(fp: Fingerprint) -> bytes:
    """The sub-prints from the first voiced frame to the last, with their masks, as bytes."""
    voiced = np.flatnonzero(fp.mask)
    a, b = int(voiced[0]), int(voiced[-1]) + 1
    return np.stack([fp.bits[a:b], fp.mask[a:b]], axis=1).astype("<u4").tobytes()


def _exact_copy(fp: Fingerprint, earlier: Sequence[EarlierAudio]) -> Replay | None:
    """Earlier audio whose voiced stretch is this audio's, bit for bit: the same recording sent
    again. Checked whatever the length, since a short answer (a quick PIN) has too few bits for
    the tolerant rule, and no person says anything twice with the same sub-prints, however short.
    (A copy re-cut or re-encoded changes the edges and the masks: that is the tolerant rule's.)

    One frame (sub-print and mask) is 8 bytes, so the stretches are read as one array of 64-bit
    frames, all earlier prints end to end: the frames equal to this stretch's first, with its
    last where it would end inside the same print, are the only places a copy can start, found
    in one vectorised pass instead of a byte search per print. The first earlier print (in
    `earlier`'s order) holding the stretch is the one named, as a search print by print would."""
    mine = np.frombuffer(_voiced_span(fp), dtype="<u8")
    spans = [item.frames for item in earlier]
    lengths = np.fromiter((s.size for s in spans), dtype=np.int64, count=len(spans))
    m = mine.size
    if m == 0 or not (lengths >= m).any():
        return None
    frames = np.concatenate(spans)
    ends = np.cumsum(lengths)
    at = np.flatnonzero(frames == mine[0])
    owner = np.searchsorted(ends, at, side="right")  # the print each frame belongs to
    fits = at + m <= ends[owner]  # the copy would end inside the same print
    at, owner = at[fits], owner[fits]
    last = frames[at + m - 1] == mine[-1]
    for a, k in zip(at[last].tolist(), owner[last].tolist(), strict=True):
        if np.array_equal(frames[a : a + m], mine):
            item = earlier[k]
            return Replay(item.decision_id, item.kind, 0.0, float(fp.voiced_frames * N_BITS))
    return None


def exact_copy_print_by_print(fp: Fingerprint, earlier: Sequence[EarlierAudio]) -> Replay | None:
    """The exact-copy search as it was before the one-array pass: a byte search per print, whole
    frames only. Not used by the guard: kept as the baseline `scripts/bench_replay.py` times
    and the reference the tests hold `_exact_copy` to."""
    mine = _voiced_span(fp)
    for item in earlier:
        theirs = item.span
        if not theirs:
            continue
        at = theirs.find(mine)
        while at >= 0 and at % 8:  # only whole frames (8 bytes: sub-print and mask)
            at = theirs.find(mine, at + 1)
        if at >= 0:
            return Replay(item.decision_id, item.kind, 0.0, float(fp.voiced_frames * N_BITS))
    return None


PrintRef = tuple[str, str, str]  # (print_id, decision_id, kind), as the store lists them


class EarlierAudioCache:
    """Parsed and prepared earlier prints, kept between checks; bounded by bytes, least recently
    used out first; thread-safe.

    Without it, every check unsealed, parsed and prepared every print of the household's replay
    window again, so an Evaluate cost grew with how much the household had spoken in 30 days
    (16 ms of replay check at 900 prints, `scripts/bench_decide.py --history`). The store still
    says, on every check, which prints are in the window (`refs`): the cache only saves the
    work of opening a print it has opened before, so what is compared is exactly what the store
    holds now, whatever another replica wrote or a purge deleted. A print's content never
    changes, so a cached one is never stale. Keyed by household too, so one household's
    prints can only ever be compared with its own audio."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._items: OrderedDict[tuple[str, str], EarlierAudio] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def earlier(
        self,
        household_id: str,
        refs: Sequence[PrintRef],
        fetch: Callable[[list[str]], dict[str, bytes]],
    ) -> list[EarlierAudio]:
        """The prints `refs` names, in that order: cached ones as they are, the rest fetched
        (`fetch(print_ids)` -> print bytes by id), parsed and cached. A print the store listed
        but no longer returns (deleted in between) is left out, as a fresh read would."""
        out: dict[str, EarlierAudio] = {}
        missing: list[PrintRef] = []
        with self._lock:
            for ref in refs:
                item = self._items.get((household_id, ref[0]))
                if item is None:
                    missing.append(ref)
                else:
                    self._items.move_to_end((household_id, ref[0]))
                    out[ref[0]] = item
        if missing:
            blobs = fetch([ref[0] for ref in missing])
            fresh = [
                EarlierAudio(pid, did, kind, Fingerprint.from_bytes(blobs[pid]))
                for pid, did, kind in missing
                if pid in blobs
            ]
            with self._lock:
                for item in fresh:
                    out[item.print_id] = item
                    self._put((household_id, item.print_id), item)
        return [out[ref[0]] for ref in refs if ref[0] in out]

    def remember(self, household_id: str, item: EarlierAudio) -> None:
        """Keeps a print this process has just stored (its decision committed), so the next
        check of the household needs no read to open it. The store's refs still decide
        whether it is compared at all."""
        with self._lock:
            self._put((household_id, item.print_id), item)

    def _put(self, key: tuple[str, str], item: EarlierAudio) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        if item.nbytes > self._max:
            return
        self._items[key] = item
        self._bytes += item.nbytes
        while self._bytes > self._max:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.nbytes
