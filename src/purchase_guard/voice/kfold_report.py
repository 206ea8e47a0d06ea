"""Tables of held-out verification accuracy: per band, corpus and group, with 95 % intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from purchase_guard.voice.bootstrap import SpeakerBootstrap, interval
from purchase_guard.voice.evaluation import BAND_NAMES, eer
from purchase_guard.voice.kfold import HeldOut

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
# Issue 19's targets for one voice check (PIN and command bands), and NIST SP 800-63B-4's.
TARGET_FMR, TARGET_FRR = 1e-3, 0.05
NIST_FMR, NIST_FRR = 1e-4, 0.05
DISPARITY = 2.0  # a group's FRR more than twice another's is flagged


def _rate_ci(boot: SpeakerBootstrap, spk: Any, err: BoolArray, partner: Any = None) -> list[float]:
    if err.size == 0:
        return [math.nan, math.nan]
    return list(interval(boot.rate(spk, err, partner)))


def row_metrics(
    held: HeldOut, boot: SpeakerBootstrap, tsel: BoolArray, isel: BoolArray, oracle: bool
) -> dict[str, Any]:
    tr = held.trials
    acc = held.accepted
    t_spk = boot.idx(tr.probe_speaker[tsel])
    i_spk = boot.idx(tr.probe_speaker[isel])
    i_par = boot.idx(tr.model_spk[isel])
    ts, is_ = held.scores[tsel], held.scores[isel]
    out: dict[str, Any] = {
        "target_speakers": len(set(tr.probe_speaker[tsel])),
        "impostor_speakers": len(set(tr.probe_speaker[isel])),
        "target_trials": int(tsel.sum()),
        "impostor_trials": int(isel.sum()),
        "frr": float(np.mean(~acc[tsel])) if tsel.any() else math.nan,
        "frr_ci": _rate_ci(boot, t_spk, ~acc[tsel]),
        "fmr": float(np.mean(acc[isel])) if isel.any() else math.nan,
        "fmr_ci": _rate_ci(boot, i_spk, acc[isel], i_par),
        "eer": eer(ts, is_)[0] if tsel.any() and isel.any() else math.nan,
    }
    if oracle and tsel.any() and isel.any():
        for name, fmr in (("frr_at_fmr_1e-3", 1e-3), ("frr_at_fmr_1e-4", 1e-4)):
            order = np.sort(is_)[::-1]
            allowed = math.floor(fmr * order.size)
            thr = np.nextafter(order[allowed], np.inf) if allowed < order.size else -np.inf
            out[name] = float(np.mean(ts < thr))
            out[name + "_ci"] = list(interval(boot.frr_at_fmr(ts, t_spk, is_, i_spk, i_par, fmr)))
            # Below 1/FMR impostor trials the rate cannot be resolved: say so.
            out[name + "_resolvable"] = bool(order.size * fmr >= 3)
    return out


def verification_rows(held: HeldOut, boot: SpeakerBootstrap) -> list[dict[str, Any]]:
    tr = held.trials
    table = tr.table
    corpus = table.corpus_of[tr.probe]
    info = table.speakers
    p_group = np.array([info[s].group for s in tr.probe_speaker])
    m_group = np.array([info[s].group for s in tr.model_spk])
    p_gender = np.array([info[s].gender or "?" for s in tr.probe_speaker])
    rows: list[dict[str, Any]] = []
    for band in BAND_NAMES:
        b = tr.band == band
        for scope in ["all", *sorted(set(corpus))]:
            s = b if scope == "all" else b & (corpus == scope)
            if not (s & ~tr.target).any():
                continue
            r = row_metrics(held, boot, s & tr.target, s & ~tr.target, oracle=True)
            rows.append({"band": band, "dataset": scope, "group": "all", **r})
        for dim, values in (("age", p_group), ("gender", p_gender)):
            for g in sorted(set(values)):
                if g == "?":
                    continue
                s = b & (values == g)
                if not (s & tr.target).any():
                    continue
                r = row_metrics(held, boot, s & tr.target, s & ~tr.target, oracle=False)
                rows.append({"band": band, "dataset": "all", "group": f"{dim}:{g}", **r})
        # The case a parental guard exists for: a child's voice against adults' voiceprints.
        s = b & ~tr.target & (p_group == "child") & (m_group == "adult")
        if s.any():
            r = row_metrics(held, boot, np.zeros_like(s), s, oracle=False)
            rows.append({"band": band, "dataset": "all", "group": "child-vs-adult-prints", **r})
    return rows


def disparities(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per band and dimension, groups whose FRR is more than DISPARITY x another's."""
    out = []
    for band in BAND_NAMES:
        for dim in ("age", "gender"):
            grp = [r for r in rows if r["band"] == band and r["group"].startswith(dim + ":")]
            grp = [r for r in grp if r["target_trials"] > 0 and not math.isnan(r["frr"])]
            for a in grp:
                for b in grp:
                    if a is b or a["frr"] <= DISPARITY * b["frr"]:
                        continue
                    out.append(
                        {
                            "band": band,
                            "worse": a["group"],
                            "better": b["group"],
                            "frr_worse": a["frr"],
                            "frr_better": b["frr"],
                            "ratio": a["frr"] / b["frr"] if b["frr"] > 0 else math.inf,
                            # Intervals overlapping means the data cannot tell the groups apart.
                            "intervals_overlap": a["frr_ci"][0] <= b["frr_ci"][1],
                        }
                    )
    return out


def targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the pooled PIN and command bands stand against issue 19's and NIST's targets."""
    out = []
    for band in ("pin", "command"):
        r = next(
            (r for r in rows if r["band"] == band and r["dataset"] == "all" and r["group"] == "all"), None
        )
        if r is None:
            continue
        out.append(
            {
                "band": band,
                "target": f"FMR <= {TARGET_FMR:g} with FRR <= {TARGET_FRR:.0%} (issue 19)",
                "fmr_at_threshold": r["fmr"],
                "fmr_ci": r["fmr_ci"],
                "frr_at_threshold": r["frr"],
                "frr_ci": r["frr_ci"],
                "frr_at_fmr_1e-3": r.get("frr_at_fmr_1e-3"),
                "frr_at_fmr_1e-3_ci": r.get("frr_at_fmr_1e-3_ci"),
                "met": bool(r["fmr"] <= TARGET_FMR and r["frr"] <= TARGET_FRR),
                "frr_excess": max(0.0, r["frr"] - TARGET_FRR),
                "fmr_excess_ratio": r["fmr"] / TARGET_FMR,
            }
        )
        out.append(
            {
                "band": band,
                "target": f"FMR <= {NIST_FMR:g} with FNMR < {NIST_FRR:.0%} (NIST SP 800-63B-4)",
                "frr_at_fmr_1e-4": r.get("frr_at_fmr_1e-4"),
                "frr_at_fmr_1e-4_ci": r.get("frr_at_fmr_1e-4_ci"),
                "resolvable": r.get("frr_at_fmr_1e-4_resolvable"),
                "met": bool((r.get("frr_at_fmr_1e-4") or 1.0) < NIST_FRR),
            }
        )
    return out


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.2f}" if v < 0.01 else f"{100 * v:.1f}"


def _ci(v: Any) -> str:
    if not v or any(x is None or math.isnan(x) for x in v):
        return ""
    return f" [{_pct(v[0])}-{_pct(v[1])}]"


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| band | dataset | group | spk | tgt | imp | FRR % @thr [95% CI] | FMR % @thr [95% CI] | EER % "
        "| FRR % @FMR 1e-3 | FRR % @FMR 1e-4 |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['band']} | {r['dataset']} | {r['group']} "
            f"| {r['target_speakers']}/{r['impostor_speakers']} "
            f"| {r['target_trials']} | {r['impostor_trials']} | {_pct(r['frr'])}{_ci(r['frr_ci'])} "
            f"| {_pct(r['fmr'])}{_ci(r['fmr_ci'])} | {_pct(r['eer'])} "
            f"| {_pct(r.get('frr_at_fmr_1e-3'))}{_ci(r.get('frr_at_fmr_1e-3_ci'))} "
            f"| {_pct(r.get('frr_at_fmr_1e-4'))}{_ci(r.get('frr_at_fmr_1e-4_ci'))}"
            f"{'' if r.get('frr_at_fmr_1e-4_resolvable', True) else ' (unresolved)'} |"
        )
    return "\n".join(lines)
