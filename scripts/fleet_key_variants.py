"""Key layouts of the fleet index against each other: detection lost for query time saved.

    python scripts/fleet_key_variants.py --data ../shared/data [--split tune] [--among 50000]
        [--variant NAME ...] [--out reports/bench]

For each variant of `KeyParams` (the index's key tables, flips and bins), on one split's
material from scripts/eval_broadcast.py (the broadcasts' 5 dB copies in five homes and the pool
of unrelated utterances):

- per-pair detection through the index, with the window holding the pool and the copies;
- the same among `--among` more entries (bit-scrambled copies of the pool, as
  scripts/bench_fleet.py fills a span), where chance votes compete with the copies' for the
  fine-checked candidates, and the query's CPU time (p50 / p99 of the calling thread) there:
  50,000 is the span a 1,000,000-utterance window gives a query.

Choose on `--split tune` (the default); the test split is what scripts/bench_fleet.py reports.
The variants are named in VARIANTS; the first is the configured layout. Prints a table and
writes {out}/fleet-key-variants-{split}.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_fleet as bf
import numpy as np
from script_paths import default_data_dir

from purchase_guard.broadcast._kernels import warm_up
from purchase_guard.broadcast.fingerprint import Fingerprint
from purchase_guard.broadcast.index import DEFAULT_KEYS, IndexedWindow, KeyParams, MemoryPostings


def _halves(bits: int) -> tuple[tuple[int, ...], ...]:
    # Two interleaved tables of `bits` bits each from the 32 (as the default's 16 + 16).
    order = list(range(0, 32, 2)) + list(range(1, 32, 2))
    return (tuple(order[:bits]), tuple(order[32 - bits :]))


VARIANTS: dict[str, Callable[[], KeyParams]] = {
    "configured (2 x 16 bits, up to 2 flips)": lambda: DEFAULT_KEYS,
    "up to 1 flip": lambda: KeyParams(max_flips=1),
    "2 x 18 bits": lambda: KeyParams(tables=_halves(18)),
    "2 x 20 bits": lambda: KeyParams(tables=_halves(20)),
    "query runs looked up once, weighted": lambda: KeyParams(query_runs=True),
    "two-flip variants at every 2nd query frame": lambda: KeyParams(flip2_stride=2),
    "two-flip variants at every 4th query frame": lambda: KeyParams(flip2_stride=4),
}


def detection(
    keys: KeyParams,
    copies: dict[tuple[int, int], Fingerprint],
    pool: list[Fingerprint],
    homes: int,
    among: int,
    seed: int,
) -> dict[str, Any]:
    window = IndexedWindow(MemoryPostings(keys), search_span=bf.SPAN, keys=keys)
    rng = np.random.default_rng(seed)
    for k, fp in enumerate(pool):
        window.add(bf.entry(f"n{k}", fp, bf.T0))
    for k in range(among):
        base = pool[k % len(pool)]
        scrambled = Fingerprint(base.bits ^ np.uint32(rng.integers(1, 2**32)), base.mask, base.hop_s)
        window.add(bf.entry(f"x{k}", scrambled, bf.T0))
    for (p, h), fp in copies.items():
        window.add(bf.entry(f"c{p}-{h}", fp, bf.T0))
    hit = pairs = 0
    cpu: list[float] = []
    for (p, h), fp in copies.items():
        c0 = time.thread_time()
        found = {m.entry.entry_id for m in window.match(bf.entry(f"q{p}-{h}", fp, bf.T0))}
        cpu.append((time.thread_time() - c0) * 1000)
        for h2 in range(homes):
            if h2 != h and (p, h2) in copies:
                pairs += 1
                hit += f"c{p}-{h2}" in found
    return {
        "among": among,
        "pairs": pairs,
        "detected": hit,
        "detection": hit / max(pairs, 1),
        "query_ms_cpu_p50": round(float(np.percentile(cpu, 50)), 2),
        "query_ms_cpu_p99": round(float(np.percentile(cpu, 99)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    ap.add_argument("--split", default="tune", choices=("tune", "test"))
    ap.add_argument("--among", type=int, default=50_000)
    ap.add_argument("--homes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--variant", action="append", default=[], help="a name from VARIANTS (default: all)")
    args = ap.parse_args(argv)
    names = args.variant or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    t = time.time()
    copies, negs, _ = bf.material(args.data, args.quick, args.seed, args.homes, args.split)
    pool = [n.fp for n in negs]
    took = time.time() - t
    print(f"material ({args.split}): {len(copies)} copies at 5 dB, {len(pool)} pool ({took:.0f} s)")
    warm_up()
    rows = []
    for name in names:
        keys = VARIANTS[name]()
        small = detection(keys, copies, pool, args.homes, 0, args.seed)
        large = detection(keys, copies, pool, args.homes, args.among, args.seed) if args.among else None
        load = os.getloadavg()[0]
        rows.append({"variant": name, "pool_and_copies": small, "among": large, "loadavg": load})
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["python", *sys.argv]), "split": args.split, "rows": rows}
    (args.out / f"fleet-key-variants-{args.split}.json").write_text(json.dumps(report, indent=2))
    head = f"| keys ({args.split} split) | detection | among {args.among:,} | CPU p50 / p99 ms there | load |"
    print("\n" + head)
    print("|---|---|---|---|---|")
    for r in rows:
        s, a = r["pool_and_copies"], r["among"]
        far = f"{a['detection']:.1%}" if a else "-"
        ms = f"{a['query_ms_cpu_p50']} / {a['query_ms_cpu_p99']}" if a else "-"
        print(f"| {r['variant']} | {s['detection']:.1%} | {far} | {ms} | {r['loadavg']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
