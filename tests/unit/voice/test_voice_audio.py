"""decode_audio: accepted inputs come out as 16 kHz mono float32; everything else is an AudioError."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.voice.voice_synth import encode, tone

from purchase_guard.errors import AudioError
from purchase_guard.voice.audio import Pcm, decode_audio


def _dominant_hz(pcm: Pcm) -> float:
    spec = np.abs(np.fft.rfft(pcm.samples))
    return float(np.argmax(spec) * 16_000 / pcm.samples.shape[0])


@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_wav_at_common_rates_is_resampled_to_16k(rate: int) -> None:
    """A 1 s 440 Hz WAV at any accepted rate decodes to 16000 samples with the tone still at 440 Hz."""
    pcm = decode_audio(encoded=encode(tone(440, 1.0, rate), rate))
    assert pcm.samples.dtype == np.float32
    assert abs(pcm.samples.shape[0] - 16_000) <= 1
    assert pcm.duration_s == pytest.approx(1.0, abs=1e-3)
    assert _dominant_hz(pcm) == pytest.approx(440, abs=2)
    assert np.max(np.abs(pcm.samples)) <= 1.0


def test_flac_is_accepted() -> None:
    """FLAC bytes decode like WAV bytes."""
    pcm = decode_audio(encoded=encode(tone(300, 0.5, 44_100), 44_100, fmt="FLAC"))
    assert abs(pcm.samples.shape[0] - 8_000) <= 1
    assert _dominant_hz(pcm) == pytest.approx(300, abs=3)


def test_stereo_is_mixed_to_mono() -> None:
    """Stereo with the tone on one channel only becomes mono at half the amplitude."""
    left = tone(440, 0.5, 16_000, level=0.8)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    pcm = decode_audio(encoded=encode(stereo, 16_000))
    assert pcm.samples.ndim == 1
    assert np.max(np.abs(pcm.samples)) == pytest.approx(0.4, abs=0.01)


def test_raw_pcm16_with_rate() -> None:
    """Little-endian PCM16 plus its rate decodes and is scaled to [-1, 1]."""
    ints = (tone(440, 0.25, 8_000, level=0.5) * 32767).astype("<i2")
    pcm = decode_audio(pcm16=ints.tobytes(), sample_rate_hz=8_000)
    assert abs(pcm.samples.shape[0] - 4_000) <= 1
    assert np.max(np.abs(pcm.samples)) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no audio"),
        ({"encoded": b""}, "empty"),
        ({"encoded": b"RIFF", "pcm16": b"\x00\x00"}, "not both"),
        ({"encoded": b"x" * 11, "max_bytes": 10}, "at most 10 bytes"),
        ({"encoded": b"ID3\x03\x00" + b"\x00" * 100}, "MP3"),
        ({"encoded": b"\xff\xfb\x90\x00" + b"\x00" * 100}, "MP3"),
        ({"encoded": b"OggS" + b"\x00" * 100}, "OGG"),
        ({"encoded": b"hello world, not audio"}, "send WAV or FLAC"),
        ({"encoded": b"RIFF\x24\x00\x00\x00WAVEjunkjunk"}, "could not decode"),
        ({"pcm16": b"\x00\x00"}, "needs sample_rate_hz"),
        ({"pcm16": b"\x00\x00\x00", "sample_rate_hz": 16_000}, "odd number of bytes"),
        ({"pcm16": b"\x00\x00", "sample_rate_hz": 4_000}, "outside the accepted"),
        ({"pcm16": b"\x00\x00", "sample_rate_hz": 96_000}, "outside the accepted"),
        ({"pcm16": b"\x00\x00" * 16_001, "sample_rate_hz": 16_000, "max_seconds": 1.0}, "at most 1 s"),
    ],
)
def test_bad_input_raises_actionable_audio_error(kwargs: dict[str, object], message: str) -> None:
    """Each kind of unusable input raises AudioError whose message names the problem."""
    with pytest.raises(AudioError, match=message):
        decode_audio(**kwargs)  # type: ignore[arg-type]


def test_wav_rate_out_of_range_is_rejected() -> None:
    """A well-formed WAV at 96 kHz is refused for its rate, not decoded."""
    with pytest.raises(AudioError, match="96000 Hz"):
        decode_audio(encoded=encode(tone(440, 0.1, 96_000), 96_000))


def test_wav_longer_than_limit_is_rejected() -> None:
    """A WAV longer than max_seconds is refused before it is fully decoded."""
    with pytest.raises(AudioError, match=r"2\.0 s long"):
        decode_audio(encoded=encode(tone(440, 2.0, 8_000), 8_000), max_seconds=1.5)


def test_nan_samples_are_rejected() -> None:
    """A float WAV holding NaN is refused rather than poisoning the embedding."""
    x = tone(440, 0.1, 16_000).astype(np.float32)
    x[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        decode_audio(encoded=encode(x, 16_000, subtype="FLOAT"))


def test_zero_frame_wav_is_rejected() -> None:
    """A valid WAV header with no frames is refused as holding no samples."""
    with pytest.raises(AudioError, match="0 frames"):
        decode_audio(encoded=encode(np.zeros(0), 16_000))


def _check_contract(pcm: Pcm) -> None:
    assert pcm.samples.dtype == np.float32
    assert pcm.samples.ndim == 1
    assert pcm.samples.shape[0] > 0
    assert np.all(np.isfinite(pcm.samples))
    assert np.max(np.abs(pcm.samples)) <= 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=4096))
def test_random_bytes_never_crash(data: bytes) -> None:
    """Arbitrary bytes give either a valid Pcm or an AudioError, never another exception."""
    for attempt in (
        lambda: decode_audio(encoded=data),
        lambda: decode_audio(encoded=b"RIFF" + data[:4] + b"WAVE" + data),
        lambda: decode_audio(encoded=b"fLaC" + data),
        lambda: decode_audio(pcm16=data, sample_rate_hz=16_000),
    ):
        with contextlib.suppress(AudioError):
            _check_contract(attempt())


_VALID = {fmt: encode(tone(440, 0.3, 22_050), 22_050, fmt=fmt) for fmt in ("WAV", "FLAC")}


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(["WAV", "FLAC"]), st.floats(min_value=0.0, max_value=1.0), st.binary(max_size=64))
def test_truncated_or_damaged_files_never_crash(fmt: str, keep: float, tail: bytes) -> None:
    """A valid WAV/FLAC cut anywhere (and optionally followed by junk) decodes or raises AudioError."""
    data = _VALID[fmt]
    cut = data[: max(1, int(len(data) * keep))] + tail
    with contextlib.suppress(AudioError):
        _check_contract(decode_audio(encoded=cut))


def test_soundfile_roundtrip_fixture_is_what_we_think() -> None:
    """The encode helper writes a WAV that soundfile reads back at the stated rate."""
    info = sf.info(io.BytesIO(encode(tone(440, 0.1, 8_000), 8_000)))
    assert info.samplerate == 8_000
