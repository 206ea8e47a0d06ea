"""Finding copies of the same audio: a coarse search over many prints, then a fine check.

Coarse search (`PrintIndex`): every print is anchored at its first voiced frame and kept as
a row of 64-bit words, one per 64 ms: the reliable 1-bits in the high half, the reliable
0-bits in the low half. A query takes every 128 ms of its own print from its anchor (3 s)
and, for each of 33 shifts (-1.02..+1.02 s in 64 ms steps: two devices cut the same
broadcast up to 0.3 s apart each, and their first voiced frames differ too), counts
agreeing and disagreeing reliable bits against all rows at once with popcounts, scored as
(agree - disagree) / sqrt(compared). Every row is scored at every shift in one compiled
loop (`_kernels.py`): a fixed amount of work per row, and no hash table. Exact sub-print
lookup (Haitsma-Kalker's hash table) was measured first and dropped: at 5 dB SNR two
rooms' copies share a median of 1 exact 32-bit sub-print and 6 exact 16-bit half-prints
per 3 s, too few to find them reliably (docs/broadcast.md).

Fine check (`best_offset`, `effective_bits`): the candidate's full print is compared at every
8 ms offset around the coarse shift, on bits reliable and voiced in both prints, and the
offset with the strongest agreement is kept. The threshold on its bit error rate depends on
how much evidence the comparison holds (`MatchParams.max_ber`): by chance, unrelated prints
spread around a BER of 0.5 by about 1/sqrt(n) for n independent bits, so a weak comparison
must agree more closely than a strong one. Compared bits are not independent: a bit keeps
its value as long as the spectral shape does, and half a second of a held vowel can be a
few dozen decisions repeated hundreds of times. The rule counts *effective* bits instead,
each bit position discounted by how rarely its value changes in the two prints. Measured
on the evaluation's pairs (`make eval-broadcast`, docs/broadcast.md), this is what lets the
rule tell a copy from two strangers' steady stretches of similar voicing, which a rule on
compared bits took for copies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from purchase_guard.broadcast._kernels import coarse_scores, effective_bits_at, offset_counts
from purchase_guard.broadcast.fingerprint import Fingerprint

U64Array = np.ndarray[Any, np.dtype[np.uint64]]
F64Array = np.ndarray[Any, np.dtype[np.float64]]

COARSE_STEP = 8  # frames (64 ms) between stored words
QUERY_STRIDE = 2  # stored words (128 ms) between query words
QUERY_WORDS = 24  # the query's first 3.07 s from its anchor
SHIFTS = 16  # stored words either side: +-1.02 s
ROW_WORDS = QUERY_STRIDE * (QUERY_WORDS - 1) + 1
ROW_WIDTH = ROW_WORDS + 2 * SHIFTS  # zero padding either side keeps every shift in range
N_SHIFTS = 2 * SHIFTS + 1


@dataclass(frozen=True, slots=True)
class FineMatch:
    ber: float
    offset: int  # frames: print b's frame = print a's frame + offset
    bits: int
    effective_bits: float  # `bits` discounted for runs of equal bits (`effective_bits`)


@dataclass(frozen=True, slots=True)
class MatchParams:
    # Fine check: a match needs at least min_bits reliable bits compared in both prints and a
    # bit error rate of at most ber_limit - ber_slack / sqrt(effective bits) at the chosen
    # offset (0.10 at 100 effective bits, 0.18 at 400). Chosen on the evaluation's tuning
    # split (scripts/eval_broadcast.py --split tune): the best rule at 5 dB whose false-match
    # rate that pool shows within 1e-5, the upper end of its 95 % interval (docs/broadcast.md).
    # A looser rule fails at fleet scale: a window of thousands of homes turns a per-pair rate
    # of 1e-4 into homes refused for matching two strangers.
    ber_limit: float = 0.25
    ber_slack: float = 1.5
    min_bits: int = 300
    # Coarse search: (agreeing - disagreeing) / sqrt(compared) at the best shift, i.e. how
    # many standard deviations above chance; a raw error rate would favour edge shifts that
    # compare only a few bits.
    coarse_min_z: float = 3.0
    max_candidates: int = 32  # fine-checked per query, best coarse score first

    def max_bers(self, effective_bits: np.ndarray[Any, Any]) -> F64Array:
        """The highest bit error rate that is a match, for each count of effective bits."""
        return np.asarray(
            self.ber_limit - self.ber_slack / np.sqrt(np.maximum(effective_bits, 1.0)), dtype=np.float64
        )

    def max_ber(self, effective_bits: float) -> float:
        return float(self.max_bers(np.asarray([effective_bits]))[0])

    def accepts(self, match: FineMatch) -> bool:
        return match.bits >= self.min_bits and match.ber <= self.max_ber(match.effective_bits)


DEFAULT_MATCH = MatchParams()


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


I64Array = np.ndarray[Any, np.dtype[np.int64]]


def offset_curve(a: Fingerprint, b: Fingerprint, lo: int, hi: int) -> tuple[I64Array, I64Array]:
    """(errors, compared) at every offset lo..hi: b's frame = a's frame + offset."""
    errors = np.zeros(hi - lo + 1, dtype=np.int64)
    compared = np.zeros(hi - lo + 1, dtype=np.int64)
    if a.n_frames and b.n_frames and hi >= lo:
        offset_counts(a.bits, a.mask, b.bits, b.mask, lo, hi, errors, compared)
    return errors, compared


def effective_bits(a: Fingerprint, b: Fingerprint, offset: int) -> float:
    """How many independent bits the comparison at `offset` is worth.

    A bit position keeps its value for as long as the spectral shape does: over a held vowel
    (and the print's 192 ms windows and artificial tail) hundreds of compared bits can be a
    few dozen decisions repeated. Unrelated speech agreeing on those few decisions is not
    rare, and counting every repeat as evidence is what let short, steady stretches of two
    strangers' speech pass a rule on compared bits. Each position's compared sequence is
    taken as a two-state Markov chain in each print: with lag-one correlations ra and rb
    (from how often its value flips), the agreement of two unrelated prints is correlated by
    r = ra * rb from one compared frame to the next, so n compared bits there carry the
    chance variability of n (1 - r) / (1 + r) independent ones (the AR(1) effective sample
    size). A negative r is taken as 0, so no position counts for more than its compared bits.
    The sum over positions is the count the threshold is set against.
    """
    # Compiled (`_kernels.effective_bits_at`): it runs for every fine-checked candidate. Half a
    # flip is added to each count there, because a run seen whole is no proof that the value
    # never changes.
    return float(effective_bits_at(a.bits, a.mask, b.bits, b.mask, offset))


def best_offset(
    a: Fingerprint, b: Fingerprint, offsets: range, params: MatchParams = DEFAULT_MATCH
) -> FineMatch | None:
    """The offset in `offsets` (a step-1 range) with the strongest agreement among offsets
    comparing at least `min_bits`, or None; the rule is applied by the caller (`accepts`).

    Strongest is (0.5 - BER) * sqrt(bits), how far above chance the agreement is: the lowest
    error rate alone would prefer an edge offset comparing few bits over the full alignment.
    The choice does not depend on the rule's limit or slack, so the evaluation, which
    searches with a looser rule to sweep others, scores every rule at the offsets the
    service compares.
    """
    if len(offsets) == 0:
        return None
    errors, compared = offset_curve(a, b, offsets[0], offsets[-1])
    ok = compared >= params.min_bits
    if not ok.any():
        return None
    ber = errors / np.maximum(compared, 1)
    strength = np.where(ok, (0.5 - ber) * np.sqrt(compared), -np.inf)
    k = int(np.argmax(strength))
    offset = offsets[0] + k
    return FineMatch(
        ber=float(ber[k]), offset=offset, bits=int(compared[k]), effective_bits=effective_bits(a, b, offset)
    )


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    item: T
    fp: Fingerprint
    offset_hint: int  # frames: item print's frame = query frame + offset_hint
    coarse_z: float


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
        self._rows = np.zeros((capacity, ROW_WIDTH), dtype=np.uint64)
        self._items: list[T | None] = []
        self._prints: list[Fingerprint | None] = []
        self._starts: list[int] = []
        self._alive = 0

    def __len__(self) -> int:
        return self._alive

    def _grow(self, capacity: int, keep: list[int]) -> None:
        rows = np.zeros((capacity, ROW_WIDTH), dtype=np.uint64)
        rows[: len(keep)] = self._rows[keep]
        self._rows = rows

    def add(self, item: T, fp: Fingerprint, start: int, row: U64Array | None = None) -> None:
        """Adds a print read from `start`; `row` is its `stored_row(fp, start)` when the caller
        already made it (a cached print), else it is made here."""
        n = len(self._items)
        if n == self._rows.shape[0]:
            self._grow(2 * n, list(range(n)))
        self._rows[n] = stored_row(fp, start) if row is None else row
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
                self._rows[slot] = 0  # an all-zero row compares no bits: never a candidate
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

    def candidates(self, fp: Fingerprint, start: int) -> list[Candidate[T]]:
        """Rows whose best coarse shift beats the coarse threshold, best first.

        Every row is scored at every shift with every query word (a compiled loop); the
        earlier numpy version needed a rough pre-filter to stay affordable, which cost a
        share of the true pairs.
        """
        n = len(self._items)
        if n == 0 or self._alive == 0:
            return []
        p = self._params
        agree_q, disagree_q = query_words(fp, start)
        best_z = np.empty(n, dtype=np.float64)
        best_shift = np.empty(n, dtype=np.int64)
        coarse_scores(self._rows, n, agree_q, disagree_q, QUERY_STRIDE, N_SHIFTS, best_z, best_shift)
        order = np.flatnonzero(best_z >= p.coarse_min_z)
        order = order[np.argsort(-best_z[order], kind="stable")[: p.max_candidates]]
        out: list[Candidate[T]] = []
        for k in order.tolist():
            item = self._items[k]
            stored = self._prints[k]
            if item is None or stored is None:
                continue
            hint = self._starts[k] - start + COARSE_STEP * (int(best_shift[k]) - SHIFTS)
            out.append(Candidate(item, stored, hint, float(best_z[k])))
        return out

    def matches(self, fp: Fingerprint, start: int) -> list[tuple[Candidate[T], FineMatch]]:
        """Candidates that pass the fine check, best first."""
        p = self._params
        reach = COARSE_STEP  # the coarse shift is on a 64 ms grid; the fine check refines to 8 ms
        out: list[tuple[Candidate[T], FineMatch]] = []
        for cand in self.candidates(fp, start):
            fine = best_offset(fp, cand.fp, range(cand.offset_hint - reach, cand.offset_hint + reach + 1), p)
            if fine is not None and p.accepts(fine):
                out.append((cand, fine))
        out.sort(key=lambda pair: pair[1].ber)
        return out
