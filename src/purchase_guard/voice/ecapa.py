"""SpeechBrain's ECAPA-TDNN speaker encoder, loaded from a local model directory only.

The directory has the layout of the public `speechbrain/spkrec-ecapa-voxceleb` model
(`hyperparams.yaml`, `embedding_model.ckpt`, `mean_var_norm_emb.ckpt`, `classifier.ckpt`,
`label_encoder.txt`); docs/voice.md says how an operator obtains it on a machine that can
reach the hub. Serving never reaches a hub:

- the upstream `hyperparams.yaml` names its checkpoints `pretrained_path:
  speechbrain/spkrec-ecapa-voxceleb`, a hub repo id that SpeechBrain would fetch from even
  with the files sitting next to it, so `pretrained_path` is overridden with the directory;
- fetching is `FetchConfig(allow_network=False)` with the SYMLINK strategy into a throwaway
  folder (the model folder itself may be read-only in an image), and `HF_HUB_OFFLINE=1` is
  set before SpeechBrain is imported, so any path that is not local fails instead of
  downloading.

The encoder name carries a digest of `embedding_model.ckpt`, so voiceprints and calibrated
thresholds are tied to the exact weights: a different checkpoint is a different encoder,
and its prints need re-enrollment. Only this module and ge2e.py import torch.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from purchase_guard.errors import AudioError, Unavailable
from purchase_guard.voice.encoder import Embedding, Samples, l2_normalise

MODEL_FILES = (
    "hyperparams.yaml",
    "embedding_model.ckpt",
    "mean_var_norm_emb.ckpt",
    "classifier.ckpt",
    "label_encoder.txt",
)
NAME_PREFIX = "ecapa-speechbrain/"
# The ECAPA front end needs a few frames; shorter input is padded to this many samples.
_MIN_SAMPLES = 1600
_PRETRAINED_PATH = re.compile(r"^pretrained_path\s*:", re.MULTILINE)


def weights_digest(model_dir: Path) -> str:
    """First 12 hex digits of the SHA-256 of `embedding_model.ckpt`."""
    h = hashlib.sha256()
    with (model_dir / "embedding_model.ckpt").open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def encoder_name(model_dir: Path) -> str:
    """The name voiceprints made with the checkpoint in `model_dir` carry."""
    return NAME_PREFIX + weights_digest(model_dir)


def _load_classifier(model_dir: Path, device: str, savedir: Path) -> Any:
    # Set before speechbrain (and so huggingface_hub) is first imported: the hub library
    # reads it once at import time. setdefault keeps an operator's explicit choice.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from purchase_guard.voice._speechbrain_compat import import_encoder_classifier

    encoder_classifier = import_encoder_classifier()
    from speechbrain.utils.fetching import FetchConfig, LocalStrategy

    hparams_text = (model_dir / "hyperparams.yaml").read_text("utf-8")
    overrides = {"pretrained_path": str(model_dir)} if _PRETRAINED_PATH.search(hparams_text) else {}
    return encoder_classifier.from_hparams(  # type: ignore[attr-defined]
        source=str(model_dir),
        savedir=str(savedir),
        overrides=overrides,
        local_strategy=LocalStrategy.SYMLINK,
        fetch_config=FetchConfig(allow_network=False),
        run_opts={"device": device},
    )


class EcapaEncoder:
    """ECAPA-TDNN (192-dim for the public weights) behind the SpeakerEncoder protocol. Thread-safe.

    `padded_batches=True` runs a whole batch as one zero-padded forward pass (faster, but an
    utterance's embedding then depends slightly on the longest one beside it); the default
    batches only utterances of equal length, so scores are reproducible.
    """

    def __init__(self, model_dir: Path, device: str = "cpu", *, padded_batches: bool = False) -> None:
        model_dir = Path(model_dir).absolute()
        if not model_dir.is_dir():
            raise Unavailable(f"ECAPA model directory {model_dir} does not exist (see docs/voice.md)")
        missing = [f for f in MODEL_FILES if not (model_dir / f).is_file()]
        if missing:
            raise Unavailable(f"ECAPA model directory {model_dir} lacks {', '.join(missing)}")
        self.name = encoder_name(model_dir)
        self.model_dir = model_dir
        self.padded_batches = padded_batches
        try:
            # The symlinks only live while loading: the weights are in memory afterwards.
            with tempfile.TemporaryDirectory(prefix="pg-ecapa-") as tmp:
                self._clf = _load_classifier(model_dir, device, Path(tmp))
        except Unavailable:
            raise
        except Exception as exc:  # yaml, pickle, shape and fetch errors all mean "not loadable"
            raise Unavailable(f"ECAPA model in {model_dir} could not be loaded: {exc}") from exc
        self._clf.eval()
        # One forward pass at a time: the modules are shared and not re-entrant.
        self._lock = threading.Lock()
        # Probe the output size with a short seeded noise burst; this also proves the model
        # runs before the server reports ready.
        probe = np.random.default_rng(0).normal(0.0, 0.05, 16000).astype(np.float32)
        self.dim = int(self._raw_batch([probe]).shape[1])

    def _raw_batch(self, batch: Sequence[Samples]) -> np.ndarray[Any, np.dtype[np.float32]]:
        lengths = [max(int(x.shape[0]), _MIN_SAMPLES) for x in batch]
        longest = max(lengths)
        wavs = np.zeros((len(batch), longest), dtype=np.float32)
        for row, x in enumerate(batch):
            wavs[row, : x.shape[0]] = x
        # Relative lengths let SpeechBrain's normalisation and attentive pooling ignore the
        # zero padding of shorter utterances in the batch.
        rel = torch.tensor([n / longest for n in lengths], dtype=torch.float32)
        with self._lock, torch.inference_mode():
            out = self._clf.encode_batch(torch.from_numpy(wavs), rel)
        arr: np.ndarray[Any, np.dtype[np.float32]] = out.reshape(len(batch), -1).cpu().numpy()
        return arr

    def embed(self, samples_16k: Samples) -> Embedding:
        return self.embed_batch([samples_16k])[0]

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        xs = []
        for samples in batch:
            x = np.asarray(samples, dtype=np.float32)
            if x.ndim != 1 or x.size == 0:
                raise AudioError("audio is empty; nothing to embed")
            if not np.all(np.isfinite(x)):
                raise AudioError("audio holds NaN or infinite samples")
            xs.append(x)
        if not xs:
            return []
        if self.padded_batches:
            return [l2_normalise(row) for row in self._raw_batch(xs)]
        # Zero padding is not neutral for ECAPA: its convolutions near the end of a shorter
        # utterance see the padding (cosine to the unpadded embedding 0.96-0.99 on the test
        # model). A score must not depend on which other requests shared the batch, so by
        # default only utterances of identical length share a forward pass.
        out: list[Embedding | None] = [None] * len(xs)
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(xs):
            by_length.setdefault(int(x.shape[0]), []).append(i)
        for idxs in by_length.values():
            for i, row in zip(idxs, self._raw_batch([xs[i] for i in idxs]), strict=True):
                out[i] = l2_normalise(row)
        return [e for e in out if e is not None]
