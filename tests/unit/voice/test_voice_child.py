"""Child-voice detector: the numpy runtime, its file format, training rules and the verifier hook."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from unit.voice.voice_synth import voice_pcm

from purchase_guard.domain import Role, Voiceprint
from purchase_guard.errors import Unavailable
from purchase_guard.voice.child import LogisticChildDetector, child_detector_for, packaged_detectors
from purchase_guard.voice.child_training import Sample, choose_threshold, measure, split_speakers, train
from purchase_guard.voice.encoder import FakeEncoder
from purchase_guard.voice.verifier import Band, Thresholds, VoiceVerifier

DIM = 8


def _detector(encoder: str = "enc/1") -> LogisticChildDetector:
    w = np.zeros(DIM)
    w[0] = 4.0
    return LogisticChildDetector(encoder=encoder, mean=np.zeros(DIM), scale=np.ones(DIM), weights=w, bias=0.0)


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_likelihood_is_a_bounded_monotone_score() -> None:
    """Likelihood is in [0, 1], 0.5 on the decision boundary, and rises along the weight direction."""
    det = _detector()
    boundary = _unit([0, 1, 0, 0, 0, 0, 0, 0])
    childish = _unit([1, 1, 0, 0, 0, 0, 0, 0])
    adultish = _unit([-1, 1, 0, 0, 0, 0, 0, 0])
    assert det.likelihood(boundary) == pytest.approx(0.5)
    assert 0.5 < det.likelihood(childish) <= 1.0
    assert 0.0 <= det.likelihood(adultish) < 0.5


def test_embedding_of_another_size_is_refused() -> None:
    """An embedding from a model of another dimension raises instead of being scored."""
    with pytest.raises(ValueError, match="dimensions"):
        _detector().likelihood(np.ones(DIM + 1, dtype=np.float32))


def test_file_round_trip_keeps_scores(tmp_path: Path) -> None:
    """Written and read back, the detector gives the same likelihoods; a damaged file is Unavailable."""
    det = _detector()
    path = tmp_path / "child_x.json"
    path.write_text(json.dumps(det.to_mapping()))
    again = LogisticChildDetector.load(path)
    x = _unit([0.3, -0.2, 0.5, 0, 0, 0.1, 0, 0])
    assert again.likelihood(x) == pytest.approx(det.likelihood(x), abs=1e-6)
    path.write_text("{not json")
    with pytest.raises(Unavailable):
        LogisticChildDetector.load(path)


def test_detector_is_only_used_for_its_own_encoder(tmp_path: Path) -> None:
    """An explicit file for another encoder stops the start; an unknown encoder gets no packaged detector."""
    path = tmp_path / "child_x.json"
    path.write_text(json.dumps(_detector("other/1").to_mapping()))
    with pytest.raises(Unavailable, match="other/1"):
        child_detector_for("enc/1", path)
    assert child_detector_for("no-such-encoder/0") is None


def test_packaged_ge2e_detector_matches_the_ge2e_encoder() -> None:
    """The shipped weights file is for the GE2E encoder, 256-dim, records what it was fitted on and
    carries a "high" operating point above the default one."""
    dets = {d.encoder: d for d in packaged_detectors()}
    det = dets["ge2e-resemblyzer/0.1.4"]
    assert det.dim == 256
    assert det.meta["speakers_by_corpus_and_group"]
    assert len(det.meta["git_commit"]) == 40
    assert det.operating_points["challenge"] == 0.5
    assert det.operating_points["high"] > 0.5
    assert child_detector_for("ge2e-resemblyzer/0.1.4") is not None


def test_speaker_split_is_disjoint_and_keeps_teens_out() -> None:
    """Each class alternates between train and held-out; 13-15 year olds are never trained on."""
    ages = {"a": 7, "b": 8, "c": 9, "d": 30, "e": 31, "f": 14, "g": 25}
    split = split_speakers(ages)
    assert split["f"] == "teen"
    assert {split[s] for s in "abc"} == {"train", "heldout"}
    assert {split[s] for s in "deg"} == {"train", "heldout"}


def test_threshold_never_misses_more_children_than_the_target() -> None:
    """The recall rule flags at least 95 % of children; the EER rule balances the two errors."""
    rng = np.random.default_rng(0)
    kids = rng.normal(1.0, 1.0, 400)
    adults = rng.normal(-1.0, 1.0, 400)
    t, rule = choose_threshold(kids, adults, "recall")
    assert np.mean(kids >= t) >= 0.95
    assert "95%" in rule
    t_eer, _ = choose_threshold(kids, adults, "eer")
    assert t_eer > t
    assert abs(np.mean(kids < t_eer) - np.mean(adults >= t_eer)) < 0.02


def _samples(rng: np.random.Generator, n_speakers: int, child: bool, start: int) -> list[Sample]:
    centre = np.zeros(16)
    centre[0] = 1.0 if child else -1.0
    out = []
    for s in range(n_speakers):
        spk_centre = centre + rng.normal(0, 0.1, 16)
        for u in range(4):
            out.append(
                Sample(
                    speaker=f"s{start + s}",
                    utt_id=f"s{start + s}_{u}",
                    age=8 if child else 30,
                    speech_s=2.0,
                    embedding=spk_centre + rng.normal(0, 0.05, 16),
                )
            )
    return out


def test_training_separates_clusters_and_sets_the_operating_point_at_half() -> None:
    """On separable synthetic classes, held-out speakers are classified right at likelihood 0.5."""
    rng = np.random.default_rng(1)
    train_set = _samples(rng, 12, True, 0) + _samples(rng, 12, False, 100)
    held = _samples(rng, 6, True, 200) + _samples(rng, 6, False, 300)
    det, meta = train(train_set, "enc/1", "synthetic")
    result = measure(det, held)
    assert result["utterances"]["children_flagged"] == 1.0
    assert result["utterances"]["adults_flagged"] == 0.0
    assert set(meta["training_speakers"]).isdisjoint({s.speaker for s in held})


def test_verifier_reports_child_likelihood_from_the_detector() -> None:
    """With a detector, every scored result carries its likelihood; without one it stays -1."""
    enc = FakeEncoder()
    thresholds = Thresholds(enc.name, (Band("all", math.inf, 0.9),))
    w = np.zeros(enc.dim)
    w[5] = 1.0
    det = LogisticChildDetector(enc.name, np.zeros(enc.dim), np.ones(enc.dim), w, 0.0)
    pcm = voice_pcm("high", 2.0, seed=3)
    emb = VoiceVerifier(enc, thresholds).embed_pcm(pcm)
    vp = Voiceprint("kid", "h1", enc.name, tuple(float(v) for v in emb), 3, datetime(2024, 1, 1, tzinfo=UTC))
    with_det = VoiceVerifier(enc, thresholds, child_detector=det).verify(pcm, [vp], {"kid": Role.CHILD})
    without = VoiceVerifier(enc, thresholds).verify(pcm, [vp], {"kid": Role.CHILD})
    assert with_det.child_likelihood == pytest.approx(det.likelihood(emb), abs=1e-6)
    assert without.child_likelihood == -1.0
