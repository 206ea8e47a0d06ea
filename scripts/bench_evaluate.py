"""Evaluate latency with a 3 s utterance over real gRPC, against the bare encoder in the same run.

    python scripts/bench_evaluate.py --out reports/bench [--n 200] [--stages 100]

Starts a real server (GE2E weights, SQLite file store) on a free port, enrolls one FSDD
speaker in each of a few households, then times sequential Evaluate calls, each 3 s of that
speaker's speech the household has not sent before (`bench_load.utterances`: the same audio
again would be refused by the replay check, and the call measured would be a replay's DENY).
In the same run it times the bare encoder on the same audio, so the service overhead
is reported as a ratio that does not depend on how fast this machine happens to be.
With `--stages N` it then makes N more Evaluates with tracing on (the pipeline's own spans,
exported to memory) and prints where an Evaluate's wall time goes: each step's p50 and its
mean share of the call as the client timed it, the guard's time outside its steps, and the
call's time outside the guard (gRPC, the servicer, the client). Tracing is off for the timed
series above, so its own cost does not reach the ratio.
Writes JSON and a Markdown table to --out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_load import utterances
from script_paths import default_data_dir
from support.audio import fsdd_join, fsdd_wav

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import build_server
from purchase_guard.app import build_app
from purchase_guard.config import Settings
from purchase_guard.voice.audio import decode_audio
from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.vad import trim_silence

OPERATOR = "bench-" + "o" * 30
WARMUP = 10
# Each household hears every 8th call: about 40 of the default run's (a replay of a recording
# spliced into new audio is still found: bench_load.utterances, and the outcomes say so).
HOUSEHOLDS = 8


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def three_seconds(data: Path, speaker: str) -> bytes:
    parts = []
    k = 0
    while sum(len(p) for p in parts) < 3 * 8000:
        samples, _ = fsdd_join(data, speaker, "2749", 30 + k)
        parts.append(samples)
        k += 1
    audio = np.concatenate(parts)[: 3 * 8000]
    buf = io.BytesIO()
    sf.write(buf, audio, 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/bench")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--data", default=str(default_data_dir()))
    ap.add_argument("--stages", type=int, default=0, help="Evaluates traced for the breakdown by step")
    args = ap.parse_args()
    data = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    encoder = Ge2eEncoder()
    audio = three_seconds(data, "jackson")
    pcm = decode_audio(encoded=audio)
    # New audio for every call: warm-up, timed series and traced calls.
    fresh = iter(utterances(data, "jackson", WARMUP + args.n + args.stages))

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            listen="127.0.0.1:0",
            metrics_port=0,
            sqlite_path=Path(tmp) / "bench.db",
            operator_token=OPERATOR,
            operator_token_file=Path(tmp) / "op",
            master_key_file=Path(tmp) / "master-key",
            # The benchmark measures deciding, not the abuse limits a real device would hit.
            rate_limits_enabled=False,
        ).validated()
        running = build_server(build_app(settings, encoder=encoder))
        client = GuardClient(f"127.0.0.1:{running.port}", OPERATOR, backend_token=running.app.backend_token)
        takes = [fsdd_wav(data, "jackson", d, t) for d, t in (("3817", 0), ("5092", 1), ("6641", 2))]
        households = []
        for k in range(HOUSEHOLDS):
            hh = client.create_household(f"Bench {k}", "UTC", "USD")["household"]["household_id"]
            member = client.add_member(hh, "Jackson", "ADULT", True)["member"]["member_id"]
            client.enroll(hh, member, takes)
            households.append(hh)
        order = {
            "items": [
                {
                    "sku": "s",
                    "title": "t",
                    "category": "c",
                    "quantity": 1,
                    "unit_price": {"minor_units": "100", "currency": "USD"},
                }
            ],
            "total": {"minor_units": "100", "currency": "USD"},
            "merchant": "m",
        }
        for i in range(WARMUP):  # warm-up: first torch calls allocate
            client.evaluate(f"warm{i}", households[i % HOUSEHOLDS], "d", order, next(fresh))
            encoder.embed(trim_silence(pcm).samples)
        service_ms: list[float] = []
        encoder_ms: list[float] = []
        outcomes: dict[str, int] = {}
        # Interleaved so that both series see the same machine conditions.
        for i in range(args.n):
            said = next(fresh)
            t0 = time.perf_counter()
            resp = client.evaluate(f"b{i}", households[i % HOUSEHOLDS], "d", order, said)
            service_ms.append((time.perf_counter() - t0) * 1000)
            outcomes[resp["outcome"]] = outcomes.get(resp["outcome"], 0) + 1
            t0 = time.perf_counter()
            encoder.embed(trim_silence(decode_audio(encoded=said)).samples)
            encoder_ms.append((time.perf_counter() - t0) * 1000)
        stages = traced_stages(client, households, order, fresh, args.stages) if args.stages else {}
        client.close()
        running.stop(grace=0)

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "utterance_seconds": pcm.duration_s,
        "n": args.n,
        "outcomes": outcomes,
        "evaluate_ms": {
            "p50": statistics.median(service_ms),
            "p95": pct(service_ms, 95),
            "p99": pct(service_ms, 99),
        },
        "bare_encoder_ms": {
            "p50": statistics.median(encoder_ms),
            "p95": pct(encoder_ms, 95),
            "p99": pct(encoder_ms, 99),
        },
    }
    result["overhead_ratio_p50"] = result["evaluate_ms"]["p50"] / result["bare_encoder_ms"]["p50"]
    result["load_average"] = os.getloadavg()
    if stages:
        result["stages"] = stages
    (out / "evaluate.json").write_text(json.dumps(result, indent=2))
    table = [
        "| series | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
        *(
            f"| {name} | {result[key]['p50']:.1f} | {result[key]['p95']:.1f} | {result[key]['p99']:.1f} |"
            for name, key in (
                ("Evaluate over gRPC (3 s utterance)", "evaluate_ms"),
                ("bare encoder, same audio", "bare_encoder_ms"),
            )
        ),
        "",
        f"Service / bare encoder at p50: {result['overhead_ratio_p50']:.2f}x; n={args.n}; "
        f"outcomes {outcomes}; "
        f"{result['machine']['cpus']} CPUs.",
    ]
    if stages:
        table += [
            "",
            f"Where an Evaluate's wall time goes ({stages['n']} traced calls, "
            f"p50 call {stages['call_ms_p50']:.1f} ms):",
            "",
            "| step | p50 ms | mean share of the call |",
            "|---|---|---|",
            *(
                f"| {name} | {row['p50_ms']:.2f} | {row['share']:.1%} |"
                for name, row in stages["steps"].items()
            ),
        ]
    (out / "evaluate.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


def traced_stages(
    client: GuardClient, households: list[str], order: dict[str, object], fresh: Iterator[bytes], n: int
) -> dict[str, object]:
    """N Evaluates with the pipeline's spans exported to memory: each step's wall time, and its
    share of the call as the client timed it (one step inside another, e.g. store.record inside
    store.lock, counts in both). "guard, outside its steps" is guard.evaluate less its direct
    children; "outside the guard" the call less guard.evaluate."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from purchase_guard.tracing import configure_tracing, shutdown_tracing

    exporter = InMemorySpanExporter()
    configure_tracing(True, "", exporter=exporter)
    per_step: dict[str, list[float]] = {}
    shares: dict[str, list[float]] = {}
    calls: list[float] = []
    try:
        for i in range(n):
            exporter.clear()
            t0 = time.perf_counter()
            client.evaluate(f"t{i}", households[i % len(households)], "d", order, next(fresh))
            call = (time.perf_counter() - t0) * 1000
            calls.append(call)
            spans = exporter.get_finished_spans()
            root = next(s for s in spans if s.name == "guard.evaluate")
            ms = {s.context.span_id: (s.end_time - s.start_time) / 1e6 for s in spans}
            steps: dict[str, float] = {}
            for s in spans:
                steps[s.name] = steps.get(s.name, 0.0) + ms[s.context.span_id]
            children = sum(
                ms[s.context.span_id]
                for s in spans
                if s.parent is not None and s.parent.span_id == root.context.span_id
            )
            steps["guard, outside its steps"] = steps["guard.evaluate"] - children
            steps["outside the guard (gRPC, servicer, client)"] = call - steps["guard.evaluate"]
            for name, value in steps.items():
                per_step.setdefault(name, []).append(value)
                shares.setdefault(name, []).append(value / call)
    finally:
        shutdown_tracing()
    order_by = sorted(per_step, key=lambda k: -statistics.mean(shares[k]))
    return {
        "n": n,
        "call_ms_p50": statistics.median(calls),
        "steps": {
            k: {
                "p50_ms": statistics.median(per_step[k]),
                "share": statistics.mean(shares[k]),
                "calls": len(per_step[k]),
            }
            for k in order_by
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
