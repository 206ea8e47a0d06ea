"""Acoustic age measures on synthetic voices, and the numpy Silero VAD (port, gating, fail-closed)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from unit.voice.voice_synth import RATE, synth_voice

from purchase_guard.errors import Unavailable
from purchase_guard.voice import acoustic
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.silero import SileroVad, default_model_path

NAMES = acoustic.FEATURE_NAMES


def test_pitch_and_formants_of_a_low_and_a_high_voice() -> None:
    """F0 is recovered within 5 % (110 vs 230 Hz) and the high voice has higher formant spacing."""
    low = acoustic.features(synth_voice("low", 2.0, lead_s=0, tail_s=0))
    high = acoustic.features(synth_voice("high", 2.0, lead_s=0, tail_s=0))
    assert np.exp(low[NAMES.index("log_f0_median")]) == pytest.approx(110.0, rel=0.05)
    assert np.exp(high[NAMES.index("log_f0_median")]) == pytest.approx(230.0, rel=0.05)
    assert high[NAMES.index("log_centroid")] > low[NAMES.index("log_centroid")]
    assert low[NAMES.index("voiced_fraction")] > 0.8


def test_measures_ignore_loudness_and_content_above_4khz() -> None:
    """Scaling the level or adding a 6 kHz tone leaves every measure (nearly) unchanged."""
    x = synth_voice("mid", 2.0, lead_s=0, tail_s=0)
    t = np.arange(x.size) / RATE
    base = acoustic.features(x)
    louder = acoustic.features(4.0 * x)
    hiss = acoustic.features(x + 0.05 * np.sin(2 * np.pi * 6000 * t).astype(np.float32))
    assert np.allclose(base, louder, atol=1e-6)
    assert np.allclose(base, hiss, atol=0.05)


def test_silence_gives_no_measures() -> None:
    """Digital silence yields nan measures (the detector then uses its training medians)."""
    assert np.isnan(acoustic.features(np.zeros(RATE, dtype=np.float32))).all()


def test_numpy_silero_matches_the_torchscript_model() -> None:
    """The numpy port gives the wheel's TorchScript model's probabilities (to 1e-4) on synthetic speech."""
    torch = pytest.importorskip("torch")
    x = np.concatenate(
        [np.zeros(8000), synth_voice("low", 1.5), 0.01 * np.random.default_rng(0).standard_normal(8000)]
    )
    x = x.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates TorchScript loading
        jit = torch.jit.load(str(default_model_path()))
    want = jit.audio_forward(torch.from_numpy(x)[None, :], RATE).numpy().ravel()
    got = SileroVad().probabilities(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


def test_silero_trims_to_speech_and_measures_it() -> None:
    """Silence around a voice is not counted; trim keeps the voice (with padding) only."""
    vad = SileroVad()
    voice = synth_voice("mid", 2.0, lead_s=0, tail_s=0)
    pcm = Pcm(samples=np.concatenate([np.zeros(RATE), voice, np.zeros(RATE)]).astype(np.float32))
    speech, trimmed = vad.speech_and_trim(pcm)
    assert speech <= 2.3
    assert trimmed.samples.shape[0] < pcm.samples.shape[0] - RATE
    assert vad.speech_seconds(Pcm(samples=np.zeros(2 * RATE, dtype=np.float32))) == 0.0


def test_missing_or_damaged_silero_model_is_unavailable(tmp_path: Path) -> None:
    """No model file, or a damaged one, stops construction: no silent fallback to another VAD."""
    with pytest.raises(Unavailable, match="not found"):
        SileroVad(tmp_path / "nope.jit")
    bad = tmp_path / "bad.jit"
    bad.write_bytes(b"not a model")
    with pytest.raises(Unavailable, match="could not be loaded"):
        SileroVad(bad)
