"""Frame features for the digit check: band-limited MFCC with deltas, normalised per utterance.

The filterbank stops at 3.8 kHz so that 8 kHz telephony (upsampled to 16 kHz by decode_audio,
with nothing above 4 kHz) and wideband device audio give comparable frames: a member who
enrolled on one kind of line can answer on the other. Mean and variance are normalised over the
utterance, which removes the channel and the loudness, not the words.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from scipy.fft import dct

from purchase_guard.voice.features import mel_filterbank, power_spectrogram

N_MELS = 26
N_CEPS = 13  # c0..c12; c0 (log energy) is kept: after normalisation it marks pauses and stops
DIM = 2 * N_CEPS
FMIN_HZ = 100.0
FMAX_HZ = 3800.0
FRAME_S = 0.01  # hop of features.power_spectrogram
_DELTA_WIN = 2
# A whisper of noise keeps digitally silent gaps (zeros between joined takes) from becoming
# log(0) frames that would dominate the normalisation; fixed seed keeps decisions replayable.
_DITHER = 1e-5

Frames = np.ndarray[Any, np.dtype[np.float32]]


@lru_cache(maxsize=1)
def _filterbank() -> np.ndarray[Any, np.dtype[np.float32]]:
    return mel_filterbank(16_000, 400, N_MELS, FMIN_HZ, FMAX_HZ)


def _deltas(x: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    n = _DELTA_WIN
    padded = np.pad(x, ((n, n), (0, 0)), mode="edge")
    num = sum(
        k * (padded[n + k : n + k + x.shape[0]] - padded[n - k : n - k + x.shape[0]]) for k in range(1, n + 1)
    )
    return np.asarray(num / (2 * sum(k * k for k in range(1, n + 1))), dtype=np.float64)


def log_energy(samples: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Per-frame log band energy (natural log), same frames as `mfcc`."""
    power = power_spectrogram(_dithered(samples))
    mel = power @ _filterbank().T
    return np.asarray(np.log(mel.sum(axis=1) + 1e-10), dtype=np.float64)


def _dithered(samples: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(samples.shape[0]).astype(np.float32) * np.float32(_DITHER)
    return np.asarray(np.asarray(samples, dtype=np.float32) + noise, dtype=np.float32)


def mfcc(samples: np.ndarray[Any, np.dtype[np.float32]]) -> Frames:
    """(frames, 26) float32: 13 cepstra + deltas, mean/variance normalised per utterance.

    An utterance of fewer than three frames gives an empty array (nothing can be aligned).
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.shape[0] < 3 * 160:
        return np.zeros((0, DIM), dtype=np.float32)
    power = power_spectrogram(_dithered(x))
    mel = np.log(power @ _filterbank().T + 1e-10).astype(np.float64)
    ceps = dct(mel, type=2, norm="ortho", axis=1)[:, :N_CEPS]
    # Delta-deltas were tried and cost accuracy: on short digits they are mostly noise.
    feats = np.concatenate([ceps, _deltas(ceps)], axis=1)
    feats -= feats.mean(axis=0)
    feats /= feats.std(axis=0) + 1e-6
    return np.ascontiguousarray(feats, dtype=np.float32)
