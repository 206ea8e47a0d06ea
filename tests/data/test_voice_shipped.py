"""The shipped voice files (thresholds.json, backend_*.json, child_ge2e.json) on real speakers they never saw.

voice/fitting.py holds a few speakers back from every shipped fit; their keys are recorded
in the files (`held_out_for_tests`), and these tests use exactly them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from purchase_guard.domain import Role, Voiceprint
from purchase_guard.voice.audio import Pcm, decode_audio
from purchase_guard.voice.child import child_detector_for
from purchase_guard.voice.evaluation import speechocean_rows
from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.quality import assess_enrollment
from purchase_guard.voice.verifier import VoiceVerifier, build_verifier

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def encoder() -> Ge2eEncoder:
    return Ge2eEncoder()


@pytest.fixture(scope="module")
def verifier(encoder: Ge2eEncoder) -> VoiceVerifier:
    return build_verifier(encoder, child_detector=child_detector_for(encoder.name))


def _entry(encoder: Ge2eEncoder) -> dict:
    doc = json.loads(resources.files("purchase_guard.voice").joinpath("thresholds.json").read_text("utf-8"))
    return doc["encoders"][encoder.name]


def _utterances(data: Path, key: str) -> list[Pcm]:
    corpus, speaker = key.split("/", 1)
    assert corpus.startswith("speechocean")
    by_spk, _ = speechocean_rows(data / "speechocean762-train")
    return [decode_audio(encoded=p.read_bytes()) for _, p in sorted(by_spk[speaker])]


def _print(member: str, verifier: VoiceVerifier, takes: list[Pcm]) -> Voiceprint:
    enrolled = assess_enrollment(takes, verifier.encoder, vad=verifier.vad, min_speech_s=0.5)
    return Voiceprint(
        member_id=member,
        household_id="h",
        encoder=verifier.encoder.name,
        embedding=tuple(float(v) for v in enrolled.centroid),
        n_utterances=enrolled.n_accepted,
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        templates=tuple(tuple(float(v) for v in t) for t in enrolled.templates),
    )


def test_shipped_thresholds_record_what_they_were_fitted_on(encoder: Ge2eEncoder) -> None:
    """The thresholds entry names its VAD, back-end, fitting speakers per corpus, date and commit."""
    entry = _entry(encoder)
    fitted = entry["fitted_on"]
    assert fitted["speakers"] > 300
    assert {"speechocean", "libri-train-clean"} <= set(fitted["corpora"])
    assert len(fitted["git_commit"]) == 40
    assert fitted["held_out_for_tests"]
    assert [b["name"] for b in entry["bands"]] == ["pin", "command", "long"]


def test_held_out_adults_verify_as_themselves_and_not_as_each_other(
    shared_data: Path, verifier: VoiceVerifier, encoder: Ge2eEncoder
) -> None:
    """Two held-out speechocean adults enroll from 3 takes; most of their own other takes verify as them,
    and none verifies as the other adult."""
    adults = [k for k in _entry(encoder)["fitted_on"]["held_out_for_tests"] if "speechocean" in k]
    _, ages = speechocean_rows(shared_data / "speechocean762-train")
    adults = [k for k in adults if ages[k.split("/")[1]] >= 16]
    assert len(adults) == 2
    utts = {k: _utterances(shared_data, k) for k in adults}
    prints = [_print(k, verifier, u[:3]) for k, u in utts.items()]
    roles = dict.fromkeys(adults, Role.ADULT)
    own, cross = [], []
    for k, u in utts.items():
        for pcm in u[3:]:
            r = verifier.verify(pcm, prints, roles)
            if r.usable:
                own.append(r.member_id == k)
                cross.append(r.verified and r.member_id != k)
    assert np.mean(own) >= 0.5
    assert not any(cross)


def test_held_out_children_are_flagged_at_the_high_point_and_adults_are_not(
    shared_data: Path, verifier: VoiceVerifier, encoder: Ge2eEncoder
) -> None:
    """On held-out speakers: most child utterances reach the high operating point, few adult ones do."""
    det = child_detector_for(encoder.name)
    assert det is not None
    high = det.operating_points["high"]
    assert 0.5 < high < 1.0
    held = det.meta["held_out_for_tests"]
    _, ages = speechocean_rows(shared_data / "speechocean762-train")
    rates = {}
    for group, test in (("child", lambda a: a <= 12), ("adult", lambda a: a >= 16)):
        keys = [k for k in held if "speechocean" in k and test(ages[k.split("/")[1]])]
        assert len(keys) == 2
        flags = []
        for k in keys:
            for pcm in _utterances(shared_data, k):
                speech, trimmed = verifier.vad.speech_and_trim(pcm)
                if speech < 0.5:
                    continue
                emb = encoder.embed(trimmed.samples)
                flags.append(det.likelihood_audio(emb, trimmed.samples) >= high)
        rates[group] = float(np.mean(flags))
    assert rates["child"] >= 0.6
    assert rates["adult"] <= 0.15
