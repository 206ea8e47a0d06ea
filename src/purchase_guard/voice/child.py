"""Child-voice likelihood: logistic regression on the speaker embedding (numpy only).

A parental guard must not rely on a child never matching an adult's voiceprint, so every
scored utterance also gets a "sounds like a child" likelihood; the verdict rule turns a
child-like voice into CHILD_VOICE and never lets it buy without a challenge.

The weights file (`child_<encoder kind>.json`, packaged beside this module) is written by
scripts/train_child_detector.py from speechocean762-train (children 6-12 vs adults 19+,
speaker-disjoint). Its bias is shifted so that a likelihood of 0.5 is the operating point
chosen on the training speakers: the pipeline's default `child_threshold` (0.5) is right
as is. The value is a ranking score with that one calibrated point, not a probability.
The file names the encoder it was trained on; it is never applied to another encoder's
embeddings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.errors import Unavailable
from purchase_guard.voice.encoder import Embedding

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
OPERATING_POINT = 0.5
FORMAT_VERSION = 1


def _sigmoid(z: float) -> float:
    # Split by sign so exp never overflows.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, eq=False)
class LogisticChildDetector:
    """`likelihood = sigmoid(w . ((x - mean) / scale) + b)` on the L2-normalised embedding."""

    encoder: str
    mean: FloatArray
    scale: FloatArray
    weights: FloatArray
    bias: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.weights.shape[0]
        if self.weights.ndim != 1 or self.mean.shape != (n,) or self.scale.shape != (n,):
            raise ValueError("child detector weights, mean and scale must be vectors of one length")
        if not (np.all(np.isfinite(self.weights)) and np.all(self.scale > 0) and math.isfinite(self.bias)):
            raise ValueError("child detector parameters must be finite, with positive scales")

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def logit(self, embedding: Embedding) -> float:
        x = np.asarray(embedding, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.dim:
            raise ValueError(f"embedding has {x.shape[0]} dimensions, child detector expects {self.dim}")
        norm = float(np.linalg.norm(x))
        if not math.isfinite(norm) or norm == 0.0:
            raise ValueError("embedding is zero or not finite")
        z = (x / norm - self.mean) / self.scale
        return float(z @ self.weights + self.bias)

    def likelihood(self, embedding: Embedding) -> float:
        return _sigmoid(self.logit(embedding))

    # ------------------------------------------------------------------ persistence

    def to_mapping(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": "logistic-regression",
            "encoder": self.encoder,
            "operating_point": OPERATING_POINT,
            "bias": self.bias,
            "weights": [round(float(v), 7) for v in self.weights],
            "mean": [round(float(v), 7) for v in self.mean],
            "scale": [round(float(v), 7) for v in self.scale],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> LogisticChildDetector:
        if doc.get("format") != FORMAT_VERSION or doc.get("kind") != "logistic-regression":
            raise ValueError("not a child detector file of a known format")
        return cls(
            encoder=str(doc["encoder"]),
            mean=np.asarray(doc["mean"], dtype=np.float64),
            scale=np.asarray(doc["scale"], dtype=np.float64),
            weights=np.asarray(doc["weights"], dtype=np.float64),
            bias=float(doc["bias"]),
            meta=dict(doc.get("meta", {})),
        )

    @classmethod
    def load(cls, path: Path) -> LogisticChildDetector:
        try:
            return cls.from_mapping(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"child detector file {path} could not be read: {exc}") from exc


def packaged_detectors() -> list[LogisticChildDetector]:
    """Every `child_*.json` shipped in this package."""
    out = []
    for entry in resources.files("purchase_guard.voice").iterdir():
        if entry.name.startswith("child_") and entry.name.endswith(".json"):
            try:
                out.append(LogisticChildDetector.from_mapping(json.loads(entry.read_text("utf-8"))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise Unavailable(f"packaged child detector {entry.name} is damaged: {exc}") from exc
    return out


def child_detector_for(encoder_name: str, path: Path | None = None) -> LogisticChildDetector | None:
    """The detector trained for `encoder_name` (from `path`, else the packaged ones), or None.

    A file from `path` made for another encoder raises Unavailable: an explicit operator
    choice that cannot apply must stop the start, not silently turn detection off.
    """
    if path is not None:
        det = LogisticChildDetector.load(path)
        if det.encoder != encoder_name:
            raise Unavailable(f"child detector {path} is for encoder {det.encoder}, not {encoder_name}")
        return det
    for det in packaged_detectors():
        if det.encoder == encoder_name:
            return det
    return None
