"""The replay check (`broadcast/repeat.find_replay`) against a household's history: the current
exact-copy search against the one it replaced, same answers, in one run.

    python scripts/bench_replay.py [--data ../shared/data] [--history 100,300,900] [--n 40] \
        [--out reports/bench]

Every Evaluate's and answer's print is compared with all of the household's prints of the last
30 days, cached in memory (`EarlierAudioCache`), so the check's cost grows with how much the
household has said. Before: the exact-copy search made a byte search per earlier print. Now: one
vectorised pass over all earlier frames. The tolerant search after it (for audio that is not a
bit-exact copy) is the same code both ways; both columns include it.

Earlier prints: consecutive 3 s stretches of LibriSpeech utterances (real speech, as a
household's requests are; distinct audio), already opened as the cache holds them. Queries:
`--n` other stretches (new audio: the common case, for which both searches run to the end),
timed call by call with the two ways interleaved, so both see the same machine. Answers: for
those and for copies of earlier prints (the same bytes again; the same audio through 30 dB of
noise, which only the tolerant search finds) both ways must name the same earlier decision, or
the script exits non-zero.
Writes `replay.json` to `--out` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from script_paths import default_data_dir

from purchase_guard.broadcast import repeat
from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.broadcast.repeat import EarlierAudio, Replay, find_replay
from purchase_guard.voice.audio import Pcm, decode_audio


def find_replay_before(fp: Fingerprint, earlier: Sequence[EarlierAudio]) -> Replay | None:
    """`find_replay` as it was: the byte search per print, then the same tolerant search."""
    current = repeat._exact_copy
    repeat._exact_copy = repeat.exact_copy_print_by_print
    try:
        return repeat.find_replay(fp, earlier)
    finally:
        repeat._exact_copy = current


def speech(files: list[Path], need: int, seconds: float = 3.0) -> list[Pcm]:
    """`need` stretches of `seconds`, each file cut into as many as it holds, one file at a time."""
    out: list[Pcm] = []
    for path in files:
        x, sr = sf.read(path, dtype="int16")
        x = x if x.ndim == 1 else x[:, 0]
        step = int(seconds * sr)
        for a in range(0, x.shape[0] - step + 1, step):
            out.append(decode_audio(pcm16=x[a : a + step].tobytes(), sample_rate_hz=sr))
            if len(out) == need:
                return out
    return out


def noisy(pcm: Pcm, snr_db: float, seed: int) -> Pcm:
    rng = np.random.default_rng(seed)
    x = pcm.samples.astype(np.float64)
    noise = rng.standard_normal(x.shape[0])
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return Pcm(np.clip(x + noise, -1.0, 1.0).astype(np.float32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--history", default="100,300,900", help="earlier prints per household")
    ap.add_argument("--n", type=int, default=40, help="new utterances timed per history size")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sizes = [int(v) for v in args.history.split(",")]
    need = max(sizes) + args.n
    pcms = speech(sorted((args.data / "librispeech").rglob("*.flac")), need)
    if len(pcms) < need:
        print(
            f"need {need} 3 s stretches of LibriSpeech under {args.data}, found {len(pcms)}", file=sys.stderr
        )
        return 2
    prints = [fingerprint(p) for p in pcms]
    history = [
        EarlierAudio(f"apr_{i}", f"dec_{i}", "evaluate", fp) for i, fp in enumerate(prints[: max(sizes)])
    ]
    for item in history:
        if item.start is not None:
            item.row()  # made once, as the cache keeps it
    queries = prints[max(sizes) :]
    load0 = os.getloadavg()
    rows = []
    mismatches = 0
    for size in sizes:
        earlier = history[:size]
        before_s: list[float] = []
        after_s: list[float] = []
        exact_before_s: list[float] = []
        exact_after_s: list[float] = []
        for k, q in enumerate(queries):
            ways = [
                (find_replay_before, before_s),
                (find_replay, after_s),
                (repeat.exact_copy_print_by_print, exact_before_s),
                (repeat._exact_copy, exact_after_s),
            ]
            ways = ways[k % len(ways) :] + ways[: k % len(ways)]  # each way first in turn
            answers = []
            for fn, times in ways:
                t0 = time.perf_counter()
                answers.append(fn(q, earlier))
                times.append(time.perf_counter() - t0)
            mismatches += len({repr(a) for a in answers[:2]}) + len({repr(a) for a in answers[2:]}) - 2
        # Copies of earlier prints: what both ways must find, and name alike.
        for j in range(0, size, max(1, size // 10)):
            for q in (prints[j], fingerprint(noisy(pcms[j], 30.0, seed=j))):
                a, b = find_replay_before(q, earlier), find_replay(q, earlier)
                mismatches += a != b or a is None
        before_ms, after_ms = 1000 * np.median(before_s), 1000 * np.median(after_s)
        rows.append(
            {
                "earlier_prints": size,
                "before_p50_ms": round(float(before_ms), 3),
                "after_p50_ms": round(float(after_ms), 3),
                "before_p95_ms": round(float(1000 * np.percentile(before_s, 95)), 3),
                "after_p95_ms": round(float(1000 * np.percentile(after_s, 95)), 3),
                "speedup_p50": round(float(before_ms / after_ms), 2),
                "exact_before_p50_ms": round(float(1000 * np.median(exact_before_s)), 3),
                "exact_after_p50_ms": round(float(1000 * np.median(exact_after_s)), 3),
            }
        )
    result = {
        "command": "python scripts/bench_replay.py " + " ".join(sys.argv[1:]),
        "queries_per_size": len(queries),
        "loadavg_start": [round(v, 2) for v in load0],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "answers_that_differ": mismatches,
        "rows": rows,
    }
    print(f"Load average {result['loadavg_start']} at start, {result['loadavg_end']} at end.")
    print(
        "| earlier prints | replay check before p50 / p95 ms | after p50 / p95 ms | speed-up (p50) "
        "| exact-copy search alone, before / after p50 ms |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['earlier_prints']} | {r['before_p50_ms']:.2f} / {r['before_p95_ms']:.2f} | "
            f"{r['after_p50_ms']:.2f} / {r['after_p95_ms']:.2f} | {r['speedup_p50']:.2f}x | "
            f"{r['exact_before_p50_ms']:.2f} / {r['exact_after_p50_ms']:.2f} |"
        )
    print(f"answers that differ (new audio, exact and noisy copies): {mismatches}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "replay.json").write_text(json.dumps(result, indent=2))
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
