"""Mel spectrogram identical to Resemblyzer's (librosa.feature.melspectrogram defaults).

The GE2E weights were trained on features from
`librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)`;
any difference in window, padding or filterbank shifts the embeddings, so this port
follows librosa's code path exactly instead of pulling in librosa (and numba) as a
dependency: periodic Hann window, centred frames with zero padding of n_fft // 2,
power 2, Slaney mel scale with Slaney area normalisation, fmin 0, fmax sr / 2.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from scipy.signal import get_window

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 40

# Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0

FloatArray = np.ndarray[Any, np.dtype[np.floating[Any]]]


def hz_to_mel(freqs: FloatArray | float) -> FloatArray:
    f = np.asarray(freqs, dtype=np.float64)
    mels = f / _F_SP
    log_region = f >= _MIN_LOG_HZ
    safe = np.where(log_region, f, _MIN_LOG_HZ)
    return np.asarray(np.where(log_region, _MIN_LOG_MEL + np.log(safe / _MIN_LOG_HZ) / _LOGSTEP, mels))


def mel_to_hz(mels: FloatArray | float) -> FloatArray:
    m = np.asarray(mels, dtype=np.float64)
    freqs = _F_SP * m
    log_region = m >= _MIN_LOG_MEL
    return np.asarray(np.where(log_region, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), freqs))


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> FloatArray:
    """`n_mels` centre frequencies evenly spaced on the Slaney mel scale (librosa.mel_frequencies)."""
    lo, hi = float(hz_to_mel(fmin)), float(hz_to_mel(fmax))
    return mel_to_hz(np.linspace(lo, hi, n_mels))


@lru_cache(maxsize=4)
def mel_filterbank(
    sr: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Triangular filters (n_mels, 1 + n_fft // 2) with Slaney area normalisation (librosa.filters.mel)."""
    top = sr / 2.0 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_frequencies(n_mels + 2, fmin, top)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, fft_freqs.shape[0]), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    # Area normalisation: each filter integrates to roughly the same energy, as in librosa's
    # norm="slaney"; without it the wide high filters would dominate.
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis].astype(np.float32)
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def _window() -> np.ndarray[Any, np.dtype[np.float32]]:
    # fftbins=True is the periodic Hann librosa uses for STFT.
    w = np.asarray(get_window("hann", N_FFT, fftbins=True), dtype=np.float32)
    w.setflags(write=False)
    return w


def power_spectrogram(
    samples: np.ndarray[Any, np.dtype[np.float32]],
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """|STFT|^2, shape (frames, 1 + n_fft // 2), centred frames with zero padding."""
    y = np.asarray(samples, dtype=np.float32)
    padded = np.pad(y, (N_FFT // 2, N_FFT // 2), mode="constant")
    n_frames = 1 + (padded.shape[0] - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    spec = np.fft.rfft(frames * _window(), n=N_FFT, axis=1)
    return np.asarray(spec.real**2 + spec.imag**2, dtype=np.float32)


def mel_spectrogram(samples: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Mel power spectrogram (not log), float32, shape (frames, 40), frames = 1 + len // 160."""
    power = power_spectrogram(samples)
    return np.asarray(power @ mel_filterbank().T, dtype=np.float32)
