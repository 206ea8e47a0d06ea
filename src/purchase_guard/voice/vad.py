"""Energy-based voice activity detection with an adaptive noise floor.

Speaker embeddings degrade when long silences or room noise dominate the input, and the
verifier needs to know how much *speech* an utterance holds to choose a threshold band.
A small energy VAD is enough for device audio that has already been end-pointed by the
wake-word front end; it needs no model and is deterministic, which keeps decisions replayable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm

FRAME = 480  # 30 ms at 16 kHz
HOP = 160  # 10 ms
_EPS = 1e-12
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


@dataclass(frozen=True)
class VadConfig:
    # A frame is speech when it is this far above the running noise floor ...
    margin_db: float = 9.0
    # ... and above an absolute floor, so digital silence plus dither is never speech ...
    absolute_floor_dbfs: float = -60.0
    # ... and within this range of the loudest frame, so breath and reverb tails are not.
    dynamic_range_db: float = 45.0
    # Keep this many frames after speech stops: word endings (stops, fricatives) are quiet.
    hangover_frames: int = 8
    # Shorter runs of loud frames are clicks or knocks: a 30 ms window sees a click in three
    # successive hops, while even a short syllable lasts well over 50 ms.
    min_run_frames: int = 5
    # How fast the floor may rise on non-speech frames (fraction per frame); slow, so a
    # sustained vowel does not pull the floor up and cut itself off.
    floor_rise: float = 0.02
    # Padding kept around voiced regions by trim_silence.
    pad_s: float = 0.1


DEFAULT = VadConfig()


def frame_energies_db(
    samples: np.ndarray[Any, np.dtype[np.float32]],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Mean-square energy in dBFS for 30 ms frames every 10 ms (the tail is zero-padded)."""
    x = samples.astype(np.float64)
    n = x.shape[0]
    n_frames = 1 if n <= FRAME else 1 + int(np.ceil((n - FRAME) / HOP))
    padded = np.zeros((n_frames - 1) * HOP + FRAME)
    padded[:n] = x
    windows = np.lib.stride_tricks.sliding_window_view(padded, FRAME)[::HOP][:n_frames]
    power = np.mean(windows * windows, axis=1)
    return np.asarray(10.0 * np.log10(power + _EPS), dtype=np.float64)


def _raw_mask(
    energy_db: np.ndarray[Any, np.dtype[np.float64]], cfg: VadConfig
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    if energy_db.size == 0:
        return np.zeros(0, dtype=bool)
    peak = float(energy_db.max())
    # Start from a low percentile: clips are short and usually begin with the speaker already
    # talking, so the first frames are a poor noise estimate.
    floor = float(np.percentile(energy_db, 10))
    gate = max(cfg.absolute_floor_dbfs, peak - cfg.dynamic_range_db)
    mask = np.zeros(energy_db.shape[0], dtype=bool)
    for i, e in enumerate(energy_db):
        is_speech = e > floor + cfg.margin_db and e > gate
        mask[i] = is_speech
        if e < floor:
            floor = 0.5 * floor + 0.5 * float(e)  # noise dropped: follow quickly
        elif not is_speech:
            floor += cfg.floor_rise * (float(e) - floor)  # noise rose: follow slowly
    return mask


def _dilate_forward(mask: np.ndarray[Any, np.dtype[np.bool_]], n: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    out = mask.copy()
    for k in range(1, n + 1):
        out[k:] |= mask[:-k]
    return out


def _dilate(mask: np.ndarray[Any, np.dtype[np.bool_]], n: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    out = _dilate_forward(mask, n)
    return _dilate_forward(out[::-1], n)[::-1]


def _drop_short_runs(
    mask: np.ndarray[Any, np.dtype[np.bool_]], min_run: int
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    out = np.zeros_like(mask)
    for a, b in zip(starts, stops, strict=True):
        if b - a >= min_run:
            out[a:b] = True
    return out


def _mask_of(energy_db: np.ndarray[Any, np.dtype[np.float64]], cfg: VadConfig) -> BoolArray:
    raw = _raw_mask(energy_db, cfg)
    if raw.size == 0:
        return raw
    return _dilate_forward(_drop_short_runs(raw, cfg.min_run_frames), cfg.hangover_frames)


def speech_mask(pcm: Pcm, cfg: VadConfig = DEFAULT) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Per-frame (10 ms hop) speech flags, with hangover applied."""
    return _mask_of(frame_energies_db(pcm.samples), cfg)


def _seconds_of(mask: BoolArray, n_samples: int) -> float:
    return min(int(mask.sum()) * HOP, n_samples) / TARGET_RATE_HZ


def speech_seconds(pcm: Pcm, cfg: VadConfig = DEFAULT) -> float:
    """Net seconds of speech (hop-sized frames flagged as speech)."""
    if pcm.samples.shape[0] == 0:
        return 0.0
    return _seconds_of(speech_mask(pcm, cfg), int(pcm.samples.shape[0]))


def _trim_to(pcm: Pcm, mask: BoolArray, cfg: VadConfig) -> Pcm:
    n = pcm.samples.shape[0]
    pad = round(cfg.pad_s * TARGET_RATE_HZ / HOP)
    keep_frames = _dilate(mask, pad)
    # Frame i is credited with the hop that starts at its first sample; the 30 ms window it
    # measured overlaps the next two hops, so dilation above covers that overlap too.
    keep = np.repeat(keep_frames, HOP)[:n]
    if keep.shape[0] < n:
        keep = np.concatenate((keep, np.zeros(n - keep.shape[0], dtype=bool)))
    return Pcm(samples=np.ascontiguousarray(pcm.samples[keep]))


def trim_silence(pcm: Pcm, cfg: VadConfig = DEFAULT) -> Pcm:
    """Keep voiced regions plus `pad_s` either side; drop everything else.

    Returns an empty Pcm when nothing is voiced, so callers must check speech_seconds first.
    """
    if pcm.samples.shape[0] == 0:
        return pcm
    return _trim_to(pcm, speech_mask(pcm, cfg), cfg)


def _snr_of(energy: np.ndarray[Any, np.dtype[np.float64]], mask: BoolArray) -> float:
    if energy.size == 0 or not mask.any():
        return 0.0
    power = 10.0 ** (energy / 10.0)
    speech = float(power[mask].mean())
    quiet = power[~mask]
    noise = float(quiet.mean()) if quiet.size >= 5 else float(np.percentile(power, 5))
    ratio = 10.0 * np.log10((speech + _EPS) / (noise + _EPS))
    return float(min(100.0, ratio))


def snr_db(pcm: Pcm, cfg: VadConfig = DEFAULT) -> float:
    """Estimated SNR: mean power of speech frames over mean power of non-speech frames.

    With no non-speech frames (tightly cut audio) the noise is estimated from the quietest
    5 % of frames. Capped at 100 dB so digitally silent gaps do not give infinity.
    """
    energy = frame_energies_db(pcm.samples)
    return _snr_of(energy, _mask_of(energy, cfg))


def speech_trim_and_snr(
    pcm: Pcm, cfg: VadConfig = DEFAULT, snr_cfg: VadConfig = DEFAULT
) -> tuple[float, Pcm, float]:
    """`speech_seconds(pcm, cfg)`, `trim_silence(pcm, cfg)` and `snr_db(pcm, snr_cfg)` from one
    pass over the frames: each computed on its own measures every frame's energy again and
    finds the same speech (three masks and four energy passes for a verified request, where
    one of each gives the same three answers)."""
    energy = frame_energies_db(pcm.samples)
    mask = _mask_of(energy, cfg)
    snr = _snr_of(energy, mask if snr_cfg == cfg else _mask_of(energy, snr_cfg))
    n = int(pcm.samples.shape[0])
    if n == 0:
        return 0.0, pcm, snr
    return _seconds_of(mask, n), _trim_to(pcm, mask, cfg), snr


def clipped_fraction(pcm: Pcm, level: float = 0.999) -> float:
    """Fraction of samples at or beyond `level` of full scale (hard clipping)."""
    n = int(pcm.samples.shape[0])
    if n == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(pcm.samples) >= level)) / n


class SpeechDetector(Protocol):
    """What the verifier, enrollment and evaluation need from a VAD.

    `name` travels into the thresholds file: bands are calibrated on the net speech one VAD
    measures, so thresholds made with another VAD are refused.
    """

    name: str

    def speech_seconds(self, pcm: Pcm) -> float: ...

    def trim(self, pcm: Pcm) -> Pcm: ...

    def speech_and_trim(self, pcm: Pcm) -> tuple[float, Pcm]: ...

    def speech_trim_and_snr(self, pcm: Pcm) -> tuple[float, Pcm, float]:
        """`speech_and_trim` and `snr_db(pcm)`, the energy VAD's default SNR whatever this VAD
        is (as the verifier and enrollment measure it)."""
        ...


class EnergyVad:
    """The module's energy VAD behind the SpeechDetector protocol."""

    name = "energy/1"

    def __init__(self, cfg: VadConfig = DEFAULT) -> None:
        self.cfg = cfg

    def speech_seconds(self, pcm: Pcm) -> float:
        return speech_seconds(pcm, self.cfg)

    def trim(self, pcm: Pcm) -> Pcm:
        return trim_silence(pcm, self.cfg)

    def speech_and_trim(self, pcm: Pcm) -> tuple[float, Pcm]:
        """Both from one speech mask."""
        if pcm.samples.shape[0] == 0:
            return 0.0, pcm
        mask = speech_mask(pcm, self.cfg)
        return _seconds_of(mask, int(pcm.samples.shape[0])), _trim_to(pcm, mask, self.cfg)

    def speech_trim_and_snr(self, pcm: Pcm) -> tuple[float, Pcm, float]:
        """From one pass over the frames: the SNR's speech frames are this VAD's own."""
        return speech_trim_and_snr(pcm, self.cfg, DEFAULT)
