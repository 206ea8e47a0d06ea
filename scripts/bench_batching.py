"""Embedding throughput: one-at-a-time inference vs BatchingEncoder, in the same run.

    python scripts/bench_batching.py [--data ../shared/data] [--out reports/bench]
        [--concurrency 1 8 32] [--seconds 3] [--per-thread 12] [--rounds 2]

C threads each embed `per-thread` utterances back to back (a closed loop, like C gRPC
workers busy with Evaluate calls). "unbatched" calls the GE2E encoder directly (its lock
serialises the forward passes); "batched" goes through BatchingEncoder(max_batch=16,
max_wait_ms=5). Rounds alternate the two modes so machine load hits both alike; the best
round of each is reported. Writes batching.json and batching.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from script_paths import default_data_dir

from purchase_guard.voice.audio import TARGET_RATE_HZ, decode_audio
from purchase_guard.voice.batching import BatchingEncoder
from purchase_guard.voice.encoder import SpeakerEncoder
from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.vad import trim_silence

ROOT = Path(__file__).resolve().parents[1]


def utterances(data: Path, seconds: float, n: int) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """`n` distinct `seconds`-long slices of real speech (LibriSpeech), else seeded noise bursts."""
    out: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    length = int(seconds * TARGET_RATE_HZ)
    folder = data / "librispeech" / "train-clean-100"
    for path in sorted(folder.glob("*.flac")):
        pcm = decode_audio(encoded=path.read_bytes(), max_seconds=60.0, max_bytes=50_000_000)
        voiced = trim_silence(pcm).samples
        for start in range(0, voiced.shape[0] - length, length):
            out.append(voiced[start : start + length].copy())
            if len(out) == n:
                return out
    rng = np.random.default_rng(0)
    while len(out) < n:
        out.append(rng.normal(0, 0.05, length).astype(np.float32))
    return out


def run_load(encoder: SpeakerEncoder, utts: list[Any], concurrency: int, per_thread: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        mine = []
        barrier.wait()
        for j in range(per_thread):
            x = utts[(k * per_thread + j) % len(utts)]
            t0 = time.perf_counter()
            encoder.embed(x)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "utterances": float(len(lat)),
        "wall_s": wall,
        "throughput_per_s": len(lat) / wall,
        "latency_p50_ms": 1000 * statistics.median(lat),
        "latency_p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=default_data_dir(),
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--per-thread", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    inner = Ge2eEncoder()
    utts = utterances(args.data, args.seconds, 64)
    inner.embed_batch(utts[:4])  # warm-up: first call pays one-off allocation costs
    results: dict[str, Any] = {}
    for c in args.concurrency:
        per_thread = max(2, args.per_thread * 8 // max(c, 8)) if c > 8 else args.per_thread
        rounds: dict[str, list[dict[str, float]]] = {"unbatched": [], "batched": []}
        for _ in range(args.rounds):
            rounds["unbatched"].append(run_load(inner, utts, c, per_thread))
            batcher = BatchingEncoder(inner, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
            try:
                r = run_load(batcher, utts, c, per_thread)
                stats = batcher.stats()
                r["mean_batch"] = stats.utterances / max(stats.batches, 1)
                r["largest_batch"] = float(stats.largest_batch)
            finally:
                batcher.close()
            rounds["batched"].append(r)
        best = {m: max(rs, key=lambda r: r["throughput_per_s"]) for m, rs in rounds.items()}
        ratio = best["batched"]["throughput_per_s"] / best["unbatched"]["throughput_per_s"]
        results[str(c)] = {"best": best, "rounds": rounds, "ratio": ratio}
        print(
            f"concurrency {c:3d}: unbatched {best['unbatched']['throughput_per_s']:6.1f}/s "
            f"(p50 {best['unbatched']['latency_p50_ms']:.0f} ms), batched "
            f"{best['batched']['throughput_per_s']:6.1f}/s (p50 {best['batched']['latency_p50_ms']:.0f} ms, "
            f"mean batch {best['batched']['mean_batch']:.1f}) -> ratio {ratio:.2f}"
        )
    report = {
        "encoder": inner.name,
        "utterance_seconds": args.seconds,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batching.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    lines = [
        f"# Batched vs one-at-a-time embedding ({inner.name}, {args.seconds:g} s utterances)",
        "",
        f"BatchingEncoder(max_batch={args.max_batch}, max_wait_ms={args.max_wait_ms:g}); "
        f"{os.cpu_count()} CPUs; best of {args.rounds} alternating rounds; "
        f"load average at end {report['load_average_at_end'][0]:.1f}.",
        "",
        "| concurrency | unbatched /s | p50 ms | batched /s | p50 ms | mean batch | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, r in results.items():
        u, b = r["best"]["unbatched"], r["best"]["batched"]
        lines.append(
            f"| {c} | {u['throughput_per_s']:.1f} | {u['latency_p50_ms']:.0f} | "
            f"{b['throughput_per_s']:.1f} | {b['latency_p50_ms']:.0f} | {b['mean_batch']:.1f} | "
            f"{r['ratio']:.2f} |"
        )
    (args.out / "batching.md").write_text("\n".join(lines) + "\n", "utf-8")
    print(f"wrote {args.out / 'batching.json'} and batching.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
