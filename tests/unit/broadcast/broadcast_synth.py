"""Synthetic broadcasts for the broadcast unit tests: no files, deterministic.

A "programme" is noise shaped by a random spectral envelope that changes every 60 ms,
with syllable-rate loudness: enough spectro-temporal structure for a fingerprint, and two
seeds give unrelated programmes. `hear` is one household's copy: own cut points, gain and
background noise.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import istft

from purchase_guard.voice.audio import Pcm

RATE = 16_000
F32 = np.ndarray[Any, np.dtype[np.float32]]


def programme(seed: int, seconds: float = 5.0) -> F32:
    rng = np.random.default_rng(seed)
    nper, hop = 512, 128
    frames = int(seconds * RATE / hop) + 4
    bins = nper // 2 + 1
    segments = frames // 8 + 1
    envelope = rng.uniform(0.02, 1.0, size=(segments, 24)) ** 2
    env = np.repeat(envelope, 8, axis=0)[:frames]
    env = np.stack([np.interp(np.linspace(0, 23, bins), np.arange(24), row) for row in env], axis=1)
    phase = rng.uniform(0, 2 * np.pi, size=(bins, frames))
    _, x = istft(env * np.exp(1j * phase), fs=RATE, nperseg=nper, noverlap=nper - hop)
    t = np.arange(x.shape[0]) / RATE
    syllables = 0.35 + 0.65 * np.abs(np.sin(2 * np.pi * rng.uniform(2.5, 4.0) * t + rng.uniform(0, 6)))
    y = x * syllables
    y = 0.3 * y / (np.max(np.abs(y)) + 1e-9)
    return np.asarray(y[: int(seconds * RATE)], dtype=np.float32)


def hear(
    prog: F32,
    *,
    seed: int,
    start_s: float = 0.5,
    seconds: float = 3.0,
    snr_db: float = 15.0,
    gain: float = 1.0,
) -> Pcm:
    rng = np.random.default_rng(seed)
    a = int((start_s + rng.uniform(-0.2, 0.2)) * RATE)
    x = prog[a : a + int(seconds * RATE)].astype(np.float64)
    noise = rng.standard_normal(x.shape[0])
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    y = np.clip(gain * (x + noise), -1, 1)
    return Pcm(np.ascontiguousarray(y, dtype=np.float32))


def wav(pcm_or_samples: Pcm | F32) -> bytes:
    samples = pcm_or_samples.samples if isinstance(pcm_or_samples, Pcm) else pcm_or_samples
    buf = io.BytesIO()
    sf.write(buf, samples, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()
