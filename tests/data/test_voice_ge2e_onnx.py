"""GE2E through ONNX Runtime gives the torch reference's embeddings, on real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from purchase_guard.app import build_encoder
from purchase_guard.config import Settings
from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.ge2e_onnx import Ge2eOnnxEncoder

pytestmark = pytest.mark.data


def test_onnx_embeddings_equal_torch_on_real_speech(shared_data: Path, tmp_path: Path) -> None:
    """Twelve LibriSpeech utterances of different lengths (one partial to many), embedded as one
    batch and one by one: every ONNX embedding within cosine 1 - 1e-5 of torch's, and the export
    is cached (a second encoder reuses the file)."""
    files = sorted((shared_data / "librispeech" / "test-other").glob("*/*.flac"))[:12]
    clips = []
    for k, f in enumerate(files):
        x, _ = sf.read(f, dtype="float32")
        clips.append(x[: int(16000 * (1.0 + k))])  # 1 s .. 12 s
    torch_enc = Ge2eEncoder()
    onnx_enc = Ge2eOnnxEncoder(cache_dir=tmp_path)
    reference = torch_enc.embed_batch(clips)
    batched = onnx_enc.embed_batch(clips)
    single = [onnx_enc.embed(c) for c in clips]
    for ref, a, b in zip(reference, batched, single, strict=True):
        assert float(np.dot(ref, a)) >= 1 - 1e-5
        assert float(np.dot(ref, b)) >= 1 - 1e-5
    again = Ge2eOnnxEncoder(cache_dir=tmp_path)
    assert again.model_path == onnx_enc.model_path
    assert list(tmp_path.glob("*.onnx")) == [onnx_enc.model_path]


def test_ge2e_runtime_setting_picks_the_runtime(tmp_path: Path) -> None:
    """GE2E_RUNTIME=onnx builds the ONNX encoder in app.py, under the torch encoder's name."""
    enc = build_encoder(Settings(ge2e_runtime="onnx", ge2e_onnx_dir=tmp_path, embed_max_batch=1).validated())
    assert isinstance(enc, Ge2eOnnxEncoder)
    assert enc.name == Ge2eEncoder.name
