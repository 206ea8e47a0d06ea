"""Enrollment gates: bad takes are rejected one by one with a reason a person can act on."""

from __future__ import annotations

import numpy as np
import pytest
from unit.voice.voice_synth import voice_pcm

from purchase_guard.errors import EnrollmentRejected
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.encoder import FakeEncoder
from purchase_guard.voice.quality import assess_enrollment, check_take, leave_one_out

ENC = FakeEncoder()
# FakeEncoder separates the synthetic voices far more than real speakers are separated.
CONSISTENCY = 0.9


def _good(n: int, voice: str = "low") -> list[Pcm]:
    return [voice_pcm(voice, 1.8, seed=s) for s in range(n)]


def test_three_good_takes_make_a_unit_centroid() -> None:
    """Three clean takes of one voice are all accepted and give an L2-normalised centroid."""
    result = assess_enrollment(_good(3), ENC, min_consistency=CONSISTENCY)
    assert result.n_accepted == 3
    assert np.linalg.norm(result.centroid) == pytest.approx(1.0, abs=1e-5)
    assert all(t.consistency is not None and t.consistency > 0.95 for t in result.takes)
    assert all(t.speech_seconds > 1.0 and t.snr_db > 10 for t in result.takes)


def test_short_take_is_rejected_with_its_length() -> None:
    """A take with 0.4 s of speech is rejected, naming its speech length and the minimum."""
    takes = [*_good(3), voice_pcm("low", 0.3, seed=9)]
    result = assess_enrollment(takes, ENC, min_consistency=CONSISTENCY)
    bad = result.takes[3]
    assert not bad.accepted
    assert bad.problem.startswith("take 3: only 0.")
    assert bad.problem.endswith("s of speech, need at least 1.0 s")
    assert bad.consistency is None


def test_clipped_take_is_rejected() -> None:
    """A take with over 1% of samples at full scale is rejected as clipped."""
    loud = voice_pcm("low", 1.8, seed=4, level=1.0).samples * 3
    clipped = Pcm(samples=np.clip(loud, -1, 1).astype(np.float32))
    result = assess_enrollment([clipped, *_good(3)], ENC, min_consistency=CONSISTENCY)
    assert "% of samples clipped" in result.takes[0].problem
    assert result.takes[0].problem.startswith("take 0: ")


def test_silent_take_is_rejected() -> None:
    """A silent take is rejected as silent."""
    silent = Pcm(samples=np.zeros(32_000, dtype=np.float32))
    result = assess_enrollment([*_good(3), silent], ENC, min_consistency=CONSISTENCY)
    assert result.takes[3].problem == "take 3: silent"


def test_noisy_take_is_rejected() -> None:
    """A take whose background is nearly as loud as the voice is rejected for its SNR."""
    base = voice_pcm("low", 1.8, seed=6)
    noise = 0.012 * np.random.default_rng(1).standard_normal(base.samples.shape[0])
    noisy = Pcm(samples=(base.samples + noise).astype(np.float32))
    result = assess_enrollment([noisy, *_good(3)], ENC, min_consistency=CONSISTENCY, min_snr_db=20)
    assert "too noisy" in result.takes[0].problem


def test_noise_without_speech_is_not_called_silent() -> None:
    """A take of loud noise only is reported as noise, not as silence."""
    noise = Pcm(samples=(0.05 * np.random.default_rng(2).standard_normal(32_000)).astype(np.float32))
    result = assess_enrollment([*_good(3), noise], ENC, min_consistency=CONSISTENCY)
    assert result.takes[3].problem == "take 3: no speech heard over the background noise"


def test_a_different_voice_is_the_odd_one_out() -> None:
    """Among four takes, the one by another voice is rejected for consistency; the rest are kept."""
    takes = [*_good(2), voice_pcm("high", 1.8, seed=2), voice_pcm("low", 1.8, seed=3)]
    result = assess_enrollment(takes, ENC, min_consistency=CONSISTENCY)
    assert [t.accepted for t in result.takes] == [True, True, False, True]
    assert result.takes[2].problem.startswith("take 2: voice differs from the other takes (similarity ")
    assert result.takes[2].problem.endswith("need 0.90)")


def test_too_few_usable_takes_raise_with_all_problems() -> None:
    """With fewer than min_takes usable, EnrollmentRejected lists every rejected take and its reason."""
    takes = [*_good(2), Pcm(samples=np.zeros(16_000, dtype=np.float32))]
    with pytest.raises(EnrollmentRejected) as info:
        assess_enrollment(takes, ENC, min_consistency=CONSISTENCY)
    assert info.value.problems == ((2, "take 2: silent"),)
    assert "2 of 3 takes are usable, need at least 3" in str(info.value)


def test_two_disagreeing_takes_are_both_rejected() -> None:
    """When only two takes remain and they disagree, neither can be trusted."""
    takes = [voice_pcm("low", 1.8), voice_pcm("high", 1.8)]
    with pytest.raises(EnrollmentRejected) as info:
        assess_enrollment(takes, ENC, min_takes=2, min_consistency=CONSISTENCY)
    assert [i for i, _ in info.value.problems] == [0, 1]


def test_leave_one_out_is_cosine_to_centroid_of_others() -> None:
    """leave_one_out compares each vector with the normalised mean of the others."""
    e = [
        np.array([1, 0], dtype=np.float32),
        np.array([1, 0], dtype=np.float32),
        np.array([0, 1], dtype=np.float32),
    ]
    scores = leave_one_out(e)
    assert scores[2] == pytest.approx(0.0)
    assert scores[0] == pytest.approx(1 / np.sqrt(2))


def test_one_take_check_speaks_to_the_person_recording() -> None:
    """check_take gives one take's signal problem without a take number, and none for good speech."""
    silent = check_take(Pcm(np.zeros(32_000, dtype=np.float32)))
    assert not silent.accepted
    assert silent.problem == "silent"
    good = check_take(voice_pcm("low", 3.0, seed=1))
    assert good.accepted, good.problem
    assert good.speech_seconds >= 1.0
