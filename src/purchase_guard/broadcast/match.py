"""Finding copies of the same audio: a coarse search over many prints, then a fine check.

Coarse search (`PrintIndex`): every print is anchored at its first voiced frame and kept as
a row of 64-bit words, one per 64 ms: the reliable 1-bits in the high half, the reliable
0-bits in the low half. A query takes every 128 ms of its own print from its anchor (3 s)
and, for each of 33 shifts (-1.02..+1.02 s in 64 ms steps: two devices cut the same
broadcast up to 0.3 s apart each, and their first voiced frames differ too), counts
agreeing and disagreeing reliable bits against all rows at once with popcounts, scored as
(agree - disagree) / sqrt(compared). A rough pass with every other query word keeps the
best `prefilter` rows for the full pass. That is a fixed, vectorised amount of work per
row and needs no hash table. Exact sub-print lookup (Haitsma-Kalker's hash table) was measured
first and dropped: at 5 dB SNR two rooms' copies share a median of 1 exact 32-bit
sub-print and 6 exact 16-bit half-prints per 3 s, too few to find them reliably
(docs/broadcast.md).

Fine check (`best_offset_ber`): the candidate's full print is compared at every 8 ms
offset around the coarse shift, on bits reliable and voiced in both prints; a match needs
enough such bits and a bit error rate under the threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from purchase_guard.broadcast.fingerprint import Fingerprint

U64Array = np.ndarray[Any, np.dtype[np.uint64]]
F64Array = np.ndarray[Any, np.dtype[np.float64]]

COARSE_STEP = 8  # frames (64 ms) between stored words
QUERY_STRIDE = 2  # stored words (128 ms) between query words
QUERY_WORDS = 24  # the query's first 3.07 s from its anchor
SHIFTS = 16  # stored words either side: +-1.02 s
SHIFT_STRIDE = 1  # shifts tried every 64 ms; the fine check refines to 8 ms
ROW_WORDS = QUERY_STRIDE * (QUERY_WORDS - 1) + 1
ROW_WIDTH = ROW_WORDS + 2 * SHIFTS  # zero padding either side keeps every shift in range


@dataclass(frozen=True, slots=True)
class MatchParams:
    # Thresholds chosen on the evaluation's tuning split (scripts/eval_broadcast.py).
    max_ber: float = 0.22  # fine check: reliable-bit error rate at the best offset
    min_bits: int = 400  # fine check: reliable bits compared in both prints
    # Coarse search: (agreeing - disagreeing) / sqrt(compared) at the best shift, i.e. how
    # many standard deviations above chance; a raw error rate would favour edge shifts that
    # compare only a few bits.
    coarse_min_z: float = 3.0
    prefilter: int = 1024  # rows kept after the rough first pass
    max_candidates: int = 32  # fine-checked per query, best coarse score first


DEFAULT_MATCH = MatchParams()


@dataclass(frozen=True, slots=True)
class FineMatch:
    ber: float
    offset: int  # frames: print b's frame = print a's frame + offset
    bits: int


def anchor(fp: Fingerprint) -> int | None:
    """First voiced frame, or None when nothing is voiced."""
    voiced = np.flatnonzero(fp.mask)
    return int(voiced[0]) if voiced.size else None


def _one_hot(fp: Fingerprint, frames: np.ndarray[Any, Any]) -> U64Array:
    """Words for the given frame indices (out of range: zero, i.e. never compared)."""
    n = fp.n_frames
    valid = (frames >= 0) & (frames < n)
    idx = np.clip(frames, 0, max(n - 1, 0))
    bits = fp.bits[idx].astype(np.uint64)
    mask = fp.mask[idx].astype(np.uint64)
    ones = bits & mask
    zeros = ~bits & mask & np.uint64(0xFFFFFFFF)
    words: U64Array = (ones << np.uint64(32)) | zeros
    words[~valid] = 0
    return words


def stored_row(fp: Fingerprint, start: int) -> U64Array:
    """The padded coarse row of a print read from frame `start`."""
    row = np.zeros(ROW_WIDTH, dtype=np.uint64)
    row[SHIFTS : SHIFTS + ROW_WORDS] = _one_hot(fp, start + COARSE_STEP * np.arange(ROW_WORDS))
    return row


def query_words(fp: Fingerprint, start: int) -> tuple[U64Array, U64Array]:
    """(agree, disagree) query words: AND with a stored word, popcount the result."""
    words = _one_hot(fp, start + COARSE_STEP * QUERY_STRIDE * np.arange(QUERY_WORDS))
    swapped = (words << np.uint64(32)) | (words >> np.uint64(32))
    return words, swapped


def best_offset_ber(a: Fingerprint, b: Fingerprint, offsets: range, min_bits: int) -> FineMatch | None:
    """Lowest bit error rate over `offsets` with at least `min_bits` compared, or None."""
    offs = np.fromiter(offsets, dtype=np.int64)
    if offs.size == 0 or a.n_frames == 0 or b.n_frames == 0:
        return None
    ia = np.arange(a.n_frames)[None, :]
    ib = ia + offs[:, None]
    valid = (ib >= 0) & (ib < b.n_frames)
    ib = np.clip(ib, 0, b.n_frames - 1)
    common = a.mask[None, :] & b.mask[ib]
    common[~valid] = 0
    compared = np.bitwise_count(common).sum(axis=1, dtype=np.int64)
    errors = np.bitwise_count((a.bits[None, :] ^ b.bits[ib]) & common).sum(axis=1, dtype=np.int64)
    ok = compared >= min_bits
    if not ok.any():
        return None
    ber = np.where(ok, errors / np.maximum(compared, 1), 2.0)
    k = int(np.argmin(ber))
    return FineMatch(ber=float(ber[k]), offset=int(offs[k]), bits=int(compared[k]))


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    item: T
    fp: Fingerprint
    offset_hint: int  # frames: item print's frame = query frame + offset_hint
    coarse_z: float


# The first pass tries every shift but reads only every other query word (256 ms apart).
# Skipping shifts instead was measured to lose a third of the true pairs: sub-prints 64 ms
# out of step are nearly unrelated, since each bit is itself a 64 ms difference.
_ROUGH_PERIOD = 2 * QUERY_STRIDE  # stored words between the query words the first pass reads
_ROUGH_WORDS = 16  # 12 query words, zero-padded to two uint64 lanes of byte counts
_ROUGH_WIDTH = -(-ROW_WIDTH // _ROUGH_PERIOD) + _ROUGH_WORDS
_LANES = np.uint64(0x00FF00FF00FF00FF)
_FOLD = np.uint64(0x0001000100010001)


def _byte_sums(counts: np.ndarray[Any, np.dtype[np.uint8]]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Row sums of an (n, 8k) uint8 array of popcounts (each <= 32, k <= 7), via uint64 lanes.

    numpy's axis reduction has a per-row cost that dominates for short rows; adding eight
    byte lanes at a time inside uint64 words is several times faster. At most seven words of
    lanes sum to at most 224 per lane, so nothing carries between lanes.
    """
    words = np.ascontiguousarray(counts).view(np.uint64)
    x = words[:, 0].copy()
    for k in range(1, words.shape[1]):
        x += words[:, k]
    pairs = (x & _LANES) + ((x >> np.uint64(8)) & _LANES)  # four 16-bit lanes
    return ((pairs * _FOLD) >> np.uint64(48)).astype(np.int64)


class PrintIndex(Generic[T]):
    """Coarse rows for many prints in growing arrays; not thread-safe (callers lock).

    Rows are kept whole (for the second pass, which reads about a thousand of them) and again
    split by column residue (for the first pass over all rows, so each shift reads a
    contiguous column slice). Removal marks a slot dead; dead slots are compacted away when
    they are half the array, so a sliding window costs memory for what it holds, not for
    what it has seen.
    """

    def __init__(self, params: MatchParams = DEFAULT_MATCH, capacity: int = 1024) -> None:
        self._params = params
        self._rows, self._rough = self._empty(capacity)
        self._items: list[T | None] = []
        self._prints: list[Fingerprint | None] = []
        self._starts: list[int] = []
        self._alive = 0

    @staticmethod
    def _empty(capacity: int) -> tuple[U64Array, list[U64Array]]:
        rows = np.zeros((capacity, ROW_WIDTH), dtype=np.uint64)
        return rows, [np.zeros((capacity, _ROUGH_WIDTH), dtype=np.uint64) for _ in range(_ROUGH_PERIOD)]

    def __len__(self) -> int:
        return self._alive

    @staticmethod
    def row_bytes() -> int:
        """Bytes one print costs in the coarse arrays (besides its full print)."""
        return 8 * (ROW_WIDTH + _ROUGH_PERIOD * _ROUGH_WIDTH)

    def _grow(self, capacity: int, keep: list[int]) -> None:
        rows, rough = self._empty(capacity)
        rows[: len(keep)] = self._rows[keep]
        for old, new in zip(self._rough, rough, strict=True):
            new[: len(keep)] = old[keep]
        self._rows, self._rough = rows, rough

    def add(self, item: T, fp: Fingerprint, start: int) -> None:
        n = len(self._items)
        if n == self._rows.shape[0]:
            self._grow(2 * n, list(range(n)))
        row = stored_row(fp, start)
        self._rows[n] = row
        for residue, arr in enumerate(self._rough):
            part = row[residue::_ROUGH_PERIOD]
            arr[n, : part.shape[0]] = part
        self._items.append(item)
        self._prints.append(fp)
        self._starts.append(start)
        self._alive += 1

    def remove_where(self, dead: Callable[[T], bool]) -> int:
        """Drop every live item for which `dead(item)` is true; returns how many."""
        removed = 0
        for slot, item in enumerate(self._items):
            if item is not None and dead(item):
                self._items[slot] = None
                self._prints[slot] = None
                self._rows[slot] = 0
                for arr in self._rough:
                    arr[slot] = 0
                self._alive -= 1
                removed += 1
        if removed and self._alive < len(self._items) // 2:
            keep = [i for i, item in enumerate(self._items) if item is not None]
            self._grow(max(1024, 2 * len(keep)), keep)
            self._items = [self._items[i] for i in keep]
            self._prints = [self._prints[i] for i in keep]
            self._starts = [self._starts[i] for i in keep]
        return removed

    def items(self) -> list[T]:
        return [item for item in self._items if item is not None]

    def _rough_pass(self, n: int, agree_q: U64Array, disagree_q: U64Array) -> F64Array:
        qa = np.zeros(_ROUGH_WORDS, dtype=np.uint64)
        qd = np.zeros(_ROUGH_WORDS, dtype=np.uint64)
        picked = agree_q[::2]
        qa[: picked.shape[0]] = picked
        qd[: picked.shape[0]] = disagree_q[::2]
        best = np.full(n, -np.inf)
        for shift in range(-SHIFTS, SHIFTS + 1, SHIFT_STRIDE):
            lo = SHIFTS + shift
            first = lo // _ROUGH_PERIOD
            view = self._rough[lo % _ROUGH_PERIOD][:n, first : first + _ROUGH_WORDS]
            agree = _byte_sums(np.bitwise_count(view & qa))
            disagree = _byte_sums(np.bitwise_count(view & qd))
            z = (agree - disagree) / np.sqrt(np.maximum(agree + disagree, 1))
            np.maximum(best, z, out=best)
        return best

    def candidates(self, fp: Fingerprint, start: int) -> list[Candidate[T]]:
        """Rows whose best coarse shift beats the coarse threshold, best first.

        Two passes: a rough one (every other query word) over all rows, then every word over
        the `prefilter` best rows. At 10,000 rows nearly all the time is the rough pass.
        """
        n = len(self._items)
        if n == 0 or self._alive == 0:
            return []
        p = self._params
        agree_q, disagree_q = query_words(fp, start)
        if n > p.prefilter:
            rough = self._rough_pass(n, agree_q, disagree_q)
            rows = np.sort(np.argpartition(-rough, p.prefilter - 1)[: p.prefilter])
        else:
            rows = np.arange(n)
        block = self._rows[rows]
        best_z = np.full(rows.shape[0], -np.inf)
        best_shift = np.zeros(rows.shape[0], dtype=np.int64)
        for shift in range(-SHIFTS, SHIFTS + 1, SHIFT_STRIDE):
            lo = SHIFTS + shift
            view = block[:, lo : lo + QUERY_STRIDE * (QUERY_WORDS - 1) + 1 : QUERY_STRIDE]
            agree = _byte_sums(np.bitwise_count(view & agree_q))
            disagree = _byte_sums(np.bitwise_count(view & disagree_q))
            z = (agree - disagree) / np.sqrt(np.maximum(agree + disagree, 1))
            better = z > best_z
            best_z = np.where(better, z, best_z)
            best_shift = np.where(better, shift, best_shift)
        order = np.flatnonzero(best_z >= p.coarse_min_z)
        order = order[np.argsort(-best_z[order], kind="stable")[: p.max_candidates]]
        out: list[Candidate[T]] = []
        for k in order.tolist():
            slot = int(rows[k])
            item = self._items[slot]
            stored = self._prints[slot]
            if item is None or stored is None:
                continue
            hint = self._starts[slot] - start + COARSE_STEP * int(best_shift[k])
            out.append(Candidate(item, stored, hint, float(best_z[k])))
        return out

    def matches(self, fp: Fingerprint, start: int) -> list[tuple[Candidate[T], FineMatch]]:
        """Candidates that pass the fine check, best first."""
        p = self._params
        reach = COARSE_STEP * SHIFT_STRIDE
        out: list[tuple[Candidate[T], FineMatch]] = []
        for cand in self.candidates(fp, start):
            fine = best_offset_ber(
                fp, cand.fp, range(cand.offset_hint - reach, cand.offset_hint + reach + 1), p.min_bits
            )
            if fine is not None and fine.ber <= p.max_ber:
                out.append((cand, fine))
        out.sort(key=lambda pair: pair[1].ber)
        return out
