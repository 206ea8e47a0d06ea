"""GE2E through ONNX Runtime gives the torch reference's embeddings, on real speech."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from purchase_guard.app import build_encoder
from purchase_guard.config import Settings
from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.ge2e_onnx import Ge2eOnnxEncoder, Layout, cpu_budget

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


@pytest.mark.parametrize(("threads", "layout", "lanes"), [(3, "lanes", 3), (2, "pool", 1), (1, "lanes", 1)])
def test_every_layout_gives_torch_embeddings(
    shared_data: Path, tmp_path: Path, threads: int, layout: Layout, lanes: int
) -> None:
    """Split over lanes (more lanes than a 1 s clip has partials, shares of unequal size), one
    pooled pass, or one thread: each utterance's embedding stays within cosine 1 - 1e-5 of torch's,
    batched and alone, so the layout changes only who runs which partial."""
    files = sorted((shared_data / "librispeech" / "test-other").glob("*/*.flac"))[12:19]
    clips = []
    for k, f in enumerate(files):
        x, _ = sf.read(f, dtype="float32")
        clips.append(x[: int(16000 * (1.0 + 1.5 * k))])  # 1 s to 6.4 s (some files are short): 1-7 partials
    reference = Ge2eEncoder().embed_batch(clips)
    enc = Ge2eOnnxEncoder(cache_dir=tmp_path, threads=threads, layout=layout)
    assert enc.lanes == lanes
    batched = enc.embed_batch(clips)
    for ref, got, clip in zip(reference, batched, clips, strict=True):
        assert float(np.dot(ref, got)) >= 1 - 1e-5
        assert float(np.dot(ref, enc.embed(clip))) >= 1 - 1e-5


def test_cpu_budget_follows_threads_then_omp_then_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given threads win; without them OMP_NUM_THREADS (the image's CPU limit), else the CPUs the
    process may run on; a blank or nonsense OMP_NUM_THREADS is ignored."""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_budget(5) == 5
    assert cpu_budget(0) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "x")
    assert cpu_budget(0) == len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_budget(0) == len(os.sched_getaffinity(0))
