"""A simulated national broadcast against the fleet window: rates from real prints, scale simulated.

    python scripts/bench_fleet.py --data ../shared/data [--sizes 10000,100000,1000000] [--quick]

Real fingerprints of real speech decide every rate (the test split of scripts/eval_broadcast.py:
LibriSpeech, JFK and FSDD broadcasts heard by several homes through their own rooms at 5 dB
SNR; a pool of unrelated utterances including speechocean762's read prompts said by many
people, FSDD digit strings said by six speakers, and homes sharing background noise):

- per-pair detection at 5 dB through the inverted index, and through the scanning index on
  the same pairs (the ratio says what the index loses);
- broadcast households flagged once 3 have been seen (a real BroadcastGuard on the indexed
  window, each home a distinct device of one backend, the window pre-loaded with the pool);
- false matches per pair in the pool, and false verdicts when the whole pool arrives within
  one search span (every utterance a distinct source): both with the cluster rule and
  counting the queries the rule without consistency would have refused (two or more
  matched sources).

Simulated, because the machine holds no million real utterances: a window of N utterances
in 10 minutes holds N * spread / 600 within the search span, the only ones a query reads.
For the latency and memory at N those are filled with bit-scrambled copies of the pool's
prints (each XORed with its own random word: real bit statistics, unrelated content), and
the false-verdict rate at N is extrapolated from the pool's measured per-pair rate p and
consistent share c: P(verdict) = P(Poisson(n p) >= min_sources - 1) * c for n in the span.

Prints the table and writes reports/bench/fleet.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import eval_broadcast as eb  # the evaluation's material: rooms, programmes, the pool
import numpy as np
from script_paths import default_data_dir

from purchase_guard.broadcast.denylist import Denylist, MemoryClipStore
from purchase_guard.broadcast.fingerprint import Fingerprint
from purchase_guard.broadcast.guard import BroadcastGuard, find_cluster
from purchase_guard.broadcast.index import IndexedWindow, MemoryPostings
from purchase_guard.broadcast.window import MemoryWindow, WindowEntry
from purchase_guard.clock import SequentialIds
from purchase_guard.config import Settings
from purchase_guard.domain import ReasonCode

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
WINDOW_S = 600.0
SETTINGS = Settings()
SPAN = timedelta(seconds=SETTINGS.broadcast_max_spread_seconds)
NEED = SETTINGS.broadcast_min_sources - 1  # matched other sources a verdict needs


def entry(name: str, fp: Fingerprint, at: datetime) -> WindowEntry:
    return WindowEntry(name, f"hh-{name}", "d", f"dec-{name}", at, fp, f"backend\x1fhh-{name}\x1fd")


def material(
    data: Path, quick: bool, seed: int, homes: int
) -> tuple[dict[tuple[int, int], Fingerprint], list[Any]]:
    audio = eb.Audio(data)
    rng = np.random.default_rng(seed)
    progs = eb.programs(audio, "test", rng, quick)
    copies: dict[tuple[int, int], Fingerprint] = {}
    for p, prog in enumerate(progs):
        for h in range(homes):
            room = eb.random_room(rng, audio, 5.0)
            fp = eb.print_of(eb.play(audio, prog.samples, prog.start_s, prog.end_s, room))
            if fp.voiced_seconds >= 1.0:
                copies[(p, h)] = fp
    return copies, eb.negatives(audio, "test", rng, quick)


def per_pair(
    copies: dict[tuple[int, int], Fingerprint], pool: list[Fingerprint], homes: int
) -> dict[str, Any]:
    indexed = IndexedWindow(MemoryPostings(), search_span=SPAN)
    scan = MemoryWindow()
    for k, fp in enumerate(pool):
        for w in (indexed, scan):
            w.add(entry(f"n{k}", fp, T0))
    for (p, h), fp in copies.items():
        for w in (indexed, scan):
            w.add(entry(f"c{p}-{h}", fp, T0))
    counts = {"index": 0, "scan": 0}
    pairs = 0
    for (p, h), fp in copies.items():
        q = entry(f"c{p}-{h}", fp, T0)
        found_i = {m.entry.entry_id for m in indexed.match(q)}
        found_s = {m.entry.entry_id for m in scan._local.match(q)}
        for h2 in range(homes):
            if h2 == h or (p, h2) not in copies:
                continue
            pairs += 1
            counts["index"] += f"c{p}-{h2}" in found_i
            counts["scan"] += f"c{p}-{h2}" in found_s
    return {
        "pairs": pairs,
        "index": counts["index"] / max(pairs, 1),
        "scan": counts["scan"] / max(pairs, 1),
        "index_over_scan": counts["index"] / max(counts["scan"], 1),
    }


def events(copies: dict[tuple[int, int], Fingerprint], pool: list[Fingerprint], homes: int) -> dict[str, Any]:
    flagged = seen = 0
    programmes = sorted({p for p, _ in copies})
    postings = MemoryPostings()
    window = IndexedWindow(postings, search_span=SPAN)
    for k, fp in enumerate(pool):
        window.add(entry(f"n{k}", fp, T0))
    guard = BroadcastGuard(window, Denylist(MemoryClipStore()), SequentialIds(), promote_for=timedelta(0))
    for p in programmes:
        order = [h for h in range(homes) if (p, h) in copies]
        decided: dict[str, bool] = {}
        for i, h in enumerate(order):
            check = guard.check(
                f"hh-{p}-{h}",
                f"d{h}",
                f"dec-{p}-{h}",
                _pcm_free(copies[(p, h)]),
                T0 + timedelta(seconds=i),
                caller_id="backend",
            )
            decided[f"dec-{p}-{h}"] = ReasonCode.BROADCAST_MATCH in [r.code for r in check.reasons]
            for _, dec in check.cluster_decisions:
                decided[dec] = True  # the late catch
        # From the third home on every home counts; the first two count through the late catch.
        if len(order) >= 3:
            seen += len(order)
            flagged += sum(decided.values())
    return {"homes": seen, "flagged": flagged / max(seen, 1)}


class _PrintedPcm:
    """The guard takes audio; the bench has prints. A stand-in the patched fingerprint reads."""

    def __init__(self, fp: Fingerprint) -> None:
        self.fp = fp
        self.samples = np.zeros(16, dtype=np.float32)


def _pcm_free(fp: Fingerprint) -> Any:
    return _PrintedPcm(fp)


def false_rates(pool: list[Fingerprint]) -> dict[str, Any]:
    """Every pool utterance queried against the rest, all inside one search span."""
    window = IndexedWindow(MemoryPostings(), search_span=SPAN)
    entries = [entry(f"n{k}", fp, T0 + timedelta(seconds=0.001 * k)) for k, fp in enumerate(pool)]
    for e in entries:
        window.add(e)
    matched_pairs = two_or_more = verdicts = 0
    for e in entries:
        found = [m for m in window.match(e) if m.entry.entry_id != e.entry_id]
        matched_pairs += len(found)
        if len({m.entry.source for m in found}) >= NEED:
            two_or_more += 1
            verdicts += bool(find_cluster(e, found))
    n = len(pool)
    p = matched_pairs / max(n * (n - 1), 1)
    c_obs = verdicts / two_or_more if two_or_more else 0.0
    # No consistent triple seen: the 95 % upper bound on the share (rule of three), if any
    # query had two matches; else the bound stays 1 (the rule is not credited).
    c_upper = (verdicts + 3) / two_or_more if two_or_more else 1.0
    return {
        "pool": n,
        "false_matches_per_pair": p,
        "queries_with_2_sources": two_or_more,
        "false_verdicts_in_span": verdicts,
        "consistent_share": c_obs,
        "consistent_share_upper95": min(1.0, c_upper),
    }


def poisson_at_least(lam: float, k: int) -> float:
    return 1.0 - sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(k))


def scale(
    pool: list[Fingerprint], n: int, queries: int, rng: np.random.Generator, redis_url: str = ""
) -> dict[str, Any]:
    in_span = max(1, round(n * SPAN.total_seconds() / WINDOW_S))
    postings: Any = MemoryPostings()
    if redis_url:
        import uuid

        import redis

        from purchase_guard.broadcast.postings_redis import RedisPostings

        client = redis.Redis.from_url(redis_url)
        prefix = f"pg-bench-fleet:{uuid.uuid4().hex}"
        postings = RedisPostings(client, prefix, SPAN)
    window = IndexedWindow(postings, window=SPAN, search_span=SPAN)
    t = time.perf_counter()
    prints_bytes = 0
    for k in range(in_span):
        base = pool[k % len(pool)]
        key = np.uint32(rng.integers(1, 2**32))
        fp = Fingerprint(base.bits ^ key, base.mask, base.hop_s)
        e = entry(f"s{k}", fp, T0 + timedelta(seconds=SPAN.total_seconds() * k / in_span))
        window.add(e)
    load_s = time.perf_counter() - t
    posting_bytes = 0
    if not redis_url:  # with Redis the replica keeps no entries at all
        for b in postings._buckets.values():
            prints_bytes += sum(e.fp.bits.nbytes + e.fp.mask.nbytes for e in b.entries.values())
        posting_bytes = postings.postings() * 10
    at = T0 + SPAN
    times: list[float] = []
    for k in range(queries):
        fp = pool[int(rng.integers(0, len(pool)))]
        q = entry(f"q{k}", fp, at)
        t0 = time.perf_counter()
        window.match(q)
        times.append((time.perf_counter() - t0) * 1000)
    if redis_url:
        for key in client.scan_iter(match=prefix + "*", count=10_000):
            client.delete(key)
    return {
        "postings": "redis" if redis_url else "memory",
        "window": n,
        "in_span": in_span,
        "load_s": round(load_s, 1),
        "query_ms_p50": round(float(np.percentile(times, 50)), 2),
        "query_ms_p99": round(float(np.percentile(times, 99)), 2),
        "replica_memory_mib_in_process": round((posting_bytes + prints_bytes) / 2**20, 1),
        "bytes_per_entry": round((posting_bytes + prints_bytes) / in_span),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--homes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--redis", default="", help="also time the Redis postings at the smallest size")
    args = ap.parse_args(argv)
    import logging

    import structlog

    import purchase_guard.broadcast.guard as guard_module

    # Each cluster logs a warning; thousands of them would bury the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    # Events run the real guard on prints made once (fingerprinting is measured elsewhere).
    guard_module.fingerprint = lambda pcm, params=None: pcm.fp  # type: ignore[assignment,misc]
    guard_module.clipped_fraction = lambda pcm: 0.0  # type: ignore[assignment]

    t = time.time()
    copies, negs = material(args.data, args.quick, args.seed, args.homes)
    pool = [n.fp for n in negs]
    print(
        f"material: {len(copies)} broadcast copies, {len(pool)} pool prints ({time.time() - t:.0f} s)",
        flush=True,
    )
    pairs = per_pair(copies, pool, args.homes)
    print(
        f"per-pair 5 dB: index {pairs['index']:.3f}, scan {pairs['scan']:.3f} ({pairs['pairs']} pairs)",
        flush=True,
    )
    ev = events(copies, pool, args.homes)
    print(f"households flagged once 3 seen: {ev['flagged']:.3f} of {ev['homes']}", flush=True)
    fr = false_rates(pool)
    print(f"pool: {fr}", flush=True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        in_span = n * SPAN.total_seconds() / WINDOW_S
        lam = in_span * fr["false_matches_per_pair"]
        two = poisson_at_least(lam, NEED)
        row = scale(pool, n, args.queries, rng)
        row["false_verdicts_without_consistency"] = two
        row["false_verdicts_per_evaluate"] = two * fr["consistent_share"]
        row["false_verdicts_per_evaluate_upper95"] = two * fr["consistent_share_upper95"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.redis:
        smallest = min(int(s) for s in args.sizes.split(",") if s)
        row = scale(pool, smallest, args.queries, rng, args.redis)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "command": "python scripts/bench_fleet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": platform.platform(),
        "span_seconds": SPAN.total_seconds(),
        "window_seconds": WINDOW_S,
        "min_sources": SETTINGS.broadcast_min_sources,
        "per_pair_5db": pairs,
        "events_5db": ev,
        "pool": fr,
        "scale": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(report, indent=2))
    print()
    print(
        "| window (10 min) | in span | false verdicts / Evaluate (95 % upper) | without consistency "
        "| query p50 / p99 ms | replica MiB (in process) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["postings"] == "redis":
            ms = f"{r['query_ms_p50']} / {r['query_ms_p99']}"
            print(f"| {r['window']:,} (Redis postings) | {r['in_span']:,} | | | {ms} | 0 (none kept) |")
            continue
        print(
            f"| {r['window']:,} | {r['in_span']:,} | {r['false_verdicts_per_evaluate']:.1e} "
            f"({r['false_verdicts_per_evaluate_upper95']:.1e}) | "
            f"{r['false_verdicts_without_consistency']:.1e} | "
            f"{r['query_ms_p50']} / {r['query_ms_p99']} | {r['replica_memory_mib_in_process']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
