"""GE2E's pass through torch (the reference) and ONNX Runtime, in the same run on the same audio.

    python scripts/bench_encoder.py --out reports/bench [--n 60] [--threads 0]

Real 3 s LibriSpeech utterances, embedded one at a time and in batches of 8, the two runtimes
interleaved call by call so both see the same machine load. Each runtime uses `--threads`
intra-op threads (0: the library default, all cores). Reports p50 per utterance, embeddings
per second, the speed ratio, and the lowest cosine between the two runtimes' embeddings.
Writes {out}/encoder.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from script_paths import default_data_dir

from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.ge2e_onnx import Ge2eOnnxEncoder


def clips(data: Path, n: int) -> list[np.ndarray]:
    out = []
    for f in sorted((data / "librispeech" / "train-clean-100").glob("*.flac"))[:n]:
        x, _ = sf.read(f, dtype="float32")
        out.append(x[16000 : 16000 * 4])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    audio = clips(args.data, args.n)
    runtimes: dict[str, Any] = {"torch": Ge2eEncoder()}
    cache = Path(tempfile.mkdtemp(prefix="ge2e-onnx-"))
    runtimes["onnx"] = Ge2eOnnxEncoder(cache_dir=cache)
    if args.threads:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = args.threads
        onnx_enc = runtimes["onnx"]
        onnx_enc._session = onnxruntime.InferenceSession(str(onnx_enc.model_path), opts)
    cos = min(
        float(np.dot(a, b))
        for a, b in zip(
            runtimes["torch"].embed_batch(audio[:8]), runtimes["onnx"].embed_batch(audio[:8]), strict=True
        )
    )
    single: dict[str, list[float]] = {k: [] for k in runtimes}
    batched: dict[str, list[float]] = {k: [] for k in runtimes}
    for x in audio:
        for name, enc in runtimes.items():
            t = time.perf_counter()
            enc.embed(x)
            single[name].append((time.perf_counter() - t) * 1000)
    for k in range(0, len(audio) - 7, 8):
        for name, enc in runtimes.items():
            t = time.perf_counter()
            enc.embed_batch(audio[k : k + 8])
            batched[name].append((time.perf_counter() - t) * 1000 / 8)
    result: dict[str, Any] = {
        "command": "python scripts/bench_encoder.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": platform.platform(),
        "threads": args.threads or "default",
        "utterances": len(audio),
        "min_cosine_onnx_vs_torch": cos,
    }
    for name in runtimes:
        result[name] = {
            "single_p50_ms": round(statistics.median(single[name]), 2),
            "batch8_p50_ms_per_utt": round(statistics.median(batched[name]), 2),
            "embeddings_per_s_batch8": round(1000 / statistics.median(batched[name]), 1),
        }
    result["onnx_speedup_single"] = round(
        result["torch"]["single_p50_ms"] / result["onnx"]["single_p50_ms"], 2
    )
    result["onnx_speedup_batch8"] = round(
        result["torch"]["batch8_p50_ms_per_utt"] / result["onnx"]["batch8_p50_ms_per_utt"], 2
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
