"""Household copies of real speech for the broadcast suites (no files written)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from purchase_guard.voice.audio import Pcm

SR = 16_000


def load16k(path: Path) -> np.ndarray:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = x.mean(axis=1)
    if rate != SR:
        g = math.gcd(SR, rate)
        mono = resample_poly(mono, SR // g, rate // g)
    return np.asarray(mono, dtype=np.float32)


def household_copy(
    data: Path, program: np.ndarray, start_s: float, end_s: float, *, seed: int, snr_db: float = 10.0
) -> Pcm:
    """One home's recording of a broadcast: own loudspeaker band, room response, noise and cut points."""
    rng = np.random.default_rng(seed)
    a = int((start_s + rng.uniform(-0.2, 0.2)) * SR)
    b = int((end_s + rng.uniform(-0.2, 0.2)) * SR)
    x = program[max(0, a) : b].astype(np.float64)
    x = sosfilt(
        butter(2, [rng.uniform(100, 250), rng.uniform(4000, 7000)], btype="band", fs=SR, output="sos"), x
    )
    rirs = sorted((data / "noise" / "rir").glob("*.flac"))
    h = load16k(rirs[seed % len(rirs)]).astype(np.float64)
    x = fftconvolve(x, h / np.max(np.abs(h)))[: len(x)]
    noises = sorted((data / "noise").glob("*.flac"))
    noise = load16k(noises[seed % len(noises)]).astype(np.float64)
    noise = np.resize(noise, len(x))
    noise *= math.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    y = x + noise
    y = 0.3 * y / np.max(np.abs(y))
    return Pcm(np.ascontiguousarray(y, dtype=np.float32))
