"""Scoring back-ends on speaker embeddings: cosine, LDA + WCCN cosine, two-covariance PLDA.

A pretrained encoder's raw cosine treats every direction of its embedding alike, while
some directions mostly carry the channel or the words said. A back-end fitted on
labelled speakers (between- vs within-speaker scatter) weights the directions that
separate speakers. It is small (a mean, one projection, per-dimension PLDA variances),
so it can be fitted on the few hundred speakers we have and checked by k-fold.

Models with several enrolled templates (the individual take embeddings) are scored
- "centroid": cosine to the length-normalised mean of the projected templates;
- "mean": mean of the cosines to each template;
- "plda": PLDA's exact likelihood ratio for n enrollment vectors (uses all of them).

Numpy only at run time; fitted by scripts/fit_voice_backend.py, file `backend_<kind>.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.errors import Unavailable

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
FORMAT_VERSION = 1
KINDS = ("cosine", "lda-wccn", "plda")
COMBINES = ("centroid", "mean", "plda")


def _unit_rows(x: FloatArray) -> FloatArray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(n, 1e-12), dtype=np.float64)


# --------------------------------------------------------------------------- fitting math


def class_scatter(x: FloatArray, labels: Sequence[str]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(global mean, between-class covariance, within-class covariance), each speaker weighted equally.

    Equal weight per speaker keeps a corpus with many takes per speaker (FSDD's joins)
    from dominating the within-speaker directions.
    """
    lab = np.asarray(labels)
    classes = [c for c in np.unique(lab) if np.sum(lab == c) >= 2]
    if len(classes) < 2:
        raise ValueError("need at least two speakers with two or more units each")
    means = np.stack([x[lab == c].mean(axis=0) for c in classes])
    mu = means.mean(axis=0)
    d = x.shape[1]
    within = np.zeros((d, d))
    for c, m in zip(classes, means, strict=True):
        r = x[lab == c] - m
        within += r.T @ r / r.shape[0]
    within /= len(classes)
    dm = means - mu
    between = dm.T @ dm / len(classes)
    return mu, between, within


def fit_lda(
    x: FloatArray, labels: Sequence[str], dim: int, shrink: float = 1e-3
) -> tuple[FloatArray, FloatArray]:
    """(mean, projection D x dim) maximising between- over within-speaker scatter."""
    from scipy.linalg import eigh

    mu, between, within = class_scatter(x, labels)
    reg = within + shrink * np.trace(within) / within.shape[0] * np.eye(within.shape[0])
    vals, vecs = eigh(between, reg)
    order = np.argsort(vals)[::-1][:dim]
    return mu, np.asarray(vecs[:, order], dtype=np.float64)


def wccn(y: FloatArray, labels: Sequence[str], shrink: float = 1e-3) -> FloatArray:
    """Within-class covariance normalisation: the whitening matrix of the within-speaker covariance."""
    _, _, within = class_scatter(y, labels)
    within = within + shrink * np.trace(within) / within.shape[0] * np.eye(within.shape[0])
    vals, vecs = np.linalg.eigh(within)
    return np.asarray(vecs @ np.diag(1.0 / np.sqrt(np.maximum(vals, 1e-12))) @ vecs.T, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Plda:
    """Two-covariance PLDA, in a basis where within-speaker covariance is I and between is diag(psi)."""

    mean: FloatArray  # (p,)
    transform: FloatArray  # (p, p): rows are the simultaneous-diagonalising basis
    psi: FloatArray  # (p,) between-speaker variances in that basis

    def to_basis(self, y: FloatArray) -> FloatArray:
        return np.asarray((y - self.mean) @ self.transform.T, dtype=np.float64)

    def llr(self, probes: FloatArray, enroll_mean: FloatArray, n: FloatArray) -> FloatArray:
        """(n_probes, n_models) log-likelihood ratios; enroll_mean in the PLDA basis, n per model.

        Same speaker: the probe is predicted from the posterior of the speaker given n
        enrollment vectors, N(n psi/(1+n psi) * mean, 1 + psi/(1+n psi)); different speaker:
        N(0, 1 + psi). Both diagonal in this basis.
        """
        psi = self.psi[None, :]
        nn = n[:, None]
        gain = nn * psi / (1.0 + nn * psi)  # (m, p)
        mu_s = gain * enroll_mean  # (m, p)
        var_s = 1.0 + psi / (1.0 + nn * psi)  # (m, p)
        var_d = 1.0 + self.psi  # (p,)
        # sum_d [ -(x-mu)^2/(2 v_s) - log(v_s)/2 + x^2/(2 v_d) + log(v_d)/2 ], expanded for a matrix product.
        x = probes
        inv_s = 1.0 / var_s
        quad = (x * x) @ inv_s.T - 2.0 * x @ (mu_s * inv_s).T + np.sum(mu_s * mu_s * inv_s, axis=1)[None, :]
        const = -0.5 * np.sum(np.log(var_s), axis=1)[None, :] + 0.5 * float(np.sum(np.log(var_d)))
        return np.asarray(-0.5 * quad + 0.5 * ((x * x) @ (1.0 / var_d))[:, None] + const, dtype=np.float64)


def fit_plda(y: FloatArray, labels: Sequence[str], shrink: float = 1e-3) -> Plda:
    """Two-covariance PLDA by moments: within and between covariances, jointly diagonalised."""
    from scipy.linalg import eigh

    mu, between, within = class_scatter(y, labels)
    p = within.shape[0]
    within = within + shrink * np.trace(within) / p * np.eye(p)
    vals, vecs = eigh(between, within)  # vecs.T W vecs = I, vecs.T B vecs = diag(vals)
    return Plda(mean=mu, transform=np.asarray(vecs.T, dtype=np.float64), psi=np.maximum(vals, 1e-6))


# --------------------------------------------------------------------------- the back-end


@dataclass(frozen=True, eq=False)
class ScoringBackend:
    """Projection (+ optional PLDA) of raw embeddings, and how models with templates are scored."""

    encoder: str
    kind: str
    combine: str
    mean: FloatArray  # (D,) subtracted from the L2-normalised embedding
    projection: FloatArray  # (D, p)
    plda: Plda | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.combine not in COMBINES:
            raise ValueError(f"unknown back-end kind {self.kind!r} or combine rule {self.combine!r}")
        if (self.combine == "plda") != (self.plda is not None):
            raise ValueError("the plda combine rule needs PLDA parameters, and only it uses them")
        d, p = self.projection.shape
        if self.mean.shape != (d,):
            raise ValueError("back-end mean and projection do not fit together")
        if not (np.all(np.isfinite(self.projection)) and np.all(np.isfinite(self.mean))):
            raise ValueError("back-end parameters must be finite")
        if self.plda is not None and (
            self.plda.mean.shape != (p,) or self.plda.transform.shape != (p, p) or self.plda.psi.shape != (p,)
        ):
            raise ValueError("PLDA parameters do not fit the projection")

    @property
    def dim(self) -> int:
        return int(self.projection.shape[0])

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.combine}/{self.meta.get('fitted_at', 'unfitted')}"

    def project(self, x: FloatArray) -> FloatArray:
        """Length-normalised projection of raw embeddings (rows)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != self.dim:
            raise ValueError(f"embedding has {x.shape[1]} dimensions, back-end expects {self.dim}")
        return _unit_rows((_unit_rows(x) - self.mean) @ self.projection)

    def score_models(
        self,
        probes: FloatArray,
        models: Sequence[FloatArray],
        weights: Sequence[FloatArray | None] | None = None,
    ) -> FloatArray:
        """(n_probes, n_models) scores; each model is an (n_templates, D) array of raw embeddings.

        `weights` (per model, one per template, or None for equal weights) weigh the templates in
        the centroid and mean rules (adapted templates weigh less, voice/adaptation.py); the PLDA
        rule counts every template as one enrollment vector."""
        y = self.project(probes)
        projected = [self.project(m) for m in models]
        ws = list(weights) if weights is not None else [None] * len(projected)
        if self.combine == "centroid":
            cents = _unit_rows(
                np.stack([np.average(m, axis=0, weights=w) for m, w in zip(projected, ws, strict=True)])
            )
            return np.asarray(y @ cents.T, dtype=np.float64)
        if self.combine == "mean":
            return np.stack(
                [np.average(y @ m.T, axis=1, weights=w) for m, w in zip(projected, ws, strict=True)], axis=1
            )
        assert self.plda is not None
        yb = self.plda.to_basis(y)
        means = np.stack([self.plda.to_basis(m).mean(axis=0) for m in projected])
        n = np.array([m.shape[0] for m in projected], dtype=np.float64)
        return self.plda.llr(yb, means, n)

    def score(self, probe: FloatArray, templates: FloatArray) -> float:
        return float(self.score_models(np.atleast_2d(probe), [np.atleast_2d(templates)])[0, 0])

    # ------------------------------------------------------------------ persistence

    def to_mapping(self) -> dict[str, Any]:
        def arr(a: FloatArray) -> list[Any]:
            return np.round(a, 7).tolist()  # type: ignore[no-any-return]

        doc: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "encoder": self.encoder,
            "kind": self.kind,
            "combine": self.combine,
            "mean": arr(self.mean),
            "projection": arr(self.projection),
            "meta": dict(self.meta),
        }
        if self.plda is not None:
            doc["plda"] = {
                "mean": arr(self.plda.mean),
                "transform": arr(self.plda.transform),
                "psi": arr(self.plda.psi),
            }
        return doc

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> ScoringBackend:
        if doc.get("format") != FORMAT_VERSION:
            raise ValueError("not a scoring back-end file of a known format")
        plda = None
        if "plda" in doc:
            p = doc["plda"]
            plda = Plda(
                np.asarray(p["mean"], dtype=np.float64),
                np.asarray(p["transform"], dtype=np.float64),
                np.asarray(p["psi"], dtype=np.float64),
            )
        return cls(
            encoder=str(doc["encoder"]),
            kind=str(doc["kind"]),
            combine=str(doc["combine"]),
            mean=np.asarray(doc["mean"], dtype=np.float64),
            projection=np.asarray(doc["projection"], dtype=np.float64),
            plda=plda,
            meta=dict(doc.get("meta", {})),
        )

    @classmethod
    def load(cls, path: Path) -> ScoringBackend:
        try:
            return cls.from_mapping(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"scoring back-end {path} could not be read: {exc}") from exc


def identity_backend(encoder: str, dim: int, combine: str = "centroid") -> ScoringBackend:
    """Plain cosine (no fitted parameters)."""
    return ScoringBackend(encoder, "cosine", combine, np.zeros(dim), np.eye(dim), None, {"fitted_at": "none"})


def fit_backend(
    x: FloatArray,
    labels: Sequence[str],
    encoder: str,
    kind: str,
    combine: str,
    lda_dim: int = 100,
    meta: Mapping[str, Any] | None = None,
) -> ScoringBackend:
    """Fit a back-end of `kind` on raw embeddings `x` (rows) of labelled speakers."""
    meta = dict(meta or {})
    xu = _unit_rows(np.asarray(x, dtype=np.float64))
    if kind == "cosine":
        if combine == "plda":
            raise ValueError("the cosine back-end has no PLDA")
        # Centering alone: removes the direction every GE2E embedding shares (they are all
        # non-negative), which otherwise inflates every cosine.
        mu = xu.mean(axis=0)
        return ScoringBackend(encoder, kind, combine, mu, np.eye(x.shape[1]), None, meta)
    dim = min(lda_dim, x.shape[1], len(set(labels)) - 1)
    mu, lda = fit_lda(xu, labels, dim)
    y = (xu - mu) @ lda
    proj = lda @ wccn(y, labels)
    if kind == "lda-wccn":
        if combine == "plda":
            raise ValueError("use kind 'plda' for PLDA scoring")
        return ScoringBackend(encoder, kind, combine, mu, proj, None, meta)
    if kind == "plda":
        y = _unit_rows((xu - mu) @ proj)
        plda = fit_plda(y, labels)
        return ScoringBackend(encoder, kind, "plda", mu, proj, plda, meta)
    raise ValueError(f"unknown back-end kind {kind!r}")


def packaged_backend(encoder: str) -> ScoringBackend | None:
    """The back-end shipped for `encoder` (voice/backend_*.json), or None when there is none."""
    for entry in resources.files("purchase_guard.voice").iterdir():
        if entry.name.startswith("backend_") and entry.name.endswith(".json"):
            try:
                b = ScoringBackend.from_mapping(json.loads(entry.read_text("utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise Unavailable(f"packaged scoring back-end {entry.name} is damaged: {exc}") from exc
            if b.encoder == encoder:
                return b
    return None
