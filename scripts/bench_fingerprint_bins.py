"""Band energies as `broadcast/fingerprint.py` computes them against the ways it replaced: speed
and identical prints.

    python scripts/bench_fingerprint_bins.py [--data ../shared/data] [--n 60] [--files 150] \
        [--out reports/bench]

`band_energies` squares and sums only the FFT bins its 33 bands cover, in blocks of frames.
Compared, call by call on `--n` fresh 3 s noise inputs (interleaved, so all three see the same
machine): the whole-spectrum computation first written (the reference), the used bins over the
whole utterance at once (the release before the blocks), and the current one; with each one's
largest relative difference from the reference. Then the sub-print and mask bits of the current
one and the reference on real speech (`--files` LibriSpeech and as many FSDD recordings, first
6 s, light noise added), which must be identical (the script exits non-zero otherwise). Writes
`fingerprint_bins.json` to `--out` when given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.fft
from script_paths import default_data_dir

from purchase_guard.broadcast import fingerprint as fpmod
from purchase_guard.voice.audio import Pcm, decode_audio


def full_spectrum(samples: np.ndarray, params: fpmod.FingerprintParams = fpmod.DEFAULT_PARAMS) -> np.ndarray:  # type: ignore[type-arg]
    x = np.asarray(samples, dtype=np.float32)
    if x.shape[0] < params.frame:
        return np.zeros((0, fpmod.N_BITS + 1))
    bands = fpmod._band_matrix(params).astype(np.float32)
    window = np.hanning(params.frame).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, params.frame)[:: params.hop]
    spec = scipy.fft.rfft(frames * window, axis=1)
    power = spec.real * spec.real + spec.imag * spec.imag
    return np.asarray(power @ bands, dtype=np.float64)


def used_bins_at_once(
    samples: np.ndarray,  # type: ignore[type-arg]
    params: fpmod.FingerprintParams = fpmod.DEFAULT_PARAMS,
) -> np.ndarray:  # type: ignore[type-arg]
    x = np.asarray(samples, dtype=np.float32)
    if x.shape[0] < params.frame:
        return np.zeros((0, fpmod.N_BITS + 1))
    bands = fpmod._used_bands(params)
    window = np.hanning(params.frame).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, params.frame)[:: params.hop]
    spec = scipy.fft.rfft(frames * window, axis=1)[:, bands.lo : bands.hi]
    power = spec.real * spec.real + spec.imag * spec.imag
    return np.asarray(power @ bands.matrix, dtype=np.float64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--files", type=int, default=150)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    rng = np.random.default_rng(1)
    ways = {
        "whole_spectrum": full_spectrum,
        "used_bins_at_once": used_bins_at_once,
        "current": fpmod.band_energies,
    }
    took: dict[str, list[float]] = {k: [] for k in ways}
    rel = dict.fromkeys(ways, 0.0)
    names = list(ways)
    for i in range(args.n):
        x = (rng.standard_normal(48000) * 0.1).astype(np.float32)
        got: dict[str, np.ndarray] = {}  # type: ignore[type-arg]
        # The order turns with each input: what one way leaves in the allocator (memory already
        # faulted in) should not always help the same next one.
        for name in names[i % 3 :] + names[: i % 3]:
            t0 = time.perf_counter()
            got[name] = ways[name](x)
            took[name].append(time.perf_counter() - t0)
        ref = got["whole_spectrum"]
        for name in names:
            rel[name] = max(rel[name], float(np.max(np.abs(ref - got[name]) / np.abs(ref))))
    p50 = {k: float(np.median(v)) * 1e3 for k, v in took.items()}
    for name in ways:
        print(
            f"band energies p50, {name}: {p50[name]:.2f} ms "
            f"({p50['whole_spectrum'] / p50[name]:.2f}x the whole spectrum, "
            f"{p50['used_bins_at_once'] / p50[name]:.2f}x the used bins at once); largest relative "
            f"difference {rel[name]:.1e}"
        )
    files = sorted((args.data / "librispeech").rglob("*.flac"))[: args.files]
    files += sorted((args.data / "fsdd" / "recordings").glob("*.flac"))[::20][: args.files]
    real = fpmod.band_energies
    differ_bits = differ_mask = total = 0
    try:
        for f in files:
            x = decode_audio(encoded=f.read_bytes()).samples[: 16000 * 6]
            pcm = Pcm(samples=(x + rng.standard_normal(len(x)).astype(np.float32) * 0.01).astype(np.float32))
            fpmod.band_energies = real
            new = fpmod.fingerprint(pcm)
            fpmod.band_energies = full_spectrum  # type: ignore[assignment]
            old = fpmod.fingerprint(pcm)
            differ_bits += int(np.unpackbits((new.bits ^ old.bits).view(np.uint8)).sum())
            differ_mask += int(np.unpackbits((new.mask ^ old.mask).view(np.uint8)).sum())
            total += new.n_frames * fpmod.N_BITS
    finally:
        fpmod.band_energies = real
    load_end = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"{len(files)} utterances, {total} bits: {differ_bits} sub-print and {differ_mask} mask bits differ; "
        f"load average {' '.join(load_start)} at the start, {' '.join(load_end)} at the end"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "inputs": args.n,
            "p50_ms": p50,
            "largest_relative_difference": rel,
            "utterances": len(files),
            "bits": total,
            "differing_subprint_bits": differ_bits,
            "differing_mask_bits": differ_mask,
            "load_average_start": load_start,
            "load_average_end": load_end,
        }
        (args.out / "fingerprint_bins.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if differ_bits == differ_mask == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
