"""Binary fingerprint of the voiced part of an utterance (Haitsma-Kalker layout, own bits).

Each frame (192 ms Hann window every 8 ms) is cut into 33 log-spaced bands between 300 and
3400 Hz. Each band's energy then gets an artificial reverberation tail (a 0.4 s RT60
exponential decay over frames). Bit m of the frame's 32-bit sub-print is the sign of the
log-energy difference between bands m and m+1, minus the same difference averaged over the
utterance's voiced frames: "is this frame's spectrum steeper than usual here?".

Why these choices (measured, see docs/broadcast.md):
- Log energies and the utterance average: a stationary channel (loudspeaker band-limit, room
  colouring, gain) adds a constant per band, which the average takes out.
- No time difference: Haitsma-Kalker's bits also difference in time. Between two rooms'
  copies those bits disagree more, because reverberation changes how energy decays; at the
  same false-match count the time-free bits detect 11-21 points more pairs at 5 dB
  (`scripts/broadcast_variants.py`).
- Long windows: 64 ms frames lost to reverberation and noise; 192 ms windows average both.
- The artificial tail: the true copies version 2 missed were almost all pairs of *different*
  rooms. A room smears each band's energy over time with its own decay; adding the same
  longer decay to every copy makes that shared tail dominate, so two rooms' copies look more
  alike. With the bit-count rule the matcher had then, at 1e-5 false matches, it detected
  1.5 points more pairs at 5 dB than no tail on the tuning split and 1.7 on the test split
  (`scripts/eval_broadcast.py --tail-rt60 0` for the comparison, one run per split at
  commit 731889e; docs/broadcast.md).
- A reliability mask: bits whose deviation from the average is in the weaker half for the
  utterance are mostly decided by the noise, so they are left out of every comparison
  ("soft" bits in Haitsma-Kalker's terms).
- Voiced frames only: frames quieter than the utterance's 30th percentile band energy (or
  far below its peak, or near digital silence) carry the room's noise, not the broadcast,
  and are masked out entirely. The shared speech VAD is not used: in 5 dB noise it flags
  almost nothing in continuous speech.

Masked frames stay in place (their mask is zero) so that the time axis of two copies keeps
lining up; the matcher compares only bits that are reliable and voiced in both copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal

from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm

U32Array = np.ndarray[Any, np.dtype[np.uint32]]
F64Array = np.ndarray[Any, np.dtype[np.float64]]

_BIT_WEIGHTS = (np.uint64(1) << np.arange(32, dtype=np.uint64)).astype(np.uint64)


@dataclass(frozen=True, slots=True)
class FingerprintParams:
    frame: int = 3072  # 192 ms at 16 kHz
    hop: int = 128  # 8 ms
    f_lo_hz: float = 300.0
    f_hi_hz: float = 3400.0
    weak_percentile: float = 50.0  # bits below this |shape deviation| are unreliable
    voiced_percentile: float = 30.0  # frames below this band energy are not voiced
    voiced_range_db: float = 35.0  # nor frames this far below the loudest one
    silence_dbfs: float = -70.0  # nor frames below this mean level (digital silence, dither)
    floor_percentile: float = 10.0  # a band's noise floor: this percentile of its energy over time
    band_margin_db: float = 3.0  # a bit is reliable only where its bands are this far above the floor
    tail_rt60_s: float = 0.4  # artificial reverberation added to every band's energy; 0 for none

    @property
    def hop_s(self) -> float:
        return self.hop / TARGET_RATE_HZ


DEFAULT_PARAMS = FingerprintParams()
N_BITS = 32
# Bumped whenever the bits change meaning. Stored prints (registered clips, a shared Redis
# window during a rolling upgrade) of another version are never compared with new ones.
PRINT_VERSION = 3


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One 32-bit sub-print per frame plus a mask of the bits worth comparing; never audio."""

    bits: U32Array = field(repr=False)
    mask: U32Array = field(repr=False)  # 0 for unvoiced frames; else the reliable bits
    hop_s: float = DEFAULT_PARAMS.hop_s

    @property
    def n_frames(self) -> int:
        return int(self.bits.shape[0])

    @property
    def voiced_frames(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def reliable_bits(self) -> int:
        """Bits worth comparing over the whole print (the mask's set bits)."""
        return int(np.bitwise_count(self.mask).sum())

    @property
    def voiced_seconds(self) -> float:
        return self.voiced_frames * self.hop_s

    def to_bytes(self) -> bytes:
        """Little-endian frame count, sub-prints, masks: 8 bytes a frame."""
        return (
            self.n_frames.to_bytes(4, "little")
            + self.bits.astype("<u4").tobytes()
            + self.mask.astype("<u4").tobytes()
        )

    @classmethod
    def from_bytes(cls, blob: bytes, hop_s: float = DEFAULT_PARAMS.hop_s) -> Fingerprint:
        if len(blob) < 4:
            raise ValueError("fingerprint blob is truncated")
        n = int.from_bytes(blob[:4], "little")
        if len(blob) != 4 + 8 * n:
            raise ValueError("fingerprint blob has the wrong length")
        bits = np.frombuffer(blob, dtype="<u4", count=n, offset=4).astype(np.uint32)
        mask = np.frombuffer(blob, dtype="<u4", count=n, offset=4 + 4 * n).astype(np.uint32)
        return cls(bits=bits, mask=mask, hop_s=hop_s)


def _band_matrix(params: FingerprintParams) -> F64Array:
    n_bins = params.frame // 2 + 1
    freqs = np.arange(n_bins) * TARGET_RATE_HZ / params.frame
    edges = np.geomspace(params.f_lo_hz, params.f_hi_hz, N_BITS + 2)
    out = np.zeros((n_bins, N_BITS + 1))
    for b in range(N_BITS + 1):
        sel = (freqs >= edges[b]) & (freqs < edges[b + 1])
        if not sel.any():  # a band narrower than one bin takes its nearest bin
            sel = np.arange(n_bins) == int(np.argmin(np.abs(freqs - 0.5 * (edges[b] + edges[b + 1]))))
        out[sel, b] = 1.0
    return out


@dataclass(frozen=True, slots=True)
class _Bands:
    """The band matrix cut to the FFT bins it sums (`lo` to `hi`): the rest of the spectrum,
    below f_lo_hz and above f_hi_hz, is never squared nor summed."""

    lo: int
    hi: int
    matrix: np.ndarray[Any, np.dtype[np.float32]]


def _used_bands(params: FingerprintParams) -> _Bands:
    full = _band_matrix(params)
    used = np.flatnonzero(full.any(axis=1))
    lo, hi = int(used[0]), int(used[-1]) + 1
    return _Bands(lo, hi, np.ascontiguousarray(full[lo:hi]).astype(np.float32))


_BANDS: dict[FingerprintParams, _Bands] = {}
_WINDOWS: dict[int, np.ndarray[Any, np.dtype[np.float32]]] = {}
_FRAME_BLOCK = 64  # frames per FFT block: 768 KiB of windowed frames, within a core's cache


def band_energies(samples: np.ndarray[Any, Any], params: FingerprintParams = DEFAULT_PARAMS) -> F64Array:
    """(frames, 33) band energies; zero rows when the audio is shorter than one frame."""
    x = np.asarray(samples, dtype=np.float32)
    if x.shape[0] < params.frame:
        return np.zeros((0, N_BITS + 1))
    bands = _BANDS.get(params)
    if bands is None:
        bands = _BANDS.setdefault(params, _used_bands(params))
    window = _WINDOWS.get(params.frame)
    if window is None:
        window = _WINDOWS.setdefault(params.frame, np.hanning(params.frame).astype(np.float32))
    frames = np.lib.stride_tricks.sliding_window_view(x, params.frame)[:: params.hop]
    power = np.empty((frames.shape[0], bands.hi - bands.lo), dtype=np.float32)
    # Blocks of frames, not the whole utterance at once: a 3 s input's windowed frames and
    # spectrum are 4 MiB each, fresh memory that every call faulted in page by page (1.57x the
    # time of the blocked loop, scripts/bench_fingerprint_bins.py; docs/scaling.md). Each frame's
    # FFT is its own, so the power is the same; the band sums stay one product over all frames.
    for start in range(0, frames.shape[0], _FRAME_BLOCK):
        # scipy.fft keeps float32 (numpy's rfft works in float64 and is several times slower).
        spec = scipy.fft.rfft(frames[start : start + _FRAME_BLOCK] * window, axis=1)[:, bands.lo : bands.hi]
        block = power[start : start + _FRAME_BLOCK]
        np.multiply(spec.real, spec.real, out=block)
        block += spec.imag * spec.imag
    return np.asarray(power @ bands.matrix, dtype=np.float64)


def add_tail(energy: F64Array, params: FingerprintParams = DEFAULT_PARAMS) -> F64Array:
    """Each band's energy plus an exponentially decaying copy of its past (RT60 = tail_rt60_s)."""
    if params.tail_rt60_s <= 0.0 or energy.shape[0] == 0:
        return energy
    # Energy falls 60 dB over one RT60, i.e. by this factor per hop.
    decay = 10.0 ** (-6.0 * params.hop_s / params.tail_rt60_s)
    return np.asarray(scipy.signal.lfilter([1.0], [1.0, -decay], energy, axis=0), dtype=np.float64)


def _pack(bitmat: np.ndarray[Any, Any]) -> U32Array:
    return np.ascontiguousarray((bitmat.astype(np.uint64) @ _BIT_WEIGHTS).astype(np.uint32))


def fingerprint(pcm: Pcm, params: FingerprintParams = DEFAULT_PARAMS) -> Fingerprint:
    """Sub-prints of every frame; frames that are not voiced get a zero mask."""
    energy = add_tail(band_energies(pcm.samples, params), params)
    if energy.shape[0] == 0:
        empty = np.zeros(0, dtype=np.uint32)
        return Fingerprint(empty, empty.copy(), params.hop_s)
    log_e = np.log(energy + 1e-12)
    diff = log_e[:, :-1] - log_e[:, 1:]

    total = energy.sum(axis=1)
    # Mean-square level of the band-passed frame (energy of a Hann-windowed frame is
    # sum(w^2) * frame * mean-square / 2 per one-sided spectrum; the constant only moves dBFS).
    level_db = 10.0 * np.log10(total / (0.375 * params.frame * params.frame) + 1e-20)
    voiced = (
        (level_db > np.percentile(level_db, params.voiced_percentile))
        & (level_db > level_db.max() - params.voiced_range_db)
        & (level_db > params.silence_dbfs)
    )
    # The spectral shape relative to the utterance's average voiced shape. Subtracting the
    # average cancels a stationary channel (loudspeaker, room colouring, gain) as a time
    # difference would, but the bits no longer depend on how fast energy decays, which is
    # what a room's reverberation changes most (measured: docs/broadcast.md).
    shape = diff - (diff[voiced].mean(axis=0) if voiced.any() else diff.mean(axis=0))
    bits = _pack(shape > 0.0)

    # Bits from bands the background dominates carry the room's noise, not the broadcast;
    # two homes with the same noise (same appliance, same looped recording) would agree on
    # them while saying different things.
    floor = np.percentile(energy, params.floor_percentile, axis=0, keepdims=True)
    above = energy > floor * 10.0 ** (params.band_margin_db / 10.0)
    clear = above[:, :-1] & above[:, 1:]
    magnitude = np.abs(shape)
    usable = voiced[:, None] & clear
    if usable.any():
        cut = np.percentile(magnitude[usable], params.weak_percentile)
        reliable = (magnitude > cut) & clear
    else:
        reliable = np.zeros_like(magnitude, dtype=bool)
    mask = _pack(reliable & voiced[:, None])
    return Fingerprint(bits=bits, mask=mask, hop_s=params.hop_s)
