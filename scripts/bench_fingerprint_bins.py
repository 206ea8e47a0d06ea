"""Band energies from the bins the bands use against the whole spectrum: speed and identical prints.

    python scripts/bench_fingerprint_bins.py [--data ../shared/data] [--n 60] [--files 150]

`broadcast/fingerprint.py` squares and sums only the FFT bins its 33 bands cover. This compares
it with the full-spectrum computation it replaced (kept here as the reference): band-energy time
on `--n` fresh 3 s noise inputs, interleaved call by call, with the largest relative difference;
then the sub-print and mask bits of both on real speech (`--files` LibriSpeech and as many FSDD
recordings, first 6 s, light noise added), which must be identical.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--files", type=int, default=150)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    old_t, new_t, rel = [], [], 0.0
    for _ in range(args.n):
        x = (rng.standard_normal(48000) * 0.1).astype(np.float32)
        t0 = time.perf_counter()
        a = full_spectrum(x)
        t1 = time.perf_counter()
        b = fpmod.band_energies(x)
        t2 = time.perf_counter()
        old_t.append(t1 - t0)
        new_t.append(t2 - t1)
        rel = max(rel, float(np.max(np.abs(a - b) / np.abs(a))))
    print(
        f"band energies p50: whole spectrum {np.median(old_t) * 1e3:.2f} ms, used bins "
        f"{np.median(new_t) * 1e3:.2f} ms ({np.median(old_t) / np.median(new_t):.2f}x); "
        f"largest relative difference {rel:.1e}; load average {Path('/proc/loadavg').read_text().split()[0]}"
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
    print(
        f"{len(files)} utterances, {total} bits: {differ_bits} sub-print and {differ_mask} mask bits differ"
    )
    return 0 if differ_bits == differ_mask == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
