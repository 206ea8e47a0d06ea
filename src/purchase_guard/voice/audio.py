"""Turn caller-supplied audio bytes into the one shape every voice component takes.

Everything downstream (VAD, features, encoders) assumes float32 mono at 16 kHz in [-1, 1],
so all format handling, validation and resampling happens here, once, and every failure
becomes an `AudioError` whose message tells the caller what to send instead.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from purchase_guard.errors import AudioError

TARGET_RATE_HZ = 16_000
MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 48_000

# Containers are recognised by their magic bytes rather than trusting libsndfile, which
# also opens formats (OGG, MP3 in newer builds, raw headerless) we do not want to accept.
_WAV_MAGIC = (b"RIFF", b"RF64")
_FLAC_MAGIC = b"fLaC"


@dataclass(frozen=True)
class Pcm:
    """Float32 mono samples at 16 kHz in [-1, 1]."""

    samples: np.ndarray[Any, np.dtype[np.float32]]

    @property
    def sample_rate_hz(self) -> int:
        return TARGET_RATE_HZ

    @property
    def duration_s(self) -> float:
        return float(self.samples.shape[0]) / TARGET_RATE_HZ


def _sniff_container(data: bytes) -> str:
    if data[:4] in _WAV_MAGIC and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == _FLAC_MAGIC:
        return "FLAC"
    if data[:4] == b"OggS":
        kind = "OGG"
    elif data[:3] == b"ID3" or (len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0):
        kind = "MP3"
    elif data[4:8] == b"ftyp":
        kind = "MP4/M4A"
    elif data[:4] == b"\x1a\x45\xdf\xa3":
        kind = "WebM/Matroska"
    else:
        kind = "unrecognised"
    raise AudioError(
        f"audio container is {kind}; send WAV or FLAC, or raw little-endian PCM16 with sample_rate_hz"
    )


def _check_rate(rate: int) -> None:
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise AudioError(f"sample rate {rate} Hz is outside the accepted {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz")


def _check_duration(n_frames: int, rate: int, max_seconds: float) -> None:
    seconds = n_frames / rate
    if seconds > max_seconds:
        raise AudioError(f"audio is {seconds:.1f} s long; at most {max_seconds:g} s is accepted")


MAX_CHANNELS = 2


def _check_channels(channels: int) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"audio has {channels} channels; mono or stereo is accepted")


def _decode_container(data: bytes, max_seconds: float) -> tuple[np.ndarray[Any, np.dtype[np.float32]], int]:
    container = _sniff_container(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = int(f.samplerate)
            declared = int(f.frames)
            _check_channels(int(f.channels))
            _check_rate(rate)
            # Checking the header's length first keeps a hostile header from making us
            # allocate a huge buffer; the decoded length is checked again below.
            _check_duration(declared, rate, max_seconds)
            frames = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # libsndfile raises several types for damaged input
        # Never the library's text: it names Python objects ("<_io.BytesIO object at 0x...>").
        raise AudioError(f"could not decode the {container} audio (damaged or truncated?)") from exc
    return np.asarray(frames, dtype=np.float32), rate


def _decode_pcm16(data: bytes, rate: int | None) -> tuple[np.ndarray[Any, np.dtype[np.float32]], int]:
    if rate is None:
        raise AudioError("raw PCM16 audio needs sample_rate_hz")
    _check_rate(rate)
    if len(data) % 2:
        raise AudioError(f"raw PCM16 audio has an odd number of bytes ({len(data)}); samples are 2 bytes")
    ints = np.frombuffer(data, dtype="<i2")
    return (ints.astype(np.float32) / 32768.0).reshape(-1, 1), rate


def to_pcm16(pcm: Pcm) -> bytes:
    """Little-endian PCM16 of 16 kHz samples (what `pcm16_to_pcm` reads back)."""
    ints = (np.clip(pcm.samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    return bytes(ints.tobytes())


def pcm16_to_pcm(data: bytes) -> Pcm:
    """16 kHz little-endian PCM16 written by `to_pcm16`; AudioError if it cannot be."""
    frames, _ = _decode_pcm16(data, TARGET_RATE_HZ)
    return Pcm(np.ascontiguousarray(frames[:, 0]))


def _resample(
    mono: np.ndarray[Any, np.dtype[np.float32]], rate: int
) -> np.ndarray[Any, np.dtype[np.float32]]:
    if rate == TARGET_RATE_HZ:
        return mono
    g = math.gcd(TARGET_RATE_HZ, rate)
    out = resample_poly(mono.astype(np.float64), TARGET_RATE_HZ // g, rate // g)
    return np.asarray(out, dtype=np.float32)


def decode_audio(
    *,
    encoded: bytes | None = None,
    pcm16: bytes | None = None,
    sample_rate_hz: int | None = None,
    max_seconds: float = 30.0,
    max_bytes: int = 8_000_000,
) -> Pcm:
    """Decode WAV/FLAC bytes (`encoded`) or raw little-endian PCM16 (`pcm16` + rate) to 16 kHz mono.

    Raises AudioError for anything the voice pipeline cannot use; never anything else.
    """
    if encoded is not None and pcm16 is not None:
        raise AudioError("send either encoded audio or raw PCM16, not both")
    data = encoded if encoded is not None else pcm16
    if data is None:
        raise AudioError("no audio was sent")
    if len(data) == 0:
        raise AudioError("audio is empty (0 bytes)")
    if len(data) > max_bytes:
        raise AudioError(f"audio is {len(data)} bytes; at most {max_bytes} bytes are accepted")

    if encoded is not None:
        frames, rate = _decode_container(encoded, max_seconds)
    else:
        frames, rate = _decode_pcm16(data, sample_rate_hz)

    if frames.shape[0] == 0:
        raise AudioError("audio holds no samples (0 frames)")
    _check_duration(frames.shape[0], rate, max_seconds)
    if not np.all(np.isfinite(frames)):
        raise AudioError("audio contains NaN or infinite samples")

    # Averaging channels rather than picking one keeps a voice that was panned to one side.
    mono = frames.mean(axis=1, dtype=np.float64)  # float32 overflows to inf on extreme float WAVs
    resampled = _resample(mono, rate)
    # Float WAVs may exceed full scale and resampling can overshoot slightly at peaks; the
    # contract downstream is [-1, 1].
    clipped = np.clip(resampled, -1.0, 1.0).astype(np.float32, copy=False)
    return Pcm(samples=np.ascontiguousarray(clipped))
