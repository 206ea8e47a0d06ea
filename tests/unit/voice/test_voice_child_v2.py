"""Child detector format 2: embedding projection + acoustic measures, two operating points, k-fold fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from unit.voice.test_voice_kfold import synth_table

from purchase_guard.voice import acoustic
from purchase_guard.voice.child import LogisticChildDetector
from purchase_guard.voice.child_training import ChildSpec, _training_rows, fit_child, to_detector
from purchase_guard.voice.units import Table


def aged_table(seed: int = 0) -> Table:
    """synth_table with a child-vs-adult signal in embedding dimension 0 and in the F0 measure."""
    table = synth_table(seed, (40, 30))
    rng = np.random.default_rng(seed)
    groups = np.array([table.speakers[s].group for s in table.speaker_of])
    kid = groups == "child"
    table.emb[:, 0] += np.where(kid, 0.4, 0.0)
    table.emb /= np.linalg.norm(table.emb, axis=1, keepdims=True)
    a = rng.normal(0, 0.2, (len(table.units), acoustic.N_FEATURES))
    a[:, 0] = np.where(kid, np.log(260.0), np.log(140.0)) + rng.normal(0, 0.15, kid.size)
    a[::17, 4] = np.nan  # some unmeasurable formants
    table.acoustic = a
    return table


def test_training_weights_balance_classes_and_keep_half_the_adult_weight_in_the_childrens_corpus() -> None:
    """Children and adults weigh 1/2 each; adults of the children's corpus hold half of the adult weight."""
    table = aged_table()
    rows, y, w = _training_rows(table, np.arange(len(table.units)), ChildSpec("x", adults="all"))
    corpus = table.corpus_of[rows]
    assert w[y > 0.5].sum() == pytest.approx(0.5)
    assert w[(y < 0.5) & (corpus == "ca")].sum() == pytest.approx(0.25)


def test_fitted_detector_flags_children_and_has_a_stricter_high_point(tmp_path: Path) -> None:
    """Held-out children score above the challenge point; the high point is above it; file round-trips."""
    table = aged_table(1)
    held = {k for k in table.speakers if k.endswith(("s0", "s1", "s2", "s3"))}
    train = np.flatnonzero(~np.isin(table.speaker_of, sorted(held)))
    spec = ChildSpec("x", "pca+acoustic", pca_dim=4)
    model, thresholds, info = fit_child(table, train, spec, k_inner=3)
    assert thresholds["high"] > thresholds["challenge"]
    det = to_detector(table.encoder, spec, model, thresholds, {"note": "test"})
    assert det.uses_audio
    assert 0.5 < det.operating_points["high"] < 1.0
    test = np.flatnonzero(np.isin(table.speaker_of, sorted(held)))
    groups = np.array([table.speakers[s].group for s in table.speaker_of[test]])
    lik = np.array([det.likelihood(table.emb[i].astype(np.float32), table.acoustic[i]) for i in test])
    assert np.mean(lik[groups == "child"] >= 0.5) > 0.9
    assert np.mean(lik[groups == "adult"] >= det.operating_points["high"]) < 0.1
    path = tmp_path / "child.json"
    path.write_text(json.dumps(det.to_mapping()))
    again = LogisticChildDetector.load(path)
    i = test[0]
    assert again.likelihood(table.emb[i], table.acoustic[i]) == pytest.approx(
        det.likelihood(table.emb[i], table.acoustic[i]), abs=1e-5
    )
    assert dict(again.operating_points) == pytest.approx(dict(det.operating_points), abs=1e-7)
    assert info["inner_cv_auc_by_penalty"]


def test_acoustic_detector_refuses_to_score_without_the_measures() -> None:
    """A detector that needs acoustic measures raises when given only an embedding (fail closed)."""
    table = aged_table(2)
    spec = ChildSpec("x", "pca+acoustic", pca_dim=3)
    model, thr, _ = fit_child(table, np.arange(len(table.units)), spec, k_inner=3)
    det = to_detector(table.encoder, spec, model, thr, {})
    with pytest.raises(ValueError, match="acoustic"):
        det.likelihood(table.emb[0])


def test_operating_points_must_put_challenge_at_one_half() -> None:
    """A file whose challenge point is not 0.5 is refused (the pipeline's default threshold is 0.5)."""
    with pytest.raises(ValueError, match="challenge"):
        LogisticChildDetector(
            encoder="e",
            mean=np.zeros(2),
            scale=np.ones(2),
            weights=np.ones(2),
            bias=0.0,
            operating_points={"challenge": 0.6},
        )
