"""GE2E's pass through torch (the reference) and ONNX Runtime, the way the server runs it, same run.

    python scripts/bench_encoder.py --out reports/bench [--n 48] [--rounds 6] [--processes 2 1]

For each server `PROCESSES` value a child process builds each runtime as the server's factory
does (`app.build_encoder`: the intra-op threads `Settings.threads_per_encoder` gives that many
processes on this machine; the inner encoder, which request batching calls with
`embed_batch`) and embeds the same real 3 s LibriSpeech utterances in the batch sizes request
batching hands it: 1 (an idle server) up to `EMBED_MAX_BATCH` (16, a busy one). The runtimes
are interleaved call by call, in an order that alternates by round, so all see the same load.
Before each timed call the script sleeps briefly: a runtime's thread pool keeps spinning for a
moment after a call and would otherwise take the cores from the next runtime's call (which in
the server, one runtime a process, never happens).

Runtimes: torch; onnx (the server's ONNX encoder); onnx-pool (the earlier ONNX layout: one pass
with an intra-op thread pool; only where there is more than one thread). Reports p50 ms per
utterance per batch size, each ONNX layout's speed-up over torch from the same calls, the
lowest cosine between ONNX's and torch's embedding of any utterance in any batch, the
network's arithmetic rate, and the single-precision matrix product rate torch reaches on the
same threads (the ceiling a float32 LSTM pass can approach). Writes {out}/encoder.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from script_paths import default_data_dir

from purchase_guard.app import build_encoder
from purchase_guard.config import Settings
from purchase_guard.voice.ge2e import PARTIAL_FRAMES, partial_mels
from purchase_guard.voice.ge2e_onnx import Ge2eOnnxEncoder

# Multiply-adds of one partial through the 3-layer LSTM (40 -> 256 -> 256 -> 256, four gates):
# every frame, every layer, input and recurrent products. The linear head is negligible.
_FLOP_PER_PARTIAL = 2 * 4 * 256 * ((40 + 256) + 2 * (256 + 256)) * PARTIAL_FRAMES
_PAUSE_S = 0.05


def clips(data: Path, n: int) -> list[np.ndarray]:
    out = []
    for f in sorted((data / "librispeech" / "train-clean-100").glob("*.flac"))[:n]:
        x, _ = sf.read(f, dtype="float32")
        out.append(x[16000 : 16000 * 4])
    return out


def sgemm_gflops() -> float:
    """Torch's float32 1024^3 matrix product rate on its current threads (best of 10)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(12):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * 1024**3 / best / 1e9


def child(processes: int, data: Path, n: int, rounds: int, sizes: list[int]) -> dict[str, Any]:
    """Everything for one PROCESSES value, measured in this process."""
    cache = Path(tempfile.mkdtemp(prefix="ge2e-onnx-"))
    base = Settings(processes=processes, embed_max_batch=1, ge2e_onnx_dir=cache)
    threads = base.threads_per_encoder
    # Not validated: PROCESSES > 1 would ask for Redis, which the encoder does not use.
    runtimes: dict[str, Any] = {
        "torch": build_encoder(base),
        "onnx": build_encoder(replace(base, ge2e_runtime="onnx")),
    }
    onnx_enc = runtimes["onnx"]
    if isinstance(onnx_enc, Ge2eOnnxEncoder) and onnx_enc.lanes > 1:
        runtimes["onnx-pool"] = Ge2eOnnxEncoder(cache_dir=cache, threads=threads, layout="pool")
    audio = clips(data, n)
    partials_per_utt = [partial_mels(x).shape[0] for x in audio]
    times: dict[str, dict[int, list[float]]] = {k: {s: [] for s in sizes} for k in runtimes}
    flops: dict[str, dict[int, list[float]]] = {k: {s: [] for s in sizes} for k in runtimes}
    min_cos = {k: 1.0 for k in runtimes if k != "torch"}
    names = list(runtimes)
    for r in range(rounds):
        for size in sizes:
            # A different slice of the utterances each round, so no batch is timed warm twice.
            start = (r * size) % max(1, len(audio) - size + 1)
            batch = audio[start : start + size]
            n_partials = sum(partials_per_utt[start : start + size])
            order = names if r % 2 == 0 else names[::-1]
            out: dict[str, list[np.ndarray]] = {}
            for name in order:
                time.sleep(_PAUSE_S)
                t = time.perf_counter()
                out[name] = runtimes[name].embed_batch(batch)
                dt = time.perf_counter() - t
                if r > 0:  # round 0 warms every runtime and batch shape
                    times[name][size].append(dt * 1000 / len(batch))
                    flops[name][size].append(n_partials * _FLOP_PER_PARTIAL / dt / 1e9)
            for name, low in min_cos.items():
                cos = min(float(np.dot(a, b)) for a, b in zip(out["torch"], out[name], strict=True))
                min_cos[name] = min(low, cos)
    result: dict[str, Any] = {
        "processes": processes,
        "threads_per_encoder": threads or f"runtime default ({torch.get_num_threads()} in torch)",
        "onnx_lanes": getattr(onnx_enc, "lanes", None),
        "sgemm_gflops_torch_threads": round(sgemm_gflops(), 1),
        "min_cosine_vs_torch": min_cos,
        "batches": {},
    }
    for size in sizes:
        row: dict[str, Any] = {}
        for name in runtimes:
            row[name] = {
                "p50_ms_per_utt": round(statistics.median(times[name][size]), 2),
                "lstm_gflops": round(statistics.median(flops[name][size]), 1),
            }
        for name in min_cos:
            # Ratio of medians of the same interleaved calls.
            row[f"{name}_speedup"] = round(row["torch"]["p50_ms_per_utt"] / row[name]["p50_ms_per_utt"], 2)
        result["batches"][str(size)] = row
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| PROCESSES (threads) | batch | torch ms/utt | onnx ms/utt | onnx speed-up | onnx-pool ms/utt "
        "| onnx-pool speed-up | torch / onnx GFLOP/s (sgemm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for size, row in res["batches"].items():
            pool = row.get("onnx-pool")
            lines.append(
                f"| {res['processes']} ({res['threads_per_encoder']}) | {size} "
                f"| {row['torch']['p50_ms_per_utt']} | {row['onnx']['p50_ms_per_utt']} "
                f"| {row['onnx_speedup']:.2f}x "
                f"| {pool['p50_ms_per_utt'] if pool else '-'} "
                f"| {str(row['onnx-pool_speedup']) + 'x' if pool else '-'} "
                f"| {row['torch']['lstm_gflops']} / {row['onnx']['lstm_gflops']} "
                f"({res['sgemm_gflops_torch_threads']}) |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    ap.add_argument("--n", type=int, default=48, help="utterances to draw batches from")
    ap.add_argument("--rounds", type=int, default=6, help="timed rounds per batch size, after one warm-up")
    ap.add_argument("--processes", type=int, nargs="+", default=[2, 1], help="server PROCESSES values")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 8, Settings().embed_max_batch])
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.n, args.rounds + 1, args.sizes)))
        return 0
    load_start = os.getloadavg()
    results = []
    for processes in args.processes:
        # One process per setting: torch's thread count is process-wide, as in the server.
        cmd = [sys.executable, __file__, "--child", str(processes), "--data", str(args.data)]
        cmd += ["--n", str(args.n), "--rounds", str(args.rounds), "--sizes", *map(str, args.sizes)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    load_end = os.getloadavg()
    summary = {
        "command": "python scripts/bench_encoder.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15_start": [round(v, 2) for v in load_start],
        "load_average_1_5_15_end": [round(v, 2) for v in load_end],
        "utterances": args.n,
        "results": results,
        "table": table(results),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2))
    print(summary["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
