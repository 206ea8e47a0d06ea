"""What a member's guided digit enrollment keeps: per-digit frame templates, never audio.

A template is the normalised MFCC frames of one spoken digit (features.py), cut from an
enrollment take by forced alignment against the prompt. The frames cannot be played back as
speech (no phase, no pitch, 13 cepstra per 10 ms), but they are still biometric: the store
seals `to_bytes()` like a voiceprint and erases it with the member.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from purchase_guard.voice.digits.features import DIM

FORMAT = "purchase-guard/digit-templates"
VERSION = 1
DIGITS = "0123456789"
# Bounds that keep a stored (or hostile) blob from claiming absurd shapes.
MAX_TEMPLATES_PER_DIGIT = 16
MAX_TEMPLATE_FRAMES = 200
MAX_SPEAKER_TAKES = 24

Frames = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True)
class DigitTemplates:
    """One member's digit templates: digit -> tuple of (frames, 26) float32 arrays.

    `features` names the feature extractor, so templates made by another extractor are refused
    instead of being compared frame by frame with incompatible numbers.
    """

    by_digit: Mapping[str, tuple[Frames, ...]]
    features: str
    # The takes' speaker embeddings (voice/digit_print.py) and the encoder that made them:
    # a spoken PIN is scored against the member saying digits, not only their sentences.
    speaker_encoder: str = ""
    speaker_takes: tuple[tuple[float, ...], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if len(self.speaker_takes) > MAX_SPEAKER_TAKES or (self.speaker_takes and not self.speaker_encoder):
            raise ValueError("digit templates: speaker takes need their encoder, and at most a few")
        for row in self.speaker_takes:
            if not 16 <= len(row) <= 4096 or not all(np.isfinite(row)):
                raise ValueError("digit templates: a speaker take embedding has the wrong shape")
        for digit, frames in self.by_digit.items():
            if digit not in DIGITS or len(digit) != 1:
                raise ValueError("digit templates are keyed by single digits")
            if len(frames) > MAX_TEMPLATES_PER_DIGIT:
                raise ValueError("too many templates for one digit")
            for f in frames:
                if f.ndim != 2 or f.shape[1] != DIM or not 2 <= f.shape[0] <= MAX_TEMPLATE_FRAMES:
                    raise ValueError("a digit template has the wrong shape")
                if not np.all(np.isfinite(f)):
                    raise ValueError("a digit template holds non-finite values")
                f.setflags(write=False)

    @property
    def digits_covered(self) -> str:
        return "".join(d for d in DIGITS if self.by_digit.get(d))

    def count(self) -> int:
        return sum(len(v) for v in self.by_digit.values())

    def to_bytes(self) -> bytes:
        """Versioned container: a JSON header line, then an npz of float16 frames."""
        labels: list[str] = []
        lengths: list[int] = []
        blocks: list[Frames] = []
        for digit in DIGITS:
            for f in self.by_digit.get(digit, ()):
                labels.append(digit)
                lengths.append(int(f.shape[0]))
                blocks.append(f)
        frames = np.concatenate(blocks).astype(np.float16) if blocks else np.zeros((0, DIM), np.float16)
        buf = io.BytesIO()
        speaker = (
            np.asarray(self.speaker_takes, dtype=np.float32)
            if self.speaker_takes
            else np.zeros((0, 1), np.float32)
        )
        np.savez(buf, frames=frames, lengths=np.asarray(lengths, dtype=np.int32), speaker=speaker)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "features": self.features,
            "labels": "".join(labels),
            "speaker_encoder": self.speaker_encoder,
        }
        return json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DigitTemplates:
        """Inverse of `to_bytes`; ValueError for anything that is not a valid container."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            raise ValueError("digit templates: no header")
        try:
            header = json.loads(head.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError("digit templates: unreadable header") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("digit templates: not a digit-template container")
        if header.get("version") != VERSION:
            raise ValueError(f"digit templates: unsupported version {header.get('version')!r}")
        labels = str(header.get("labels", ""))
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as z:
                frames = np.asarray(z["frames"], dtype=np.float32)
                lengths = np.asarray(z["lengths"], dtype=np.int64)
                # Containers written before the speaker takes were kept have none.
                speaker = (
                    np.asarray(z["speaker"], dtype=np.float64) if "speaker" in z.files else np.zeros((0, 0))
                )
        except Exception as exc:  # numpy raises several types for a damaged zip
            raise ValueError("digit templates: damaged frame data") from exc
        if (
            lengths.ndim != 1
            or len(labels) != lengths.shape[0]
            or frames.ndim != 2
            or frames.shape[1] != DIM
            or int(lengths.sum()) != frames.shape[0]
            or (lengths < 0).any()
        ):
            raise ValueError("digit templates: inconsistent shapes")
        by_digit: dict[str, list[Frames]] = {}
        offset = 0
        for label, n in zip(labels, lengths, strict=True):
            by_digit.setdefault(label, []).append(np.ascontiguousarray(frames[offset : offset + int(n)]))
            offset += int(n)
        if speaker.ndim != 2:
            raise ValueError("digit templates: inconsistent speaker takes")
        return cls(
            {d: tuple(v) for d, v in by_digit.items()},
            str(header.get("features", "")),
            str(header.get("speaker_encoder", "")) if speaker.shape[0] else "",
            tuple(tuple(float(x) for x in row) for row in speaker),
        )

    def with_speaker_takes(self, encoder: str, embeddings: Sequence[Sequence[float]]) -> DigitTemplates:
        return replace(
            self, speaker_encoder=encoder, speaker_takes=tuple(tuple(map(float, e)) for e in embeddings)
        )


def templates_from_segments(segments: Sequence[tuple[str, Frames]], features: str) -> DigitTemplates:
    """Group (digit, frames) pieces into DigitTemplates, keeping at most the allowed number per digit."""
    by_digit: dict[str, list[Frames]] = {}
    for digit, frames in segments:
        bucket = by_digit.setdefault(digit, [])
        if len(bucket) < MAX_TEMPLATES_PER_DIGIT:
            bucket.append(np.ascontiguousarray(frames, dtype=np.float32))
    return DigitTemplates({d: tuple(v) for d, v in by_digit.items()}, features)
