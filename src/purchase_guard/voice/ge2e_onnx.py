"""The same GE2E network run by ONNX Runtime: the same embeddings, a cheaper pass.

The torch module (`ge2e.Ge2eEncoder`) stays the reference. On first use the network, with the
weights it loaded, is exported to ONNX in a cache folder (file named by the weights' SHA-256
and the exporter's versions, so a new weights file or torch gets a new export; nothing
binary is committed), then served by an ONNX Runtime session. Preprocessing (partials, mel,
averaging) is the torch encoder's, shared, so only the network's arithmetic differs;
tests/data/test_voice_ge2e_onnx.py holds the two within cosine 1 - 1e-5. The encoder name is
the torch encoder's: voiceprints enrolled with either are the same prints.

With several threads the partials are split into one share per thread, each run by a
single-threaded pass at the same time ("lanes"), instead of one pass whose intra-op pool splits
every one of the LSTM's 480 small per-step products and meets at each step. The partials are
independent, so the arithmetic per partial is the same either way; scripts/bench_encoder.py
measures both layouts against torch in one run (docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from purchase_guard.errors import Unavailable
from purchase_guard.voice.encoder import Embedding, Samples
from purchase_guard.voice.ge2e import NAME, PARTIAL_FRAMES, Ge2eEncoder, embed_with


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "purchase-guard" / "ge2e-onnx"


Layout = Literal["lanes", "pool"]


def cpu_budget(threads: int) -> int:
    """The threads an encoder given `threads` (0: the runtime's default) should use: the cores
    torch would take, i.e. OMP_NUM_THREADS when set (the image sets it to the CPU limit), else
    the CPUs this process may run on (not the host's count, which a container does not own)."""
    if threads > 0:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, len(os.sched_getaffinity(0)))


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
        self,
        weights_path: Path | None = None,
        cache_dir: Path | None = None,
        threads: int = 0,
        layout: Layout = "lanes",
    ) -> None:
        """`threads`: the cores to use (0: `cpu_budget`'s default). `layout`: "lanes", that many
        single-threaded passes at once, each over its share of the partials; "pool", one pass
        with that many intra-op threads (the earlier layout, kept for the benchmark)."""
        try:
            import onnxruntime
        except ImportError as exc:
            raise Unavailable("GE2E_RUNTIME=onnx needs the onnxruntime package") from exc
        reference = Ge2eEncoder(weights_path)
        path = export(reference, reference.weights_path, cache_dir or default_cache_dir())
        budget = cpu_budget(threads)
        self.layout: Layout = layout
        self.lanes = budget if layout == "lanes" else 1
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1 if layout == "lanes" else budget
        options.inter_op_num_threads = 1
        # One session serves every lane: ONNX Runtime's Run is safe to call concurrently and
        # releases the GIL, so the lanes share the weights.
        self._session: Any = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self._pool = ThreadPoolExecutor(self.lanes - 1, "ge2e-lane") if self.lanes > 1 else None
        self.model_path = path
        self._lock = threading.Lock()

    def embed(self, samples_16k: Samples) -> Embedding:
        return self.embed_batch([samples_16k])[0]

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        # One batch at a time: its lanes already use the cores.
        with self._lock:
            return embed_with(batch, self._run)

    def _pass(self, mels: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {"mels": mels})[0])

    def _run(self, mels: np.ndarray) -> np.ndarray:
        shares = np.array_split(mels, min(self.lanes, mels.shape[0]))
        if self._pool is None or len(shares) == 1:
            return self._pass(mels)
        # The caller's thread runs the first share while the pool runs the others.
        others = [self._pool.submit(self._pass, share) for share in shares[1:]]
        first = self._pass(shares[0])
        return np.concatenate([first, *(f.result() for f in others)], axis=0)
