"""New takes of a synthetic voice: the guard refuses audio a household sent before (REPLAYED_AUDIO).

synth_voice's seeds differ only in overall pitch, and a loudness contour over the same take
changes little: the replay fingerprint (band-energy differences over time) takes both for the same
recording. A take here is a new melody instead: the voice's pitch moves from syllable to syllable
along a random path of its own, so the harmonics cross the fingerprint's bands at other moments
(a different utterance to it), while the formant envelope, which the fake encoder's averaged
spectrum sees, stays the voice's.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
from unit.voice.voice_synth import RATE, VOICES, encode, synth_voice

_numbers = itertools.count(1)
SYLLABLE_S = 0.12


def _melody(name: str, n: int, seconds: float) -> np.ndarray[Any, np.dtype[np.float32]]:
    f0, formants = VOICES[name]
    rng = np.random.default_rng(50_000 + n)
    count = int(seconds * RATE)
    t = np.arange(count) / RATE
    steps = rng.uniform(-0.12, 0.12, size=int(seconds / SYLLABLE_S) + 2)
    track = f0 * (1 + np.interp(t / SYLLABLE_S, np.arange(steps.shape[0]), steps))
    phase = 2 * np.pi * np.cumsum(track) / RATE
    sig = np.zeros_like(t)
    for k in range(1, int(7000 / (f0 * 1.12))):
        # Amplitude from the formant envelope at the harmonic's moving frequency.
        amp = sum(np.exp(-(((k * track - fm) / 180.0) ** 2)) for fm in formants) + 0.02
        sig += amp * np.sin(k * phase)
    loud = rng.uniform(0.3, 1.0, size=steps.shape[0])
    sig *= np.interp(t / SYLLABLE_S, np.arange(loud.shape[0]), loud)
    sig = 0.3 * sig / np.max(np.abs(sig))
    pad = int(0.3 * RATE)
    noise = 0.001 * rng.standard_normal(count + 2 * pad)
    return (np.concatenate([np.zeros(pad), sig, np.zeros(pad)]) + noise).astype(np.float32)


@functools.cache
def take(name: str, n: int, seconds: float = 1.8) -> bytes:
    """Take `n` of the voice `name` (WAV, 16 kHz): the same take for the same `n`."""
    return encode(_melody(name, n, seconds), RATE)


def new_take(name: str) -> bytes:
    """A take of `name` no earlier call in this process returned."""
    return take(name, next(_numbers))


@functools.cache
def enrollment(name: str, seed: int) -> bytes:
    """An enrollment take (plain synth_voice), as the console suite enrolls."""
    return encode(synth_voice(name, 1.8, seed=seed), RATE)
