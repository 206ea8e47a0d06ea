"""Synthetic audio for the voice unit tests: no files, no model, fully deterministic."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile as sf

from purchase_guard.voice.audio import Pcm

RATE = 16_000

# Two synthetic "voices": a pitch and a formant envelope each, like a low and a high voice.
VOICES: dict[str, tuple[float, tuple[float, ...]]] = {
    "low": (110.0, (500.0, 1500.0, 2500.0)),
    "high": (230.0, (850.0, 1200.0, 3200.0)),
    "mid": (160.0, (650.0, 2100.0, 2900.0)),
}


def synth_voice(
    name: str, seconds: float, *, seed: int = 0, lead_s: float = 0.3, tail_s: float = 0.3, level: float = 0.3
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Harmonic speech-like signal with syllable-rate loudness changes, padded by quiet noise."""
    f0, formants = VOICES[name]
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0_track = f0 * (1 + 0.03 * rng.standard_normal()) * (1 + 0.02 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0_track) / RATE
    sig = np.zeros_like(t)
    for k in range(1, int(7000 / f0)):
        amp = sum(np.exp(-(((k * f0 - fm) / 180.0) ** 2)) for fm in formants) + 0.02
        sig += amp * np.sin(k * phase)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2
    sig *= envelope
    sig = level * sig / np.max(np.abs(sig))

    def noise(n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        return 0.001 * rng.standard_normal(n)

    out = np.concatenate([noise(int(lead_s * RATE)), sig + noise(t.shape[0]), noise(int(tail_s * RATE))])
    return out.astype(np.float32)


def tone(
    freq: float, seconds: float, rate: int = RATE, level: float = 0.5
) -> np.ndarray[Any, np.dtype[np.float64]]:
    t = np.arange(int(seconds * rate)) / rate
    return np.asarray(level * np.sin(2 * np.pi * freq * t))


def encode(samples: np.ndarray[Any, Any], rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def voice_pcm(name: str, seconds: float = 2.0, **kw: Any) -> Pcm:
    return Pcm(samples=synth_voice(name, seconds, **kw))
