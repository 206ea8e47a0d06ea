"""The no-audio part of Evaluate: latency and store round trips per decision, SQLite and PostgreSQL.

    python scripts/bench_decide.py --out reports/bench [--stores sqlite,postgres] [--n 400]
        [--postgres-dsn "host=127.0.0.1 port=5432 dbname=test user=postgres"]

The real `Guard` (validation, idempotency lookup, members and voiceprints, household lock,
replay check, policy, spend, PIN and digit-template reads, verdict, decision + audit + spend +
audio print + events written in one transaction) on a fresh store, with the speaker verifier
replaced by a stub that answers a verified adult at once (bench_load.py's StubVerifier) and the
real digit checker (so the reads a server makes for spoken challenges are made). Each request
is a new request id and new audio (0.25 s of a synthetic melody as 8 kHz PCM, a different
melody each time, so no decision is a replay and every one takes the ALLOW path) for one of 16
households in turn. The audio work is left out as the encoder is: the input is 16 kHz PCM (no
resampling) and the fingerprint of each take is computed before the timing and handed to the
pipeline when it asks (the replay comparison against the household's stored prints, and the
print written with the decision, stay in).

Measured: p50/p95/p99 at 1 and 8 threads; and round trips to the database per decision at one
thread, counted at the driver (SQLite: every statement the connection runs, by its trace
callback; PostgreSQL: every statement psycopg sends outside a pipeline, BEGIN and COMMIT
included, plus every wait of a pipeline for queued results), with the statements of one
decision listed (a statement sent in a pipeline is listed, but is no round trip of its own).
Targets (issue 18): p99 <= 2 ms on SQLite, <= 5 ms on PostgreSQL. Writes {out}/decide.json and
prints the table.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from bench_load import (
    AMOUNT_MINOR,
    BENCH_MASTER_KEY,
    DEFAULT_DSN,
    ROOT,
    no_audio_guard,
    seed_bench_households,
    summary,
)

sys.path.insert(0, str(ROOT / "tests"))

from purchase_guard.sealing import MasterKeys

LEVELS = (1, 8)


class Statements:
    """Counts statements sent to the database, and round trips: the times the client sends and
    then waits for the database's answer. Without batching the two are the same; a statement
    queued in a PostgreSQL pipeline is a statement but no round trip of its own, and each time
    the pipeline waits for results with statements queued since its last wait is one."""

    def __init__(self) -> None:
        self.on = False
        self.count = 0
        self.trips = 0
        self.texts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

        self._sent = False  # statements queued in a pipeline since its last wait
        # When the last COMMIT began (SQLite's trace callback runs as a statement starts), so a
        # one-thread decision's COMMIT and what follows it can be timed apart from the rest.
        self.commit_started = 0.0

    def waited(self) -> None:
        """A pipeline waits for results: a round trip if statements were queued since the last
        one (results of statements already sent arrive in the same trip)."""
        if self.on:
            with self._lock:
                self.trips += 1 if self._sent else 0
                self._sent = False

    def saw(self, text: str, *, queued: bool = False) -> None:
        if text.startswith("COMMIT"):
            self.commit_started = time.perf_counter()
        if self.on:
            with self._lock:
                self.count += 1
                self.trips += 0 if queued else 1
                self._sent = self._sent or queued
                shape = re.sub(r"X'[0-9A-Fa-f]*'|'[^']*'|\b\d+(\.\d+)?\b", "?", " ".join(text.split()))
                self.texts[shape.replace("%s", "?")[:100]] += 1


def fsync_floor(n: int = 200) -> dict[str, float]:
    """What one durable commit cannot go below here: p50/p95/p99 of fsync after appending 4 KiB
    to a file in the temporary folder (where the benchmark's SQLite file lives; on this machine
    the same filesystem as PostgreSQL's WAL). SQLite in WAL mode with synchronous=FULL syncs
    the log at every COMMIT, and PostgreSQL with synchronous_commit=on flushes its WAL."""
    took = []
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(Path(tmp) / "sync", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            for _ in range(n):
                os.write(fd, b"\0" * 4096)
                t0 = time.perf_counter()
                os.fsync(fd)
                took.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
    return {f"p{q}_ms": round(float(np.percentile(took, q)) * 1000, 2) for q in (50, 95, 99)}


def pcm_takes(n: int) -> list[bytes]:
    """`n` different 0.25 s melodies (tests/support/takes.py's) as 16 kHz PCM16 (no resampling)."""
    from support.takes import _melody

    out = []
    for k in range(n):
        x = _melody("low", 10_000 + k, 0.6)
        mid = x[int(0.3 * 16000) : int(0.3 * 16000) + 4000]
        out.append((np.clip(mid, -1, 1) * 32767).astype(np.int16).tobytes())
    return out


@contextmanager
def precomputed_fingerprints(takes: list[bytes]) -> Iterator[None]:
    """The pipeline's fingerprint (audio work, like the encoder) answered from a table computed
    beforehand: the timing is the decision's, the replay check and the stored print stay real."""
    import purchase_guard.pipeline.guard as pipeline
    from purchase_guard.voice.audio import decode_audio

    real = pipeline.fingerprint
    table = {}
    for pcm16 in takes:
        pcm = decode_audio(pcm16=pcm16, sample_rate_hz=16000)
        table[pcm.samples.tobytes()] = real(pcm)

    def lookup(pcm: Any, *args: Any, **kwargs: Any) -> Any:
        found = table.get(pcm.samples.tobytes())
        return found if found is not None else real(pcm, *args, **kwargs)

    pipeline.fingerprint = lookup  # type: ignore[assignment]
    try:
        yield
    finally:
        pipeline.fingerprint = real


@contextmanager
def open_store(backend: str, dsn: str, counter: Statements) -> Iterator[Any]:
    if backend == "sqlite":
        from purchase_guard.store.sqlite import SqliteStore

        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o700)
            store = SqliteStore(Path(tmp) / "decide.db", master_keys=MasterKeys.of(BENCH_MASTER_KEY))
            store._conn.set_trace_callback(counter.saw)
            if store._owned_keys is not None:
                store._owned_keys._conn.set_trace_callback(counter.saw)
            try:
                yield store
            finally:
                store.close()
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    from purchase_guard.store.postgres import PostgresStore

    schema = f"guard_decide_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    from psycopg._pipeline_base import BasePipeline

    original_execute = psycopg.Connection.execute
    original_transaction = psycopg.Connection.transaction
    original_fetch = BasePipeline._fetch_gen

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        counter.saw(query if isinstance(query, str) else str(query), queued=self._pipeline is not None)
        return original_execute(self, query, *args, **kwargs)

    @contextmanager
    def transaction(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        # In a pipeline, BEGIN is queued and COMMIT's wait is the pipeline's (counted below).
        counter.saw("BEGIN", queued=self._pipeline is not None)
        with original_transaction(self, *args, **kwargs) as tx:
            yield tx
        counter.saw("COMMIT", queued=self._pipeline is not None)

    def fetch(self: Any, *, flush: bool) -> Any:
        if self.result_queue:  # results queued and not read yet: the client waits for them
            counter.waited()
        return (yield from original_fetch(self, flush=flush))

    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    psycopg.Connection.transaction = transaction  # type: ignore[method-assign,assignment]
    BasePipeline._fetch_gen = fetch  # type: ignore[method-assign]
    try:
        store = PostgresStore(
            make_conninfo(dsn, options=f"-c search_path={schema}"),
            pool_size=20,
            master_keys=MasterKeys.of(BENCH_MASTER_KEY),
        )
        try:
            yield store
        finally:
            store.close()
    finally:
        psycopg.Connection.execute = original_execute  # type: ignore[method-assign]
        psycopg.Connection.transaction = original_transaction  # type: ignore[method-assign]
        BasePipeline._fetch_gen = original_fetch  # type: ignore[method-assign]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def decider(guard: Any, households: list[str], takes: list[bytes]) -> Callable[[int], Any]:
    from purchase_guard.domain import AudioInput, LineItem, Money, Order
    from purchase_guard.pipeline.guard import EvaluateInput

    item = LineItem("sku-1", "Batteries", "household", 1, Money(AMOUNT_MINOR, "USD"))
    order = Order((item,), Money(AMOUNT_MINOR, "USD"), "bench")
    tag = uuid.uuid4().hex[:8]

    def one(i: int) -> Any:
        audio = AudioInput(pcm16=takes[i], sample_rate_hz=16000)
        return guard.evaluate(
            EvaluateInput(f"d-{tag}-{i}", households[i % len(households)], "bench", order, audio)
        )

    return one


def run_store(backend: str, args: argparse.Namespace, takes: list[bytes]) -> dict[str, Any]:
    from purchase_guard.voice.digits import load_digit_checker
    from purchase_guard.voice.ge2e import NAME

    counter = Statements()
    out: dict[str, Any] = {"store": backend}
    with open_store(backend, args.postgres_dsn, counter) as store:
        seeded = seed_bench_households(store, NAME, tuple([1.0] + [0.0] * 255))
        digits = load_digit_checker()
        guard = no_audio_guard(store, NAME, digits=digits)
        one = decider(guard, seeded.household_ids, takes)
        next_take = 0
        for _ in range(30):  # warm-up: statements prepared, pool filled, data keys cached
            one(next_take)
            next_take += 1
        # Round trips: one thread, every statement counted.
        counter.on = True
        counter.texts.clear()
        k = 40
        outcomes: collections.Counter[str] = collections.Counter()
        for _ in range(k):
            outcomes[one(next_take).outcome.value] += 1
            next_take += 1
        counter.on = False
        out["round_trips_per_decision"] = counter.trips / k
        out["statements_per_decision_total"] = counter.count / k
        out["statements_per_decision"] = {t: c / k for t, c in counter.texts.most_common()}
        out["outcomes"] = dict(outcomes)
        levels = []
        for c in LEVELS:
            n = args.n
            first = next_take
            next_take += n
            results: list[Any] = []

            commits: list[float] = []

            one_sqlite_thread = c == 1 and backend == "sqlite"

            def timed(
                i: int,
                results: list[Any] = results,
                commits: list[float] = commits,
                apart: bool = one_sqlite_thread,
            ) -> float:
                t0 = time.perf_counter()
                decision = one(i)
                t1 = time.perf_counter()
                results.append(decision.outcome.value)
                if apart and counter.commit_started > t0:
                    commits.append(t1 - counter.commit_started)
                return t1 - t0

            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=c) as pool:
                latencies = list(pool.map(timed, range(first, first + n)))
            wall = time.perf_counter() - t0
            level: dict[str, Any] = summary(latencies, wall)
            level.update(concurrency=c, outcomes=dict(collections.Counter(results)))
            if commits:
                # One thread on SQLite: from the COMMIT's start to the decision's return (the
                # COMMIT, with any checkpoint SQLite runs inside it, then the decision's log line).
                level["commit_and_after"] = {**summary(commits), "max_ms": 1000 * max(commits)}
            levels.append(level)
            print(f"[{backend}] c={c}: p50 {level['p50_ms']:.2f} p99 {level['p99_ms']:.2f} ms", flush=True)
        out["levels"] = levels
    return out


def history(args: argparse.Namespace, takes: list[bytes]) -> dict[str, Any]:
    """How the no-audio part grows with what one household has said within the replay window:
    one household, `args.history` decisions in a row on SQLite, p50 of each block of 100 (the
    whole Evaluate, and the replay check within it), with the replay cache at its default and
    off (PURCHASE_GUARD_REPLAY_CACHE_MIB=0, every check opening the whole window), alternating
    decision by decision on two guards over one store so both see the same machine."""
    from purchase_guard.config import Settings
    from purchase_guard.voice.digits import load_digit_checker
    from purchase_guard.voice.ge2e import NAME

    digits = load_digit_checker()
    spent: dict[str, list[float]] = {"cached": [], "uncached": []}
    whole: dict[str, list[float]] = {"cached": [], "uncached": []}
    with open_store("sqlite", args.postgres_dsn, Statements()) as store:
        seeded = seed_bench_households(store, NAME, tuple([1.0] + [0.0] * 255))
        guards = {
            "cached": no_audio_guard(store, NAME, digits=digits),
            "uncached": no_audio_guard(store, NAME, digits=digits, replay_cache_mib=0),
        }
        ones = {}
        for name, guard in guards.items():
            check = guard._check_replay

            def timed_check(*a: Any, _check: Any = check, _name: str = name, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return _check(*a, **k)
                finally:
                    spent[_name].append(time.perf_counter() - t0)

            guard._check_replay = timed_check
            ones[name] = decider(guard, seeded.household_ids[:1], takes)
        for i in range(args.history):
            name = ("cached", "uncached")[i % 2]
            t0 = time.perf_counter()
            ones[name](i)
            whole[name].append(time.perf_counter() - t0)
    blocks = []
    for lo in range(0, args.history, 200):
        row: dict[str, Any] = {"prints_before": f"{lo}-{min(lo + 200, args.history) - 1}"}
        for name in ("cached", "uncached"):
            part = slice(lo // 2, (lo + 200) // 2)
            row[f"{name}_evaluate_p50_ms"] = round(float(np.percentile(whole[name][part], 50)) * 1000, 2)
            row[f"{name}_replay_p50_ms"] = round(float(np.percentile(spent[name][part], 50)) * 1000, 2)
        blocks.append(row)
    return {"decisions": args.history, "default_cache_mib": Settings().replay_cache_mib, "blocks": blocks}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['cpus']} CPUs; load average {result['loadavg_start']} at start, "
        f"{result['loadavg_end']} at end; {result['n']} decisions per level.",
        "",
        "| store | round trips / decision | statements | threads | p50 ms | p95 ms | p99 ms | decisions/s"
        " | target p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    targets = {"sqlite": 2.0, "postgres": 5.0}
    for s in result["stores"]:
        for lv in s["levels"]:
            t = targets[s["store"]]
            met = "met" if lv["p99_ms"] <= t else "not met"
            lines.append(
                f"| {s['store']} | {s['round_trips_per_decision']:.1f} | "
                f"{s['statements_per_decision_total']:.1f} | {lv['concurrency']} | "
                f"{lv['p50_ms']:.2f} | {lv['p95_ms']:.2f} | {lv['p99_ms']:.2f} | "
                f"{lv['throughput_rps']:.0f} | <= {t:.0f} ms: {met} |"
            )
    for s in result["stores"]:
        for lv in s["levels"]:
            if "commit_and_after" in lv:
                ca = lv["commit_and_after"]
                lines.append(
                    f"\n{s['store']}, one thread: the COMMIT and what follows it (any checkpoint run "
                    f"inside the COMMIT, the decision's log line): p50 {ca['p50_ms']:.2f} / "
                    f"p95 {ca['p95_ms']:.2f} / p99 {ca['p99_ms']:.2f} / max {ca['max_ms']:.2f} ms"
                )
    for when in ("start", "end"):
        f = result[f"fsync_{when}"]
        lines.append(
            f"\nOne fsync of 4 KiB appended (the floor of a durable COMMIT), at {when}: "
            f"p50 {f['p50_ms']:.2f} / p95 {f['p95_ms']:.2f} / p99 {f['p99_ms']:.2f} ms"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/bench")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--postgres-dsn", default=os.environ.get("PURCHASE_GUARD_TEST_POSTGRES_DSN", DEFAULT_DSN))
    ap.add_argument(
        "--history",
        type=int,
        default=1000,
        help="decisions by one household for the growth measure (0: skip it)",
    )
    args = ap.parse_args()
    from purchase_guard.blas import single_threaded_blas
    from purchase_guard.logs import configure_logging

    single_threaded_blas()  # as a server process does at start (cli._serve)
    # Logged as the server logs (JSON lines on stderr at its default level): the decision's log
    # line is part of its cost. Send stderr to a file to keep the table readable.
    configure_logging("info")
    stores = [b for b in args.stores.split(",") if b]
    takes = pcm_takes(max(70 + len(LEVELS) * args.n, args.history))
    load0 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    result: dict[str, Any] = {
        "command": "python scripts/bench_decide.py " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "n": args.n,
        "loadavg_start": load0,
    }
    result["fsync_start"] = fsync_floor()
    with precomputed_fingerprints(takes):
        result["stores"] = [run_store(b, args, takes) for b in stores]
        result["fsync_end"] = fsync_floor()
        if args.history:
            result["history"] = history(args, takes)
    result["loadavg_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decide.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (out / "decide.md").write_text(table)
    print(table)
    for s in result["stores"]:
        print(
            f"{s['store']}: {s['round_trips_per_decision']:.1f} round trips per decision "
            f"({s['statements_per_decision_total']:.1f} statements), "
            f"outcomes {s['outcomes']}"
        )
        for text, count in s["statements_per_decision"].items():
            print(f"  {count:4.1f}  {text}")
    if "history" in result:
        print(
            "\nOne household's history (SQLite), p50 ms: Evaluate / replay check within it, with the "
            f"replay cache ({result['history']['default_cache_mib']} MiB) and without"
        )
        print("| prints before | cached | uncached |")
        print("|---|---|---|")
        for b in result["history"]["blocks"]:
            print(
                f"| {b['prints_before']} | {b['cached_evaluate_p50_ms']} / {b['cached_replay_p50_ms']} "
                f"| {b['uncached_evaluate_p50_ms']} / {b['uncached_replay_p50_ms']} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
