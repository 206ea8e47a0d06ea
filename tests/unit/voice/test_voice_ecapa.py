"""ECAPA encoder: a tiny checkpoint in the spkrec-ecapa-voxceleb layout loads offline and scores.

Unlike the rest of tests/unit/voice this imports torch and SpeechBrain (a few seconds); the
checkpoint is random and small, so only the loading path, shapes, batching and the
encoder-mismatch rule are checked here, not accuracy.
"""

from __future__ import annotations

import math
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from unit.voice.tiny_ecapa import DIM, build_tiny_ecapa
from unit.voice.voice_synth import synth_voice, voice_pcm

from purchase_guard.domain import Role, Voiceprint
from purchase_guard.errors import AudioError, Unavailable
from purchase_guard.voice import _speechbrain_compat
from purchase_guard.voice.ecapa import MODEL_FILES, EcapaEncoder, encoder_name
from purchase_guard.voice.verifier import Band, Thresholds, VoiceVerifier


class _NetworkUsed(AssertionError):
    pass


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_ecapa(tmp_path_factory.mktemp("ecapa") / "spkrec-ecapa-voxceleb")


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> EcapaEncoder:
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    real_connect = socket.socket.connect

    def refuse(self: socket.socket, *args: Any) -> None:
        raise _NetworkUsed(f"network connection attempted to {args}")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        enc = EcapaEncoder(model_dir)
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
    after = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    # The model folder may be read-only in an image: loading must not write into it.
    assert after == before
    return enc


def test_loads_offline_with_a_name_tied_to_the_weights(encoder: EcapaEncoder, model_dir: Path) -> None:
    """from_hparams loads the local folder without any network; name carries the weights digest."""
    assert encoder.name == encoder_name(model_dir)
    assert encoder.name.startswith("ecapa-speechbrain/")
    assert encoder.dim == DIM


def test_embeddings_are_unit_vectors_of_the_model_size(encoder: EcapaEncoder) -> None:
    """embed returns an L2-normalised float32 vector of `dim` values; the same audio gives the same vector."""
    x = synth_voice("low", 1.5, seed=1)
    a, b = encoder.embed(x), encoder.embed(x)
    assert a.shape == (DIM,)
    assert a.dtype == np.float32
    assert float(np.linalg.norm(a)) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_batch_results_do_not_depend_on_the_other_utterances(encoder: EcapaEncoder) -> None:
    """Utterances of different lengths in one batch get exactly their one-at-a-time embeddings."""
    xs = [synth_voice("low", 1.0, seed=2), synth_voice("high", 2.5, seed=3), synth_voice("mid", 1.0, seed=4)]
    batch = encoder.embed_batch(xs)
    for x, e in zip(xs, batch, strict=True):
        np.testing.assert_allclose(e, encoder.embed(x), atol=1e-5)


def test_empty_or_non_finite_audio_is_an_audio_error(encoder: EcapaEncoder) -> None:
    """Nothing to embed is reported to the caller, not turned into a vector."""
    with pytest.raises(AudioError):
        encoder.embed(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError):
        encoder.embed(np.full(16000, np.nan, dtype=np.float32))


def test_missing_model_files_are_named(tmp_path: Path, model_dir: Path) -> None:
    """A folder lacking a checkpoint file stops the start with Unavailable naming the file."""
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in MODEL_FILES:
        if name != "classifier.ckpt":
            (partial / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(Unavailable, match=r"classifier\.ckpt"):
        EcapaEncoder(partial)
    with pytest.raises(Unavailable, match="does not exist"):
        EcapaEncoder(tmp_path / "nowhere")


def test_damaged_checkpoint_is_unavailable(tmp_path: Path, model_dir: Path) -> None:
    """A corrupt embedding_model.ckpt fails closed with Unavailable."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in MODEL_FILES:
        (broken / name).write_bytes((model_dir / name).read_bytes())
    (broken / "embedding_model.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(Unavailable, match="could not be loaded"):
        EcapaEncoder(broken)


def _print(member: str, vec: np.ndarray, encoder: str) -> Voiceprint:
    return Voiceprint(
        member, "h1", encoder, tuple(float(v) for v in vec), 3, datetime(2024, 1, 1, tzinfo=UTC)
    )


def test_scores_own_prints_and_demands_reenrollment_for_others(encoder: EcapaEncoder) -> None:
    """The verifier scores ECAPA prints; prints from GE2E are never scored and ask for re-enrollment."""
    thresholds = Thresholds(encoder.name, (Band("all", math.inf, 0.5),))
    verifier = VoiceVerifier(encoder, thresholds)
    pcm = voice_pcm("low", 2.0, seed=5)
    own = _print("mum", verifier.embed_pcm(pcm), encoder.name)
    result = verifier.verify(pcm, [own], {"mum": Role.ADULT})
    assert result.verified
    assert result.member_id == "mum"
    assert result.score == pytest.approx(1.0, abs=1e-4)
    foreign = _print("mum", np.ones(256) / 16.0, "ge2e-resemblyzer/0.1.4")
    refused = verifier.verify(pcm, [foreign], {"mum": Role.ADULT})
    assert not refused.verified
    assert refused.member_id is None
    assert "re-enrollment required" in refused.problem


def test_torchaudio_stub_only_when_the_real_one_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stub gives SpeechBrain a version string and a clear error for anything else."""
    monkeypatch.delitem(sys.modules, "torchaudio", raising=False)

    def fail(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr(_speechbrain_compat.importlib, "import_module", fail)
    assert _speechbrain_compat.ensure_torchaudio() is True
    stub = sys.modules["torchaudio"]
    assert stub.__version__ == _speechbrain_compat.STUB_VERSION
    assert not hasattr(stub, "list_audio_backends")
    with pytest.raises(AttributeError, match=r"purchase_guard\.voice\.audio"):
        _ = stub.transforms
