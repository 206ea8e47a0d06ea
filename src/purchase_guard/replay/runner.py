"""`purchase-guard replay <folders or files> [--target host:port]`: run scenarios, report, exit code.

Without --target each scenario runs against its own in-process guard (real GE2E encoder,
throwaway SQLite store, frozen clock). With --target the scenarios drive a running guard
over gRPC with the operator credential, each in households created for this run.

Exit status: 0 when every scenario passed or was skipped for a capability the guard lacks,
1 when any scenario failed or a file was invalid, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from purchase_guard.api.client import add_tls_arguments, tls_from_args
from purchase_guard.replay.audio import AudioRenderer
from purchase_guard.replay.engine import (
    FAILED,
    INVALID,
    PASSED,
    SKIPPED,
    ScenarioResult,
    new_run_id,
    run_scenario,
)
from purchase_guard.replay.report import RunSummary, write_html, write_junit
from purchase_guard.replay.schema import Scenario, ScenarioError, discover, load_scenario, parse_duration
from purchase_guard.replay.target import InProcessTarget, RemoteTarget, Target

DEFAULT_DATA = Path("../shared/data")


class Progress:
    """A progress bar on stderr when it is a terminal; one line per scenario otherwise (CI logs)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()

    def start(self, name: str) -> None:
        if self.enabled and self.tty:
            self._bar(name)

    def finish(self, result: ScenarioResult) -> None:
        self.done += 1
        if not self.enabled:
            return
        mark = {PASSED: "ok  ", FAILED: "FAIL", SKIPPED: "skip", INVALID: "BAD "}[result.status]
        line = f"[{self.done:>3}/{self.total}] {mark} {result.name} ({result.seconds:.1f} s)"
        if result.status != PASSED and result.message:
            line += f": {result.message}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + "\n")
            if self.done < self.total:
                self._bar("")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _bar(self, name: str) -> None:
        width = 30
        filled = int(width * self.done / max(1, self.total))
        self.stream.write(
            f"\r\x1b[2K[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {name}"
        )
        self.stream.flush()


def load_all(paths: Sequence[Path], renderer: AudioRenderer) -> tuple[list[Scenario], list[ScenarioResult]]:
    """Every scenario that validates, and an INVALID result for each file that does not."""
    scenarios: list[Scenario] = []
    invalid: list[ScenarioResult] = []
    for path in discover(paths):
        try:
            scenarios.append(load_scenario(path, renderer))
        except ScenarioError as exc:
            invalid.append(ScenarioResult(path.stem, str(path), INVALID, str(exc)))
    return scenarios, invalid


def run(
    paths: Sequence[Path],
    target: Target,
    data_root: Path,
    *,
    name_filter: str = "",
    progress: Progress | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> RunSummary:
    """Load and run the scenarios under `paths`; invalid files are reported and the rest still run."""
    started = time.perf_counter()
    renderer = AudioRenderer(data_root)
    scenarios, invalid = load_all(paths, renderer)
    if name_filter:
        scenarios = [s for s in scenarios if name_filter in s.name or name_filter in str(s.path)]
        invalid = [r for r in invalid if name_filter in r.path]
    run_id = new_run_id()
    results: list[ScenarioResult] = []
    progress = progress or Progress(len(scenarios) + len(invalid), enabled=False)
    progress.total = len(scenarios) + len(invalid)
    for result in invalid:
        progress.finish(result)
        results.append(result)
    for scenario in scenarios:
        progress.start(scenario.name)
        result = run_scenario(scenario, target, renderer, run_id)
        progress.finish(result)
        if on_result is not None:
            on_result(result)
        results.append(result)
    return RunSummary(tuple(results), time.perf_counter() - started, target.description, run_id)


def _token(explicit: str | None, kind: str) -> str:
    """A token from the flag, else PURCHASE_GUARD_<KIND>_TOKEN, else its file (var/<kind>-token)."""
    if explicit:
        return explicit
    env = os.environ.get(f"PURCHASE_GUARD_{kind.upper()}_TOKEN")
    if env:
        return env
    path = Path(os.environ.get(f"PURCHASE_GUARD_{kind.upper()}_TOKEN_FILE", f"var/{kind}-token"))
    return path.read_text().strip() if path.is_file() else ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="purchase-guard replay",
        description="Replay QA scenarios (YAML + recordings) against a guard and report the outcome.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="scenario files or folders (searched for *.yaml)")
    p.add_argument("--target", help="host:port of a running guard; default: an in-process guard per scenario")
    p.add_argument(
        "--token",
        help="operator token for --target (default: $PURCHASE_GUARD_OPERATOR_TOKEN "
        "or the operator token file)",
    )
    p.add_argument(
        "--backend-token",
        help="backend credential for --target's Evaluate and Confirm (default: "
        "$PURCHASE_GUARD_BACKEND_TOKEN or the backend token file)",
    )
    p.add_argument(
        "--data", type=Path, help="data root for audio (default: $PURCHASE_GUARD_DATA_DIR or ../shared/data)"
    )
    p.add_argument("--junit", type=Path, help="write JUnit XML here")
    p.add_argument(
        "--report", type=Path, help="write an HTML report (index.html, results.json) into this folder"
    )
    p.add_argument(
        "--gap",
        default="49h",
        help="with --target: move the guard's clock this far after each scenario (default 49h, past the "
        "broadcast window and promotion period), so scenarios do not match each other's audio",
    )
    p.add_argument(
        "-k", dest="name_filter", default="", help="only scenarios whose name or path contains this"
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_tls_arguments(p)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from purchase_guard.logs import configure_logging

    # The in-process guards log every decision; the report is the output here, so only errors show.
    configure_logging("error")
    data_root = args.data or Path(os.environ.get("PURCHASE_GUARD_DATA_DIR", str(DEFAULT_DATA)))
    if not data_root.is_dir():
        print(
            f"replay: data root {data_root} not found (use --data or PURCHASE_GUARD_DATA_DIR)",
            file=sys.stderr,
        )
        return 2
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"replay: no such file or folder: {missing[0]}", file=sys.stderr)
        return 2
    target: Target
    if args.target:
        token = _token(args.token, "operator")
        backend = _token(args.backend_token, "backend")
        if not token or not backend:
            print(
                "replay: --target needs the operator token (--token or PURCHASE_GUARD_OPERATOR_TOKEN) and "
                "the backend token (--backend-token or PURCHASE_GUARD_BACKEND_TOKEN)",
                file=sys.stderr,
            )
            return 2
        try:
            gap = timedelta(seconds=parse_duration(args.gap))
        except ValueError as exc:
            print(f"replay: --gap: {exc}", file=sys.stderr)
            return 2
        target = RemoteTarget(args.target, token, gap, tls=tls_from_args(args), backend_token=backend)
    else:
        target = InProcessTarget()
    try:
        summary = run(
            args.paths,
            target,
            data_root.resolve(),
            name_filter=args.name_filter,
            progress=Progress(0, enabled=not args.quiet),
        )
    finally:
        target.close()
    for r in summary.results:
        if r.status in (FAILED, INVALID):
            print(f"{r.status.upper()} {r.name}: {r.message}")
        elif r.status == SKIPPED:
            print(f"SKIPPED {r.name}: {r.message}")
    if args.junit:
        write_junit(summary, args.junit)
        print(f"junit: {args.junit}")
    if args.report:
        print(f"report: {write_html(summary, args.report)}")
    print(summary.line())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
