"""Evaluate latency with a 3 s utterance over real gRPC, against the bare encoder in the same run.

    python scripts/bench_evaluate.py --out reports/bench [--n 200]

Starts a real server (GE2E weights, SQLite file store) on a free port, enrolls one FSDD
speaker, then times sequential Evaluate calls with about 3 s of that speaker's speech.
In the same run it times the bare encoder on the same audio, so the service overhead
is reported as a ratio that does not depend on how fast this machine happens to be.
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
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

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
    args = ap.parse_args()
    data = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    encoder = Ge2eEncoder()
    audio = three_seconds(data, "jackson")
    pcm = decode_audio(encoded=audio)

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
        hh = client.create_household("Bench", "UTC", "USD")["household"]["household_id"]
        member = client.add_member(hh, "Jackson", "ADULT", True)["member"]["member_id"]
        client.enroll(
            hh, member, [fsdd_wav(data, "jackson", d, t) for d, t in (("3817", 0), ("5092", 1), ("6641", 2))]
        )
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
        for i in range(10):  # warm-up: first torch calls allocate
            client.evaluate(f"warm{i}", hh, "d", order, audio)
            encoder.embed(trim_silence(pcm).samples)
        service_ms: list[float] = []
        encoder_ms: list[float] = []
        outcomes: dict[str, int] = {}
        # Interleaved so that both series see the same machine conditions.
        for i in range(args.n):
            t0 = time.perf_counter()
            resp = client.evaluate(f"b{i}", hh, "d", order, audio)
            service_ms.append((time.perf_counter() - t0) * 1000)
            outcomes[resp["outcome"]] = outcomes.get(resp["outcome"], 0) + 1
            t0 = time.perf_counter()
            encoder.embed(trim_silence(decode_audio(encoded=audio)).samples)
            encoder_ms.append((time.perf_counter() - t0) * 1000)
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
    (out / "evaluate.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
