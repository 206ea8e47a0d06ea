"""GE2E speaker encoder with Resemblyzer's pretrained weights, without Resemblyzer.

Resemblyzer itself imports librosa and webrtcvad at import time; we only need its weights
file and its preprocessing, so the network (3-layer LSTM + linear + ReLU) and the partial
utterance logic are re-implemented here against our own mel port (features.py) and VAD.
This is the only voice module that imports torch, so unit tests of the rest stay fast.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from purchase_guard.errors import AudioError, Unavailable
from purchase_guard.voice.encoder import Embedding, Samples, l2_normalise
from purchase_guard.voice.features import HOP, SAMPLE_RATE, mel_spectrogram

NAME = "ge2e-resemblyzer/0.1.4"
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance, as the model was trained
PARTIAL_RATE = 1.3  # partials per second
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
_INT16_MAX = 2**15 - 1
# Cap on partials per forward pass: bounds memory when a batch holds long utterances.
_MAX_PARTIALS_PER_PASS = 128


def default_weights_path() -> Path:
    """resemblyzer/pretrained.pt from the installed wheel (located, never imported)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(
            "GE2E weights unavailable: the resemblyzer package (pretrained.pt) is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def partial_slices(
    n_samples: int, rate: float = PARTIAL_RATE, min_coverage: float = MIN_COVERAGE
) -> list[slice]:
    """Mel-frame slices of the partial utterances (Resemblyzer's compute_partial_slices).

    Slices may run past the end of the utterance; the caller zero-pads the waveform to
    `slices[-1].stop * HOP` samples. At least one slice is always returned.
    """
    if not 0 < min_coverage <= 1:
        raise ValueError("min_coverage must be in (0, 1]")
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = round((SAMPLE_RATE / rate) / HOP)
    if not 0 < frame_step <= PARTIAL_FRAMES:
        raise ValueError(f"partial rate {rate} is outside the usable range")
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / ((last.stop - last.start) * HOP)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


def normalise_volume(samples: Samples, target_dbfs: float = TARGET_DBFS) -> Samples:
    """Raise (never lower) the level to `target_dbfs` RMS, as Resemblyzer's preprocess does."""
    x = np.asarray(samples, dtype=np.float32)
    rms = float(np.sqrt(np.mean((x.astype(np.float64) * _INT16_MAX) ** 2))) if x.size else 0.0
    if rms == 0.0:
        return x
    change_db = target_dbfs - 20.0 * np.log10(rms / _INT16_MAX)
    if change_db <= 0:
        return x
    return np.asarray(x * (10.0 ** (change_db / 20.0)), dtype=np.float32)


def partial_mels(samples: Samples) -> np.ndarray[tuple[int, int, int], np.dtype[np.float32]]:
    """Stack of (n_partials, 160, 40) mel slices for one utterance, after volume normalisation."""
    wav = normalise_volume(samples)
    slices = partial_slices(wav.shape[0])
    needed = slices[-1].stop * HOP
    if needed >= wav.shape[0]:
        wav = np.pad(wav, (0, needed - wav.shape[0]), mode="constant")
    mel = mel_spectrogram(wav)
    return np.stack([mel[s] for s in slices]).astype(np.float32)


class _Ge2eNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        # Partials whose ReLU output is all zero would divide by zero; clamp keeps them finite
        # and they then contribute nothing to the mean.
        out: torch.Tensor = raw / torch.clamp(torch.norm(raw, dim=1, keepdim=True), min=1e-12)
        return out


def embed_with(batch: Sequence[Samples], run: Callable[[np.ndarray], np.ndarray]) -> list[Embedding]:
    """GE2E's embedding of each utterance: its partial mel windows, all utterances' together, put
    through `run` (the network, in whichever runtime) at most _MAX_PARTIALS_PER_PASS at a time,
    and each utterance's partial embeddings averaged. Written once so every runtime embeds alike."""
    stacks = []
    for samples in batch:
        x = np.asarray(samples, dtype=np.float32)
        if x.size == 0:
            raise AudioError("audio is empty; nothing to embed")
        stacks.append(partial_mels(x))
    if not stacks:
        return []
    every = np.concatenate(stacks, axis=0)
    partials = np.concatenate(
        [
            run(every[start : start + _MAX_PARTIALS_PER_PASS])
            for start in range(0, every.shape[0], _MAX_PARTIALS_PER_PASS)
        ],
        axis=0,
    )
    result: list[Embedding] = []
    offset = 0
    for stack in stacks:
        n = stack.shape[0]
        result.append(l2_normalise(partials[offset : offset + n].mean(axis=0)))
        offset += n
    return result


class Ge2eEncoder:
    """Resemblyzer's GE2E (256-dim) behind the SpeakerEncoder protocol. Thread-safe."""

    name = NAME
    dim = 256

    def __init__(self, weights_path: Path | None = None, device: str = "cpu", threads: int = 0) -> None:
        """`threads`: torch's intra-op threads for this process (0: leave torch's default)."""
        if threads:
            torch.set_num_threads(threads)  # process-wide: one encoder per server process
        path = weights_path if weights_path is not None else default_weights_path()
        if not path.is_file():
            raise Unavailable(f"GE2E weights file not found at {path}")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            state = checkpoint["model_state"]
        except Exception as exc:  # torch raises many types for a damaged pickle/zip
            raise Unavailable(f"GE2E weights file {path} could not be loaded (corrupt?): {exc}") from exc
        self._net = _Ge2eNet()
        try:
            # strict=False because the checkpoint also holds the GE2E loss's similarity
            # weight/bias, which inference does not use; missing network keys are still fatal.
            result = self._net.load_state_dict(state, strict=False)
        except Exception as exc:
            raise Unavailable(f"GE2E weights file {path} does not fit the network: {exc}") from exc
        if result.missing_keys:
            raise Unavailable(f"GE2E weights file {path} lacks {', '.join(result.missing_keys)}")
        self.weights_path = path
        self._device = torch.device(device)
        self._net.to(self._device).eval()
        # An LSTM module is not safe to call from several threads at once (flattened weights).
        self._lock = threading.Lock()

    @property
    def net(self) -> nn.Module:
        """The loaded network (the ONNX export reads it: `ge2e_onnx.py`)."""
        return self._net

    def embed(self, samples_16k: Samples) -> Embedding:
        return self.embed_batch([samples_16k])[0]

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        def run(mels: np.ndarray) -> np.ndarray:
            return np.asarray(self._net(torch.from_numpy(mels).to(self._device)).cpu().numpy())

        with self._lock, torch.inference_mode():
            return embed_with(batch, run)
