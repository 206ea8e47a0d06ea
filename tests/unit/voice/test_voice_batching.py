"""BatchingEncoder: concurrent embed() calls share model calls, failures stay per request."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
from unit.voice.voice_synth import synth_voice

from purchase_guard.errors import AudioError, Unavailable
from purchase_guard.voice.batching import BatchingEncoder
from purchase_guard.voice.encoder import Embedding, FakeEncoder, Samples


class GatedEncoder:
    """FakeEncoder that records batch sizes; its first batch call waits until `release` is set."""

    name = FakeEncoder.name
    dim = FakeEncoder.dim

    def __init__(self) -> None:
        self.inner = FakeEncoder()
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed(self, samples_16k: Samples) -> Embedding:
        return self.inner.embed(samples_16k)

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        self.batches.append(len(batch))
        self.entered.set()
        self.release.wait(10)
        return self.inner.embed_batch(batch)


def _utts(n: int) -> list[Samples]:
    return [synth_voice(("low", "high", "mid")[k % 3], 1.0, seed=k) for k in range(n)]


def _embed_all(enc: BatchingEncoder, utts: list[Samples]) -> tuple[list[object], list[threading.Thread]]:
    results: list[object] = [None] * len(utts)

    def call(k: int) -> None:
        try:
            results[k] = enc.embed(utts[k])
        except Exception as exc:
            results[k] = exc

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(utts))]
    for t in threads:
        t.start()
    return results, threads


def test_queued_requests_share_one_model_call_and_get_their_own_embedding() -> None:
    """Requests that queue while the model is busy are embedded together, each caller gets its own result."""
    gated = GatedEncoder()
    enc = BatchingEncoder(gated, max_batch=16, max_wait_ms=0)
    utts = _utts(8)
    try:
        first, t0 = _embed_all(enc, utts[:1])
        assert gated.entered.wait(10)
        rest, threads = _embed_all(enc, utts[1:])
        while enc._queue.qsize() < 7:  # all seven are queued behind the busy first call
            threading.Event().wait(0.001)
        gated.release.set()
        for t in t0 + threads:
            t.join(10)
    finally:
        enc.close()
    assert gated.batches == [1, 7]
    reference = FakeEncoder()
    for k, got in enumerate(first + rest):
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, reference.embed(utts[k]), atol=1e-6)
    assert enc.stats().largest_batch == 7


def test_a_bad_utterance_fails_only_its_own_caller() -> None:
    """An empty utterance in a shared batch raises AudioError for its caller; the others are embedded."""
    gated = GatedEncoder()
    gated.release.set()
    enc = BatchingEncoder(gated, max_batch=16, max_wait_ms=200)
    utts = _utts(4)
    utts[2] = np.zeros(0, dtype=np.float32)
    try:
        results, threads = _embed_all(enc, utts)
        for t in threads:
            t.join(10)
    finally:
        enc.close()
    assert isinstance(results[2], AudioError)
    for k in (0, 1, 3):
        assert isinstance(results[k], np.ndarray)


def test_closed_encoder_refuses_instead_of_guessing() -> None:
    """After close(), embed raises Unavailable; name and dim are the inner encoder's."""
    enc = BatchingEncoder(FakeEncoder())
    assert (enc.name, enc.dim) == (FakeEncoder.name, FakeEncoder.dim)
    enc.close()
    with pytest.raises(Unavailable):
        enc.embed(_utts(1)[0])


def test_embed_batch_passes_straight_through() -> None:
    """A caller that already holds several utterances gets the inner encoder's batch result."""
    enc = BatchingEncoder(FakeEncoder())
    try:
        utts = _utts(3)
        got = enc.embed_batch(utts)
    finally:
        enc.close()
    assert len(got) == 3
    np.testing.assert_allclose(got[1], FakeEncoder().embed(utts[1]), atol=1e-6)


def test_rejects_nonsense_settings() -> None:
    """max_batch below 1 or a negative wait is a programming error."""
    with pytest.raises(ValueError, match="max_batch"):
        BatchingEncoder(FakeEncoder(), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchingEncoder(FakeEncoder(), max_wait_ms=-1)
