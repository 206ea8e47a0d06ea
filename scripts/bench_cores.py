"""All cores: replica throughput against the bare encoder run the way the server runs it, same run.

    python scripts/bench_cores.py --out reports/bench [--runtimes torch,onnx] [--processes 1,2]
        [--concurrency 32] [--measure 12] [--rounds 2] [--quick]

For each encoder runtime (PURCHASE_GUARD_GE2E_RUNTIME) and each number of server processes
(PURCHASE_GUARD_PROCESSES, one port shared with SO_REUSEPORT) it starts a real server
(`python -m purchase_guard serve`, SQLite store, 16 households enrolled over gRPC, rate limits
off as in bench_load.py) and, beside it, the bare encoder in as many processes of its own, each
built from the server's settings by the server's factory (app.build_encoder: the same runtime,
intra-op threads and request batching) and called by as many threads as a server process has
workers. Then, alternating in rounds so both see the same machine:

- bare: decode + VAD trim + embed of a 3 s utterance at `--concurrency` callers in total;
- replica: Evaluate over gRPC at `--concurrency` (one connection per caller, from two client
  processes, as bench_load.py), each request a 3 s utterance its household has not sent before
  (`bench_load.Requests`: 300 distinct utterances of the enrolled speaker over 16 households;
  the same audio over and over would be refused by the replay check, and the load would
  measure the DENY of a replay).

Reports throughput of each, their ratio per configuration, and the replica's best throughput
against the bare encoder's best over all configurations (the target: >= 0.9x). The broadcast
check is off unless `--broadcast redis` (several processes need the Redis window; the same
utterance sent over and over would otherwise be measured as a broadcast being found).
Writes {out}/cores.json and cores.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_load import (
    BENCH_HOUSEHOLDS,
    LOAD_UTTERANCES,
    BareEncoders,
    Requests,
    grpc_level,
    seed_via_api,
    server_env,
    settings_env,
    start_server,
    three_seconds,
    utterances,
)
from script_paths import default_data_dir


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def one_config(
    runtime: str, processes: int, args: argparse.Namespace, audio: bytes, load_audio: list[bytes]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o700)
        env = {
            "PURCHASE_GUARD_STORE": "sqlite",
            "PURCHASE_GUARD_SQLITE_PATH": str(workdir / "bench.db"),
            "PURCHASE_GUARD_GE2E_RUNTIME": runtime,
            "PURCHASE_GUARD_PROCESSES": str(processes),
        }
        if args.broadcast == "redis":
            env.update(
                {
                    "PURCHASE_GUARD_REDIS_URL": args.redis_url,
                    "PURCHASE_GUARD_BROADCAST_WINDOW": "redis",
                    "PURCHASE_GUARD_BROADCAST_INDEX": "index",
                }
            )
        else:
            env["PURCHASE_GUARD_BROADCAST_ENABLED"] = "0"
        print(f"[{runtime} x{processes}] starting server and bare encoder", flush=True)
        server = start_server(env, workdir)
        bare = None
        try:
            bases = Requests(seed_via_api(server.target, Path(args.data)), load_audio)
            bare = BareEncoders(settings_env(server_env(env, workdir)), audio, processes)
            grpc_level(server.target, bases, 4, 1.0, 3.0)  # warm-up: pools, first calls
            bare.load(4, 0.5, 2.0)
            rounds = []
            for r in range(args.rounds):
                print(f"[{runtime} x{processes}] round {r + 1}: bare, then replica", flush=True)
                b = bare.load(args.concurrency, args.warmup, args.measure)
                s = grpc_level(server.target, bases, args.concurrency, args.warmup, args.measure)
                rounds.append({"bare": b, "replica": s, "loadavg": loadavg()})
        finally:
            if bare is not None:
                bare.close()
            server.stop()
    bare_rps = sum(r["bare"]["throughput_rps"] for r in rounds) / len(rounds)
    replica_rps = sum(r["replica"]["throughput_rps"] for r in rounds) / len(rounds)
    return {
        "runtime": runtime,
        "processes": processes,
        "rounds": rounds,
        "bare_rps": bare_rps,
        "replica_rps": replica_rps,
        "ratio": replica_rps / bare_rps if bare_rps else float("nan"),
        "errors": sum(sum(r["replica"]["errors"].values()) for r in rounds),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['cpus']} CPUs, {result['platform']}; concurrency {result['concurrency']}, "
        f"{result['rounds']} round(s) of {result['measure_s']:.0f} s each; load average "
        f"{result['loadavg_start']} at start, {result['loadavg_end']} at end.",
        "",
        "| runtime | processes | bare encoder emb/s | replica Evaluate req/s | replica / bare "
        "| replica p50 / p99 ms | replica outcomes | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result["configs"]:
        last = c["rounds"][-1]["replica"]
        seen: dict[str, int] = {}
        for r in c["rounds"]:
            for k, v in r["replica"]["outcomes"].items():
                seen[k] = seen.get(k, 0) + v
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
        lines.append(
            f"| {c['runtime']} | {c['processes']} | {c['bare_rps']:.1f} | {c['replica_rps']:.1f} | "
            f"{c['ratio']:.2f}x | {last['p50_ms']:.0f} / {last['p99_ms']:.0f} | {outcomes} | {c['errors']} |"
        )
    best = result["best"]
    lines += [
        "",
        f"Fastest bare encoder: {best['bare']['runtime']} x{best['bare']['processes']} at "
        f"{best['bare']['bare_rps']:.1f} emb/s; best replica: {best['replica']['runtime']} "
        f"x{best['replica']['processes']} at {best['replica']['replica_rps']:.1f} req/s: "
        f"{best['ratio']:.2f}x (target >= 0.90: {'met' if best['ratio'] >= 0.9 else 'not met'}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/bench")
    ap.add_argument("--data", default=str(default_data_dir()))
    ap.add_argument("--runtimes", default="torch,onnx")
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--measure", type=float, default=12.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one round of 8 s per configuration")
    ap.add_argument("--broadcast", choices=("off", "redis"), default="off")
    ap.add_argument(
        "--redis-url", default=os.environ.get("PURCHASE_GUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/10")
    )
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.measure, args.warmup = 1, 8.0, 2.0
    audio = three_seconds(Path(args.data), "jackson")
    load_audio = utterances(Path(args.data), "jackson", LOAD_UTTERANCES)
    started = loadavg()
    configs = [
        one_config(rt, int(p), args, audio, load_audio)
        for rt in args.runtimes.split(",")
        if rt
        for p in args.processes.split(",")
        if p
    ]
    best_bare = max(configs, key=lambda c: c["bare_rps"])
    best_replica = max(configs, key=lambda c: c["replica_rps"])
    result: dict[str, Any] = {
        "command": "python scripts/bench_cores.py " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "households": BENCH_HOUSEHOLDS,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "measure_s": args.measure,
        "broadcast": args.broadcast,
        "loadavg_start": started,
        "loadavg_end": loadavg(),
        "configs": configs,
        "best": {
            "bare": {k: best_bare[k] for k in ("runtime", "processes", "bare_rps")},
            "replica": {k: best_replica[k] for k in ("runtime", "processes", "replica_rps")},
            "ratio": best_replica["replica_rps"] / best_bare["bare_rps"],
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cores.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (out / "cores.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
