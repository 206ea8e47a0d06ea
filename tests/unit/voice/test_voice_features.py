"""Mel spectrogram port: the librosa/Resemblyzer filterbank and framing properties."""

from __future__ import annotations

import numpy as np
import pytest
from unit.voice.voice_synth import tone

from purchase_guard.voice.features import (
    hz_to_mel,
    mel_filterbank,
    mel_frequencies,
    mel_spectrogram,
    mel_to_hz,
    power_spectrogram,
)


def test_slaney_mel_scale_known_points() -> None:
    """Slaney scale is linear below 1 kHz (1000 Hz = 15 mel) and round-trips exactly."""
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(200.0)) == pytest.approx(3.0)
    freqs = np.array([0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0])
    assert np.allclose(mel_to_hz(hz_to_mel(freqs)), freqs)
    # librosa.mel_frequencies(n_mels=3, fmax=8000) on the Slaney scale: midpoint lies above 1 kHz
    mid = mel_frequencies(3, 0.0, 8000.0)[1]
    assert 1500 < mid < 2500


def test_filterbank_shape_and_peaks() -> None:
    """40 non-negative filters over 201 bins, peaks ascending, each peak near its mel centre."""
    fb = mel_filterbank()
    assert fb.shape == (40, 201)
    assert fb.dtype == np.float32
    assert (fb >= 0).all()
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()
    centres = mel_frequencies(42, 0.0, 8000.0)[1:-1]
    bin_hz = 16_000 / 400
    assert np.all(np.abs(peaks * bin_hz - centres) <= bin_hz)


def test_slaney_area_normalisation() -> None:
    """With Slaney norm each (wide enough) triangle integrates to about 1 over Hz."""
    fb = mel_filterbank()
    areas = fb.sum(axis=1) * (16_000 / 400)
    assert np.allclose(areas[20:], 1.0, atol=0.08)


def test_frame_count_matches_centred_stft() -> None:
    """centre=True framing gives 1 + len // hop frames of 40 mels."""
    x = np.zeros(16_000, dtype=np.float32)
    assert mel_spectrogram(x).shape == (101, 40)
    assert mel_spectrogram(x[:1000]).shape == (1 + 1000 // 160, 40)


def test_pure_tone_lands_in_its_band() -> None:
    """A 1 kHz tone puts most energy in the filter whose centre is nearest 1 kHz."""
    mel = mel_spectrogram(tone(1000, 0.5).astype(np.float32))
    band = int(mel[10:-10].mean(axis=0).argmax())
    centres = mel_frequencies(42, 0.0, 8000.0)[1:-1]
    assert band == int(np.argmin(np.abs(centres - 1000)))


def test_power_is_parseval_consistent() -> None:
    """Power spectrum of a full-scale tone frame equals (window sum * amplitude / 2) squared at the peak."""
    x = tone(1000, 0.1, level=1.0).astype(np.float32)
    p = power_spectrogram(x)[5]
    window_sum = 200.0  # periodic Hann of 400 sums to 200
    assert p.max() == pytest.approx((window_sum / 2) ** 2, rel=0.02)
