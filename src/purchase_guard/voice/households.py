"""Accounting for the end-to-end household benchmark (scripts/eval_households.py, docs/voice.md).

The benchmark drives simulated households through a real guard; this module holds what does
not need the guard: the outcome categories, the tallies by speaker and utterance band, and the
95 % intervals (Wilson over attempts, and a bootstrap over speakers, since one speaker's
attempts are not independent of each other). Kept free of the api layer so it can be tested
on its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from purchase_guard.voice.bootstrap import wilson

# What became of a genuine parent's purchase. "Completed with at most one challenge" is the
# first three; the approval one is friction (the parent's phone had to say yes) and is
# reported on its own as well.
GENUINE_OUTCOMES = ("allow", "passed_answer", "passed_approval", "refused")
COMPLETED = frozenset({"allow", "passed_answer", "passed_approval"})
# The same without the parent's phone: what the household gets from the voice check alone.
UNAIDED = frozenset({"allow", "passed_answer"})
# Attacks: someone other than an enrolled adult, or audio the household has heard before.
ATTACKS = ("child_enrolled", "child_unenrolled", "teen", "stranger", "replay")
# What the guard did with an attack: ALLOW (the only success), a challenge sent to a parent
# (who, in the simulation, refuses what they did not ask for), a challenge the attacker cannot
# answer (a PIN they do not know), or a refusal.
ATTACK_OUTCOMES = ("allow", "to_parent", "unanswerable_challenge", "refused")


def speaker_bootstrap(
    per_speaker: Mapping[str, tuple[int, int]], replicates: int = 1000, seed: int = 7
) -> tuple[float, float]:
    """95 % percentile interval of sum(k)/sum(n) when speakers are resampled with replacement.

    `per_speaker` maps a speaker to (hits, attempts). With no hits at all every replicate is 0,
    so for a zero count the Wilson upper bound is the statement to make, not this one.
    """
    rows = [v for v in per_speaker.values() if v[1] > 0]
    if not rows:
        return (0.0, 1.0)
    rng = random.Random(seed)  # noqa: S311 - resampling, not secrecy
    rates = []
    for _ in range(replicates):
        k = n = 0
        for _ in range(len(rows)):
            a, b = rows[rng.randrange(len(rows))]
            k += a
            n += b
        rates.append(k / n)
    rates.sort()
    lo = rates[int(0.025 * (replicates - 1))]
    hi = rates[math.ceil(0.975 * (replicates - 1))]
    return (lo, hi)


def band_of(net_speech_s: float, bands: Sequence[tuple[str, float | None]]) -> str:
    """The band (name, max net speech or None for the last) the thresholds file puts a take in."""
    for name, edge in bands:
        if edge is None or net_speech_s <= edge:
            return name
    return bands[-1][0]


@dataclass(frozen=True)
class Attempt:
    """One request's final fate. `kind` is "genuine" or one of ATTACKS."""

    kind: str
    outcome: str
    band: str
    speaker: str  # corpus/speaker of whoever spoke the request
    household: str
    fold: int
    method: str = "none"  # the challenge the guard asked for, if any
    first_reason: str = "-"
    order: str = "in_limit"  # in_limit | over_limit (the adults' per-order maximum)

    def __post_init__(self) -> None:
        allowed = GENUINE_OUTCOMES if self.kind == "genuine" else ATTACK_OUTCOMES
        if self.kind != "genuine" and self.kind not in ATTACKS:
            raise ValueError(f"unknown attempt kind {self.kind}")
        if self.outcome not in allowed:
            raise ValueError(f"{self.kind} cannot end as {self.outcome}")


@dataclass
class Ledger:
    """Every attempt of a run, and the rates the report gives."""

    attempts: list[Attempt] = field(default_factory=list)

    def add(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def extend(self, attempts: Iterable[Attempt]) -> None:
        self.attempts.extend(attempts)

    def of(self, kind: str, band: str | None = None) -> list[Attempt]:
        return [a for a in self.attempts if a.kind == kind and (band is None or a.band == band)]

    def bands(self) -> list[str]:
        seen: list[str] = []
        for a in self.attempts:
            if a.band not in seen:
                seen.append(a.band)
        return seen


def rate(rows: Sequence[Attempt], hit: frozenset[str], replicates: int = 1000) -> dict[str, Any]:
    """Share of `rows` whose outcome is in `hit`, with a Wilson interval over attempts and a
    speaker-bootstrap interval."""
    k = sum(a.outcome in hit for a in rows)
    n = len(rows)
    per: dict[str, list[int]] = {}
    for a in rows:
        c = per.setdefault(a.speaker, [0, 0])
        c[0] += a.outcome in hit
        c[1] += 1
    return {
        "k": k,
        "n": n,
        "rate": k / n if n else None,
        "ci95": list(wilson(k, n)),
        "ci95_speakers": list(speaker_bootstrap({s: (v[0], v[1]) for s, v in per.items()}, replicates)),
        "speakers": len(per),
    }


def _counts(rows: Sequence[Attempt], attr: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in rows:
        v = str(getattr(a, attr))
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def summarise(ledger: Ledger, replicates: int = 1000) -> dict[str, Any]:
    """Genuine and attack rates, overall and by band, with intervals and outcome counts."""
    bands = ["all", *ledger.bands()]
    genuine: dict[str, Any] = {}
    for b in bands:
        rows = ledger.of("genuine", None if b == "all" else b)
        if not rows:
            continue
        genuine[b] = {
            "attempts": len(rows),
            "completed_at_most_one_challenge": rate(rows, COMPLETED, replicates),
            "completed_without_parent_approval": rate(rows, UNAIDED, replicates),
            **{o: rate(rows, frozenset({o}), replicates) for o in GENUINE_OUTCOMES},
            "challenges_given": _counts(rows, "method"),
            "refused_first_reason": _counts([a for a in rows if a.outcome == "refused"], "first_reason"),
        }
    # Who needs what: over-limit orders need a challenge; parents without digit templates
    # (every corpus but FSDD) get PARENT_APPROVAL for them instead of a spoken PIN.
    by: dict[str, Any] = {}
    rows_all = ledger.of("genuine")
    groups: dict[str, list[Attempt]] = {}
    for a in rows_all:
        groups.setdefault(f"order:{a.order}", []).append(a)
        groups.setdefault(f"corpus:{a.speaker.split('/')[0]}", []).append(a)
        groups.setdefault(f"corpus:{a.speaker.split('/')[0]}/order:{a.order}", []).append(a)
    for name in sorted(groups):
        rows = groups[name]
        by[name] = {
            "attempts": len(rows),
            "completed_at_most_one_challenge": rate(rows, COMPLETED, replicates),
            "completed_without_parent_approval": rate(rows, UNAIDED, replicates),
            "passed_approval": rate(rows, frozenset({"passed_approval"}), replicates),
            "refused": rate(rows, frozenset({"refused"}), replicates),
        }
    attacks: dict[str, Any] = {}
    for kind in ATTACKS:
        per: dict[str, Any] = {}
        for b in bands:
            rows = ledger.of(kind, None if b == "all" else b)
            if not rows:
                continue
            per[b] = {
                "attempts": len(rows),
                **{o: rate(rows, frozenset({o}), replicates) for o in ATTACK_OUTCOMES},
                "first_reason": _counts(rows, "first_reason"),
            }
        if per:
            attacks[kind] = per
    return {"genuine": genuine, "genuine_by": by, "attacks": attacks}


def targets(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's household targets, met or not, with the gap and its interval."""
    out: list[dict[str, Any]] = []
    g = summary["genuine"].get("all")
    if g is not None:
        r = g["completed_at_most_one_challenge"]
        out.append(
            {
                "target": (
                    ">= 95 % of genuine parents' in-policy purchases complete with at most one challenge"
                ),
                "measured": r["rate"],
                "ci95": r["ci95"],
                "ci95_speakers": r["ci95_speakers"],
                "met": r["rate"] is not None and r["rate"] >= 0.95,
                "short_by": None if r["rate"] is None else max(0.0, 0.95 - r["rate"]),
                # Met only with parents approving what the voice check did not recognise: the
                # same target without them, for the note on how far the voice check alone is.
                "without_parent_approval": g["completed_without_parent_approval"]["rate"],
                "without_parent_approval_ci95": g["completed_without_parent_approval"]["ci95"],
            }
        )
    children = [
        summary["attacks"][k]["all"]
        for k in ("child_enrolled", "child_unenrolled")
        if k in summary["attacks"]
    ]
    n_child = sum(c["attempts"] for c in children)
    k_child = sum(c["allow"]["k"] for c in children)
    s = summary["attacks"].get("stranger", {}).get("all")
    for what, k, n, need in (
        ("child", k_child, n_child, 1000),
        ("stranger", s["allow"]["k"] if s else 0, s["attempts"] if s else 0, 2000),
    ):
        out.append(
            {
                "target": f"0 ALLOW in >= {need} {what} attempts",
                "allowed": k,
                "attempts": n,
                "ci95": list(wilson(k, n)),
                "met": k == 0 and n >= need,
            }
        )
    return out


def format_table(summary: Mapping[str, Any]) -> str:
    """The report's table, as printed and as pasted into docs/voice.md."""

    def pct(r: Mapping[str, Any]) -> str:
        if r["rate"] is None:
            return "-"
        lo, hi = r["ci95"]
        return f"{100 * r['rate']:.1f} [{100 * lo:.1f}-{100 * hi:.1f}]"

    lines = [
        "| genuine parents | band | purchases | completed, <= 1 challenge | without the parent's approval "
        "| ALLOW | answered a challenge | parent approved | refused |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b, g in summary["genuine"].items():
        lines.append(
            f"| parent | {b} | {g['attempts']} | {pct(g['completed_at_most_one_challenge'])} "
            f"| {pct(g['completed_without_parent_approval'])} | {pct(g['allow'])} "
            f"| {pct(g['passed_answer'])} | {pct(g['passed_approval'])} "
            f"| {pct(g['refused'])} |"
        )
    lines += [
        "",
        "| genuine parents by | purchases | completed, <= 1 challenge | without the parent's approval "
        "| parent approved | refused |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in summary.get("genuine_by", {}).items():
        lines.append(
            f"| {name} | {g['attempts']} | {pct(g['completed_at_most_one_challenge'])} "
            f"| {pct(g['completed_without_parent_approval'])} | {pct(g['passed_approval'])} "
            f"| {pct(g['refused'])} |"
        )
    lines += [
        "",
        "| attack | band | attempts | ALLOW | sent to a parent | challenge they cannot answer | refused |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, per in summary["attacks"].items():
        for b, a in per.items():
            allow = a["allow"]
            lines.append(
                f"| {kind} | {b} | {a['attempts']} | {allow['k']} ({pct(allow)}) | {pct(a['to_parent'])} "
                f"| {pct(a['unanswerable_challenge'])} | {pct(a['refused'])} |"
            )
    return "\n".join(lines)
