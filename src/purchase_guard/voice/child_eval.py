"""k-fold-over-speakers evaluation of the child-voice detector, with leave-one-corpus-out checks.

Protocol: the same speaker folds as the verification evaluation (units.assign_folds, K=5,
stratified by corpus, age group and gender). For each fold, a detector is fitted on the
other folds' speakers (child_training.fit_child: inner 4-fold for penalty and thresholds)
and applied to every unit (utterance) of the fold's speakers. Rates are per utterance,
each utterance being one request; intervals resample speakers.

Leave-one-corpus-out: for each adult-only corpus, a detector fitted without that corpus
(all folds) flags its adults: the proxy for adults recorded on a channel never seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from purchase_guard.voice.bootstrap import SpeakerBootstrap, auc, interval
from purchase_guard.voice.child_training import ADULT_TARGETS, ChildSpec, _logits, fit_child
from purchase_guard.voice.units import Table, assign_folds

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def kfold_margins(
    table: Table, spec: ChildSpec, k: int = 5
) -> tuple[dict[str, FloatArray], FloatArray, list[dict[str, Any]]]:
    """Per operating point, each unit's held-out logit minus its fold's threshold (>= 0: flagged)."""
    folds = assign_folds(table.speakers.values(), k)
    fold_of = np.array([folds[s] for s in table.speaker_of])
    margins = {p: np.full(len(table.units), np.nan) for p in ADULT_TARGETS}
    logits = np.full(len(table.units), np.nan)
    info = []
    for f in range(k):
        train = np.flatnonzero(fold_of != f)
        test = np.flatnonzero(fold_of == f)
        model, thr, meta = fit_child(table, train, spec)
        lg = _logits(table, test, spec, model)
        logits[test] = lg - thr["challenge"]
        for p, t in thr.items():
            margins[p][test] = lg - t
        info.append({"fold": f, **meta})
    return margins, logits, info


def _flag_stats(
    boot: SpeakerBootstrap, table: Table, sel: np.ndarray[Any, Any], flagged: np.ndarray[Any, Any]
) -> dict[str, Any]:
    if not sel.any():
        return {"rate": math.nan, "ci": [math.nan, math.nan], "utterances": 0, "speakers": 0}
    spk = boot.idx(table.speaker_of[sel])
    return {
        "rate": float(np.mean(flagged[sel])),
        "ci": list(interval(boot.rate(spk, flagged[sel]))),
        "utterances": int(sel.sum()),
        "speakers": len(set(table.speaker_of[sel])),
    }


def _auc_ci(
    boot: SpeakerBootstrap,
    table: Table,
    pos: np.ndarray[Any, Any],
    neg: np.ndarray[Any, Any],
    scores: FloatArray,
    reps: int = 200,
) -> list[float]:
    ps, ns = scores[pos], scores[neg]
    pspk, nspk = boot.idx(table.speaker_of[pos]), boot.idx(table.speaker_of[neg])
    allv = np.concatenate([ps, ns])
    order = np.argsort(allv, kind="mergesort")
    is_pos = np.concatenate([np.ones(ps.size, bool), np.zeros(ns.size, bool)])[order]
    spk = np.concatenate([pspk, nspk])[order]
    out = []
    for r in range(min(reps, boot.counts.shape[0])):
        w = boot.counts[r][spk]
        wn = np.where(~is_pos, w, 0.0)
        below = np.cumsum(wn) - wn  # weight of negatives strictly before (ties ignored: continuous scores)
        wp = np.where(is_pos, w, 0.0)
        tot = wp.sum() * wn.sum()
        if tot > 0:
            out.append(float((wp * below).sum() / tot))
    return list(interval(np.array(out)))


def summarise(
    table: Table, margins: dict[str, FloatArray], logits: FloatArray, boot: SpeakerBootstrap, k: int
) -> dict[str, Any]:
    groups = np.array([table.speakers[s].group for s in table.speaker_of])
    corpus = table.corpus_of
    folds = assign_folds(table.speakers.values(), k)
    fold_of = np.array([folds[s] for s in table.speaker_of])
    child_corpora = sorted(set(corpus[groups == "child"]))
    out: dict[str, Any] = {"points": {}}
    for p, m in margins.items():
        flagged = m >= 0
        pt: dict[str, Any] = {"adult_rate_chosen": ADULT_TARGETS[p]}
        for g in ("child", "teen", "adult"):
            pt[g] = _flag_stats(boot, table, groups == g, flagged)
        pt["adult_by_corpus"] = {
            c: _flag_stats(boot, table, (groups == "adult") & (corpus == c), flagged)
            for c in sorted(set(corpus[groups == "adult"]))
        }
        pt["adult_same_corpus_as_children"] = _flag_stats(
            boot, table, (groups == "adult") & np.isin(corpus, child_corpora), flagged
        )
        per_fold = []
        for f in range(k):
            row: dict[str, float] = {"fold": float(f)}
            for g in ("child", "teen", "adult"):
                sel = (groups == g) & (fold_of == f)
                row[g] = float(np.mean(flagged[sel])) if sel.any() else math.nan
            per_fold.append(row)
        pt["per_fold"] = per_fold
        worst = max(r["adult"] for r in per_fold)
        pt["worst_fold_adult_rate"] = worst
        pt["within_2x_of_chosen"] = bool(worst <= 2 * ADULT_TARGETS[p])
        out["points"][p] = pt
    kids = groups == "child"
    adults = groups == "adult"
    same = adults & np.isin(corpus, child_corpora)
    out["auc_all_adults"] = auc(logits[kids], logits[adults])
    out["auc_all_adults_ci"] = _auc_ci(boot, table, kids, adults, logits)
    out["auc_same_corpus"] = auc(logits[kids], logits[same])
    out["auc_same_corpus_ci"] = _auc_ci(boot, table, kids, same, logits)
    return out


def leave_one_corpus_out(table: Table, spec: ChildSpec, boot: SpeakerBootstrap) -> dict[str, Any]:
    """For each adult-only corpus: adults flagged by a detector fitted without that corpus."""
    groups = np.array([table.speakers[s].group for s in table.speaker_of])
    corpus = table.corpus_of
    child_corpora = set(corpus[groups == "child"])
    out: dict[str, Any] = {}
    for c in sorted(set(corpus) - child_corpora):
        train = np.flatnonzero(corpus != c)
        test = corpus == c
        model, thr, _ = fit_child(table, train, spec)
        lg = np.full(len(table.units), np.nan)
        lg[test] = _logits(table, np.flatnonzero(test), spec, model)
        out[c] = {p: _flag_stats(boot, table, test, lg >= t) for p, t in thr.items()}
    return out


def evaluate(
    table: Table,
    spec: ChildSpec,
    boot: SpeakerBootstrap,
    k: int = 5,
    loco: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    margins, logits, info = kfold_margins(table, spec, k)
    res = summarise(table, margins, logits, boot, k)
    res["spec"] = {
        "name": spec.name,
        "features": spec.features,
        "pca_dim": spec.pca_dim,
        "adults": spec.adults,
        "acoustic_subset": list(spec.acoustic_subset),
    }
    res["folds"] = info
    if loco:
        res["leave_one_corpus_out"] = leave_one_corpus_out(table, spec, boot)
    c, h = res["points"]["challenge"], res["points"]["high"]
    same = c["adult_same_corpus_as_children"]["rate"]
    log(
        f"  child {spec.name}: challenge children {100 * c['child']['rate']:.1f} % "
        f"adults {100 * c['adult']['rate']:.1f} % (same corpus {100 * same:.1f} %); "
        f"high children {100 * h['child']['rate']:.1f} % adults {100 * h['adult']['rate']:.1f} %; "
        f"AUC {res['auc_same_corpus']:.3f}"
    )
    return res
