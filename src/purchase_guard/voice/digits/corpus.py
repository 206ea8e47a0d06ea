"""Digit material in ../shared/data, shaped as the checker sees answers (for training, eval, tests).

- FSDD: single digits of six adult men at 8 kHz. `fsdd_join` joins single takes of one speaker
  with 0.15-0.3 s gaps into a spoken PIN and sends it through decode_audio, as a real 8 kHz call
  would arrive (upsampled to 16 kHz). The join also returns where each digit is.
- speechocean762-train: read digit strings ("ZERO THREE FIVE ONE"), mostly children, and the
  same speakers' other sentences (for "same voice, other words").
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from purchase_guard.voice.audio import Pcm, decode_audio

WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
WORD_TO_DIGIT = {w: str(i) for i, w in enumerate(WORDS)}
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
SPEECHOCEAN = "speechocean762-train"


@dataclass(frozen=True)
class Utterance:
    corpus: str
    speaker: str
    utt_id: str
    path: Path
    digits: str  # "" for a sentence that is not a digit string


def load_flac(path: Path) -> Pcm:
    return decode_audio(encoded=path.read_bytes())


def fsdd_path(data: Path, speaker: str, digit: str, take: int) -> Path:
    return data / "fsdd" / "recordings" / f"{digit}_{speaker}_{take}.flac"


def fsdd_join(
    data: Path, speaker: str, digits: str, takes: Sequence[int], rng: random.Random, lead_s: float = 0.2
) -> tuple[Pcm, list[tuple[float, float]]]:
    """A spoken string from single takes, and each digit's (start, end) in seconds."""
    parts: list[np.ndarray] = []
    bounds: list[tuple[float, float]] = []
    rate = 8000
    pos = 0
    for k, (digit, take) in enumerate(zip(digits, takes, strict=True)):
        x, rate = sf.read(fsdd_path(data, speaker, digit, take), dtype="float32")
        if k == 0:
            lead = np.zeros(int(lead_s * rate), dtype=np.float32)
            parts.append(lead)
            pos += lead.shape[0]
        bounds.append((pos / rate, (pos + x.shape[0]) / rate))
        parts.append(x)
        pos += x.shape[0]
        gap = np.zeros(int((rng.uniform(0.15, 0.3) if k < len(digits) - 1 else lead_s) * rate), np.float32)
        parts.append(gap)
        pos += gap.shape[0]
    buf = io.BytesIO()
    sf.write(buf, np.concatenate(parts), rate, format="WAV", subtype="PCM_16")
    return decode_audio(encoded=buf.getvalue()), bounds


def speechocean_utterances(data: Path) -> list[Utterance]:
    root = data / SPEECHOCEAN
    out = []
    with (root / "utterances.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            words = row["text"].split()
            is_digits = bool(words) and all(w in WORD_TO_DIGIT for w in words)
            digits = "".join(WORD_TO_DIGIT[w] for w in words) if is_digits else ""
            out.append(Utterance(SPEECHOCEAN, row["speaker"], row["utterance"], root / row["path"], digits))
    return out


def speechocean_ages(data: Path) -> dict[str, int]:
    ages = {}
    for line in (data / SPEECHOCEAN / "spk2age").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            ages[parts[0]] = int(parts[1])
    return ages


def digit_speakers(utts: Sequence[Utterance]) -> list[str]:
    return sorted({u.speaker for u in utts if u.digits})
