"""The speaker-encoder contract, and a small fake that honours it for unit tests.

The verifier, enrollment gates and evaluation only ever see this protocol, so a different
model (ECAPA, a distilled on-device net) can replace GE2E without touching them; the
encoder's `name` travels with every voiceprint so prints from one model are never scored
by another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from purchase_guard.errors import AudioError
from purchase_guard.voice.features import mel_spectrogram

Embedding = np.ndarray[Any, np.dtype[np.float32]]
Samples = np.ndarray[Any, np.dtype[np.float32]]


class SpeakerEncoder(Protocol):
    name: str
    dim: int

    def embed(self, samples_16k: Samples) -> Embedding:
        """L2-normalised float32 embedding of 16 kHz mono speech (silence already trimmed)."""
        ...

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        """`embed` for several utterances; implementations may batch the model call."""
        ...


def l2_normalise(v: np.ndarray[Any, Any]) -> Embedding:
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise AudioError("audio gave no usable voice features (silent or constant signal)")
    return np.asarray(v / norm, dtype=np.float32)


class FakeEncoder:
    """Deterministic stand-in: the embedding is the utterance's average log-mel spectral shape.

    Synthetic "voices" built from different harmonic stacks get clearly different embeddings,
    and the same voice at another loudness or length gets nearly the same one, which is all
    unit tests of the scoring and enrollment logic need. It is not a speaker model.
    """

    name = "fake-spectral/1"
    dim = 40

    def embed(self, samples_16k: Samples) -> Embedding:
        x = np.asarray(samples_16k, dtype=np.float32)
        if x.size == 0:
            raise AudioError("audio is empty; nothing to embed")
        mel = mel_spectrogram(x)
        shape = np.log(mel.mean(axis=0) + 1e-6)
        # Removing the mean makes the embedding loudness-invariant.
        return l2_normalise(shape - shape.mean())

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        return [self.embed(x) for x in batch]
