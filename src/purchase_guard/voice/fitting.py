"""Fitting the shipped verification system and child detector on every speaker of the data.

Used by scripts/calibrate_voice.py and scripts/train_child_detector.py. A few speakers are
held back from both fits (`SMOKE_SPEAKERS`) so the data tests can check the shipped files
on voices they were not fitted on; every file records what it was fitted on (speakers per
corpus and group, corpora, date, git commit) and the k-fold figures live in docs/voice.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.voice.child import LogisticChildDetector
from purchase_guard.voice.child_training import ChildSpec, fit_child, to_detector
from purchase_guard.voice.evaluation import BAND_EDGES
from purchase_guard.voice.kfold import SystemSpec, build_trials, fit_system
from purchase_guard.voice.units import Table

# Held out of every shipped fit for tests/data: 2 children, 2 adults of speechocean762 and
# 2 LibriSpeech train-clean adults (one woman, one man), chosen by the rule below.
SMOKE_RULE = "first 2 children and 2 adults of speechocean762 and first woman and man of train-clean by key"


def smoke_speakers(table: Table) -> list[str]:
    chosen: list[str] = []
    infos = sorted(table.speakers.values(), key=lambda s: s.key)
    for corpus_part, group, n in (("speechocean", "child", 2), ("speechocean", "adult", 2)):
        chosen += [s.key for s in infos if corpus_part in s.corpus and s.group == group][:n]
    for gender in ("f", "m"):
        chosen += [s.key for s in infos if "train-clean" in s.corpus and s.gender == gender][:1]
    return chosen


def provenance(table: Table, used: set[str], commit: str) -> dict[str, Any]:
    by: dict[str, dict[str, int]] = {}
    for k in sorted(used):
        s = table.speakers[k]
        d = by.setdefault(s.corpus, {})
        d[s.group] = d.get(s.group, 0) + 1
    return {
        "speakers": len(used),
        "speakers_by_corpus_and_group": by,
        "corpora": sorted({table.speakers[k].corpus for k in used}),
        "units": int(np.isin(table.speaker_of, sorted(used)).sum()),
        "vad": table.vad,
        "encoder": table.encoder,
        "date": dt.date.today().isoformat(),
        "git_commit": commit,
        "held_out_for_tests": sorted(set(table.speakers) - used),
        "held_out_rule": SMOKE_RULE,
    }


def fit_shipped_system(
    table: Table,
    spec: SystemSpec,
    commit: str,
    log: Callable[[str], None] = print,
    used: set[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(thresholds.json entry, back-end document or None) fitted on all but the smoke speakers,
    or on `used` only (the household benchmark fits one system per fold this way)."""
    if used is None:
        used = set(table.speakers) - set(smoke_speakers(table))
    trials = build_trials(table)
    fitted_at = f"{dt.date.today().isoformat()}-{commit[:10]}"
    system = fit_system(spec, trials, used, k_inner=5, seed="shipped")
    prov = provenance(table, used, commit)
    backend_doc = None
    backend_name = "cosine/centroid/none"
    if spec.backend != "raw":
        b = system.backend
        meta = {**dict(b.meta), "fitted_at": fitted_at, "spec": spec.name, **prov}
        b = type(b)(b.encoder, b.kind, b.combine, b.mean, b.projection, b.plda, meta)
        backend_doc = b.to_mapping()
        backend_name = b.name
    elif spec.combine != "centroid":
        backend_name = f"cosine/{spec.combine}/none"
    bands = []
    for name, edge in BAND_EDGES:
        bands.append(
            {
                "name": name,
                "max_speech_s": None if edge == float("inf") else edge,
                "threshold": round(system.thresholds[name], 5),
            }
        )
    entry = {
        "rule": (
            f"per band: lowest threshold with FMR <= {spec.target_fmr:g} on out-of-fold scores of an inner "
            f"5-fold over the fitting speakers ({spec.rule} over corpora)"
        ),
        "system": spec.name,
        "vad": table.vad,
        "backend": backend_name,
        "quality": system.quality.to_mapping() if system.quality is not None else None,
        "bands": bands,
        "fitted_on": prov,
    }
    log(f"thresholds: {system.thresholds}")
    return entry, backend_doc


def fit_shipped_child(
    table: Table,
    spec: ChildSpec,
    commit: str,
    log: Callable[[str], None] = print,
    used: set[str] | None = None,
) -> LogisticChildDetector:
    """The child detector fitted on all but the smoke speakers, or on `used` only."""
    if used is None:
        used = set(table.speakers) - set(smoke_speakers(table))
    rows = np.flatnonzero(np.isin(table.speaker_of, sorted(used)))
    model, thresholds, info = fit_child(table, rows, spec, k_inner=5)
    meta = {
        "spec": {
            "name": spec.name,
            "features": spec.features,
            "pca_dim": spec.pca_dim,
            "adults": spec.adults,
        },
        "classes": "children 12 and under (1) vs adults (0); 13-15 year olds not trained on",
        "operating_point_rule": (
            "per point, the highest over adult corpora with >= 20 speakers of the out-of-fold score that "
            "flags the chosen share of that corpus's adults (challenge 5 %, high 1 %), inner 5-fold"
        ),
        "thresholds_logit": thresholds,
        **info,
        **provenance(table, used, commit),
    }
    log(
        f"child thresholds {thresholds}; inner out-of-fold children {info['inner_oof_children_flagged']}, "
        f"adults {info['inner_oof_adults_flagged']}"
    )
    return to_detector(table.encoder, spec, model, thresholds, meta)


def write_json(path: Path, doc: Any) -> None:
    import json

    path.write_text(json.dumps(doc, indent=1) + "\n", "utf-8")
