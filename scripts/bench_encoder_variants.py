"""ONNX Runtime variants of GE2E's network that were tried against the one served, same run.

    python scripts/bench_encoder_variants.py --out reports/bench [--threads 1] [--rounds 10]

Times the network alone (partial mel windows in, partial embeddings out) for the server's
batch sizes (1, 8 and 16 three-second utterances: 3, 24 and 48 partials), torch and each
variant interleaved call by call with a short pause, at `--threads` (1: a server with
PROCESSES=2 on two cores). Variants: the served export and session (`served`); the same with
basic graph optimisation only, without the CPU memory arena, with denormals flushed to zero; an
opset 20 export; and the LSTM unrolled (each layer's input products of all frames as one
MatMul, then per frame one Gemm and the gates), which ONNX Runtime runs as MatMul/Gemm nodes
instead of its LSTM kernel. Prints each variant's p50 ms, its speed-up over torch in the same
calls and its largest difference from torch's partial embeddings; and, for lower-precision
matrix units, the lowest cosine to torch's embedding over the 48 utterances when the LSTM's
products take bf16 or fp16 inputs (float32 accumulation, emulated). Writes
{out}/encoder_variants.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import soundfile as sf
import torch
from script_paths import default_data_dir
from torch import nn

from purchase_guard.voice.encoder import l2_normalise
from purchase_guard.voice.ge2e import PARTIAL_FRAMES, Ge2eEncoder, partial_mels
from purchase_guard.voice.ge2e_onnx import export


class Unrolled(nn.Module):
    """The GE2E network with its LSTM written out frame by frame (gates reordered i, f, o, g so
    one Sigmoid and one Tanh cover them)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        lstm: nn.LSTM = net.lstm  # type: ignore[assignment]
        h = lstm.hidden_size
        order = torch.cat([torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)])
        self.hidden = h
        self.layers = lstm.num_layers
        self.w_in = nn.ParameterList()
        self.w_rec = nn.ParameterList()
        self.bias = nn.ParameterList()
        for k in range(self.layers):
            w_ih = getattr(lstm, f"weight_ih_l{k}").detach()[order]
            w_hh = getattr(lstm, f"weight_hh_l{k}").detach()[order]
            b = (getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")).detach()[order]
            self.w_in.append(nn.Parameter(w_ih.t().contiguous(), requires_grad=False))
            self.w_rec.append(nn.Parameter(w_hh.t().contiguous(), requires_grad=False))
            self.bias.append(nn.Parameter(b, requires_grad=False))
        self.linear = net.linear
        # When set, every LSTM product's inputs are rounded to this type and multiplied in
        # float32: what a bf16/fp16 matrix unit with float32 accumulation would compute.
        self.round_to: torch.dtype | None = None

    def _q(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.round_to is None else t.to(self.round_to).float()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        h_size = self.hidden
        x = mels.transpose(0, 1)  # frames first, so each frame's slice is contiguous
        h = c = torch.zeros(0)
        for k in range(self.layers):
            projected = torch.matmul(self._q(x), self._q(self.w_in[k])) + self.bias[k]
            outs = []
            for t in range(PARTIAL_FRAMES):
                g = projected[t] if t == 0 else torch.addmm(projected[t], self._q(h), self._q(self.w_rec[k]))
                s = torch.sigmoid(g[:, : 3 * h_size])
                u = torch.tanh(g[:, 3 * h_size :])
                c = s[:, :h_size] * u if t == 0 else s[:, h_size : 2 * h_size] * c + s[:, :h_size] * u
                h = s[:, 2 * h_size :] * torch.tanh(c)
                outs.append(h)
            x = torch.stack(outs)
        raw = torch.relu(self.linear(h))
        out: torch.Tensor = raw / torch.clamp(torch.norm(raw, dim=1, keepdim=True), min=1e-12)
        return out


def export_module(module: nn.Module, path: Path, opset: int) -> Path:
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            module,
            (torch.zeros(2, PARTIAL_FRAMES, 40),),
            str(path),
            input_names=["mels"],
            output_names=["partials"],
            dynamic_axes={"mels": {0: "batch"}, "partials": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def reduced_precision_cosines(enc: Ge2eEncoder, stacks: list[np.ndarray]) -> dict[str, float]:
    """Lowest cosine to torch's embedding, over the utterances, with the LSTM's products in bf16
    or fp16 (float32 accumulation): whether a lower-precision matrix unit could stay within 1e-5."""
    every = torch.from_numpy(np.concatenate(stacks))
    bounds = np.cumsum([0] + [len(s) for s in stacks])
    unrolled = Unrolled(enc.net).eval()

    def embeddings(partials: np.ndarray) -> list[np.ndarray]:
        return [l2_normalise(partials[a:b].mean(axis=0)) for a, b in itertools.pairwise(bounds)]

    with torch.inference_mode():
        reference = embeddings(enc.net(every).numpy())
        out = {}
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            unrolled.round_to = dtype
            got = embeddings(unrolled(every).numpy())
            out[name] = min(float(np.dot(a, b)) for a, b in zip(reference, got, strict=True))
    return out


def session(path: Path, threads: int, **config: Any) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = config.pop("level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    opts.enable_cpu_mem_arena = config.pop("arena", True)
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    files = sorted((args.data / "librispeech" / "train-clean-100").glob("*.flac"))[:48]
    stacks = [partial_mels(sf.read(f, dtype="float32")[0][16000:64000]) for f in files]
    mels = np.concatenate(stacks)
    enc = Ge2eEncoder()
    tmp = Path(tempfile.mkdtemp(prefix="ge2e-variants-"))
    served = export(enc, enc.weights_path, tmp)
    basic = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sessions = {
        "served": session(served, args.threads),
        "basic-optimisation": session(served, args.threads, level=basic),
        "no-arena": session(served, args.threads, arena=False),
        "denormals-zero": session(served, args.threads, **{"session.set_denormal_as_zero": "1"}),
        "opset20": session(export_module(enc.net, tmp / "opset20.onnx", 20), args.threads),
        "unrolled": session(export_module(Unrolled(enc.net).eval(), tmp / "unrolled.onnx", 17), args.threads),
    }
    runs: dict[str, Any] = {"torch": lambda x: enc.net(torch.from_numpy(x)).numpy()}
    for name, sess in sessions.items():
        runs[name] = lambda x, s=sess: s.run(None, {"mels": x})[0]
    load_start = os.getloadavg()
    rows: dict[str, Any] = {}
    worst = dict.fromkeys(sessions, 0.0)
    with torch.inference_mode():
        for partials in (3, 24, 48):
            times: dict[str, list[float]] = {k: [] for k in runs}
            for r in range(args.rounds + 1):
                start = (r * partials) % (len(mels) - partials)
                x = np.ascontiguousarray(mels[start : start + partials])
                outs = {}
                for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                    time.sleep(0.05)
                    t = time.perf_counter()
                    outs[name] = np.asarray(runs[name](x))
                    if r > 0:
                        times[name].append((time.perf_counter() - t) * 1000)
                for name in sessions:
                    worst[name] = max(worst[name], float(np.abs(outs[name] - outs["torch"]).max()))
            p50 = {k: statistics.median(v) for k, v in times.items()}
            rows[str(partials)] = {
                k: {"p50_ms": round(v, 2), "speedup_vs_torch": round(p50["torch"] / v, 2)}
                for k, v in p50.items()
            }
    result = {
        "command": "python scripts/bench_encoder_variants.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "threads": args.threads,
        "load_average_1_5_15_start": [round(v, 2) for v in load_start],
        "load_average_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
        "max_abs_diff_vs_torch": worst,
        "min_cosine_vs_torch_products_in": reduced_precision_cosines(enc, stacks),
        "by_partials": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder_variants.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "by_partials"}, indent=2))
    print("| variant | " + " | ".join(f"{p} partials ms (vs torch)" for p in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for name in runs:
        cells = [f"{rows[p][name]['p50_ms']} ({rows[p][name]['speedup_vs_torch']:.2f}x)" for p in rows]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
