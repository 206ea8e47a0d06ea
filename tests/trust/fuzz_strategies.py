"""Hypothesis strategies for hostile input: audio containers and their mutations, unicode
oddities, out-of-range numbers, malformed protobuf bytes. Plus a counter of inputs tried."""

from __future__ import annotations

import io
import struct
from collections import Counter
from typing import Any

import numpy as np
import soundfile as sf
from hypothesis import strategies as st

# Inputs tried, by suite; printed at the end of the run (conftest's terminal summary).
FUZZ_COUNTS: Counter[str] = Counter()

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _encode(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _signal(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 4 * t))
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


# Valid containers to mutate: formats, rates and channel counts the guard accepts, and some it refuses.
SEEDS: tuple[bytes, ...] = (
    # Short, so that a failing example stays small enough to print.
    _encode(_signal(0.1, 16000, 1), 16000, "WAV", "PCM_16"),
    _encode(_signal(0.05, 8000, 2), 8000, "WAV", "FLOAT"),
    _encode(_signal(0.02, 48000, 1), 48000, "WAV", "PCM_24"),
    _encode(_signal(0.1, 16000, 1), 16000, "FLAC", "PCM_16"),
    _encode(_signal(0.02, 44100, 2), 44100, "FLAC", "PCM_24"),
    _encode(_signal(0.01, 96000, 1), 96000, "WAV", "PCM_16"),  # rate out of range
    _encode(_signal(0.02, 16000, 1), 16000, "WAV", "DOUBLE"),
    _encode(_signal(0.05, 16000, 1), 16000, "WAV", "ULAW"),
)


@st.composite
def mutated_container(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "header", "splice"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "splice":
            end = min(len(data), pos + draw(st.integers(1, 256)))
            data[pos:end] = draw(st.binary(max_size=16))
        elif len(data) >= 44:
            # WAV header fields (channels, rate, byte rate, block align, bits, data size) set to extremes.
            offset = draw(st.sampled_from([4, 22, 24, 28, 32, 34, 40]))
            width = 2 if offset in (22, 32, 34) else 4
            value = draw(st.sampled_from([0, 1, 2 ** (8 * width) - 1, 2 ** (8 * width - 1), 7, 255]))
            data[offset : offset + width] = value.to_bytes(width, "little")
    return bytes(data)


def magic_then_noise() -> st.SearchStrategy[bytes]:
    magic = st.sampled_from(
        [b"RIFF\xff\xff\xff\x7fWAVE", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"RF64", b"OggS", b"ID3"]
    )
    return st.builds(lambda m, rest: m + rest, magic, st.binary(max_size=512))


def encoded_audio() -> st.SearchStrategy[bytes]:
    return st.one_of(mutated_container(), magic_then_noise(), st.binary(max_size=256), st.sampled_from(SEEDS))


def extreme_rate() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([INT32_MIN, -1, 0, 1, 7999, 8000, 16000, 44100, 48000, 48001, 192000, INT32_MAX]),
        st.integers(INT32_MIN, INT32_MAX),
    )


def pcm16_audio() -> st.SearchStrategy[tuple[bytes, int]]:
    samples = st.one_of(
        st.binary(max_size=4000),
        st.builds(
            lambda n: struct.pack(f"<{n}h", *([32767, -32768] * (n // 2)), *([0] * (n % 2))),
            st.integers(0, 2000),
        ),
    )
    return st.tuples(samples, extreme_rate())


ODD_PIECES = (
    "\u200f",  # right-to-left mark
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\x00",
    "\x1b[31m",
    "\ufeff",
    "\U0001f600",
    "\U0001f469\u200d\U0001f467",  # emoji ZWJ sequence
    "e\u0301\u0301\u0301",  # combining marks
    "\U0010ffff",
    "\u2028",
    "'; DROP TABLE decisions; --",
    "../../etc/passwd",
    "%s%n",
    "hh_" + "9" * 200,
)


def odd_text(max_size: int = 40) -> st.SearchStrategy[str]:
    # Surrogates cannot be in a proto string (the client refuses to encode them); they are
    # sent as raw invalid UTF-8 by the malformed-bytes suite instead.
    plain = st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)
    return st.one_of(
        plain,
        st.lists(st.sampled_from(ODD_PIECES), min_size=1, max_size=4).map("".join),
        st.builds(lambda a, b: a + b, plain, st.sampled_from(ODD_PIECES)),
    )


def int64() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([INT64_MIN, -1, 0, 1, 10**12, 10**12 + 1, INT64_MAX]),
        st.integers(INT64_MIN, INT64_MAX),
    )


def int32() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([INT32_MIN, -1, 0, 1, 1000, 1001, INT32_MAX]), st.integers(INT32_MIN, INT32_MAX)
    )


def mutated_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid serialized message, damaged: truncated, bytes flipped, junk inserted, or invalid UTF-8."""

    @st.composite
    def build(draw: Any) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["truncate", "flip", "insert", "utf8", "varint"]))
            pos = draw(st.integers(0, max(0, len(data) - 1)))
            if kind == "truncate":
                del data[pos:]
            elif kind == "flip" and data:
                data[pos] ^= draw(st.integers(1, 255))
            elif kind == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
            elif kind == "utf8":
                # Field 1 as a string holding a lone surrogate (CESU-8) or a stray continuation byte.
                data[0:0] = b"\x0a\x03" + draw(
                    st.sampled_from([b"\xed\xa0\x80", b"\x80\x80\x80", b"\xff\xfe\xfd"])
                )
            else:
                # An over-long varint (11 bytes of continuation), which no valid message has.
                data[pos:pos] = b"\x08" + b"\xff" * 10 + b"\x01"
        return bytes(data)

    return build()
