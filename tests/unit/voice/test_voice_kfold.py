"""k-fold protocol: folds, cross-fitting that never sees a trial's speakers, calibration, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.bootstrap import SpeakerBootstrap, auc
from purchase_guard.voice.kfold import (
    QualityNorm,
    SystemSpec,
    build_trials,
    choose_thresholds,
    cross_fitted,
    evaluate_kfold,
)
from purchase_guard.voice.units import SpeakerInfo, Table, Unit, assign_folds

DIM = 16


def synth_table(seed: int = 0, n_per: tuple[int, int] = (20, 24)) -> Table:
    """Two corpora (own channel offset each); corpus "ca" has ages, "cb" none (adults)."""
    rng = np.random.default_rng(seed)
    speakers, units, emb, speech = {}, [], [], []
    pcm = Pcm(samples=np.zeros(160, dtype=np.float32))
    for corpus, n in zip(("ca", "cb"), n_per, strict=True):
        chan = rng.normal(0, 1, DIM)
        for s in range(n):
            info = SpeakerInfo(corpus, f"s{s}", (8, 30)[s % 2] if corpus == "ca" else None, "fm"[s % 2])
            speakers[info.key] = info
            centre = rng.normal(0, 1, DIM) + chan
            for u in range(7):
                units.append(Unit(corpus, f"s{s}", f"u{u}", 0 if u < 3 else -1, pcm))
                e = centre + rng.normal(0, 0.5, DIM)
                emb.append(e / np.linalg.norm(e))
                speech.append(rng.uniform(1.0, 8.0))
    n = len(units)
    return Table(
        units, speakers, np.array(emb), np.array(speech), np.full(n, 30.0), np.zeros((n, 10)), "e/1", "v/1"
    )


def test_folds_are_stratified_and_do_not_depend_on_other_speakers() -> None:
    """Each fold gets speakers of every corpus; a speaker's fold is the same with or without others."""
    table = synth_table()
    folds = assign_folds(table.speakers.values(), 4)
    for corpus in ("ca", "cb"):
        assert {f for k, f in folds.items() if k.startswith(corpus)} == {0, 1, 2, 3}
    assert set(folds) == set(table.speakers)


def test_no_trial_is_scored_by_a_fit_that_saw_its_speakers() -> None:
    """cross_fitted hands each trial to a fit made without the folds of its probe and model speakers."""
    table = synth_table()
    trials = build_trials(table)
    folds = assign_folds(table.speakers.values(), 5)
    sel = np.arange(trials.probe.size)
    seen: list[set[str]] = []

    def fit(speakers: set[str]) -> int:
        seen.append(speakers)
        return len(seen) - 1

    def score(fit_id: int, idx: np.ndarray) -> np.ndarray:
        used = seen[fit_id]
        assert not set(trials.probe_speaker[idx]) & used
        assert not set(trials.model_spk[idx]) & used
        return np.zeros(idx.size)

    scores, fitted = cross_fitted(trials, sel, folds, 5, fit, score)
    assert np.isfinite(scores).all()  # every trial, including cross-fold impostors, was scored
    assert len(fitted) == 15  # 5 single folds + 10 fold pairs


def test_trials_stay_within_a_corpus() -> None:
    """Impostor trials never pair speakers of different corpora (the channel would give them away)."""
    trials = build_trials(synth_table())
    corpus = trials.table.corpus_of
    assert (corpus[trials.probe] == np.array([s.split("/")[0] for s in trials.model_spk])).all()


def test_quality_norm_is_monotone_and_levels_impostor_scores_across_lengths() -> None:
    """Normalised impostor scores have about the same mean and spread at 1 s and at 6 s."""
    rng = np.random.default_rng(5)
    speech = rng.uniform(0.8, 8.0, 20000)
    snr = np.full(speech.size, 30.0)
    imp = 0.6 - 0.08 * np.log(speech) + rng.normal(0, 1, speech.size) * 0.1 / np.sqrt(speech)
    q = QualityNorm.fit(imp, speech, snr)
    z = q.apply(imp, speech, snr)
    short, long_ = speech < 1.5, speech > 5.0
    assert abs(z[short].mean() - z[long_].mean()) < 0.1
    assert abs(z[short].std() - z[long_].std()) < 0.15
    s = np.linspace(0, 1, 50)
    assert np.all(np.diff(q.apply(s, np.full(50, 2.0), np.full(50, 30.0))) > 0)


def test_worst_corpus_rule_is_never_below_the_pooled_threshold() -> None:
    """The worst-corpus threshold is the highest per-corpus threshold, so never below the pooled one."""
    table = synth_table(1, (40, 40))
    trials = build_trials(table)
    sel = np.arange(trials.probe.size)
    scores = table.emb[trials.probe, 0] + 0.1 * trials.target
    pooled = choose_thresholds(scores, trials, sel, "pooled", 1e-2)
    worst = choose_thresholds(scores, trials, sel, "worst-corpus", 1e-2)
    assert all(worst[b] >= pooled[b] for b in pooled)


def test_kfold_evaluation_gives_a_threshold_and_score_to_every_trial() -> None:
    """Every trial gets a held-out score and the threshold of the system that scored it."""
    trials = build_trials(synth_table())
    held = evaluate_kfold(SystemSpec("t", "lda-wccn", "centroid", lda_dim=8), trials, 5, log=lambda _m: None)
    assert np.isfinite(held.scores).all()
    assert np.isfinite(held.threshold).all()
    assert held.accepted[trials.target].mean() > held.accepted[~trials.target].mean()


def test_bootstrap_resamples_speakers_and_brackets_the_rate() -> None:
    """A rate carried by a few speakers gets a wide interval; the point estimate lies inside it."""
    corp = {f"c/s{i}": "c" for i in range(40)}
    boot = SpeakerBootstrap(corp, 500, seed=1)
    spk = np.repeat(np.arange(40), 10)
    errors = np.isin(spk, [0, 1]).astype(bool)  # all errors from 2 of 40 speakers: rate 5 %
    reps = boot.rate(spk, errors)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    assert lo <= 0.05 <= hi
    assert hi - lo > 0.04
    pairs = boot.rate(spk, errors, partner=(spk + 1) % 40)
    assert np.isclose(np.nanmedian(pairs), 0.05, atol=0.03)


def test_auc_counts_ties_half() -> None:
    """AUC is 1 for separated scores, 0.5 for identical ones."""
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([1.0, 1.0]), np.array([1.0])) == pytest.approx(0.5)
