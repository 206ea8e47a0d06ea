"""Child-voice likelihood: logistic regression on the speaker embedding and acoustic measures (numpy only).

A parental guard must not rely on a child never matching an adult's voiceprint, so every
scored utterance also gets a "sounds like a child" likelihood; the verdict rule turns a
child-like voice into CHILD_VOICE and never lets it buy without a challenge.

The weights file (`child_<encoder kind>.json`, packaged beside this module) is written by
scripts/train_child_detector.py (method and figures: docs/voice.md). Format 2 adds, to
format 1's logistic regression on the whole embedding, an optional projection of the
embedding (PCA fitted on the training speakers) and the acoustic measures of
voice/acoustic.py (pitch, formants, spectral shape), which need the utterance's samples:
such a detector has `uses_audio` set and must be called with them.

The bias is shifted so that a likelihood of 0.5 is the default ("challenge") operating
point: the pipeline's default `child_threshold` (0.5) is right as is. `operating_points`
also names a stricter "high" point (few adults above it) for routing a verified adult
whose voice is very child-like to a parent's approval. The value is a ranking score with
those calibrated points, not a probability. The file names the encoder it was trained on;
it is never applied to another encoder's embeddings.
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
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)


def _sigmoid(z: float) -> float:
    # Split by sign so exp never overflows.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, eq=False)
class LogisticChildDetector:
    """`likelihood = sigmoid(w . ((f - mean) / scale) + b)`.

    f is the L2-normalised embedding (format 1), or its projection
    `(e - emb_center) @ emb_projection`, followed by the acoustic measures (nan replaced
    by `acoustic_fill`) when `acoustic_fill` is set.
    """

    encoder: str
    mean: FloatArray
    scale: FloatArray
    weights: FloatArray
    bias: float
    meta: Mapping[str, Any] = field(default_factory=dict)
    emb_center: FloatArray | None = None
    emb_projection: FloatArray | None = None  # (embedding dim, k)
    acoustic_fill: FloatArray | None = None  # (acoustic.N_FEATURES,)
    operating_points: Mapping[str, float] = field(default_factory=lambda: {"challenge": OPERATING_POINT})

    def __post_init__(self) -> None:
        n = self.weights.shape[0]
        if self.weights.ndim != 1 or self.mean.shape != (n,) or self.scale.shape != (n,):
            raise ValueError("child detector weights, mean and scale must be vectors of one length")
        if not (np.all(np.isfinite(self.weights)) and np.all(self.scale > 0) and math.isfinite(self.bias)):
            raise ValueError("child detector parameters must be finite, with positive scales")
        if (self.emb_center is None) != (self.emb_projection is None):
            raise ValueError("an embedding projection needs its centre")
        if (
            self.emb_projection is not None
            and self.emb_center is not None
            and self.emb_center.shape != (self.emb_projection.shape[0],)
        ):
            raise ValueError("embedding centre and projection do not fit together")
        if n != self._emb_features + self._n_acoustic:
            raise ValueError("child detector weights do not match its features")
        points = dict(self.operating_points)
        if points.get("challenge") != OPERATING_POINT or not all(0.0 < v < 1.0 for v in points.values()):
            raise ValueError("operating points must be in (0, 1) with 'challenge' at 0.5")

    @property
    def _n_acoustic(self) -> int:
        return 0 if self.acoustic_fill is None else int(self.acoustic_fill.shape[0])

    @property
    def _emb_features(self) -> int:
        if self.emb_projection is not None:
            return int(self.emb_projection.shape[1])
        return int(self.weights.shape[0]) - self._n_acoustic

    @property
    def uses_audio(self) -> bool:
        """True when the acoustic measures (hence the utterance's samples) are needed."""
        return self.acoustic_fill is not None

    @property
    def dim(self) -> int:
        """Dimension of the embedding this detector expects."""
        if self.emb_projection is not None:
            return int(self.emb_projection.shape[0])
        return self._emb_features

    def features(self, embedding: Embedding, acoustic_features: FloatArray | None = None) -> FloatArray:
        x = np.asarray(embedding, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.dim:
            raise ValueError(f"embedding has {x.shape[0]} dimensions, child detector expects {self.dim}")
        norm = float(np.linalg.norm(x))
        if not math.isfinite(norm) or norm == 0.0:
            raise ValueError("embedding is zero or not finite")
        f = x / norm
        if self.emb_projection is not None and self.emb_center is not None:
            f = (f - self.emb_center) @ self.emb_projection
        if self.acoustic_fill is not None:
            if acoustic_features is None:
                raise ValueError("this child detector needs the acoustic measures of the utterance")
            a = np.asarray(acoustic_features, dtype=np.float64).reshape(-1)
            if a.shape != self.acoustic_fill.shape:
                raise ValueError("acoustic measures of the wrong length")
            f = np.concatenate([f, np.where(np.isfinite(a), a, self.acoustic_fill)])
        return np.asarray(f, dtype=np.float64)

    def logit(self, embedding: Embedding, acoustic_features: FloatArray | None = None) -> float:
        z = (self.features(embedding, acoustic_features) - self.mean) / self.scale
        return float(z @ self.weights + self.bias)

    def likelihood(self, embedding: Embedding, acoustic_features: FloatArray | None = None) -> float:
        return _sigmoid(self.logit(embedding, acoustic_features))

    def likelihood_audio(self, embedding: Embedding, samples: np.ndarray[Any, Any]) -> float:
        """Likelihood from the embedding and the (silence-trimmed) samples it was computed from."""
        if not self.uses_audio:
            return self.likelihood(embedding)
        from purchase_guard.voice.acoustic import features

        return self.likelihood(embedding, features(samples))

    # ------------------------------------------------------------------ persistence

    def to_mapping(self) -> dict[str, Any]:
        def arr(a: FloatArray) -> list[Any]:
            return np.round(a, 7).tolist()  # type: ignore[no-any-return]

        doc: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "kind": "logistic-regression",
            "encoder": self.encoder,
            "operating_point": OPERATING_POINT,
            "operating_points": dict(self.operating_points),
            "bias": self.bias,
            "weights": arr(self.weights),
            "mean": arr(self.mean),
            "scale": arr(self.scale),
            "meta": dict(self.meta),
        }
        if self.emb_projection is not None and self.emb_center is not None:
            doc["emb_center"] = arr(self.emb_center)
            doc["emb_projection"] = arr(self.emb_projection)
        if self.acoustic_fill is not None:
            doc["acoustic_fill"] = arr(self.acoustic_fill)
        return doc

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> LogisticChildDetector:
        if doc.get("format") not in READABLE_FORMATS or doc.get("kind") != "logistic-regression":
            raise ValueError("not a child detector file of a known format")

        def opt(key: str) -> FloatArray | None:
            return np.asarray(doc[key], dtype=np.float64) if key in doc else None

        return cls(
            encoder=str(doc["encoder"]),
            mean=np.asarray(doc["mean"], dtype=np.float64),
            scale=np.asarray(doc["scale"], dtype=np.float64),
            weights=np.asarray(doc["weights"], dtype=np.float64),
            bias=float(doc["bias"]),
            meta=dict(doc.get("meta", {})),
            emb_center=opt("emb_center"),
            emb_projection=opt("emb_projection"),
            acoustic_fill=opt("acoustic_fill"),
            operating_points={
                k: float(v) for k, v in doc.get("operating_points", {"challenge": 0.5}).items()
            },
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
