"""`purchase-guard eval speakers`: held-out accuracy by k-fold over speakers (docs/voice.md).

Reports, for the shipped system (or the ones named with --compare), per band (pin <= 2.5 s,
command 2.5-6 s, long), corpus and group (age group, gender): FRR and FMR at the
threshold a fold's own system chose (fitted without that fold's speakers), FRR at FMR
1e-3 and 1e-4, EER, 95 % speaker-bootstrap intervals; group FRR disparities; leave-one-
corpus-out threshold transfer; and the child detector's flag rates per fold with AUC.
Writes speaker_eval.json and speaker_eval.md under --out and prints the tables.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.voice.bootstrap import SpeakerBootstrap
from purchase_guard.voice.child_training import ChildSpec
from purchase_guard.voice.evaluation import BAND_NAMES, discover_corpora
from purchase_guard.voice.kfold import (
    HeldOut,
    SystemSpec,
    Trials,
    build_trials,
    evaluate_kfold,
    fit_system,
    system_scores,
)
from purchase_guard.voice.kfold_report import disparities, format_rows, targets, verification_rows
from purchase_guard.voice.units import Table, measure
from purchase_guard.voice.vad import EnergyVad, SpeechDetector

K = 5
# The systems compared in docs/voice.md ("what was tried"); the first is the baseline.
SYSTEMS: dict[str, SystemSpec] = {
    s.name: s
    for s in (
        SystemSpec("raw-centroid", "raw", "centroid"),
        SystemSpec("raw-mean", "raw", "mean"),
        SystemSpec("cosine-centroid", "cosine", "centroid"),
        SystemSpec("lda-wccn-centroid", "lda-wccn", "centroid", lda_dim=100),
        SystemSpec("lda-wccn-mean", "lda-wccn", "mean", lda_dim=100),
        SystemSpec("lda60-wccn-centroid", "lda-wccn", "centroid", lda_dim=60),
        SystemSpec("plda", "plda", "plda", lda_dim=100),
        SystemSpec("plda-lda60", "plda", "plda", lda_dim=60),
        SystemSpec("raw-centroid-worst", "raw", "centroid", rule="worst-corpus"),
        SystemSpec("asnorm100-worst", "raw", "centroid", rule="worst-corpus", asnorm_k=100),
        SystemSpec("asnorm300-worst", "raw", "centroid", rule="worst-corpus", asnorm_k=300),
        SystemSpec("asnorm300", "raw", "centroid", asnorm_k=300),
        SystemSpec("raw-centroid-quality", "raw", "centroid", quality=True),
        SystemSpec("raw-centroid-margin", "raw", "centroid", target_fmr=5e-4),
        SystemSpec("lda-wccn-centroid-worst", "lda-wccn", "centroid", lda_dim=100, rule="worst-corpus"),
        SystemSpec("plda-worst", "plda", "plda", lda_dim=100, rule="worst-corpus"),
        SystemSpec("plda-worst-quality", "plda", "plda", lda_dim=100, rule="worst-corpus", quality=True),
    )
}
CHILD_SPECS: dict[str, ChildSpec] = {
    s.name: s
    for s in (
        ChildSpec("embedding-speechocean", "embedding", adults="speechocean"),
        ChildSpec("embedding-all", "embedding", adults="all"),
        ChildSpec("acoustic-all", "acoustic", adults="all"),
        ChildSpec("pca16-all", "pca", pca_dim=16, adults="all"),
        ChildSpec("pca16+acoustic-speechocean", "pca+acoustic", pca_dim=16, adults="speechocean"),
        ChildSpec("pca16+acoustic-all", "pca+acoustic", pca_dim=16, adults="all"),
        ChildSpec("pca32+acoustic-all", "pca+acoustic", pca_dim=32, adults="all"),
        # The whole embedding (a rotation of it) plus the acoustic measures.
        ChildSpec("pca256+acoustic-all", "pca+acoustic", pca_dim=256, adults="all"),
        ChildSpec(
            "pca16+pitch-formants-all",
            "pca+acoustic",
            pca_dim=16,
            adults="all",
            acoustic_subset=(
                "log_f0_median",
                "log_f0_p10",
                "log_f0_p90",
                "voiced_fraction",
                "log_f1",
                "log_f2",
                "log_f3",
                "log_formant_spacing",
            ),
        ),
    )
}


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", "-C", str(root), "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, as developers run it
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_table(
    data: Path,
    encoder: Any,
    vad: SpeechDetector,
    cache_dir: Path | None,
    pin_joins: int = 80,
    log: Callable[[str], None] = print,
) -> Table:
    from purchase_guard.voice.corpora import load_units

    specs = discover_corpora(data)
    if not specs:
        raise ValueError(
            f"no corpus found in {data}: expected an FSDD, LibriSpeech or speechocean762-style folder"
        )
    log("corpora: " + ", ".join(f"{s.name} ({s.kind})" for s in specs))
    speakers, units = load_units(specs, pin_joins)
    if not units:
        raise ValueError(f"the corpora in {data} hold no usable speakers")
    return measure(units, speakers, encoder, vad, cache_dir, log=log)


def held_out_report(
    spec: SystemSpec, trials: Trials, boot: SpeakerBootstrap, log: Callable[[str], None]
) -> tuple[HeldOut, dict[str, Any]]:
    held = evaluate_kfold(spec, trials, K, log)
    rows = verification_rows(held, boot)
    return held, {
        "spec": asdict(spec),
        "rows": rows,
        "disparities": disparities(rows),
        "targets": targets(rows),
    }


def loco_verification(spec: SystemSpec, trials: Trials) -> dict[str, Any]:
    """Thresholds fitted without a corpus, applied to it: how they transfer to a new population."""
    table = trials.table
    corpus_of_trial = table.corpus_of[trials.probe]
    out: dict[str, Any] = {}
    for c in sorted(set(table.corpus_of)):
        inside = {s for s, info in table.speakers.items() if info.corpus != c}
        sel = np.flatnonzero(corpus_of_trial == c)
        if sel.size == 0 or len({table.speakers[s].corpus for s in inside}) < 2:
            continue
        system = fit_system(spec, trials, inside)
        scores = system_scores(system, trials, sel)
        per: dict[str, Any] = {}
        for band in BAND_NAMES:
            b = trials.band[sel] == band
            if not b.any():
                continue
            thr = system.thresholds[band]
            tgt, imp = trials.target[sel] & b, ~trials.target[sel] & b
            per[band] = {
                "threshold": thr,
                "frr": float(np.mean(scores[tgt] < thr)) if tgt.any() else math.nan,
                "fmr": float(np.mean(scores[imp] >= thr)) if imp.any() else math.nan,
                "target_trials": int(tgt.sum()),
                "impostor_trials": int(imp.sum()),
            }
        out[c] = per
    return out


def shipped_choice(encoder: str) -> dict[str, str]:
    """The system, VAD and child variant the packaged files were fitted as (defaults without them)."""
    from purchase_guard.errors import Unavailable
    from purchase_guard.voice.child import child_detector_for
    from purchase_guard.voice.verifier import Thresholds

    out = {"system": "raw-centroid-worst", "vad": "energy", "child": "embedding-all"}
    try:
        import json as _json
        from importlib import resources

        doc = _json.loads(
            resources.files("purchase_guard.voice").joinpath("thresholds.json").read_text("utf-8")
        )
        entry = doc.get("encoders", {}).get(encoder, {})
        if entry.get("system") in SYSTEMS:
            out["system"] = entry["system"]
        thr = Thresholds.load(encoder)
        out["vad"] = "silero" if thr.vad.startswith("silero") else "energy"
        det = child_detector_for(encoder)
        name = (det.meta.get("spec") or {}).get("name") if det is not None else None
        if name in CHILD_SPECS:
            out["child"] = name
    except (Unavailable, OSError, ValueError):
        pass
    return out


def vad_by_name(name: str) -> SpeechDetector:
    if name == "energy":
        return EnergyVad()
    if name == "silero":
        from purchase_guard.voice.silero import SileroVad

        return SileroVad()
    raise ValueError(f"unknown VAD {name}")


def format_child(res: dict[str, Any]) -> str:
    lines = [
        "| point | chosen adult rate | children flagged [95% CI] | teens flagged | adults flagged [95% CI] "
        "| adults, children's corpus | worst fold adults | within 2x |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def f(x: dict[str, Any]) -> str:
        if not x["utterances"]:
            return "-"
        return f"{100 * x['rate']:.1f} [{100 * x['ci'][0]:.1f}-{100 * x['ci'][1]:.1f}]"

    for p, pt in res["points"].items():
        lines.append(
            f"| {p} | {100 * pt['adult_rate_chosen']:.0f} % | {f(pt['child'])} | {f(pt['teen'])} "
            f"| {f(pt['adult'])} "
            f"| {f(pt['adult_same_corpus_as_children'])} | {100 * pt['worst_fold_adult_rate']:.1f} "
            f"| {'yes' if pt['within_2x_of_chosen'] else 'NO'} |"
        )
    lines.append(
        f"\nAUC children vs adults of the same corpus {res['auc_same_corpus']:.3f} "
        f"[{res['auc_same_corpus_ci'][0]:.3f}-{res['auc_same_corpus_ci'][1]:.3f}], "
        f"vs all adults {res['auc_all_adults']:.3f} "
        f"[{res['auc_all_adults_ci'][0]:.3f}-{res['auc_all_adults_ci'][1]:.3f}]"
    )
    for c, pts in res.get("leave_one_corpus_out", {}).items():
        lines.append(
            f"leave-one-corpus-out {c}: adults flagged challenge {f(pts['challenge'])}, high {f(pts['high'])}"
        )
    return "\n".join(lines)


def run(
    data: Path,
    out: Path,
    encoder: Any,
    *,
    vads: Sequence[SpeechDetector] = (EnergyVad(),),
    systems: Sequence[str] = ("raw-centroid",),
    child_specs: Sequence[str] = ("pca16+acoustic-all",),
    cache_dir: Path | None = None,
    pin_joins: int = 80,
    replicates: int = 1000,
    loco: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {
        "encoder": encoder.name,
        "data": str(data),
        "protocol": (
            f"k-fold over speakers, K={K}, folds stratified by corpus x age group x gender; every trial "
            "(test unit vs enrollment model, same corpus) is scored and thresholded by a system fitted "
            "without its speakers' folds (inner 4-fold over the remaining speakers chooses thresholds); "
            "95 % intervals: speaker-level bootstrap within corpus "
            f"({replicates} replicates; 200 for FRR at a target FMR)"
        ),
        "vads": {},
        "git_commit": git_commit(Path(__file__).resolve().parents[3]),
    }
    md: list[str] = [f"# Speaker evaluation ({encoder.name})", "", report["protocol"], ""]
    for vad in vads:
        table = load_table(data, encoder, vad, cache_dir, pin_joins, log)
        trials = build_trials(table)
        boot = SpeakerBootstrap({k: v.corpus for k, v in table.speakers.items()}, replicates)
        log(
            f"{vad.name}: {len(table.units)} units, {len(table.speakers)} speakers, "
            f"{trials.probe.size} trials"
        )
        per_vad: dict[str, Any] = {
            "units": len(table.units),
            "speakers": len(table.speakers),
            "trials": int(trials.probe.size),
            "speakers_by_corpus_group": _speaker_counts(table),
            "systems": {},
            "child": {},
        }
        for name in systems:
            spec = SYSTEMS[name]
            _, res = held_out_report(spec, trials, boot, log)
            if loco:
                res["leave_one_corpus_out"] = loco_verification(spec, trials)
            per_vad["systems"][name] = res
            md += [f"## {vad.name}: {name}", "", format_rows(res["rows"]), ""]
            for d in res["disparities"]:
                md.append(
                    f"- FRR disparity ({d['band']}): {d['worse']} {100 * d['frr_worse']:.1f} % "
                    f"vs {d['better']} {100 * d['frr_better']:.1f} % (x{d['ratio']:.1f}; "
                    f"intervals overlap: {d['intervals_overlap']})"
                )
            for t in res["targets"]:
                md.append(f"- target {t['band']} {t['target']}: {'met' if t['met'] else 'NOT met'}")
            for c, per in res.get("leave_one_corpus_out", {}).items():
                md.append(
                    f"- leave-one-corpus-out {c}: "
                    + "; ".join(
                        f"{b} FMR {100 * v['fmr']:.2f} % FRR {100 * v['frr']:.1f} %" for b, v in per.items()
                    )
                )
            md.append("")
            log("\n".join(md[-(len(res["rows"]) + 6) :]))
        from purchase_guard.voice.child_eval import evaluate as child_evaluate

        groups = {s.group for s in table.speakers.values()}
        if not {"child", "adult"} <= groups:
            per_vad["child"] = {
                "available": False,
                "why": "the data has no children with ages (speechocean762-style)",
            }
            child_specs = ()
        for name in child_specs:
            res = child_evaluate(table, CHILD_SPECS[name], boot, K, loco=loco, log=log)
            per_vad["child"][name] = res
            md += [f"## {vad.name}: child detector {name}", "", format_child(res), ""]
            log(md[-2])
        report["vads"][vad.name] = per_vad
    report["seconds"] = round(time.monotonic() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speaker_eval.json").write_text(
        json.dumps(report, indent=1, default=_json_default) + "\n", "utf-8"
    )
    (out / "speaker_eval.md").write_text("\n".join(md) + "\n", "utf-8")
    log(f"report written to {out / 'speaker_eval.json'} and speaker_eval.md ({report['seconds']} s)")
    return report


def _speaker_counts(table: Table) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for s in table.speakers.values():
        d = out.setdefault(s.corpus, {})
        d[s.group] = d.get(s.group, 0) + 1
        g = f"gender:{s.gender or '?'}"
        d[g] = d.get(g, 0) + 1
    return out


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    raise TypeError(f"not JSON serialisable: {type(v)}")
