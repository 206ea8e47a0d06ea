"""k-fold-over-speakers fitting and evaluation of the verification system.

Protocol (docs/voice.md states it with the figures):
- every speaker of every corpus is dealt into one of K folds (units.assign_folds:
  stratified by corpus, age group and gender);
- a trial pairs a test unit of speaker p with an enrollment model of speaker m of the
  same corpus (cross-corpus impostors are trivially told apart by the channel);
- the trial is scored, and accepted or not, by a system (back-end + calibration +
  thresholds) fitted only on speakers outside the folds of p and m. Same-fold trials use
  the system fitted without that fold; cross-fold impostor trials the system fitted
  without both folds, so every impostor pair counts, yet no trial's speakers were seen;
- fitting a system on a set of speakers itself uses an inner k-fold over those speakers:
  its thresholds are chosen on out-of-fold scores of the inner folds (same rule as
  above), and the final back-end is fitted on all of them. The shipped system is exactly
  this fit applied to every speaker.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from purchase_guard.voice.asnorm import Cohort, unit_rows
from purchase_guard.voice.backend import ScoringBackend, fit_backend, identity_backend
from purchase_guard.voice.evaluation import BAND_EDGES, BAND_NAMES, TARGET_FMR, threshold_at_fmr
from purchase_guard.voice.units import Table, assign_folds

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
# A corpus's own threshold only counts in the "worst corpus" rule with enough impostors.
MIN_IMPOSTORS_FOR_RULE = 2000


@dataclass(frozen=True)
class SystemSpec:
    """How to build a verification system from labelled speakers."""

    name: str
    backend: str = "raw"  # raw (plain cosine) | cosine (centred) | lda-wccn | plda
    combine: str = "centroid"  # centroid | mean | plda
    lda_dim: int = 100
    rule: str = "pooled"  # pooled | worst-corpus
    quality: bool = False  # impostor-score normalisation by net speech and SNR
    target_fmr: float = TARGET_FMR
    # Adaptive symmetric score normalisation (AS-norm) against the top `asnorm_k` of a cohort of
    # the fitting speakers' units; 0: none. Only with the raw/centroid scoring.
    asnorm_k: int = 0


@dataclass(frozen=True, eq=False)
class QualityNorm:
    """z = (score - mu(q)) / sigma(q) with q = [1, log net speech, SNR/10] of the probe.

    Fitted on impostor scores, so a threshold on z means about the same false-match rate
    for a 1 s and a 2.5 s answer, rather than one number per band.
    """

    mu: FloatArray  # (3,)
    log_sigma: FloatArray  # (3,)

    @staticmethod
    def design(speech_s: FloatArray, snr_db: FloatArray) -> FloatArray:
        return np.stack(
            [np.ones_like(speech_s), np.log(np.maximum(speech_s, 0.3)), np.clip(snr_db, 0.0, 40.0) / 10.0],
            axis=1,
        )

    def apply(self, scores: FloatArray, speech_s: FloatArray, snr_db: FloatArray) -> FloatArray:
        q = self.design(speech_s, snr_db)
        return np.asarray((scores - q @ self.mu) / np.exp(q @ self.log_sigma), dtype=np.float64)

    @classmethod
    def fit(cls, imp_scores: FloatArray, speech_s: FloatArray, snr_db: FloatArray) -> QualityNorm:
        q = cls.design(speech_s, snr_db)
        mu, *_ = np.linalg.lstsq(q, imp_scores, rcond=None)
        resid = np.abs(imp_scores - q @ mu) + 1e-6
        # E|r| = sigma * sqrt(2/pi) for a normal residual.
        ls, *_ = np.linalg.lstsq(q, np.log(resid / math.sqrt(2 / math.pi)), rcond=None)
        return cls(np.asarray(mu, dtype=np.float64), np.asarray(ls, dtype=np.float64))

    def to_mapping(self) -> dict[str, Any]:
        return {"mu": [float(v) for v in self.mu], "log_sigma": [float(v) for v in self.log_sigma]}

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> QualityNorm:
        mu = np.asarray(doc["mu"], dtype=np.float64)
        ls = np.asarray(doc["log_sigma"], dtype=np.float64)
        if mu.shape != (3,) or ls.shape != (3,) or not (np.all(np.isfinite(mu)) and np.all(np.isfinite(ls))):
            raise ValueError("quality normalisation needs two finite 3-vectors")
        return cls(mu, ls)


COHORT_MAX_UNITS = 3000


def fit_cohort(table: Table, speakers: set[str], k: int, seed: int = 0) -> Cohort:
    rows = np.flatnonzero(np.isin(table.speaker_of, sorted(speakers)))
    if rows.size > COHORT_MAX_UNITS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, COHORT_MAX_UNITS, replace=False))
    return Cohort(unit_rows(table.emb[rows]), k)


@dataclass(frozen=True, eq=False)
class System:
    spec: SystemSpec
    backend: ScoringBackend
    quality: QualityNorm | None
    thresholds: dict[str, float]  # band -> threshold on the (normalised) score
    meta: dict[str, Any] = field(default_factory=dict)
    cohort: Cohort | None = None


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True, eq=False)
class Trials:
    """Every (test unit, enrollment model) pair within a corpus, as column arrays."""

    table: Table
    model_rows: list[IntArray]  # per model: table rows of its templates
    model_speaker: np.ndarray[Any, Any]  # per model: speaker key
    probe: IntArray  # per trial: table row of the test unit
    model: IntArray  # per trial: model index
    target: BoolArray
    band: np.ndarray[Any, Any]

    @property
    def probe_speaker(self) -> np.ndarray[Any, Any]:
        return self.table.speaker_of[self.probe]

    @property
    def model_spk(self) -> np.ndarray[Any, Any]:
        return self.model_speaker[self.model]


def band_of_array(speech: FloatArray) -> np.ndarray[Any, Any]:
    out = np.empty(speech.shape[0], dtype=object)
    lo = -math.inf
    for name, hi in BAND_EDGES:
        out[(speech > lo) & (speech <= hi)] = name
        lo = hi
    return out.astype(str)


def build_trials(table: Table) -> Trials:
    groups: dict[tuple[str, int], list[int]] = {}
    for i, u in enumerate(table.units):
        if u.model >= 0:
            groups.setdefault((u.speaker_key, u.model), []).append(i)
    keys = sorted(groups)
    model_rows = [np.array(groups[k], dtype=np.int64) for k in keys]
    model_speaker = np.array([k[0] for k in keys])
    model_corpus = np.array([table.units[groups[k][0]].corpus for k in keys])
    tests = np.flatnonzero(table.model_of < 0)
    probes, models = [], []
    for corpus in sorted(set(table.corpus_of[tests])):
        p = tests[table.corpus_of[tests] == corpus]
        m = np.flatnonzero(model_corpus == corpus)
        pp, mm = np.meshgrid(p, m, indexing="ij")
        probes.append(pp.ravel())
        models.append(mm.ravel())
    probe = np.concatenate(probes) if probes else np.zeros(0, dtype=np.int64)
    model = np.concatenate(models) if models else np.zeros(0, dtype=np.int64)
    target = table.speaker_of[probe] == model_speaker[model]
    return Trials(
        table, model_rows, model_speaker, probe, model, target, band_of_array(table.speech_s[probe])
    )


def raw_scores(
    backend: ScoringBackend, trials: Trials, sel: IntArray, cohort: Cohort | None = None
) -> FloatArray:
    """Back-end scores of trials `sel` (indices), AS-normalised against `cohort` if given."""
    if sel.size == 0:
        return np.zeros(0)
    t = trials.table
    probes = np.unique(trials.probe[sel])
    models = np.unique(trials.model[sel])
    mat = backend.score_models(t.emb[probes], [t.emb[trials.model_rows[m]] for m in models])
    if cohort is not None:
        cents = np.stack([unit_rows(t.emb[trials.model_rows[m]]).mean(axis=0) for m in models])
        mat = cohort.normalise(mat, cents, t.emb[probes])
    pi = np.searchsorted(probes, trials.probe[sel])
    mi = np.searchsorted(models, trials.model[sel])
    return np.asarray(mat[pi, mi], dtype=np.float64)


def system_scores(system: System, trials: Trials, sel: IntArray) -> FloatArray:
    s = raw_scores(system.backend, trials, sel, system.cohort)
    if system.quality is not None:
        rows = trials.probe[sel]
        s = system.quality.apply(s, trials.table.speech_s[rows], trials.table.snr_db[rows])
    return s


# --------------------------------------------------------------------------- fitting


def _fit_backend(spec: SystemSpec, table: Table, speakers: set[str]) -> ScoringBackend:
    if spec.backend == "raw":
        return identity_backend(table.encoder, table.emb.shape[1], spec.combine)
    rows = np.flatnonzero(np.isin(table.speaker_of, sorted(speakers)))
    return fit_backend(
        table.emb[rows],
        list(table.speaker_of[rows]),
        table.encoder,
        "cosine" if spec.backend == "cosine" else spec.backend,
        spec.combine,
        lda_dim=spec.lda_dim,
        meta={"speakers": len(speakers), "units": int(rows.size)},
    )


def exclusion_sets(k: int) -> list[frozenset[int]]:
    return [frozenset([i]) for i in range(k)] + [frozenset(p) for p in itertools.combinations(range(k), 2)]


def cross_fitted(
    trials: Trials,
    sel: IntArray,
    folds: Mapping[str, int],
    k: int,
    fit: Callable[[set[str]], Any],
    score: Callable[[Any, IntArray], FloatArray],
) -> tuple[FloatArray, list[tuple[frozenset[int], Any, IntArray]]]:
    """Score trials `sel` so that each is scored by `fit(speakers outside its speakers' folds)`.

    Returns the scores (aligned with `sel`) and, per exclusion set, the fitted object and
    the positions in `sel` it scored (so callers can also apply its thresholds).
    """
    fp = np.array([folds[s] for s in trials.probe_speaker[sel]])
    fm = np.array([folds[s] for s in trials.model_spk[sel]])
    every = set(folds)
    out = np.full(sel.size, np.nan)
    fitted = []
    for ex in exclusion_sets(k):
        lo, hi = min(ex), max(ex)
        pos = np.flatnonzero(((fp == lo) & (fm == hi)) | ((fp == hi) & (fm == lo)))
        if pos.size == 0:
            continue
        obj = fit({s for s in every if folds[s] not in ex})
        out[pos] = score(obj, sel[pos])
        fitted.append((ex, obj, pos))
    return out, fitted


def choose_thresholds(
    scores: FloatArray, trials: Trials, sel: IntArray, rule: str, target_fmr: float
) -> dict[str, float]:
    """Per band, the threshold with FMR <= target on these (out-of-fold) impostor scores.

    "pooled": all corpora together. "worst-corpus": the highest of the corpora's own
    thresholds (corpora with >= MIN_IMPOSTORS_FOR_RULE impostor trials in the band), so
    the target holds in each population seen, not only on average.
    """
    imp = ~trials.target[sel]
    band = trials.band[sel]
    corpus = trials.table.corpus_of[trials.probe[sel]]
    out: dict[str, float] = {}
    for b in BAND_NAMES:
        m = imp & (band == b)
        if not m.any():
            continue
        thr = threshold_at_fmr(scores[m], target_fmr)
        if rule == "worst-corpus":
            for c in np.unique(corpus[m]):
                mc = m & (corpus == c)
                if mc.sum() >= MIN_IMPOSTORS_FOR_RULE:
                    thr = max(thr, threshold_at_fmr(scores[mc], target_fmr))
        out[b] = float(thr)
    # A band without impostor trials borrows the strictest threshold seen; with none at all,
    # nothing can be accepted (fail closed).
    for b in BAND_NAMES:
        if b not in out:
            out[b] = max(out.values()) if out else math.inf
    return out


def fit_system(
    spec: SystemSpec, trials: Trials, speakers: set[str], k_inner: int = 4, seed: str = "inner"
) -> System:
    """Back-end on all `speakers`; calibration and thresholds from an inner k-fold over them."""
    table = trials.table
    inside = np.isin(trials.probe_speaker, sorted(speakers)) & np.isin(trials.model_spk, sorted(speakers))
    sel = np.flatnonzero(inside)
    folds = assign_folds(
        [table.speakers[s] for s in sorted(speakers)], k_inner, seed=f"{seed}-{len(speakers)}"
    )

    def inner_fit(spk: set[str]) -> tuple[ScoringBackend, Cohort | None]:
        return _fit_backend(spec, table, spk), fit_cohort(
            table, spk, spec.asnorm_k
        ) if spec.asnorm_k else None

    oof, _ = cross_fitted(
        trials,
        sel,
        folds,
        k_inner,
        inner_fit,
        lambda bc, idx: raw_scores(bc[0], trials, idx, bc[1]),
    )
    ok = np.isfinite(oof)
    sel, oof = sel[ok], oof[ok]
    quality = None
    if spec.quality:
        imp = ~trials.target[sel]
        rows = trials.probe[sel][imp]
        quality = QualityNorm.fit(oof[imp], table.speech_s[rows], table.snr_db[rows])
        oof = quality.apply(oof, table.speech_s[trials.probe[sel]], table.snr_db[trials.probe[sel]])
    thresholds = choose_thresholds(oof, trials, sel, spec.rule, spec.target_fmr)
    backend = _fit_backend(spec, table, speakers)
    cohort = fit_cohort(table, speakers, spec.asnorm_k) if spec.asnorm_k else None
    return System(
        spec, backend, quality, thresholds, {"inner_folds": k_inner, "speakers": len(speakers)}, cohort
    )


@dataclass(frozen=True, eq=False)
class HeldOut:
    """Held-out scores and decisions of one system spec over every trial."""

    spec: SystemSpec
    trials: Trials
    scores: FloatArray
    threshold: FloatArray  # the threshold the trial's own system applied
    folds: dict[str, int]
    k: int

    @property
    def accepted(self) -> BoolArray:
        return np.asarray(self.scores >= self.threshold)


def evaluate_kfold(
    spec: SystemSpec, trials: Trials, k: int = 5, log: Callable[[str], None] = print
) -> HeldOut:
    table = trials.table
    folds = assign_folds(table.speakers.values(), k)
    sel = np.arange(trials.probe.size)
    thr = np.full(sel.size, np.nan)

    def fit(spk: set[str]) -> System:
        return fit_system(spec, trials, spk)

    scores, fitted = cross_fitted(
        trials, sel, folds, k, fit, lambda sys_, idx: system_scores(sys_, trials, idx)
    )
    for _ex, system, pos in fitted:
        bands = trials.band[sel[pos]]
        thr[pos] = np.array([system.thresholds[b] for b in bands])
    log(f"  {spec.name}: {len(fitted)} systems fitted")
    return HeldOut(spec, trials, scores, thr, folds, k)


def with_spec(spec: SystemSpec, **changes: Any) -> SystemSpec:
    return replace(spec, **changes)
