"""What a run leaves behind: the summary line, JUnit XML for CI, and an HTML report for QA.

The HTML report is one self-contained file (the score plot is inline SVG, drawn here rather
than pulling a plotting library into the service's dependencies): per-scenario pass/fail with
the decision trail, a confusion table of expected vs actual outcomes, latency percentiles and
the speaker-score distribution of genuine vs impostor voices.
"""

from __future__ import annotations

import html
import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from purchase_guard.replay.engine import FAILED, INVALID, PASSED, SKIPPED, ScenarioResult, StepResult

OUTCOME_COLUMNS = ("ALLOW", "DENY", "CHALLENGE", "error", "not sent")


@dataclass(frozen=True)
class RunSummary:
    results: tuple[ScenarioResult, ...]
    seconds: float
    target: str
    run_id: str

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count(FAILED) == 0 and self.count(INVALID) == 0 and bool(self.results)

    @property
    def steps(self) -> tuple[StepResult, ...]:
        return tuple(s for r in self.results for s in r.steps)

    def line(self) -> str:
        return (
            f"replay: {len(self.results)} scenarios: {self.count(PASSED)} passed, "
            f"{self.count(FAILED)} failed, "
            f"{self.count(SKIPPED)} skipped, {self.count(INVALID)} invalid "
            f"({len(self.steps)} steps, {self.seconds:.1f} s, {self.target})"
        )


# --------------------------------------------------------------------------- figures
def _column(actual: str) -> str:
    if actual.startswith("error"):
        return "error"
    return actual if actual in OUTCOME_COLUMNS else "not sent"


def confusion(steps: Sequence[StepResult]) -> dict[str, Counter[str]]:
    """expected row -> Counter of actual columns, over decision steps (evaluate and confirm)."""
    table: dict[str, Counter[str]] = {}
    for s in steps:
        if not s.decision or not s.expected:
            continue
        row = "error" if s.expected.startswith("error") else s.expected
        table.setdefault(row, Counter())[_column(s.actual)] += 1
    return table


def latency_table(steps: Sequence[StepResult]) -> dict[str, dict[str, float]]:
    """Per RPC (evaluate, confirm): n and latency percentiles in ms, as the runner measured them."""
    out: dict[str, dict[str, float]] = {}
    for action in ("evaluate", "confirm"):
        values = np.array([s.latency_ms for s in steps if s.action == action and s.latency_ms is not None])
        if values.size == 0:
            continue
        out[action] = {
            "n": float(values.size),
            "p50": float(np.percentile(values, 50)),
            "p90": float(np.percentile(values, 90)),
            "p95": float(np.percentile(values, 95)),
            "p99": float(np.percentile(values, 99)),
            "max": float(values.max()),
        }
    return out


def voice_scores(steps: Sequence[StepResult]) -> tuple[list[float], list[float], list[float]]:
    """(genuine scores, impostor scores, thresholds seen) over steps whose speaker was scored."""
    genuine = [s.score for s in steps if s.genuine is True and s.score is not None]
    impostor = [s.score for s in steps if s.genuine is False and s.score is not None]
    thresholds = sorted(
        {round(s.threshold, 4) for s in steps if s.threshold is not None and s.genuine is not None}
    )
    return genuine, impostor, thresholds


def score_plot_svg(genuine: Sequence[float], impostor: Sequence[float], thresholds: Sequence[float]) -> str:
    """Overlaid histograms of genuine (green) and impostor (red) scores, a rug of every attempt
    underneath and a dashed line per threshold the guard applied (one per speech-length band)."""
    width, height = 760, 320
    left, right, top, bottom = 56, 20, 36, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    every = [*genuine, *impostor]
    lo = math.floor(min([*every, 0.5]) * 10) / 10
    hi = 1.0
    bin_w = 0.025
    edges = np.arange(lo, hi + bin_w / 2, bin_w)
    g_counts = np.histogram(genuine, bins=edges)[0] if genuine else np.zeros(len(edges) - 1, dtype=int)
    i_counts = np.histogram(impostor, bins=edges)[0] if impostor else np.zeros(len(edges) - 1, dtype=int)
    peak = max(1, int(max(g_counts.max(initial=0), i_counts.max(initial=0))))

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    def y(count: float) -> float:
        return top + plot_h - count / peak * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">Speaker score (cosine to the best '
        f"enrolled voiceprint): genuine {len(genuine)}, impostor {len(impostor)}</text>",
    ]
    for counts, colour in ((i_counts, "#d62728"), (g_counts, "#2ca02c")):
        for k, c in enumerate(counts):
            if c:
                x0, x1 = x(float(edges[k])), x(float(edges[k + 1]))
                parts.append(
                    f'<rect x="{x0 + 1:.1f}" y="{y(c):.1f}" width="{max(1.0, x1 - x0 - 2):.1f}" '
                    f'height="{top + plot_h - y(c):.1f}" fill="{colour}" fill-opacity="0.55" '
                    f'stroke="{colour}"/>'
                )
    # Axes, ticks and labels.
    base = top + plot_h
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="black"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="black"/>')
    tick = lo
    while tick <= hi + 1e-9:
        tx = x(tick)
        parts.append(f'<line x1="{tx:.1f}" y1="{base}" x2="{tx:.1f}" y2="{base + 5}" stroke="black"/>')
        parts.append(f'<text x="{tx:.1f}" y="{base + 18}" text-anchor="middle">{tick:.1f}</text>')
        tick = round(tick + 0.1, 10)
    for k in range(peak + 1):
        if peak > 10 and k % max(1, peak // 5):
            continue
        ty = y(k)
        parts.append(f'<line x1="{left - 5}" y1="{ty:.1f}" x2="{left}" y2="{ty:.1f}" stroke="black"/>')
        parts.append(f'<text x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end">{k}</text>')
    parts.append(
        f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
        'text-anchor="middle">attempts</text>'
    )
    # A rug: every attempt as a short tick, so single points are visible under tall bars.
    for values, colour, offset in ((genuine, "#2ca02c", 26), (impostor, "#d62728", 34)):
        for v in values:
            parts.append(
                f'<line x1="{x(v):.1f}" y1="{base + offset}" x2="{x(v):.1f}" y2="{base + offset + 6}" '
                f'stroke="{colour}"/>'
            )
    for k, t in enumerate(thresholds):
        tx = x(t)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{base}" stroke="#333" stroke-dasharray="4 3"/>'
        )
        # Bands can have close thresholds: one label row each so the labels never overlap.
        parts.append(f'<text x="{tx + 3:.1f}" y="{top + 12 + 12 * k}" font-size="10">thr {t:.3f}</text>')
    legend_y = height - 12
    parts.append(
        f'<rect x="{left}" y="{legend_y - 10}" width="12" height="12" fill="#2ca02c" fill-opacity="0.55"/>'
    )
    parts.append(
        f'<text x="{left + 18}" y="{legend_y}">genuine (the speaker is enrolled in that household)</text>'
    )
    parts.append(
        f'<rect x="{left + 360}" y="{legend_y - 10}" width="12" height="12" fill="#d62728" '
        'fill-opacity="0.55"/>'
    )
    parts.append(f'<text x="{left + 378}" y="{legend_y}">impostor (anyone else)</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- JUnit
def write_junit(summary: RunSummary, path: Path) -> None:
    suite = ET.Element(
        "testsuite",
        name="purchase-guard replay",
        tests=str(len(summary.results)),
        failures=str(summary.count(FAILED)),
        errors=str(summary.count(INVALID)),
        skipped=str(summary.count(SKIPPED)),
        time=f"{summary.seconds:.3f}",
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    for r in summary.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="replay." + Path(r.path).parent.name,
            name=r.name,
            file=r.path,
            time=f"{r.seconds:.3f}",
        )
        if r.status == FAILED:
            failure = ET.SubElement(case, "failure", message=r.message)
            failure.text = "\n".join(_step_line(s) for s in r.steps if not s.passed) or r.message
        elif r.status == INVALID:
            ET.SubElement(case, "error", message=r.message, type="ScenarioError")
        elif r.status == SKIPPED:
            ET.SubElement(case, "skipped", message=r.message)
        if r.steps:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(_step_line(s) for s in r.steps)
    root = ET.Element("testsuites")
    root.append(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _step_line(s: StepResult) -> str:
    codes = ",".join(c for c, _ in s.reasons)
    where = f" @ {s.household}" if s.household else ""
    score = (
        f" score={s.score:.3f}/{s.threshold:.3f}" if s.score is not None and s.threshold is not None else ""
    )
    verdict = "ok" if s.passed else "FAIL " + "; ".join(s.problems)
    return f"{s.label}{where}: expected {s.expected or '-'} got {s.actual} [{codes}]{score} {verdict}"


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right}
.passed{color:#1a7f37;font-weight:bold}.failed,.invalid{color:#c62828;font-weight:bold}.skipped{color:#8a6d00;font-weight:bold}
tr.bad td{background:#fdecea}.diag{background:#e6f4ea}.off{background:#fdecea;font-weight:bold}
.danger{background:#c62828;color:white;font-weight:bold}
details{margin:6px 0}summary{cursor:pointer}code{font-size:12px}.muted{color:#666}
"""


def write_html(summary: RunSummary, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    steps = summary.steps
    genuine, impostor, thresholds = voice_scores(steps)
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>purchase-guard replay</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>purchase-guard replay report</h1>",
        f"<p><b>{html.escape(summary.line())}</b></p>",
        f"<p class='muted'>run {html.escape(summary.run_id)}, written "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}</p>",
        _scenario_table(summary.results),
        "<h2>Expected vs actual outcome</h2>",
        "<p class='muted'>Evaluate and confirm steps. The red cell is the one that must stay empty: "
        "an ALLOW where the scenario expected anything else.</p>",
        _confusion_html(confusion(steps)),
        "<h2>Latency</h2>",
        "<p class='muted'>Wall time of each call as the runner saw it (gRPC round trip included), in ms.</p>",
        _latency_html(latency_table(steps)),
        "<h2>Speaker scores: genuine vs impostor</h2>",
        _voice_rates(steps),
        score_plot_svg(genuine, impostor, thresholds)
        if genuine or impostor
        else "<p>No scored voice steps.</p>",
        "<h2>Decision trails</h2>",
        *(_scenario_details(r) for r in summary.results),
        "</body></html>",
    ]
    path = folder / "index.html"
    path.write_text("\n".join(out), encoding="utf-8")
    (folder / "results.json").write_text(
        json.dumps(
            {
                "summary": summary.line(),
                "run_id": summary.run_id,
                "target": summary.target,
                "seconds": summary.seconds,
                "latency_ms": latency_table(steps),
                "scenarios": [asdict(r) for r in summary.results],
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    return path


def _scenario_table(results: Sequence[ScenarioResult]) -> str:
    rows = [
        "<h2>Scenarios</h2><table><tr><th>scenario</th><th>status</th><th>steps</th><th>s</th><th>note</th></tr>"
    ]
    for r in results:
        bad = " class='bad'" if r.status in (FAILED, INVALID) else ""
        rows.append(
            f"<tr{bad}><td><a href='#{_anchor(r)}'>{html.escape(r.name)}</a><br><span class='muted'>"
            f"{html.escape(r.path)}</span></td><td class='{r.status}'>{r.status}</td>"
            f"<td class='num'>{sum(1 for s in r.steps if s.passed)}/{len(r.steps)}</td>"
            f"<td class='num'>{r.seconds:.1f}</td><td>{html.escape(r.message)}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _confusion_html(table: dict[str, Counter[str]]) -> str:
    rows = ["<table><tr><th>expected \\ actual</th>", *(f"<th>{c}</th>" for c in OUTCOME_COLUMNS), "</tr>"]
    for expected in ("ALLOW", "DENY", "CHALLENGE", "error"):
        counts = table.get(expected, Counter())
        rows.append(f"<tr><th>{expected}</th>")
        for col in OUTCOME_COLUMNS:
            n = counts.get(col, 0)
            cls = ""
            if col == expected:
                cls = "diag"
            elif n and col == "ALLOW":
                cls = "danger"
            elif n:
                cls = "off"
            rows.append(f"<td class='num {cls}'>{n}</td>")
        rows.append("</tr>")
    rows.append("</table>")
    return "".join(rows)


def _latency_html(table: dict[str, dict[str, float]]) -> str:
    if not table:
        return "<p>No calls.</p>"
    cols = ("n", "p50", "p90", "p95", "p99", "max")
    rows = ["<table><tr><th>call</th>", *(f"<th>{c}</th>" for c in cols), "</tr>"]
    for action, stats in table.items():
        cells = "".join(
            f"<td class='num'>{int(stats[c]) if c == 'n' else f'{stats[c]:.1f}'}</td>" for c in cols
        )
        rows.append(f"<tr><th>{action}</th>{cells}</tr>")
    rows.append("</table>")
    return "".join(rows)


def _voice_rates(steps: Sequence[StepResult]) -> str:
    g = [s for s in steps if s.genuine is True and s.verified is not None]
    i = [s for s in steps if s.genuine is False and s.verified is not None]
    g_ok = sum(1 for s in g if s.verified)
    i_ok = sum(1 for s in i if s.verified)
    return (
        f"<p>Genuine voices verified: {g_ok}/{len(g)}; "
        f"impostor voices verified (false accepts): {i_ok}/{len(i)}. "
        "<span class='muted'>A voice is genuine when the audio's speaker was enrolled in that household; "
        "dashed lines are the thresholds the guard applied (they depend on speech length).</span></p>"
    )


def _anchor(r: ScenarioResult) -> str:
    return "s-" + "".join(ch if ch.isalnum() else "-" for ch in r.path)


def _scenario_details(r: ScenarioResult) -> str:
    opened = " open" if r.status in (FAILED, INVALID) else ""
    head = (
        f"<details id='{_anchor(r)}'{opened}><summary><span class='{r.status}'>{r.status.upper()}</span> "
        f"{html.escape(r.name)} <span class='muted'>{html.escape(r.path)}</span></summary>"
    )
    parts = [head]
    if r.description:
        parts.append(f"<p>{html.escape(r.description)}</p>")
    if r.message:
        parts.append(f"<p><b>{html.escape(r.message)}</b></p>")
    if r.steps:
        parts.append(
            "<table><tr><th>step</th><th>household</th><th>expected</th><th>actual</th><th>reasons</th>"
            "<th>score / thr</th><th>speaker (voice)</th><th>ms</th><th>guard time</th><th>detail</th>"
            "<th>problems</th></tr>"
        )
        for s in r.steps:
            reasons = "<br>".join(
                f"<code title='{html.escape(msg, quote=True)}'>{html.escape(code)}</code>"
                for code, msg in s.reasons
            )
            score = (
                f"{s.score:.3f} / {s.threshold:.3f}"
                if s.score is not None and s.threshold is not None
                else ""
            )
            who = html.escape(s.speaker or ("unknown" if s.score is not None else ""))
            if s.voice:
                tag = "genuine" if s.genuine else "impostor" if s.genuine is False else ""
                who += f" <span class='muted'>({html.escape(s.voice)}{', ' + tag if tag else ''})</span>"
            ms = f"{s.latency_ms:.0f}" if s.latency_ms is not None else ""
            bad = "" if s.passed else " class='bad'"
            parts.append(
                f"<tr{bad}><td>{html.escape(s.label)}</td><td>{html.escape(s.household)}</td>"
                f"<td>{html.escape(s.expected)}</td><td>{html.escape(s.actual)}</td><td>{reasons}</td>"
                f"<td class='num'>{score}</td><td>{who}</td><td class='num'>{ms}</td>"
                f"<td>{html.escape(s.decided_at)}</td>"
                f"<td>{html.escape(s.detail)}</td><td>{html.escape('; '.join(s.problems))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</details>")
    return "\n".join(parts)
