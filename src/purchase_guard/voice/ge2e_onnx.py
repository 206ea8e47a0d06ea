"""The same GE2E network run by ONNX Runtime: the same embeddings, a cheaper pass.

The torch module (`ge2e.Ge2eEncoder`) stays the reference. On first use the network, with the
weights it loaded, is exported to ONNX in a cache folder (file named by the weights' SHA-256
and the exporter's versions, so a new weights file or torch gets a new export; nothing
binary is committed), then served by an ONNX Runtime session. Preprocessing (partials, mel,
averaging) is the torch encoder's, shared, so only the network's arithmetic differs;
tests/unit/voice/test_ge2e_onnx.py holds the two within cosine 1 - 1e-5. The encoder name is
the torch encoder's: voiceprints enrolled with either are the same prints.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from purchase_guard.errors import Unavailable
from purchase_guard.voice.encoder import Embedding, Samples
from purchase_guard.voice.ge2e import NAME, PARTIAL_FRAMES, Ge2eEncoder, embed_with


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "purchase-guard" / "ge2e-onnx"


def export(reference: Ge2eEncoder, weights: Path, cache_dir: Path) -> Path:
    """The ONNX file for these weights, exported now unless the cache already has it."""
    import onnxruntime

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    path = cache_dir / f"ge2e-{digest}-torch{torch.__version__}-ort{onnxruntime.__version__}.onnx"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    example = torch.zeros(2, PARTIAL_FRAMES, 40)
    # The legacy (TorchScript) exporter is chosen on purpose: the torch.export one needs
    # onnxscript, and the test against torch holds what this one produces. It warns that it and
    # its helpers are deprecated, and the tracer warns about the LSTM, on every export; neither
    # says anything about the result.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            reference.net,
            (example,),
            str(tmp),
            input_names=["mels"],
            output_names=["partials"],
            dynamic_axes={"mels": {0: "batch"}, "partials": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)  # atomic: a replica starting at the same moment reads a whole file
    return path


class Ge2eOnnxEncoder:
    """GE2E through ONNX Runtime behind the SpeakerEncoder protocol. Thread-safe."""

    name = NAME
    dim = 256

    def __init__(
        self, weights_path: Path | None = None, cache_dir: Path | None = None, threads: int = 0
    ) -> None:
        """`threads`: the session's intra-op threads (0: ONNX Runtime's default, the cores)."""
        try:
            import onnxruntime
        except ImportError as exc:
            raise Unavailable("GE2E_RUNTIME=onnx needs the onnxruntime package") from exc
        reference = Ge2eEncoder(weights_path)
        path = export(reference, reference.weights_path, cache_dir or default_cache_dir())
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self._session: Any = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.model_path = path
        self._lock = threading.Lock()

    def embed(self, samples_16k: Samples) -> Embedding:
        return self.embed_batch([samples_16k])[0]

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        def run(mels: np.ndarray) -> np.ndarray:
            return np.asarray(self._session.run(None, {"mels": mels})[0])

        # One run at a time: the session's own threads already use the cores.
        with self._lock:
            return embed_with(batch, run)
