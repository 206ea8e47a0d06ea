"""Helpers for integration tests: a real server on port 0 and real audio from ../shared/data."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

DIGIT_GAP_S = 0.2


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def fsdd_join(data: Path, speaker: str, digits: str, take: int) -> tuple[np.ndarray, int]:
    """Join single-digit FSDD takes of one speaker into a spoken PIN, as a person would say it."""
    parts: list[np.ndarray] = []
    rate = 8000
    for i, d in enumerate(digits):
        samples, rate = sf.read(
            data / "fsdd" / "recordings" / f"{d}_{speaker}_{(take + i * 7) % 50}.flac", dtype="float32"
        )
        parts.append(samples)
        parts.append(np.zeros(int(DIGIT_GAP_S * rate), dtype=np.float32))
    return np.concatenate(parts), rate


def fsdd_wav(data: Path, speaker: str, digits: str, take: int) -> bytes:
    samples, rate = fsdd_join(data, speaker, digits, take)
    return wav_bytes(samples, rate)


def fsdd_digit_takes(data: Path, speaker: str) -> list[tuple[str, bytes]]:
    """A guided digit enrollment read by an FSDD speaker: each prompt of voice.digits's
    ENROLLMENT_PROMPTS joined from takes 0-2 of each digit (answers in the tests use takes 10 and
    up, so no recording is both a template and an answer)."""
    from purchase_guard.voice.digits import ENROLLMENT_PROMPTS

    seen: dict[str, int] = {}
    out = []
    for prompt in ENROLLMENT_PROMPTS:
        parts: list[np.ndarray] = []
        for d in prompt:
            take = seen.get(d, 0)
            seen[d] = take + 1
            samples, rate = sf.read(
                data / "fsdd" / "recordings" / f"{d}_{speaker}_{take}.flac", dtype="float32"
            )
            parts += [samples, np.zeros(int(DIGIT_GAP_S * rate), dtype=np.float32)]
        out.append((prompt, wav_bytes(np.concatenate(parts), 8000)))
    return out


def long_utterance(data: Path, speaker: str, digit_sets: Sequence[str], take: int) -> bytes:
    """About 3 s of one FSDD speaker: several digit strings in a row (a 'command'-length utterance)."""
    parts = []
    for k, digits in enumerate(digit_sets):
        samples, _ = fsdd_join(data, speaker, digits, take + k * 3)
        parts.append(samples)
    return wav_bytes(np.concatenate(parts), 8000)


@dataclass(frozen=True)
class Enrolled:
    household_id: str
    token: str
    adult_id: str
    child_id: str
