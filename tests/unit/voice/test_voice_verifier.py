"""VoiceVerifier with the FakeEncoder: who is verified, who is not, and why."""

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
from purchase_guard.voice.encoder import Embedding, FakeEncoder
from purchase_guard.voice.verifier import Band, Thresholds, VoiceVerifier

ENC = FakeEncoder()
THRESHOLDS = Thresholds(
    encoder=ENC.name,
    bands=(Band("pin", 2.5, 0.95), Band("command", 6.0, 0.9), Band("long", math.inf, 0.9)),
)
ROLES = {"mum": Role.ADULT, "kid": Role.CHILD}


def _print(member: str, voice: str, encoder: str = ENC.name) -> Voiceprint:
    verifier = VoiceVerifier(ENC, THRESHOLDS)
    takes = [verifier.embed_pcm(voice_pcm(voice, 2.0, seed=s)) for s in (11, 12, 13)]
    centroid = np.mean(takes, axis=0)
    centroid /= np.linalg.norm(centroid)
    return Voiceprint(
        member_id=member,
        household_id="h1",
        encoder=encoder,
        embedding=tuple(float(v) for v in centroid),
        n_utterances=3,
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


PRINTS = (_print("mum", "low"), _print("kid", "high"))


def test_enrolled_voice_is_verified_as_its_member() -> None:
    """A new utterance of an enrolled voice verifies as that member, with role and band threshold."""
    result = VoiceVerifier(ENC, THRESHOLDS).verify(voice_pcm("low", 2.0, seed=99), PRINTS, ROLES)
    assert result.verified
    assert result.member_id == "mum"
    assert result.role is Role.ADULT
    assert result.threshold == 0.95  # about 2 s of speech: pin band
    assert result.score >= result.threshold
    assert result.child_likelihood == -1.0
    assert result.encoder == ENC.name
    assert result.usable


def test_unenrolled_voice_is_not_verified_and_names_nobody() -> None:
    """A voice nobody enrolled is unverified and the result names no member or role."""
    result = VoiceVerifier(ENC, THRESHOLDS).verify(voice_pcm("mid", 4.0, seed=5), PRINTS, ROLES)
    assert not result.verified
    assert result.member_id is None
    assert result.role is None
    assert result.threshold == 0.9  # about 4 s: command band
    assert result.score < result.threshold
    assert result.usable


def test_too_little_speech_is_unusable() -> None:
    """Under min_speech_s of speech gives usable=False with a problem saying how much was heard."""
    result = VoiceVerifier(ENC, THRESHOLDS, min_speech_s=0.5).verify(voice_pcm("low", 0.2), PRINTS, ROLES)
    assert not result.usable
    assert not result.verified
    assert "need at least 0.5 s" in result.problem


def test_prints_from_another_encoder_require_reenrollment() -> None:
    """When every voiceprint was made by another encoder, nothing is scored and re-enrollment is asked for."""
    old = (_print("mum", "low", encoder="ecapa/9"),)
    result = VoiceVerifier(ENC, THRESHOLDS).verify(voice_pcm("low", 2.0, seed=1), old, ROLES)
    assert not result.verified
    assert result.problem == "voiceprints were made by encoder ecapa/9; re-enrollment required"


def test_mixed_encoders_score_only_matching_prints() -> None:
    """Prints from other encoders are ignored when some prints match the current encoder."""
    prints = (_print("kid", "low", encoder="ecapa/9"), _print("mum", "low"))
    result = VoiceVerifier(ENC, THRESHOLDS).verify(voice_pcm("low", 2.0, seed=3), prints, ROLES)
    assert result.member_id == "mum"


def test_verify_against_restricts_candidates() -> None:
    """verify_against only considers the allowed members: the kid's voice is not an allowed adult."""
    verifier = VoiceVerifier(ENC, THRESHOLDS)
    kid_audio = voice_pcm("high", 2.0, seed=7)
    assert verifier.verify(kid_audio, PRINTS, ROLES).member_id == "kid"
    adults_only = verifier.verify_against(kid_audio, PRINTS, ROLES, allowed_member_ids={"mum"})
    assert not adults_only.verified
    nobody = verifier.verify_against(kid_audio, PRINTS, ROLES, allowed_member_ids=set())
    assert nobody.problem == "no enrolled voiceprints to compare against"


def test_child_detector_hook_is_used() -> None:
    """An attached child detector's likelihood is reported on the result."""

    class Always:
        def likelihood(self, embedding: Embedding) -> float:
            assert embedding.shape == (ENC.dim,)
            return 0.75

    result = VoiceVerifier(ENC, THRESHOLDS, child_detector=Always()).verify(
        voice_pcm("low", 2.0), PRINTS, ROLES
    )
    assert result.child_likelihood == 0.75


def test_result_never_carries_the_embedding() -> None:
    """The SpeakerResult's repr holds scores only, no vector."""
    text = repr(VoiceVerifier(ENC, THRESHOLDS).verify(voice_pcm("low", 2.0), PRINTS, ROLES))
    assert text.count(",") < 15


def test_band_selection_by_net_speech() -> None:
    """Band edges are inclusive upper bounds; beyond the last edge the open band applies."""
    assert THRESHOLDS.band_for(0.0).name == "pin"
    assert THRESHOLDS.band_for(2.5).name == "pin"
    assert THRESHOLDS.band_for(2.51).name == "command"
    assert THRESHOLDS.band_for(60.0).name == "long"


def test_thresholds_must_be_ordered_and_open_ended() -> None:
    """Unordered bands or a bounded last band are configuration errors."""
    with pytest.raises(ValueError, match="ordered"):
        Thresholds("x", (Band("a", 5.0, 0.5), Band("b", 2.0, 0.5)))
    with pytest.raises(ValueError, match="unbounded"):
        Thresholds("x", (Band("a", 5.0, 0.5),))


def test_packaged_thresholds_cover_ge2e() -> None:
    """The shipped thresholds.json has the three GE2E bands with thresholds in (0, 1)."""
    t = Thresholds.load("ge2e-resemblyzer/0.1.4")
    assert [b.name for b in t.bands] == ["pin", "command", "long"]
    assert all(0 < b.threshold < 1 for b in t.bands)


def test_missing_encoder_or_file_is_unavailable(tmp_path: Path) -> None:
    """Thresholds for an uncalibrated encoder, or an unreadable file, raise Unavailable."""
    with pytest.raises(Unavailable, match="no calibrated"):
        Thresholds.load("nobody/0")
    with pytest.raises(Unavailable, match="could not be read"):
        Thresholds.load(ENC.name, tmp_path / "absent.json")
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps(
            {"encoders": {ENC.name: {"bands": [{"name": "all", "max_speech_s": None, "threshold": 0.5}]}}}
        )
    )
    assert Thresholds.load(ENC.name, path).band_for(3.0).threshold == 0.5


def test_verifier_refuses_thresholds_of_another_encoder() -> None:
    """Thresholds fitted for one encoder cannot be used with another."""
    with pytest.raises(ValueError, match="thresholds are for"):
        VoiceVerifier(ENC, Thresholds.load("ge2e-resemblyzer/0.1.4"))


def _templated(member: str, voice: str) -> Voiceprint:
    base = _print(member, voice)
    verifier = VoiceVerifier(ENC, THRESHOLDS)
    takes = [verifier.embed_pcm(voice_pcm(voice, 2.0, seed=s)) for s in (11, 12, 13)]
    return Voiceprint(
        member_id=base.member_id,
        household_id=base.household_id,
        encoder=base.encoder,
        embedding=base.embedding,
        n_utterances=3,
        created_at=base.created_at,
        templates=tuple(tuple(float(v) for v in t) for t in takes),
    )


def test_templates_are_scored_by_the_backend_rule() -> None:
    """Under the "mean" rule a print with templates scores the mean cosine to its takes, else the centroid."""
    from purchase_guard.voice.backend import identity_backend

    mean_rule = identity_backend(ENC.name, ENC.dim, combine="mean")
    thresholds = Thresholds(ENC.name, THRESHOLDS.bands, backend=mean_rule.name)
    verifier = VoiceVerifier(ENC, thresholds, backend=mean_rule)
    probe = voice_pcm("low", 2.0, seed=40)
    emb = verifier.embed_pcm(probe).astype(np.float64)
    printed = _templated("mum", "low")
    want = float(np.mean([emb @ np.asarray(t) for t in printed.templates]))
    assert verifier.verify(probe, [printed], ROLES).score == pytest.approx(want, abs=1e-5)
    centroid_only = _print("mum", "low")
    assert verifier.verify(probe, [centroid_only], ROLES).score == pytest.approx(
        float(emb @ np.asarray(centroid_only.embedding)), abs=1e-5
    )


def test_verifier_refuses_thresholds_of_another_vad_or_backend() -> None:
    """Thresholds calibrated with another VAD or back-end cannot be used: their scores mean something else."""
    with pytest.raises(ValueError, match="VAD"):
        VoiceVerifier(ENC, Thresholds(ENC.name, THRESHOLDS.bands, vad="silero-vad/6.2.3/t0.5"))
    with pytest.raises(ValueError, match="back-end"):
        VoiceVerifier(ENC, Thresholds(ENC.name, THRESHOLDS.bands, backend="plda/plda/2026-01-01"))


def test_build_verifier_fails_closed_when_a_named_model_is_missing(tmp_path: Path) -> None:
    """Thresholds naming a back-end that is not installed, or an unknown VAD, stop the start (Unavailable)."""
    from purchase_guard.voice.verifier import build_verifier

    def write(entry: dict) -> Path:
        path = tmp_path / "thresholds.json"
        bands = [{"name": "all", "max_speech_s": None, "threshold": 0.9}]
        path.write_text(json.dumps({"version": 2, "encoders": {ENC.name: {"bands": bands, **entry}}}))
        return path

    with pytest.raises(Unavailable, match="back-end"):
        build_verifier(ENC, write({"backend": "plda/plda/2026-01-01"}))
    with pytest.raises(Unavailable, match="VAD"):
        build_verifier(ENC, write({"vad": "webrtc/1"}))
    with pytest.raises(Unavailable):
        build_verifier(ENC, write({"backend": "plda/plda/x"}), backend_path=tmp_path / "missing.json")
    assert build_verifier(ENC, write({})).thresholds.vad == "energy/1"
