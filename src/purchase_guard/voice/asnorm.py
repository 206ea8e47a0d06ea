"""Adaptive symmetric score normalisation (AS-norm) against a cohort of other speakers.

A raw cosine s(model, probe) becomes

    0.5 * ((s - mu_model) / sd_model + (s - mu_probe) / sd_probe)

where mu and sd are the mean and spread of each side's `k` highest cosines against the cohort
(embeddings of speakers who are neither side). A probe or a model that resembles many people
(a common voice, one shared channel, a short utterance that says little) has high cohort
scores, so its raw score counts for less; one threshold then means about the same
false-match rate across populations, which is what the worst-corpus rule had to buy with
higher thresholds (docs/voice.md, "AS-norm").

Measured in the k-fold study (`eval_kfold.SYSTEMS` asnorm*), not shipped: with a cohort of
the fitting speakers it halves the adults' PIN-band FRR at the same false-match rate, but on a
population the cohort has never heard (leave-one-corpus-out) its false matches are 7-9x the
raw cosine's: the cohort would have to sound like the households, and ours does not
(docs/voice.md, "AS-norm").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
MAX_COHORT = 5000


def unit_rows(x: FloatArray) -> FloatArray:
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


@dataclass(frozen=True, eq=False)
class Cohort:
    emb: FloatArray  # (n, dim), unit rows
    k: int

    def __post_init__(self) -> None:
        if (
            self.emb.ndim != 2
            or not 1 <= self.emb.shape[0] <= MAX_COHORT
            or not np.all(np.isfinite(self.emb))
        ):
            raise ValueError("an AS-norm cohort is 1-5000 finite embeddings")
        if not 1 <= self.k <= self.emb.shape[0]:
            raise ValueError("AS-norm k must be between 1 and the cohort size")

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    def stats(self, vectors: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(mean, spread) of each vector's k highest cosines to the cohort."""
        sims = unit_rows(vectors) @ self.emb.T
        top = -np.partition(-sims, self.k - 1, axis=1)[:, : self.k]
        return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-4)

    def normalise(self, raw: FloatArray, models: FloatArray, probes: FloatArray) -> FloatArray:
        """`raw` is (n_probes, n_models); `models` the model vectors, `probes` the probe embeddings."""
        mm, sm = self.stats(models)
        mp, sp = self.stats(probes)
        raw = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        return np.asarray(0.5 * ((raw - mm[None, :]) / sm[None, :] + (raw - mp[:, None]) / sp[:, None]))
