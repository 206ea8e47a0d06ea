"""Voiceprint adaptation (issue 19 item 5), measured by simulation on held-out speakers.

    python scripts/eval_adaptation.py [--data ../shared/data] [--out reports/adaptation]
        [--cache-dir build/voice-cache] [--purchases 10] [--replicates 1000] [--write-shipped]

Same protocol as `make eval-households` (scripts/eval_households.py): K = 5 folds over speakers
(units.assign_folds); per fold the shipped verification system and child detector are refitted on
the other four folds (fitting.fit_shipped_system / fit_shipped_child with `used=`), and so is the
drift floor; everyone simulated is in the held-out fold. The rule is the one the server runs
(voice/adaptation.decide_adaptation, scores from adaptation.model_vector = the shipped cosine
back-end). See PROTOCOL. `--write-shipped` also fits the drift floor on every speaker but the
smoke ones (as the shipped thresholds are) and writes it into voice/thresholds.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from script_paths import ROOT, default_data_dir

from purchase_guard.domain import AdaptationSample, Role, Voiceprint
from purchase_guard.voice.adaptation import (
    AdaptationLimits,
    Adapted,
    Trigger,
    decide_adaptation,
    enrollment_vector,
    model_vector,
)
from purchase_guard.voice.bootstrap import wilson
from purchase_guard.voice.units import Table, assign_folds
from purchase_guard.voice.verifier import Thresholds

K = 5
T0 = datetime(2026, 11, 25, tzinfo=UTC)
PARENT_CORPORA = ("speechocean", "libri-test-other", "fsdd-pin")
FLOOR_FMR = 1e-2
MIN_IMPOSTORS = 2000
# The margin: adapting needs the score against the enrollment alone to clear the band threshold
# by it. Chosen per fold on the fold's TRAINING speakers only (choose_margin): the smallest on the
# grid at which near-miss strangers among those speakers, every request approved, are accepted as
# the parent no more often with adaptation than without (the rise the first pass measured).
MARGIN_GRID = tuple(round(0.0025 * i, 4) for i in range(17))  # 0 to 0.04
RULES = ("previous", "rule")  # the first pass's rule (no margin) and this one, same run
NEAR_MISS_STRANGERS = 3

PROTOCOL = (
    "k-fold over speakers (K=5, the folds of `make eval` and `make eval-households`). Per fold, the "
    "verification thresholds (shipped system raw-centroid-worst) and the child detector (shipped spec) "
    "are refitted on the other four folds with the shipped fitting code, and the drift floor too: the "
    "cosine to an enrollment centroid that impostor trials among those training speakers exceed at most 1"
    " % of the time (per corpus with >= 2,000 impostor trials, the highest). Simulated are only the held-"
    "out fold's speakers. Parents: adults of speechocean762, LibriSpeech test-other and FSDD, enrolled "
    "(centroid of their enrollment units, as the server stores it). Genuine: for each of a parent's test "
    "units (the probe), up to N other test units of theirs in a seeded random order are N confirmed "
    "purchases (each passed a challenge, PIN or parent approval); each goes through decide_adaptation "
    "with the print as it stands (verified = cosine to the weighted model >= the fold's band threshold), "
    "then the probe is scored against the print with and without the adaptations: FRR is the share of "
    "probes refused, all columns from the same run. Two rules side by side: 'previous' (the first pass: "
    "verified against the print as it stands) and 'rule' (also: the score against the ORIGINAL "
    "enrollment alone must clear the band threshold plus a margin). The margin is chosen per fold on "
    "the fold's TRAINING speakers only: the same near-miss stranger simulation among them (their adults "
    "as parents, 3 closest strangers each, every request approved), the smallest margin of 0 to 0.04 "
    "(step 0.0025) at which those strangers are accepted as the parent no more often with adaptation "
    "than without. speechocean762 speakers have at most 9 test units "
    "and test-other 7, so their probes follow at most 8 and 6 purchases; the table says how many. "
    "Attacks, against the same parents: child approved by parent: every held-out child (speechocean762, "
    "12 and under) in the parent's household (enrolled as CHILD from its enrollment units in every other "
    "pairing, not enrolled in the others) asks, the parent approves every request; for each of the "
    "child's test units (probe), up to N of its other units are the approved requests, each offered to "
    "the PARENT's print (the poisoning attempt); then the probe is scored against the parent's print. "
    "Stranger near-miss: the 3 held-out adults of the parent's corpus whose units score highest against "
    "the parent's enrollment, the same way. 'naive' is the counterfactual an approval that taught the "
    "approver's print would give (every approved utterance added, same weight bounds), to show the attack"
    " is real. Rates with Wilson 95 % intervals over probes; differences with a 95 % speaker bootstrap "
    "(parents resampled, 1000 replicates). Not simulated: clipping (taken as 0), broadcast and replay "
    "(the rule's refusal of them is a unit and attack test), the digit content of PIN answers."
)


def unit(v: Any) -> Any:
    a = np.asarray(v, dtype=np.float64)
    return a / max(float(np.linalg.norm(a)), 1e-12)


# ------------------------------------------------------------------- fitting per fold


def drift_floor(table: Table, used: set[str]) -> tuple[float, dict[str, float]]:
    """Highest per-corpus (1 - FLOOR_FMR) quantile of impostor cosines to an enrollment centroid,
    among speakers in `used` only."""
    from purchase_guard.voice.kfold import build_trials

    trials = build_trials(table)
    cents = np.stack([unit(table.emb[r].mean(axis=0)) for r in trials.model_rows])
    keep = (
        ~trials.target & np.isin(trials.probe_speaker, sorted(used)) & np.isin(trials.model_spk, sorted(used))
    )
    sel = np.flatnonzero(keep)
    scores = np.einsum("ij,ij->i", table.emb[trials.probe[sel]], cents[trials.model[sel]])
    corpus = table.corpus_of[trials.probe[sel]]
    per: dict[str, float] = {}
    for c in sorted(set(corpus)):
        s = scores[corpus == c]
        if s.size >= MIN_IMPOSTORS:
            per[c] = float(np.quantile(s, 1 - FLOOR_FMR))
    return max(per.values()), per


def fit_fold(
    table: Table, used: set[str], log: Callable[[str], None]
) -> tuple[Thresholds, Any, float, dict[str, Any]]:
    from purchase_guard.voice.eval_kfold import CHILD_SPECS, SYSTEMS, git_commit, shipped_choice
    from purchase_guard.voice.fitting import fit_shipped_child, fit_shipped_system

    choice = shipped_choice(table.encoder)
    commit = git_commit(ROOT)
    entry, _ = fit_shipped_system(table, SYSTEMS[choice["system"]], commit, log=log, used=used)
    thr = Thresholds.from_mapping(table.encoder, entry)
    det = fit_shipped_child(table, CHILD_SPECS[choice["child"]], commit, log=log, used=used)
    floor, per = drift_floor(table, used)
    info = {
        "thresholds": {b.name: b.threshold for b in thr.bands},
        "child_challenge_point": float(det.operating_points.get("challenge", 0.5)),
        "drift_floor": round(floor, 5),
        "drift_floor_by_corpus": {k: round(v, 5) for k, v in per.items()},
        "fitted_speakers": len(used),
    }
    return thr, det, floor, info


# ------------------------------------------------------------------- simulation


@dataclass
class Person:
    key: str
    corpus: str
    enroll: list[int]  # table rows of the enrollment units (model 0)
    tests: list[int]


@dataclass
class Tally:
    """Accepted-or-not per probe, by arm, with the parent it belongs to (for the bootstrap)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        self.rows.append(row)


def adults_of(table: Table, keys: Iterable[str]) -> list[str]:
    """The adults among `keys` who can be parents (PARENT_CORPORA)."""
    return [
        k for k in keys if table.speakers[k].group == "adult" and table.speakers[k].corpus in PARENT_CORPORA
    ]


def people_of(table: Table, keys: Sequence[str]) -> list[Person]:
    out = []
    for k in keys:
        rows = np.flatnonzero(table.speaker_of == k)
        enroll = [int(i) for i in rows if table.model_of[i] == 0]
        tests = [int(i) for i in rows if table.model_of[i] < 0]
        if len(enroll) >= 1 and len(tests) >= 2:
            out.append(Person(k, table.speakers[k].corpus, enroll, tests))
    return out


def print_of(table: Table, p: Person, member: str) -> Voiceprint:
    c = unit(np.mean([unit(table.emb[i]) for i in p.enroll], axis=0))
    return Voiceprint(member, "hh", table.encoder, tuple(float(v) for v in c), len(p.enroll), T0)


class Sim:
    def __init__(self, table: Table, thr: Thresholds, det: Any, floor: float, margin: float = 0.0) -> None:
        self.t = table
        self.thr = thr
        self.det = det
        self.limits = AdaptationLimits(
            drift_floor=floor,
            margin=margin,
            child_threshold=float(det.operating_points.get("challenge", 0.5)),
        )
        # The first pass's rule: no score against the enrollment alone (a margin nothing fails).
        self.rules = {"previous": replace(self.limits, margin=-math.inf), "rule": self.limits}
        self.child: dict[int, float] = {}  # row -> likelihood (memo)

    def set_margin(self, margin: float) -> None:
        self.limits = replace(self.limits, margin=margin)
        self.rules["rule"] = self.limits

    def threshold(self, row: int) -> float:
        return self.thr.band_for(float(self.t.speech_s[row])).threshold

    def likelihood(self, row: int) -> float:
        if row not in self.child:
            acoustic = self.t.acoustic[row] if getattr(self.det, "uses_audio", False) else None
            self.child[row] = float(self.det.likelihood(self.t.emb[row], acoustic))
        return self.child[row]

    def score(self, row: int, vp: Voiceprint) -> float:
        return float(unit(self.t.emb[row]) @ model_vector(vp))

    def accepted(self, row: int, vp: Voiceprint) -> bool:
        return self.score(row, vp) >= self.threshold(row)

    def offer(
        self,
        row: int,
        target: Voiceprint,
        household: Sequence[Voiceprint],
        reasons: dict[str, int],
        rule: str = "rule",
    ) -> Voiceprint:
        """One confirmed purchase with utterance `row`, offered to `target` as the pipeline would:
        the sample names the member the voice verified as (best print of the household, over its
        threshold), or nobody."""
        scores = [(self.score(row, vp), vp.member_id) for vp in household]
        best, who = max(scores)
        thr = self.threshold(row)
        member = who if best >= thr else ""
        sample = AdaptationSample(
            challenge_id="c",
            household_id="hh",
            member_id=member,
            encoder=self.t.encoder,
            embedding=tuple(float(v) for v in self.t.emb[row]),
            score=best if member == target.member_id else self.score(row, target),
            threshold=thr,
            child_likelihood=self.likelihood(row),
            net_speech_s=float(self.t.speech_s[row]),
            snr_db=float(self.t.snr_db[row]),
            clipped=0.0,
            broadcast=False,
            replayed=False,
            created_at=T0,
            # The shipped cosine back-end's score against the enrollment alone.
            enrollment_score=float(unit(self.t.emb[row]) @ enrollment_vector(target)),
        )
        others = [vp for vp in household if vp.member_id != target.member_id]
        out = decide_adaptation(sample, target, Role.ADULT, others, Trigger.PARENT_APPROVAL, self.rules[rule])
        if isinstance(out, Adapted):
            reasons["adapted"] = reasons.get("adapted", 0) + 1
            return replace(target, adapted=out.adapted)
        reasons[out.reason] = reasons.get(out.reason, 0) + 1
        return target

    def naive(self, row: int, target: Voiceprint) -> Voiceprint:
        kept = (*target.adapted, tuple(float(v) for v in unit(self.t.emb[row])))
        return replace(target, adapted=kept[-self.limits.max_templates :])


def rotation(rng: random.Random, rows: Sequence[int], probe: int, n: int) -> list[int]:
    rest = [r for r in rows if r != probe]
    rng.shuffle(rest)
    return rest[:n]


def genuine(
    sim: Sim,
    parents: list[Person],
    n: int,
    seed: str,
    tally: Tally,
    reasons: dict[str, dict[str, int]],
) -> None:
    for p in parents:
        base = print_of(sim.t, p, "parent")
        for probe in p.tests:
            rng = random.Random(f"{seed}-{p.key}-{probe}")
            seq = rotation(rng, p.tests, probe, n)
            grown = {}
            for rule in RULES:
                vp = base
                for row in seq:
                    vp = sim.offer(row, vp, [vp], reasons[rule], rule)
                grown[rule] = vp
            tally.add(
                kind="genuine",
                parent=p.key,
                corpus=p.corpus,
                purchases=len(seq),
                adapted=len(grown["rule"].adapted),
                adapted_previous=len(grown["previous"].adapted),
                none=sim.accepted(probe, base),
                previous=sim.accepted(probe, grown["previous"]),
                adapt=sim.accepted(probe, grown["rule"]),
            )


def attack(
    sim: Sim,
    kind: str,
    parent: Person,
    attacker: Person,
    enrolled: bool,
    n: int,
    seed: str,
    tally: Tally,
    reasons: dict[str, dict[str, int]],
) -> None:
    base = print_of(sim.t, parent, "parent")
    kid = print_of(sim.t, attacker, "child") if enrolled else None
    for probe in attacker.tests:
        rng = random.Random(f"{seed}-{kind}-{parent.key}-{attacker.key}-{probe}")
        seq = rotation(rng, attacker.tests, probe, n)
        grown = {}
        for rule in RULES:
            vp = base
            for row in seq:
                household = [vp] + ([kid] if kid is not None else [])
                vp = sim.offer(row, vp, household, reasons[rule], rule)
            grown[rule] = vp
        nv = base
        for row in seq:
            nv = sim.naive(row, nv)
        tally.add(
            kind=kind,
            parent=parent.key,
            corpus=parent.corpus,
            purchases=len(seq),
            adapted=len(grown["rule"].adapted),
            adapted_previous=len(grown["previous"].adapted),
            none=sim.accepted(probe, base),
            previous=sim.accepted(probe, grown["previous"]),
            adapt=sim.accepted(probe, grown["rule"]),
            naive=sim.accepted(probe, nv),
        )


def near_strangers(sim: Sim, parent: Person, parents: Sequence[Person]) -> list[Person]:
    """The NEAR_MISS_STRANGERS adults of the parent's corpus whose units score highest against
    the parent's enrollment."""
    base = print_of(sim.t, parent, "parent")
    same = [q for q in parents if q.corpus == parent.corpus and q.key != parent.key]
    return sorted(same, key=lambda q: -np.mean([sim.score(r, base) for r in q.tests]))[:NEAR_MISS_STRANGERS]


def choose_margin(sim: Sim, parents: Sequence[Person], n: int, seed: str) -> tuple[float, dict[str, int]]:
    """The smallest MARGIN_GRID value at which `parents`' near-miss strangers (among `parents`:
    TRAINING speakers only), every request approved, are accepted as the parent no more often with
    adaptation than without. A run where the previous rule adapts nothing adapts nothing under any
    margin (the margin only refuses), so only runs that adapted are re-simulated per margin.
    Returns the margin and, per margin, the rise in accepted probes."""
    runs: list[tuple[Voiceprint, Person, int, list[int]]] = []
    for p in parents:
        base = print_of(sim.t, p, "parent")
        for q in near_strangers(sim, p, parents):
            for probe in q.tests:
                rng = random.Random(f"{seed}-choose-{p.key}-{q.key}-{probe}")
                seq = rotation(rng, q.tests, probe, n)
                vp = base
                for row in seq:
                    vp = sim.offer(row, vp, [vp], {}, "previous")
                if vp.adapted:
                    runs.append((base, q, probe, seq))
    rise: dict[str, int] = {}
    for m in MARGIN_GRID:
        sim.rules["candidate"] = replace(sim.limits, margin=m)
        up = 0
        for base, _q, probe, seq in runs:
            vp = base
            for row in seq:
                vp = sim.offer(row, vp, [vp], {}, "candidate")
            up += int(sim.accepted(probe, vp)) - int(sim.accepted(probe, base))
        rise[f"{m:.4f}"] = up
    chosen = next((m for m in MARGIN_GRID if rise[f"{m:.4f}"] <= 0), MARGIN_GRID[-1])
    del sim.rules["candidate"]
    return chosen, rise


# ------------------------------------------------------------------- report


def rate(rows: list[dict[str, Any]], arm: str, accept: bool) -> dict[str, Any]:
    n = len(rows)
    k = sum(1 for r in rows if bool(r[arm]) is accept)
    lo, hi = wilson(k, n)
    return {"n": n, "k": k, "rate": k / n if n else math.nan, "ci95": [lo, hi]}


def paired_diff(
    rows: list[dict[str, Any]], a: str, b: str, accept: bool, reps: int, seed: int
) -> dict[str, Any]:
    """Rate(a) - rate(b) with a bootstrap over parents."""
    by: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        by.setdefault(r["parent"], []).append((int(bool(r[a]) is accept), int(bool(r[b]) is accept)))
    keys = sorted(by)
    arr = [np.array(by[k]) for k in keys]
    sums = np.array([x.sum(axis=0) for x in arr])
    counts = np.array([x.shape[0] for x in arr])
    point = (sums[:, 0].sum() - sums[:, 1].sum()) / counts.sum()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        idx = rng.integers(0, len(keys), len(keys))
        c = counts[idx].sum()
        out.append((sums[idx, 0].sum() - sums[idx, 1].sum()) / c)
    return {"diff": float(point), "ci95": [float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))]}


def pct(r: dict[str, Any]) -> str:
    return f"{100 * r['rate']:.1f} [{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}]"


def summarise(tally: Tally, reps: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gen = [r for r in tally.rows if r["kind"] == "genuine"]
    groups: dict[str, list[dict[str, Any]]] = {"all": gen}
    for c in PARENT_CORPORA:
        groups[f"corpus:{c}"] = [r for r in gen if r["corpus"] == c]
    groups["purchases>=8"] = [r for r in gen if r["purchases"] >= 8]
    groups["purchases=10"] = [r for r in gen if r["purchases"] == 10]
    out["genuine"] = {
        name: {
            "probes": len(rows),
            "parents": len({r["parent"] for r in rows}),
            "mean_purchases": float(np.mean([r["purchases"] for r in rows])) if rows else 0.0,
            "mean_adapted": float(np.mean([r["adapted"] for r in rows])) if rows else 0.0,
            "mean_adapted_previous": float(np.mean([r["adapted_previous"] for r in rows])) if rows else 0.0,
            "frr_none": rate(rows, "none", False),
            "frr_previous": rate(rows, "previous", False),
            "frr_adapt": rate(rows, "adapt", False),
            "frr_diff_previous": paired_diff(rows, "previous", "none", False, reps, seed),
            "frr_diff": paired_diff(rows, "adapt", "none", False, reps, seed),
            "frr_rule_minus_previous": paired_diff(rows, "adapt", "previous", False, reps, seed),
        }
        for name, rows in groups.items()
        if rows
    }
    for kind in ("child_approved", "stranger_near_miss"):
        rows = [r for r in tally.rows if r["kind"] == kind]
        out[kind] = {
            "probes": len(rows),
            "accepted_none": rate(rows, "none", True),
            "accepted_previous": rate(rows, "previous", True),
            "accepted_adapt": rate(rows, "adapt", True),
            "accepted_naive": rate(rows, "naive", True),
            "previous_minus_none": paired_diff(rows, "previous", "none", True, reps, seed),
            "adapt_minus_none": paired_diff(rows, "adapt", "none", True, reps, seed),
            "adapted_offers_previous": sum(r["adapted_previous"] for r in rows),
            "adapted_offers": sum(r["adapted"] for r in rows),
            "naive_minus_none": paired_diff(rows, "naive", "none", True, reps, seed),
            "mean_adapted": float(np.mean([r["adapted"] for r in rows])) if rows else 0.0,
        }
    return out


def diff_md(d: dict[str, Any], digits: int = 1) -> str:
    f = f"{{:+.{digits}f}}"
    return f"{f.format(100 * d['diff'])} [{f.format(100 * d['ci95'][0])} to {f.format(100 * d['ci95'][1])}]"


def table_md(summary: dict[str, Any]) -> str:
    lines = [
        "| parents | probes | parents (n) | purchases before the probe (mean) |"
        " adapted (mean), previous / rule | FRR, no adaptation | FRR, previous rule | FRR, this rule |"
        " previous - none | rule - none |"
        " rule - previous [speaker bootstrap] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in summary["genuine"].items():
        lines.append(
            f"| {name} | {g['probes']} | {g['parents']} | {g['mean_purchases']:.1f} | "
            f"{g['mean_adapted_previous']:.1f} / {g['mean_adapted']:.1f} | {pct(g['frr_none'])} | "
            f"{pct(g['frr_previous'])} | {pct(g['frr_adapt'])} | {diff_md(g['frr_diff_previous'])} | "
            f"{diff_md(g['frr_diff'])} | {diff_md(g['frr_rule_minus_previous'])} |"
        )
    lines += [
        "",
        "| attack | probes | accepted as the parent, no adaptation | previous rule | this rule | naive "
        "(approval teaches the approver) | offers adapted, previous / rule | previous - none | rule - none "
        "| naive - none [bootstrap] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("child_approved", "stranger_near_miss"):
        a = summary[kind]
        lines.append(
            f"| {kind} | {a['probes']} | {pct(a['accepted_none'])} | {pct(a['accepted_previous'])} | "
            f"{pct(a['accepted_adapt'])} | {pct(a['accepted_naive'])} | "
            f"{a['adapted_offers_previous']} / {a['adapted_offers']} | "
            f"{diff_md(a['previous_minus_none'], 2)} | "
            f"{diff_md(a['adapt_minus_none'], 2)} | {diff_md(a['naive_minus_none'])} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------- run


def run(
    data: Path,
    *,
    cache_dir: Path | None,
    purchases: int = 10,
    replicates: int = 1000,
    seed: int = 19,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Table]:
    from purchase_guard.voice.eval_kfold import load_table, vad_by_name
    from purchase_guard.voice.ge2e import Ge2eEncoder

    started = time.monotonic()
    table = load_table(data, Ge2eEncoder(), vad_by_name("energy"), cache_dir, log=log)
    fold_of = assign_folds(table.speakers.values(), K)
    tally = Tally()
    reasons: dict[str, dict[str, dict[str, int]]] = {
        kind: {rule: {} for rule in RULES} for kind in ("genuine", "child_approved", "stranger_near_miss")
    }
    folds = []
    quiet: Callable[[str], None] = lambda _m: None  # noqa: E731 - the fits' own chatter
    for fold in range(K):
        used = {k for k, f in fold_of.items() if f != fold}
        thr, det, floor, info = fit_fold(table, used, quiet)
        sim = Sim(table, thr, det, floor)
        held = [k for k, f in fold_of.items() if f == fold]
        adults = adults_of(table, held)
        children = [
            k
            for k in held
            if table.speakers[k].group == "child" and "speechocean" in table.speakers[k].corpus
        ]
        parents = people_of(table, sorted(adults))
        kids = people_of(table, sorted(children))
        trained = people_of(table, sorted(adults_of(table, used)))
        margin, rise = choose_margin(sim, trained, purchases, f"{seed}-{fold}")
        sim.set_margin(margin)
        info.update(
            {"margin": margin, "margin_rise_on_training": rise, "margin_training_parents": len(trained)}
        )
        genuine(sim, parents, purchases, f"{seed}-{fold}", tally, reasons["genuine"])
        for i, p in enumerate(parents):
            for j, c in enumerate(kids):
                attack(
                    sim,
                    "child_approved",
                    p,
                    c,
                    (i + j) % 2 == 0,
                    purchases,
                    f"{seed}-{fold}",
                    tally,
                    reasons["child_approved"],
                )
            for q in near_strangers(sim, p, parents):
                attack(
                    sim,
                    "stranger_near_miss",
                    p,
                    q,
                    False,
                    purchases,
                    f"{seed}-{fold}",
                    tally,
                    reasons["stranger_near_miss"],
                )
        info.update({"fold": fold, "parents": len(parents), "children": len(kids)})
        folds.append(info)
        log(
            f"fold {fold}: {len(parents)} parents, {len(kids)} children, "
            f"floor {floor:.4f}, margin {margin:.4f}"
        )
    summary = summarise(tally, replicates, seed)
    doc = {
        "protocol": PROTOCOL,
        "purchases": purchases,
        "seed": seed,
        "folds": folds,
        "reasons_not_adapted": reasons,
        "summary": summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    return doc, table


def write_shipped(table: Table, purchases: int, log: Callable[[str], None]) -> tuple[float, float]:
    """The drift floor and margin on every speaker but the smoke ones, into voice/thresholds.json."""
    from purchase_guard.voice.eval_kfold import git_commit
    from purchase_guard.voice.fitting import provenance, smoke_speakers, write_json

    used = set(table.speakers) - set(smoke_speakers(table))
    thr, det, floor, _info = fit_fold(table, used, lambda _m: None)
    _, per = drift_floor(table, used)
    sim = Sim(table, thr, det, floor)
    margin, rise = choose_margin(sim, people_of(table, sorted(adults_of(table, used))), purchases, "shipped")
    path = ROOT / "src" / "purchase_guard" / "voice" / "thresholds.json"
    doc = json.loads(path.read_text("utf-8"))
    prov = provenance(table, used, git_commit(ROOT))
    doc["encoders"][table.encoder]["adaptation"] = {
        "drift_floor": round(floor, 5),
        "rule": (
            f"highest over corpora with >= {MIN_IMPOSTORS} impostor trials of the cosine to an enrollment "
            f"centroid that impostors exceed {100 * FLOOR_FMR:g} % of the time (scripts/eval_adaptation.py)"
        ),
        "by_corpus": {k: round(v, 5) for k, v in per.items()},
        # Fitted and recorded, not read by the server (Thresholds reads `margin`): on held-out
        # speakers it removed the stranger rise but cost most of the FRR gain (docs/voice.md).
        "margin_fitted": round(margin, 5),
        "margin_rule": (
            "score against the enrollment alone >= band threshold + margin; the margin is the smallest of "
            f"{MARGIN_GRID[0]:g}..{MARGIN_GRID[-1]:g} (step {MARGIN_GRID[1]:g}) at which near-miss strangers "
            f"among the fitting speakers ({NEAR_MISS_STRANGERS} per parent, {purchases} approved requests "
            "each) are accepted as the parent no more often with adaptation than without "
            "(scripts/eval_adaptation.py choose_margin)"
        ),
        "margin_rise_by_candidate": rise,
        "fitted_on": {
            k: prov[k] for k in ("speakers", "corpora", "date", "git_commit", "held_out_for_tests")
        },
    }
    write_json(path, doc)
    log(f"drift floor {floor:.5f}, margin {margin:.5f} written to {path}")
    return floor, margin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "adaptation")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "build" / "voice-cache")
    parser.add_argument("--purchases", type=int, default=10)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--write-shipped", action="store_true")
    args = parser.parse_args()
    doc, table = run(
        args.data,
        cache_dir=args.cache_dir,
        purchases=args.purchases,
        replicates=args.replicates,
        seed=args.seed,
    )
    if args.write_shipped:
        doc["shipped_drift_floor"], doc["shipped_margin"] = write_shipped(table, args.purchases, print)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adaptation.json").write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
    md = table_md(doc["summary"])
    (args.out / "adaptation.md").write_text(md + "\n", "utf-8")
    print(md)
    print(json.dumps(doc["reasons_not_adapted"]))
    print(f"{doc['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
