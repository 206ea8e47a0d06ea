"""Speaker-level bootstrap intervals for error rates (FRR, FMR, FRR at a target FMR, flag rates).

Trials of one speaker are not independent (one voice that happens to resemble another
gives many false matches), so intervals resample speakers, not trials: each replicate
draws speakers with replacement within each corpus; a target trial counts as often as its
speaker was drawn, an impostor trial as (draws of the probe's speaker) x (draws of the
model's speaker). 95 % intervals are the 2.5th and 97.5th percentiles of the replicates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


class SpeakerBootstrap:
    def __init__(self, corpus_of_speaker: Mapping[str, str], replicates: int = 1000, seed: int = 7) -> None:
        self.keys = sorted(corpus_of_speaker)
        self.index = {k: i for i, k in enumerate(self.keys)}
        rng = np.random.default_rng(seed)
        counts = np.zeros((replicates, len(self.keys)))
        by_corpus: dict[str, list[int]] = {}
        for k, c in corpus_of_speaker.items():
            by_corpus.setdefault(c, []).append(self.index[k])
        for members in by_corpus.values():
            idx = np.array(sorted(members))
            draws = rng.integers(0, idx.size, size=(replicates, idx.size))
            for r in range(replicates):
                np.add.at(counts[r], idx[draws[r]], 1.0)
        self.counts = counts

    def idx(self, speakers: Sequence[str] | np.ndarray[Any, Any]) -> IntArray:
        return np.array([self.index[s] for s in speakers], dtype=np.int64)

    def rate(
        self, spk: IntArray, errors: np.ndarray[Any, Any], partner: IntArray | None = None
    ) -> FloatArray:
        """Replicates of the error rate of trials (speaker idx, error flag[, partner speaker idx])."""
        e = np.asarray(errors, dtype=np.float64)
        s = len(self.keys)
        if partner is None:
            err = np.bincount(spk, weights=e, minlength=s)
            tot = np.bincount(spk, minlength=s).astype(np.float64)
            num, den = self.counts @ err, self.counts @ tot
        else:
            # Pair-weighted: c^T E c per replicate, with E the speaker x speaker count matrices.
            flat = spk * s + partner
            err = np.bincount(flat, weights=e, minlength=s * s).reshape(s, s)
            tot = np.bincount(flat, minlength=s * s).reshape(s, s).astype(np.float64)
            used = np.flatnonzero((tot.sum(axis=1) + tot.sum(axis=0)) > 0)
            c = self.counts[:, used]
            err, tot = err[np.ix_(used, used)], tot[np.ix_(used, used)]
            num = np.einsum("bi,ij,bj->b", c, err, c)
            den = np.einsum("bi,ij,bj->b", c, tot, c)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.where(den > 0, num / den, np.nan), dtype=np.float64)

    def frr_at_fmr(
        self,
        tgt_scores: FloatArray,
        tgt_spk: IntArray,
        imp_scores: FloatArray,
        imp_spk: IntArray,
        imp_partner: IntArray,
        target_fmr: float,
        replicates: int = 200,
    ) -> FloatArray:
        """Replicates of the FRR at the threshold giving FMR <= target on that replicate's impostors."""
        order = np.argsort(-imp_scores)
        s_desc = imp_scores[order]
        p, q = imp_spk[order], imp_partner[order]
        out = np.full(min(replicates, self.counts.shape[0]), np.nan)
        for r in range(out.size):
            c = self.counts[r]
            w = c[p] * c[q]
            tot = w.sum()
            wt = c[tgt_spk]
            if tot <= 0 or wt.sum() <= 0:
                continue
            cum = np.cumsum(w) / tot
            j = int(np.searchsorted(cum, target_fmr, side="right"))
            thr = np.nextafter(s_desc[j], np.inf) if j < s_desc.size else -np.inf
            out[r] = float(wt[tgt_scores < thr].sum() / wt.sum())
        return out


Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n independent attempts ((0, 1) when n is 0): for
    rates over trials, where resampling speakers is not possible or not the point."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def interval(reps: FloatArray) -> tuple[float, float]:
    r = reps[np.isfinite(reps)]
    if r.size == 0:
        return (math.nan, math.nan)
    return (float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5)))


def auc(pos: FloatArray, neg: FloatArray) -> float:
    """Probability a random positive scores above a random negative (ties count half)."""
    if pos.size == 0 or neg.size == 0:
        return math.nan
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size)
    sorted_v = allv[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))
