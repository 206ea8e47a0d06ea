"""Silero VAD (the model inside the pinned `silero-vad` wheel), run in numpy, offline only.

The energy VAD in vad.py counts anything loud as speech: a dish clatter or a TV under
the voice inflates the net speech that picks the threshold band, and stays in the audio
the speaker encoder sees. Silero's small neural VAD tells speech from other sound.

The wheel's TorchScript model (`silero_vad.jit`, what the package's `load_silero_vad()`
loads; the wheel's safetensors file holds other weights) is opened with torch.jit once,
its weights are copied out, and the network runs in numpy: its convolutional front end
sees each 32 ms window with the 4 ms before it, so all windows go through it in one batch
and only the 128-unit LSTM cell steps window by window. That is about 10x faster on this
loaded machine than stepping the TorchScript model from Python, and it does not touch
torch's global thread count (the package's import sets it to 1, so the package is never
imported). tests/unit checks the port against the TorchScript model.

A missing or damaged weights file is `Unavailable` when the VAD is built (the server then
refuses to start): no silent fallback to another VAD, whose bands the thresholds were not
calibrated for.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.errors import Unavailable
from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm
from purchase_guard.voice.vad import snr_db

WINDOW = 512  # 32 ms at 16 kHz, the model's window at this rate
CONTEXT = 64  # samples of the previous window the model sees
WINDOW_S = WINDOW / TARGET_RATE_HZ
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
FloatArray = np.ndarray[Any, np.dtype[np.float32]]
_KEYS = (
    "stft_conv.weight",
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "conv3.weight",
    "conv3.bias",
    "conv4.weight",
    "conv4.bias",
    "lstm_cell.weight_ih",
    "lstm_cell.weight_hh",
    "lstm_cell.bias_ih",
    "lstm_cell.bias_hh",
    "final_conv.weight",
    "final_conv.bias",
)


def package_dir() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("Silero VAD unavailable: the silero-vad package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def default_model_path() -> Path:
    """silero_vad/data/silero_vad.jit of the installed wheel (located, not imported)."""
    return package_dir() / "silero_vad.jit"


# TorchScript module name -> the name used here (that of the package's tinygrad port).
_JIT_NAMES = {
    "stft.forward_basis_buffer": "stft_conv.weight",
    "encoder.0.reparam_conv.weight": "conv1.weight",
    "encoder.0.reparam_conv.bias": "conv1.bias",
    "encoder.1.reparam_conv.weight": "conv2.weight",
    "encoder.1.reparam_conv.bias": "conv2.bias",
    "encoder.2.reparam_conv.weight": "conv3.weight",
    "encoder.2.reparam_conv.bias": "conv3.bias",
    "encoder.3.reparam_conv.weight": "conv4.weight",
    "encoder.3.reparam_conv.bias": "conv4.bias",
    "decoder.rnn.weight_ih": "lstm_cell.weight_ih",
    "decoder.rnn.weight_hh": "lstm_cell.weight_hh",
    "decoder.rnn.bias_ih": "lstm_cell.bias_ih",
    "decoder.rnn.bias_hh": "lstm_cell.bias_hh",
    "decoder.decoder.2.weight": "final_conv.weight",
    "decoder.decoder.2.bias": "final_conv.bias",
}


def read_jit_weights(path: Path) -> dict[str, FloatArray]:
    """The 16 kHz network's float32 weights from the TorchScript archive."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript loading; the wheel ships no other form of these weights.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    state = module._model.state_dict()
    return {ours: state[theirs].detach().numpy().astype(np.float32) for theirs, ours in _JIT_NAMES.items()}


def _version() -> str:
    try:
        return importlib.metadata.version("silero-vad")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _conv1d(x: FloatArray, w: FloatArray, b: FloatArray, stride: int) -> FloatArray:
    """(batch, c_in, t) * (c_out, c_in, 3), padding 1."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    t_out = (x.shape[2] + 2 - 3) // stride + 1
    cols = np.stack([xp[:, :, k : k + stride * (t_out - 1) + 1 : stride] for k in range(3)], axis=-1)
    # (b, t, c*k) @ (c*k, o): one BLAS call instead of einsum's loops.
    flat = cols.transpose(0, 2, 1, 3).reshape(x.shape[0], t_out, -1)
    out = flat @ w.reshape(w.shape[0], -1).T + b
    return np.asarray(out.transpose(0, 2, 1), dtype=np.float32)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float32)


class SileroVad:
    """Speech/non-speech per 32 ms window with hysteresis, as Silero's own timestamp helper does.

    A region starts where the speech probability reaches `threshold` and ends after
    `min_silence_s` below `threshold - 0.15`; regions shorter than `min_speech_s` are
    dropped. Net speech is the voiced windows' duration (no padding counted).
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        threshold: float = 0.5,
        min_speech_s: float = 0.1,
        min_silence_s: float = 0.1,
        pad_s: float = 0.1,
    ) -> None:
        path = model_path if model_path is not None else default_model_path()
        if not path.is_file():
            raise Unavailable(f"Silero VAD model not found at {path}")
        try:
            w = read_jit_weights(path)
        except Exception as exc:  # torch raises many types for a damaged archive
            raise Unavailable(f"Silero VAD model {path} could not be loaded (corrupt?): {exc}") from exc
        if w["stft_conv.weight"].shape != (258, 1, 256) or w["lstm_cell.weight_ih"].shape != (512, 128):
            raise Unavailable(f"Silero VAD model {path} is not the 16 kHz network this port runs")
        self._w = w
        self.threshold = threshold
        self.min_speech_s = min_speech_s
        self.min_silence_s = min_silence_s
        self.pad_s = pad_s
        self.name = f"silero-vad/{_version()}/t{threshold:g}"

    def probabilities(self, samples: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Speech probability of each 32 ms window (the last one zero-padded)."""
        x = np.asarray(samples, dtype=np.float32)
        if x.size == 0:
            return np.zeros(0)
        w = self._w
        n = -(-x.shape[0] // WINDOW)
        padded = np.zeros(CONTEXT + n * WINDOW, dtype=np.float32)
        padded[CONTEXT : CONTEXT + x.shape[0]] = x
        seg = np.lib.stride_tricks.sliding_window_view(padded, CONTEXT + WINDOW)[::WINDOW][:n]
        seg = np.pad(seg, ((0, 0), (0, CONTEXT)), mode="reflect")  # as the model pads each input
        frames = np.lib.stride_tricks.sliding_window_view(seg, 256, axis=1)[:, ::128]  # (n, 4, 256)
        spec = (frames @ w["stft_conv.weight"][:, 0, :].T).transpose(0, 2, 1)
        mag = np.sqrt(spec[:, :129] ** 2 + spec[:, 129:] ** 2).astype(np.float32)
        h = np.maximum(_conv1d(mag, w["conv1.weight"], w["conv1.bias"], 1), 0)
        h = np.maximum(_conv1d(h, w["conv2.weight"], w["conv2.bias"], 2), 0)
        h = np.maximum(_conv1d(h, w["conv3.weight"], w["conv3.bias"], 2), 0)
        h = np.maximum(_conv1d(h, w["conv4.weight"], w["conv4.bias"], 1), 0)[:, :, 0]  # (n, 128)
        gates_x = h @ w["lstm_cell.weight_ih"].T + w["lstm_cell.bias_ih"] + w["lstm_cell.bias_hh"]
        w_hh = w["lstm_cell.weight_hh"].T
        hs = np.zeros((n, 128), dtype=np.float32)
        hidden = np.zeros(128, dtype=np.float32)
        cell = np.zeros(128, dtype=np.float32)
        for t in range(n):
            g = gates_x[t] + hidden @ w_hh
            i, f, c, o = _sigmoid(g[:128]), _sigmoid(g[128:256]), np.tanh(g[256:384]), _sigmoid(g[384:])
            cell = f * cell + i * c
            hidden = o * np.tanh(cell)
            hs[t] = hidden
        out = np.maximum(hs, 0) @ w["final_conv.weight"][0, :, 0] + w["final_conv.bias"][0]
        return np.asarray(_sigmoid(out), dtype=np.float64)

    def window_mask(self, pcm: Pcm) -> BoolArray:
        probs = self.probabilities(pcm.samples)
        mask = np.zeros(probs.shape[0], dtype=bool)
        off = max(self.threshold - 0.15, 0.01)
        hold = round(self.min_silence_s / WINDOW_S)
        speaking, quiet = False, 0
        for i, p in enumerate(probs):
            if p >= self.threshold:
                speaking, quiet = True, 0
            elif speaking and p < off:
                quiet += 1
                if quiet > hold:
                    speaking, quiet = False, 0
                    mask[i - hold : i] = False  # the trailing quiet windows were not speech
            mask[i] = speaking
        # Drop short bursts (clicks, a door) the way the energy VAD drops short runs.
        min_run = max(1, round(self.min_speech_s / WINDOW_S))
        edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            if b - a < min_run:
                mask[a:b] = False
        return mask

    def speech_seconds(self, pcm: Pcm) -> float:
        if pcm.samples.shape[0] == 0:
            return 0.0
        n = int(self.window_mask(pcm).sum()) * WINDOW
        return min(n, int(pcm.samples.shape[0])) / TARGET_RATE_HZ

    def trim(self, pcm: Pcm) -> Pcm:
        return self.speech_and_trim(pcm)[1]

    def speech_trim_and_snr(self, pcm: Pcm) -> tuple[float, Pcm, float]:
        """The model's speech and trim; the SNR is the energy VAD's, as for every VAD."""
        speech, trimmed = self.speech_and_trim(pcm)
        return speech, trimmed, snr_db(pcm)

    def speech_and_trim(self, pcm: Pcm) -> tuple[float, Pcm]:
        """Both at the cost of one model pass."""
        n = pcm.samples.shape[0]
        if n == 0:
            return 0.0, pcm
        mask = self.window_mask(pcm)
        speech = min(int(mask.sum()) * WINDOW, n) / TARGET_RATE_HZ
        pad = round(self.pad_s / WINDOW_S)
        keep_w = mask.copy()
        for k in range(1, pad + 1):
            keep_w[k:] |= mask[:-k]
            keep_w[:-k] |= mask[k:]
        keep = np.repeat(keep_w, WINDOW)[:n]
        if keep.shape[0] < n:
            keep = np.concatenate((keep, np.zeros(n - keep.shape[0], dtype=bool)))
        return speech, Pcm(samples=np.ascontiguousarray(pcm.samples[keep]))
