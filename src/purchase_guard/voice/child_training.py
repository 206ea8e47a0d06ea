"""Fitting and measuring the child-voice detector (used by scripts/train_child_detector.py
and by the speaker evaluation; not by the server, which only loads the weights).

Method (docs/voice.md):
- speakers, not utterances, are split: within each class (children 6-12, adults 19+) the
  sorted speaker list alternates between "train" and "heldout"; 13-15 year olds are kept
  out of training and reported on their own;
- on the training speakers, L2-regularised logistic regression (classes weighted equally)
  with the penalty picked by speaker-grouped 5-fold cross-validation; the out-of-fold
  scores also set the operating threshold: by default the equal-error point; the
  "recall" rule instead lowers it until 95 % of training children are flagged (measured
  with GE2E: that flags about three quarters of adults, so every adult purchase would be
  challenged; docs/voice.md has both figures);
- the final model is refit on all training speakers and its bias shifted so that the
  likelihood is 0.5 exactly at that threshold;
- accuracy is reported on the held-out speakers only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from purchase_guard.voice.child import LogisticChildDetector

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
CHILD_MAX_AGE = 12
ADULT_MIN_AGE = 19
TEEN_AGES = range(13, 16)
TARGET_CHILD_RECALL = 0.95
PENALTIES = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class Sample:
    """One utterance's embedding with its speaker and age (no audio)."""

    speaker: str
    utt_id: str
    age: int
    speech_s: float
    embedding: FloatArray

    @property
    def is_child(self) -> bool:
        return self.age <= CHILD_MAX_AGE


def age_class(age: int) -> str:
    if age <= CHILD_MAX_AGE:
        return "child"
    if age >= ADULT_MIN_AGE:
        return "adult"
    return "teen" if age in TEEN_AGES else "other"


def split_speakers(ages: Mapping[str, int]) -> dict[str, str]:
    """speaker -> "train" | "heldout" | "teen" | "other": alternate within each class."""
    out: dict[str, str] = {}
    for cls in ("child", "adult"):
        speakers = sorted(s for s, a in ages.items() if age_class(a) == cls)
        for i, s in enumerate(speakers):
            out[s] = "train" if i % 2 == 0 else "heldout"
    for s, a in ages.items():
        if age_class(a) in ("teen", "other"):
            out[s] = age_class(a)
    return out


def _standardise(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1e-6
    return mean, scale


def _unit_rows(x: FloatArray) -> FloatArray:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float64)


def fit_logistic(
    x: FloatArray, y: FloatArray, penalty: float
) -> tuple[FloatArray, float, FloatArray, FloatArray]:
    """(weights, bias, mean, scale) minimising class-balanced log loss + penalty/2 * |w|^2."""
    from scipy.optimize import minimize

    xu = _unit_rows(x)
    mean, scale = _standardise(xu)
    z = (xu - mean) / scale
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need both children and adults to fit")
    sw = np.where(y > 0.5, 0.5 / n_pos, 0.5 / n_neg)

    def loss(theta: FloatArray) -> tuple[float, FloatArray]:
        w, b = theta[:-1], theta[-1]
        s = z @ w + b
        # log(1 + exp(-s)) for positives, log(1 + exp(s)) for negatives, computed stably.
        sign = np.where(y > 0.5, -1.0, 1.0)
        ls = np.logaddexp(0.0, sign * s)
        p = 1.0 / (1.0 + np.exp(-s))
        g = sw * (p - y)
        value = float(sw @ ls + 0.5 * penalty * float(w @ w))
        grad = np.concatenate([z.T @ g + penalty * w, [g.sum()]])
        return value, grad

    res = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    theta = np.asarray(res.x, dtype=np.float64)
    return theta[:-1], float(theta[-1]), mean, scale


def _scores(x: FloatArray, w: FloatArray, b: float, mean: FloatArray, scale: FloatArray) -> FloatArray:
    return np.asarray(((_unit_rows(x) - mean) / scale) @ w + b, dtype=np.float64)


def _folds(speakers: Sequence[str], k: int) -> list[set[str]]:
    ordered = sorted(set(speakers))
    return [set(ordered[i::k]) for i in range(k)]


def out_of_fold(samples: Sequence[Sample], penalty: float, k: int = 5) -> FloatArray:
    """Logit of each sample from a model that never saw its speaker."""
    x = np.stack([s.embedding for s in samples])
    y = np.array([1.0 if s.is_child else 0.0 for s in samples])
    spk = [s.speaker for s in samples]
    # Folds are built per class so every fold has children and adults.
    folds = [set[str]() for _ in range(k)]
    for cls in (True, False):
        for i, f in enumerate(_folds([s.speaker for s in samples if s.is_child is cls], k)):
            folds[i] |= f
    out = np.zeros(len(samples))
    for fold in folds:
        test = np.array([s in fold for s in spk])
        w, b, m, sc = fit_logistic(x[~test], y[~test], penalty)
        out[test] = _scores(x[test], w, b, m, sc)
    return out


def _auc(pos: FloatArray, neg: FloatArray) -> float:
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def choose_threshold(
    child_scores: FloatArray, adult_scores: FloatArray, rule: str = "eer"
) -> tuple[float, str]:
    """The operating threshold on out-of-fold training scores.

    "eer": the equal-error point. "recall": the EER point, but lowered to the score that
    still flags TARGET_CHILD_RECALL of the children when the EER point flags fewer.
    """
    cand = np.unique(np.concatenate([child_scores, adult_scores]))
    recall = np.array([np.mean(child_scores >= t) for t in cand])
    fpr = np.array([np.mean(adult_scores >= t) for t in cand])
    k = int(np.argmin(np.abs((1 - recall) - fpr)))
    t_eer = float(cand[k])
    t_recall = float(np.quantile(child_scores, 1.0 - TARGET_CHILD_RECALL, method="lower"))
    if rule == "eer" or t_eer <= t_recall:
        return t_eer, "equal-error point on out-of-fold training scores"
    return t_recall, f"score flagging {TARGET_CHILD_RECALL:.0%} of training children (below the EER point)"


def rates(flags_child: Sequence[bool], flags_adult: Sequence[bool]) -> dict[str, float]:
    return {
        "children_flagged": float(np.mean(flags_child)) if len(flags_child) else math.nan,
        "adults_flagged": float(np.mean(flags_adult)) if len(flags_adult) else math.nan,
        "n_child": float(len(flags_child)),
        "n_adult": float(len(flags_adult)),
    }


def measure(det: LogisticChildDetector, samples: Sequence[Sample], pin_max_s: float = 2.5) -> dict[str, Any]:
    """Utterance- and speaker-level flag rates of `det` at its operating point (0.5)."""
    lik = {s.utt_id: det.likelihood(s.embedding.astype(np.float32)) for s in samples}
    out: dict[str, Any] = {}
    kids = [s for s in samples if age_class(s.age) == "child"]
    adults = [s for s in samples if age_class(s.age) == "adult"]
    teens = [s for s in samples if age_class(s.age) == "teen"]
    out["utterances"] = rates([lik[s.utt_id] >= 0.5 for s in kids], [lik[s.utt_id] >= 0.5 for s in adults])
    out["pin_length_utterances"] = rates(
        [lik[s.utt_id] >= 0.5 for s in kids if s.speech_s <= pin_max_s],
        [lik[s.utt_id] >= 0.5 for s in adults if s.speech_s <= pin_max_s],
    )

    def by_speaker(group: Sequence[Sample]) -> list[bool]:
        per: dict[str, list[float]] = {}
        for s in group:
            per.setdefault(s.speaker, []).append(lik[s.utt_id])
        # A speaker counts as flagged when most of their utterances are.
        return [float(np.mean([v >= 0.5 for v in vs])) > 0.5 for vs in per.values()]

    out["speakers_majority"] = rates(by_speaker(kids), by_speaker(adults))
    out["teens_13_15_flagged"] = float(np.mean([lik[s.utt_id] >= 0.5 for s in teens])) if teens else math.nan
    out["n_teen_utterances"] = len(teens)
    if kids and adults:
        out["auc"] = _auc(np.array([lik[s.utt_id] for s in kids]), np.array([lik[s.utt_id] for s in adults]))
    return out


def train(
    samples: Sequence[Sample], encoder: str, corpus: str, rule: str = "eer"
) -> tuple[LogisticChildDetector, dict[str, Any]]:
    """Fit on `samples` (training speakers only), return the detector and how it was chosen."""
    usable = [s for s in samples if age_class(s.age) in ("child", "adult")]
    cv: dict[str, float] = {}
    best_pen, best_auc = PENALTIES[0], -1.0
    oof_best = np.zeros(0)
    for pen in PENALTIES:
        oof = out_of_fold(usable, pen)
        pos = oof[[s.is_child for s in usable]]
        neg = oof[[not s.is_child for s in usable]]
        auc = _auc(pos, neg)
        cv[f"{pen:g}"] = auc
        if auc > best_auc:
            best_pen, best_auc, oof_best = pen, auc, oof
    is_child = np.array([s.is_child for s in usable])
    threshold, rule_text = choose_threshold(oof_best[is_child], oof_best[~is_child], rule)
    x = np.stack([s.embedding for s in usable])
    y = is_child.astype(np.float64)
    w, b, mean, scale = fit_logistic(x, y, best_pen)
    meta = {
        "trained_on": corpus,
        "classes": f"children {CHILD_MAX_AGE} and under vs adults {ADULT_MIN_AGE}+",
        "penalty": best_pen,
        "cv_auc_by_penalty": cv,
        "threshold_rule": rule_text,
        "training_oof_children_flagged": float(np.mean(oof_best[is_child] >= threshold)),
        "training_oof_adults_flagged": float(np.mean(oof_best[~is_child] >= threshold)),
        "training_speakers": sorted({s.speaker for s in usable}),
        "training_utterances": sorted(s.utt_id for s in usable),
    }
    # Shift so the chosen threshold sits at likelihood 0.5.
    det = LogisticChildDetector(
        encoder=encoder, mean=mean, scale=scale, weights=w, bias=b - threshold, meta=meta
    )
    return det, meta


# =========================================================================== format 2: k-fold, acoustics
#
# What scripts/train_child_detector.py and the k-fold evaluation use. Units come from
# voice/units.Table (every corpus: children only in speechocean762, adults in all).

ADULT_TARGETS = {"challenge": 0.05, "high": 0.01}  # adult flag rates the two points are chosen for
RULE_MIN_SPEAKERS = 20  # an adult corpus sets the thresholds only with this many speakers
CHILD_PENALTIES = (0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class ChildSpec:
    """How a child detector is built: which features, which adults, which operating rates."""

    name: str
    features: str = "pca+acoustic"  # embedding | pca | acoustic | pca+acoustic
    pca_dim: int = 16
    adults: str = "all"  # speechocean (same corpus as the children only) | all
    acoustic_subset: tuple[str, ...] = ()  # () = every acoustic measure


def _weighted_logistic(
    z: FloatArray, y: FloatArray, sw: FloatArray, penalty: float
) -> tuple[FloatArray, float]:
    from scipy.optimize import minimize

    sw = sw / sw.sum()

    def loss(theta: FloatArray) -> tuple[float, FloatArray]:
        w, b = theta[:-1], theta[-1]
        s = z @ w + b
        sign = np.where(y > 0.5, -1.0, 1.0)
        p = 1.0 / (1.0 + np.exp(-s))
        g = sw * (p - y)
        value = float(sw @ np.logaddexp(0.0, sign * s) + 0.5 * penalty * float(w @ w))
        return value, np.concatenate([z.T @ g + penalty * w, [g.sum()]])

    res = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 3000})
    theta = np.asarray(res.x, dtype=np.float64)
    return theta[:-1], float(theta[-1])


def _unit_emb(x: FloatArray) -> FloatArray:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float64)


def _acoustic_columns(spec: ChildSpec) -> list[int]:
    from purchase_guard.voice.acoustic import FEATURE_NAMES

    names = spec.acoustic_subset or FEATURE_NAMES
    return [FEATURE_NAMES.index(n) for n in names]


def _training_rows(
    table: Any, rows: np.ndarray[Any, Any], spec: ChildSpec
) -> tuple[Any, FloatArray, FloatArray]:
    """Rows usable for training (children and adults), labels and sample weights.

    Weights: children and adults weigh half each; within a class every speaker weighs the
    same. With adults from several corpora, speechocean762's adults (recorded like the
    children) keep half of the adult weight, so the recording channel alone cannot
    separate the classes.
    """
    groups = np.array([table.speakers[s].group for s in table.speaker_of[rows]])
    corpus = table.corpus_of[rows]
    child_corpora = set(corpus[groups == "child"])
    keep = (groups == "child") | (groups == "adult")
    if spec.adults == "speechocean":
        keep &= (groups == "child") | np.isin(corpus, sorted(child_corpora))
    rows, groups, corpus = rows[keep], groups[keep], corpus[keep]
    y = (groups == "child").astype(np.float64)
    spk = table.speaker_of[rows]
    w = np.zeros(rows.size)
    for cls_mask, share in ((y > 0.5, 0.5), (y < 0.5, 0.5)):
        same = cls_mask & np.isin(corpus, sorted(child_corpora))
        other = cls_mask & ~same
        parts = [(same, share)] if not other.any() else [(same, share / 2), (other, share / 2)]
        if not same.any():
            parts = [(other, share)]
        for m, part in parts:
            speakers = np.unique(spk[m])
            for s in speakers:
                sm = m & (spk == s)
                w[sm] = part / len(speakers) / sm.sum()
    return rows, y, w


def _design(
    table: Any,
    rows: np.ndarray[Any, Any],
    spec: ChildSpec,
    center: FloatArray | None,
    proj: FloatArray | None,
    fill: FloatArray | None,
) -> FloatArray:
    parts = []
    if spec.features in ("embedding", "pca", "pca+acoustic"):
        e = _unit_emb(table.emb[rows])
        parts.append(e if proj is None or center is None else (e - center) @ proj)
    if spec.features in ("acoustic", "pca+acoustic"):
        a = table.acoustic[rows][:, _acoustic_columns(spec)]
        assert fill is not None
        parts.append(np.where(np.isfinite(a), a, fill[None, :]))
    return np.concatenate(parts, axis=1)


def _fit_once(table: Any, rows: np.ndarray[Any, Any], spec: ChildSpec, penalty: float) -> dict[str, Any]:
    rows, y, w = _training_rows(table, rows, spec)
    center = proj = fill = None
    if spec.features in ("pca", "pca+acoustic"):
        e = _unit_emb(table.emb[rows])
        center = np.average(e, axis=0, weights=w)
        # Principal axes from the (dim x dim) weighted covariance: an SVD of the (units x dim)
        # matrix gives the same axes but took seconds per fit here (BLAS threads under load).
        d = e - center
        vals, vecs = np.linalg.eigh((d * w[:, None]).T @ d)
        proj = vecs[:, np.argsort(vals)[::-1][: spec.pca_dim]]
    if spec.features in ("acoustic", "pca+acoustic"):
        a = table.acoustic[rows][:, _acoustic_columns(spec)]
        fill = np.array(
            [np.nanmedian(a[:, j]) if np.isfinite(a[:, j]).any() else 0.0 for j in range(a.shape[1])]
        )
    x = _design(table, rows, spec, center, proj, fill)
    mean = np.average(x, axis=0, weights=w)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    scale[scale < 1e-6] = 1e-6
    wts, b = _weighted_logistic((x - mean) / scale, y, w, penalty)
    return {"center": center, "proj": proj, "fill": fill, "mean": mean, "scale": scale, "w": wts, "b": b}


def _logits(table: Any, rows: np.ndarray[Any, Any], spec: ChildSpec, m: Mapping[str, Any]) -> FloatArray:
    x = _design(table, rows, spec, m["center"], m["proj"], m["fill"])
    return np.asarray(((x - m["mean"]) / m["scale"]) @ m["w"] + m["b"], dtype=np.float64)


def _thresholds(table: Any, rows: np.ndarray[Any, Any], logits: FloatArray) -> dict[str, float]:
    """Per operating point: the highest over adult corpora of the score flagging that share of its adults."""
    groups = np.array([table.speakers[s].group for s in table.speaker_of[rows]])
    corpus = table.corpus_of[rows]
    out: dict[str, float] = {}
    for point, rate in ADULT_TARGETS.items():
        best = -math.inf
        for c in np.unique(corpus[groups == "adult"]):
            m = (groups == "adult") & (corpus == c)
            if len(set(table.speaker_of[rows][m])) >= RULE_MIN_SPEAKERS:
                best = max(best, float(np.quantile(logits[m], 1.0 - rate)))
        if not math.isfinite(best):
            best = float(np.quantile(logits[groups == "adult"], 1.0 - rate))
        out[point] = best
    return out


def fit_child(
    table: Any, rows: np.ndarray[Any, Any], spec: ChildSpec, k_inner: int = 4
) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """Model, thresholds (logit per operating point) and how they were chosen, from `rows` only.

    The penalty and both thresholds are chosen on out-of-fold logits of an inner k-fold over
    the speakers of `rows`; the final model is refitted on all of them.
    """
    from purchase_guard.voice.bootstrap import auc
    from purchase_guard.voice.units import assign_folds

    speakers = sorted(set(table.speaker_of[rows]))
    folds = assign_folds([table.speakers[s] for s in speakers], k_inner, seed=f"child-inner-{len(speakers)}")
    fold_of = np.array([folds[s] for s in table.speaker_of[rows]])
    groups = np.array([table.speakers[s].group for s in table.speaker_of[rows]])
    child_corpora = set(table.corpus_of[rows][groups == "child"])
    same_corpus = np.isin(table.corpus_of[rows], sorted(child_corpora))
    best: tuple[float, float, FloatArray] = (-1.0, CHILD_PENALTIES[0], np.zeros(0))
    cv: dict[str, float] = {}
    for pen in CHILD_PENALTIES:
        oof = np.full(rows.size, np.nan)
        for f in range(k_inner):
            m = _fit_once(table, rows[fold_of != f], spec, pen)
            oof[fold_of == f] = _logits(table, rows[fold_of == f], spec, m)
        # Penalty by AUC within the children's own corpus: the channel cannot help there.
        a = auc(oof[(groups == "child")], oof[(groups == "adult") & same_corpus])
        cv[f"{pen:g}"] = a
        if a > best[0]:
            best = (a, pen, oof)
    _, pen, oof = best
    thresholds = _thresholds(table, rows, oof)
    model = _fit_once(table, rows, spec, pen)
    info = {
        "penalty": pen,
        "inner_cv_auc_by_penalty": cv,
        "inner_oof_children_flagged": {
            p: float(np.mean(oof[groups == "child"] >= t)) for p, t in thresholds.items()
        },
        "inner_oof_adults_flagged": {
            p: float(np.mean(oof[groups == "adult"] >= t)) for p, t in thresholds.items()
        },
    }
    return model, thresholds, info


def to_detector(
    encoder: str,
    spec: ChildSpec,
    model: Mapping[str, Any],
    thresholds: Mapping[str, float],
    meta: Mapping[str, Any],
) -> LogisticChildDetector:
    """Runtime detector with its bias shifted so the challenge threshold sits at likelihood 0.5."""
    from purchase_guard.voice.acoustic import FEATURE_NAMES
    from purchase_guard.voice.child import _sigmoid

    if spec.acoustic_subset and spec.features in ("acoustic", "pca+acoustic"):
        raise ValueError("a shipped detector uses every acoustic measure (the runtime computes all of them)")
    shift = thresholds["challenge"]
    fill = model["fill"]
    if spec.features == "acoustic":
        raise ValueError("the runtime detector needs an embedding part")
    return LogisticChildDetector(
        encoder=encoder,
        mean=np.asarray(model["mean"]),
        scale=np.asarray(model["scale"]),
        weights=np.asarray(model["w"]),
        bias=float(model["b"]) - shift,
        meta={**meta, "acoustic_features": list(FEATURE_NAMES) if fill is not None else []},
        emb_center=model["center"],
        emb_projection=model["proj"],
        acoustic_fill=None if fill is None else np.asarray(fill),
        operating_points={
            p: (0.5 if p == "challenge" else _sigmoid(t - shift)) for p, t in thresholds.items()
        },
    )
