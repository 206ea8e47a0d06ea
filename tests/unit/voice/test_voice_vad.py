"""Energy VAD: finds speech in tone/silence/noise mixes and trims long silences."""

from __future__ import annotations

import numpy as np
import pytest
from unit.voice.voice_synth import RATE, tone, voice_pcm

from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.vad import clipped_fraction, snr_db, speech_mask, speech_seconds, trim_silence


def _pcm(*parts: np.ndarray) -> Pcm:
    return Pcm(samples=np.concatenate(parts).astype(np.float32))


def _silence(seconds: float, level: float = 0.0, seed: int = 0) -> np.ndarray:
    return level * np.random.default_rng(seed).standard_normal(int(seconds * RATE))


def test_tone_between_silences_is_measured_as_its_length() -> None:
    """1 s of tone between 1 s silences counts as about 1 s of speech (hangover adds < 0.15 s)."""
    pcm = _pcm(_silence(1.0), tone(300, 1.0), _silence(1.0))
    assert speech_seconds(pcm) == pytest.approx(1.0, abs=0.15)


def test_trim_drops_long_silence_and_keeps_padding() -> None:
    """Two 0.5 s tones 2 s apart trim to about 1 s plus padding; the tones survive intact."""
    pcm = _pcm(
        _silence(1.0, 1e-4), tone(300, 0.5), _silence(2.0, 1e-4, 1), tone(500, 0.5), _silence(1.0, 1e-4, 2)
    )
    trimmed = trim_silence(pcm)
    assert 1.0 <= trimmed.duration_s <= 1.6
    assert np.max(np.abs(trimmed.samples)) == pytest.approx(0.5, abs=0.01)


def test_adaptive_floor_finds_speech_in_steady_noise() -> None:
    """A tone 20 dB above steady white noise is found; the noise itself is not speech."""
    noise = _silence(3.0, 0.01, 3)
    sig = noise.copy()
    sig[RATE : 2 * RATE] += tone(400, 1.0, level=0.14)
    pcm = Pcm(samples=sig.astype(np.float32))
    assert speech_seconds(pcm) == pytest.approx(1.0, abs=0.2)
    assert speech_seconds(Pcm(samples=noise.astype(np.float32))) < 0.2


def test_silence_has_no_speech_and_trims_to_nothing() -> None:
    """Digital silence has zero speech seconds, trims to empty, and reports 0 dB SNR."""
    pcm = _pcm(_silence(1.0))
    assert speech_seconds(pcm) == 0.0
    assert trim_silence(pcm).samples.shape[0] == 0
    assert snr_db(pcm) == 0.0


def test_single_click_is_not_speech() -> None:
    """A one-sample click in silence does not count as speech."""
    x = _silence(1.0, 1e-4)
    x[8000] = 0.9
    assert speech_seconds(_pcm(x)) == 0.0


def test_snr_estimate_tracks_added_noise() -> None:
    """Speech with quiet background has a higher SNR estimate than the same speech with loud noise."""
    clean = voice_pcm("low", 2.0, lead_s=0.5, tail_s=0.5)
    noisy = Pcm(
        samples=(
            clean.samples + 0.01 * np.random.default_rng(4).standard_normal(clean.samples.shape[0])
        ).astype(np.float32)
    )
    assert snr_db(clean) > 30
    assert 8 < snr_db(noisy) < 25


def test_clipped_fraction_counts_full_scale_samples() -> None:
    """Samples at full scale are counted; ordinary loud samples are not."""
    x = tone(300, 1.0, level=0.9).astype(np.float32)
    assert clipped_fraction(Pcm(samples=x)) == 0.0
    x[:160] = 1.0
    assert clipped_fraction(Pcm(samples=x)) == pytest.approx(0.01)


def test_mask_has_one_flag_per_hop() -> None:
    """speech_mask returns one flag per 10 ms hop."""
    assert speech_mask(_pcm(tone(300, 1.0))).shape[0] == pytest.approx(98, abs=2)
