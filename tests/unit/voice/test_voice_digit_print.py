"""Spoken digits scored against the member's digit takes: the calibration rule, the file, and
the verifier's use of them (voice/digit_print.py)."""

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
from purchase_guard.voice.digit_print import DigitPrintCalibration, centroid, fit_delta
from purchase_guard.voice.encoder import FakeEncoder
from purchase_guard.voice.verifier import Band, Thresholds, VoiceVerifier

ENC = FakeEncoder()
THRESHOLDS = Thresholds(
    encoder=ENC.name,
    bands=(Band("pin", 2.5, 0.95), Band("command", 6.0, 0.9), Band("long", math.inf, 0.9)),
)
ROLES = {"mum": Role.ADULT}


def _calibration(delta: float = 0.01, **changes: object) -> DigitPrintCalibration:
    fields: dict[str, object] = {
        "encoder": ENC.name,
        "use": True,
        "delta": delta,
        "rule": "test",
        "fitted_on": {},
        "backend": THRESHOLDS.backend,
        "vad": THRESHOLDS.vad,
    }
    fields.update(changes)
    return DigitPrintCalibration(**fields)  # type: ignore[arg-type]


def _print_of(voice: str) -> Voiceprint:
    v = VoiceVerifier(ENC, THRESHOLDS)
    c = centroid([v.embed_pcm(voice_pcm(voice, 2.0, seed=s)) for s in (11, 12, 13)])
    return Voiceprint("mum", "h1", ENC.name, tuple(float(x) for x in c), 3, datetime(2024, 1, 1, tzinfo=UTC))


def test_fit_delta_keeps_the_false_match_rate_of_the_voiceprint_alone() -> None:
    """The fitted shift is the smallest on the grid at which impostors pass the better-of-two
    score no more often than they passed the voiceprint score at the plain threshold."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 0.9, 2000)
    d = a + rng.uniform(0.0, 0.05, 2000)  # the digit score is a little higher for impostors too
    t = np.full(2000, 0.85)
    delta, usable = fit_delta(a, d, t)
    assert usable
    assert np.sum(np.maximum(a, d) >= t + delta) <= np.sum(a >= t)
    assert np.sum(np.maximum(a, d) >= t + delta - 0.001) > np.sum(a >= t)
    # Digit scores never above the voiceprint's need no shift at all.
    assert fit_delta(a, a - 0.1, t) == (0.0, True)


def test_fit_delta_says_unusable_when_no_shift_keeps_the_rate() -> None:
    """When every impostor passes on its digit score, no shift up to the maximum helps."""
    a = np.full(100, 0.1)
    assert fit_delta(a, np.full(100, 0.999), np.full(100, 0.5)) == (0.1, False)
    with pytest.raises(ValueError, match="non-empty"):
        fit_delta(np.zeros(0), np.zeros(0), np.zeros(0))


def test_calibration_file_round_trips_and_a_damaged_one_is_unavailable(tmp_path: Path) -> None:
    """A written calibration loads back for its encoder, none for another; junk is Unavailable."""
    path = tmp_path / "dp.json"
    path.write_text(json.dumps({"encoders": {ENC.name: _calibration(0.02).to_mapping()}}))
    assert DigitPrintCalibration.load(ENC.name, path) == _calibration(0.02)
    assert DigitPrintCalibration.load("other/1", path) is None
    assert DigitPrintCalibration.load(ENC.name, tmp_path / "missing.json") is None
    path.write_text(json.dumps({"encoders": {ENC.name: {**_calibration().to_mapping(), "delta": 5}}}))
    with pytest.raises(Unavailable):
        DigitPrintCalibration.load(ENC.name, path)


def test_packaged_calibration_loads_for_ge2e_and_records_its_fit() -> None:
    """The shipped digit_print.json is for GE2E's scoring as shipped and says what it was fitted on."""
    from purchase_guard.voice.ge2e import NAME

    cal = DigitPrintCalibration.load(NAME)
    assert cal is not None
    shipped = Thresholds.load(NAME)
    assert (cal.backend, cal.vad) == (shipped.backend, shipped.vad)
    assert cal.fitted_on["impostor_trials"] > 1000
    assert sum(cal.fitted_on["speakers_by_corpus"].values()) >= 20


def test_digit_takes_of_the_answering_voice_can_verify_it_at_the_shifted_threshold() -> None:
    """An answer far from the sentence voiceprint but in the voice of the member's digit takes
    verifies, judged at the band threshold plus the calibrated shift; without takes it does not."""
    vp = _print_of("low")
    v = VoiceVerifier(ENC, THRESHOLDS, digit_print=_calibration(0.01))
    answer = voice_pcm("mid", 2.0, seed=40)
    takes = [v.embed_pcm(voice_pcm("mid", 2.0, seed=s)) for s in (21, 22, 23)]
    plain = v.verify_digits(answer, vp, ROLES, (), "")
    assert not plain.verified
    with_takes = v.verify_digits(answer, vp, ROLES, takes, ENC.name)
    assert with_takes.verified
    assert with_takes.member_id == "mum"
    assert with_takes.threshold == pytest.approx(0.95 + 0.01)


@pytest.mark.parametrize(
    "calibration",
    [
        None,
        _calibration(use=False),
        _calibration(backend="lda-wccn/centroid/x"),
        _calibration(vad="silero-vad/t0.5"),
    ],
)
def test_without_a_matching_calibration_the_takes_are_not_used(
    calibration: DigitPrintCalibration | None,
) -> None:
    """No calibration, one switched off, or one fitted for other scoring: the voiceprint alone decides."""
    vp = _print_of("low")
    v = VoiceVerifier(ENC, THRESHOLDS, digit_print=calibration)
    takes = [v.embed_pcm(voice_pcm("mid", 2.0, seed=s)) for s in (21, 22, 23)]
    result = v.verify_digits(voice_pcm("mid", 2.0, seed=40), vp, ROLES, takes, ENC.name)
    assert not result.verified
    assert result.threshold == 0.95


def test_takes_made_by_another_encoder_are_not_used() -> None:
    """Digit takes embedded by another encoder are not compared with this one's embedding."""
    vp = _print_of("low")
    v = VoiceVerifier(ENC, THRESHOLDS, digit_print=_calibration())
    takes = [v.embed_pcm(voice_pcm("mid", 2.0, seed=s)) for s in (21, 22, 23)]
    assert not v.verify_digits(voice_pcm("mid", 2.0, seed=40), vp, ROLES, takes, "other/1").verified
