"""Compare fingerprint variants on the tuning material: the study behind docs/broadcast.md.

    python scripts/broadcast_variants.py --data ../shared/data [--variants v1,v2 ...] [--quick]

Material (tuning split only, never the test split): negative utterances from the evaluation's
tuning pool (all FSDD digit strings, every other speechocean762 utterance, every third
LibriSpeech segment, each through its own room), and the evaluation's broadcast clips heard
by four homes at 5 and 0 dB SNR. Every negative pair and every true pair is compared
exhaustively (every 8 ms offset within +-1.1 s of the anchors). For each variant the script
prints per-pair detection at the rule limit that lets 20, 5 and 1 negative pairs through, so
variants are compared at equal false-match counts, not at equal thresholds. `--rule sqrt`
(default) scores pairs as the service does (BER + slack / sqrt(bits), the configured slack and
minimum of bits); `--rule fixed` by plain BER over at least 400 bits, as the study did for
print versions 1 and 2.

Variants: `v1` is print version 1 (band differences minus the same difference 64 ms earlier);
`v2` is print version 2 (band differences minus their mean over the voiced frames). Suffixes
change one parameter: `-lagN` (frames), `-fN` (frame length in samples), `-winN` (v2's mean over
a sliding window of N frames instead of the whole utterance), `-tailN` (an artificial
reverberation tail of RT60 N ms added to every band's energy; `v2-tail400` is version 3).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_broadcast as ev
from script_paths import default_data_dir

from purchase_guard.broadcast import fingerprint as fpmod
from purchase_guard.broadcast._kernels import offset_counts, warm_up
from purchase_guard.broadcast.match import MatchParams
from purchase_guard.broadcast.window import trim_for_window

DEFAULT_VARIANTS = (
    "v1",
    "v1-lag4",
    "v1-lag16",
    "v1-lag24",
    "v1-f2048",
    "v1-f4096",
    "v2",
    "v2-f2048",
    "v2-f4096",
    "v2-f4096-win250",
    "v2-tail200",
    "v2-tail400",
    "v2-tail600",
    "v2-tail1200",
)
REACH = 136  # frames either side of the anchor difference (+-1.1 s)
# How pairs are scored. "sqrt": BER + slack/sqrt(compared bits) with the slack and minimum of
# bits the service used until its rule moved to effective bits (0.27 - 5.0/sqrt(bits), 300
# bits); the study scores every offset exhaustively, and effective bits would need each
# offset's runs, so it keeps the bit-count shape its tables were measured with. "fixed": a
# plain BER over at least 400 bits (the shape the study used for print versions 1 and 2).
RULES = {
    "sqrt": MatchParams(ber_limit=0.27, ber_slack=5.0, min_bits=300),
    "fixed": MatchParams(ber_limit=1.0, ber_slack=0.0, min_bits=400),
}


def variant_print(x: np.ndarray, name: str) -> fpmod.Fingerprint:
    parts = name.split("-")
    kind, opts = (
        parts[0],
        {p[:4] if p.startswith("tail") else p[:3] if p[:3] in ("lag", "win") else p[0]: p for p in parts[1:]},
    )
    params = replace(
        fpmod.DEFAULT_PARAMS, tail_rt60_s=int(opts["tail"][4:]) / 1000 if "tail" in opts else 0.0
    )
    if "f" in opts:
        params = replace(params, frame=int(opts["f"][1:]))
    lag = int(opts["lag"][3:]) if "lag" in opts else 8
    energy = fpmod.add_tail(fpmod.band_energies(x, params), params)
    log_e = np.log(energy + 1e-12)
    diff = log_e[:, :-1] - log_e[:, 1:]
    # Version 1 compared frame t with frame t - lag and judged voicing on frames lag.. only.
    total = energy[lag:].sum(axis=1) if kind == "v1" else energy.sum(axis=1)
    level = 10.0 * np.log10(total / (0.375 * params.frame**2) + 1e-20)
    voiced = (
        (level > np.percentile(level, params.voiced_percentile))
        & (level > level.max() - params.voiced_range_db)
        & (level > params.silence_dbfs)
    )
    floor = np.percentile(energy, params.floor_percentile, axis=0, keepdims=True)
    above = energy > floor * 10.0 ** (params.band_margin_db / 10.0)
    pair = above[:, :-1] & above[:, 1:]
    if kind == "v1":
        value = diff[lag:] - diff[:-lag]
        clear = pair[lag:] | pair[:-lag]
    elif "win" in opts:
        w = int(opts["win"][3:])
        v = voiced.astype(np.float64)
        num = uniform_filter1d(diff * v[:, None], size=w, axis=0, mode="nearest")
        den = uniform_filter1d(v, size=w, mode="nearest")
        value = diff - num / np.maximum(den, 1e-3)[:, None]
        clear = pair
    else:
        value = diff - diff[voiced].mean(axis=0)
        clear = pair
    magnitude = np.abs(value)
    usable = voiced[:, None] & clear
    cut = np.percentile(magnitude[usable], params.weak_percentile) if usable.any() else np.inf
    reliable = (magnitude > cut) & clear & voiced[:, None]
    return fpmod.Fingerprint(fpmod._pack(value > 0.0), fpmod._pack(reliable), params.hop_s)


def best_score(
    a: tuple[fpmod.Fingerprint, int] | None, b: tuple[fpmod.Fingerprint, int] | None, rule: MatchParams
) -> float:
    """The lowest BER + slack / sqrt(bits) over offsets comparing at least min_bits: the pair
    passes a rule of this shape exactly when its score is at most the rule's limit."""
    if a is None or b is None:
        return 2.0
    (fa, sa), (fb, sb) = a, b
    lo, hi = sb - sa - REACH, sb - sa + REACH
    errors = np.zeros(hi - lo + 1, dtype=np.int64)
    compared = np.zeros_like(errors)
    offset_counts(fa.bits, fa.mask, fb.bits, fb.mask, lo, hi, errors, compared)
    ok = compared >= rule.min_bits
    if not ok.any():
        return 2.0
    # BER + slack/sqrt(bits) is the BER plus how far the rule's threshold sits below its limit.
    score = errors / np.maximum(compared, 1) + (rule.ber_limit - rule.max_bers(compared))
    return float(np.where(ok, score, 2.0).min())


def hear(audio: ev.Audio, prog: ev.Program, room: ev.Room) -> np.ndarray:
    return ev.play(audio, prog.samples, prog.start_s, prog.end_s, room).samples


def material(data: Path, quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    audio = ev.Audio(data)
    progs = ev.programs(audio, "tune", rng, quick, segments=1)  # the study's material, as measured
    # All FSDD strings, every other speechocean762 utterance, every third LibriSpeech segment.
    chosen = [
        pcm.samples
        for i, (_name, group, _scene, pcm) in enumerate(ev.negative_audio(audio, "tune", rng, quick))
        if group.startswith("fsdd")
        or (group == "speechocean" and i % 2 == 0)
        or (group == "libri" and i % 3 == 0)
    ]
    positives = {
        snr: [[hear(audio, p, ev.random_room(rng, audio, snr)) for _ in range(4)] for p in progs]
        for snr in (5.0, 0.0)
    }
    return {"negatives": chosen, "positives": positives}


def run(name: str, mat: dict[str, Any], rule: MatchParams) -> str:
    started = time.perf_counter()
    prints = [trim_for_window(variant_print(x, name)) for x in mat["negatives"]]
    neg = np.sort([best_score(a, b, rule) for a, b in itertools.combinations(prints, 2)])
    pos: dict[float, np.ndarray] = {}
    for snr, clips in mat["positives"].items():
        bers = []
        for homes in clips:
            hp = [trim_for_window(variant_print(x, name)) for x in homes]
            bers += [best_score(a, b, rule) for a, b in itertools.combinations(hp, 2)]
        pos[snr] = np.asarray(bers)
    cells = []
    for k in (20, 5, 1):
        thr = neg[k] if neg.size > k else 1.0
        cells.append(f"{np.mean(pos[5.0] < thr):.1%} / {np.mean(pos[0.0] < thr):.1%} (limit {thr:.3f})")
    return f"| {name} | " + " | ".join(cells) + f" | {time.perf_counter() - started:.0f} s |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--out", type=Path, default=Path("reports/broadcast/variants.md"))
    ap.add_argument("--rule", choices=sorted(RULES), default="sqrt", help="how pairs are scored (see RULES)")
    ap.add_argument("--quick", action="store_true", help="a small run to check the script works")
    args = ap.parse_args(argv)
    warm_up()
    mat = material(args.data, args.quick)
    n = len(mat["negatives"])
    rule = RULES[args.rule]
    lines = [
        f"{n} negative utterances ({n * (n - 1) // 2:,} pairs), {len(mat['positives'][5.0])} clips x 4 homes;"
        f" rule {args.rule}: BER + {rule.ber_slack}/sqrt(bits) <= limit, bits >= {rule.min_bits}",
        "",
        "| variant | 5 dB / 0 dB at 20 negatives | at 5 | at 1 | time |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in args.variants.split(","):
        lines.append(run(name, mat, RULES[args.rule]))
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Print variants (tuning material)\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
