"""Scoring back-ends: LDA/WCCN and PLDA fitted on synthetic speakers recover the structure they model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from purchase_guard.errors import Unavailable
from purchase_guard.voice.backend import ScoringBackend, fit_backend, fit_lda, fit_plda, identity_backend

DIM = 12


def _speakers(rng: np.random.Generator, n_spk: int = 60, n_utt: int = 6) -> tuple[np.ndarray, list[str]]:
    """Speakers differ only in dimensions 0-2; dimensions 3-11 carry large within-speaker noise."""
    x, labels = [], []
    for s in range(n_spk):
        centre = np.zeros(DIM)
        centre[:3] = rng.normal(0, 1.0, 3)
        for _ in range(n_utt):
            noise = np.concatenate([rng.normal(0, 0.15, 3), rng.normal(0, 1.0, DIM - 3)])
            x.append(centre + noise + 5.0)  # a common offset, as non-negative GE2E embeddings share
            labels.append(f"s{s}")
    return np.array(x), labels


def test_lda_finds_the_speaker_subspace() -> None:
    """The top LDA directions lie (almost) in the 3 dimensions where speakers differ."""
    x, labels = _speakers(np.random.default_rng(0))
    _, proj = fit_lda(x, labels, dim=3)
    unit = proj / np.linalg.norm(proj, axis=0, keepdims=True)
    in_subspace = np.linalg.norm(unit[:3], axis=0)
    assert np.all(in_subspace > 0.95)


def test_plda_between_variance_is_large_only_in_speaker_directions() -> None:
    """PLDA's between/within variance ratios: 3 large (speaker) and the rest near zero."""
    x, labels = _speakers(np.random.default_rng(1))
    plda = fit_plda(x, labels)
    psi = np.sort(plda.psi)[::-1]
    assert psi[2] > 10.0
    assert psi[3] < 0.5


@pytest.mark.parametrize(
    ("kind", "combine"), [("lda-wccn", "centroid"), ("lda-wccn", "mean"), ("plda", "plda")]
)
def test_fitted_backends_separate_new_speakers_better_than_raw_cosine(kind: str, combine: str) -> None:
    """On speakers not fitted on, a fitted back-end's EER is below raw cosine's."""
    from purchase_guard.voice.evaluation import eer

    rng = np.random.default_rng(2)
    x, labels = _speakers(rng, 80)
    backend = fit_backend(x, labels, "enc/1", kind, combine, lda_dim=6)
    test_x, test_labels = _speakers(rng, 30)
    models = [
        test_x[[i for i, lab in enumerate(test_labels) if lab == s][:3]] for s in sorted(set(test_labels))
    ]
    probes = np.array([i for i in range(len(test_labels)) if i % 6 >= 3])
    owner = np.array([sorted(set(test_labels)).index(test_labels[i]) for i in probes])

    def split(b: ScoringBackend) -> float:
        m = b.score_models(test_x[probes], models)
        same = m[np.arange(len(probes)), owner]
        mask = np.ones_like(m, dtype=bool)
        mask[np.arange(len(probes)), owner] = False
        return eer(same, m[mask])[0]

    assert split(backend) < split(identity_backend("enc/1", DIM)) - 0.05


def test_plda_uses_every_template() -> None:
    """PLDA's score for a genuine probe grows with the number of enrolled templates (more evidence)."""
    rng = np.random.default_rng(3)
    x, labels = _speakers(rng, 80)
    backend = fit_backend(x, labels, "enc/1", "plda", "plda", lda_dim=6)
    test_x, test_labels = _speakers(rng, 20, n_utt=9)
    gains = []
    for s in sorted(set(test_labels)):
        rows = [i for i, lab in enumerate(test_labels) if lab == s]
        probe = test_x[rows[-1]]
        gains.append(backend.score(probe, test_x[rows[:6]]) - backend.score(probe, test_x[rows[:1]]))
    assert np.mean(gains) > 0


def test_mean_of_template_scores_is_their_average_cosine() -> None:
    """The "mean" rule is the average of the cosines to each projected template."""
    b = identity_backend("enc/1", 3, combine="mean")
    t = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert b.score(np.array([1.0, 1.0, 0]), t) == pytest.approx(np.sqrt(0.5))


def test_round_trip_and_damaged_file(tmp_path: Path) -> None:
    """A written back-end scores the same when read back; a damaged or mismatched file is Unavailable."""
    x, labels = _speakers(np.random.default_rng(4))
    b = fit_backend(x, labels, "enc/1", "plda", "plda", lda_dim=5, meta={"fitted_at": "today"})
    path = tmp_path / "backend_x.json"
    path.write_text(json.dumps(b.to_mapping()))
    again = ScoringBackend.load(path)
    assert again.name == b.name == "plda/plda/today"
    assert again.score(x[0], x[1:4]) == pytest.approx(b.score(x[0], x[1:4]), abs=1e-4)
    doc = b.to_mapping()
    doc["plda"]["psi"] = doc["plda"]["psi"][:-1]
    path.write_text(json.dumps(doc))
    with pytest.raises(Unavailable, match="could not be read"):
        ScoringBackend.load(path)
    path.write_text("{")
    with pytest.raises(Unavailable):
        ScoringBackend.load(path)
