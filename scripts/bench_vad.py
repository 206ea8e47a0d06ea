"""The energy VAD's work for one Evaluate, against the code the one pass replaced: speed and
identical values.

    python scripts/bench_vad.py [--data ../shared/data] [--n 200] [--out reports/bench]

An Evaluate's voice check, with voiceprint adaptation on (the default), measures the utterance's
net speech, trims it and estimates its SNR (`VoiceVerifier._score`). Before the one pass each
was measured on its own: `speech_seconds` and `trim_silence` each found the speech mask, and
`snr_db` measured every frame's energy twice and found the mask a third time. Now
`EnergyVad.speech_trim_and_snr` finds one mask from one energy pass. Timed, input by input on
`--n` of the Evaluate load's 3 s utterances (`bench_load.utterances`, decoded as a request is),
before and after in an order that turns with each input. The bare encoder baseline of
bench_evaluate.py and bench_cores.py runs `trim_silence` alone, which is unchanged.

Every input's net speech, trimmed samples and SNR must be identical before and after (the
script exits non-zero otherwise). numpy's and scipy's OpenBLAS run single-threaded, as in
a server process. Writes `vad.json` to `--out` when given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from script_paths import ROOT, default_data_dir

sys.path.insert(0, str(ROOT / "tests"))

from bench_load import utterances

from purchase_guard.blas import single_threaded_blas
from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm, decode_audio
from purchase_guard.voice.vad import (
    DEFAULT,
    HOP,
    EnergyVad,
    VadConfig,
    _dilate,
    _dilate_forward,
    _drop_short_runs,
    _raw_mask,
    frame_energies_db,
)

F64 = np.ndarray[Any, np.dtype[np.float64]]
Bool = np.ndarray[Any, np.dtype[np.bool_]]
Measured = tuple[float, Pcm, float]


# ------------------------------------------------------------- the VAD before the one pass
def old_speech_mask(pcm: Pcm, cfg: VadConfig = DEFAULT) -> Bool:
    raw = _raw_mask(frame_energies_db(pcm.samples), cfg)
    if raw.size == 0:
        return raw
    return _dilate_forward(_drop_short_runs(raw, cfg.min_run_frames), cfg.hangover_frames)


def old_speech_seconds(pcm: Pcm, cfg: VadConfig = DEFAULT) -> float:
    if pcm.samples.shape[0] == 0:
        return 0.0
    voiced = int(old_speech_mask(pcm, cfg).sum())
    return min(voiced * HOP, int(pcm.samples.shape[0])) / TARGET_RATE_HZ


def old_trim_silence(pcm: Pcm, cfg: VadConfig = DEFAULT) -> Pcm:
    n = pcm.samples.shape[0]
    if n == 0:
        return pcm
    mask = old_speech_mask(pcm, cfg)
    pad = round(cfg.pad_s * TARGET_RATE_HZ / HOP)
    keep = np.repeat(_dilate(mask, pad), HOP)[:n]
    if keep.shape[0] < n:
        keep = np.concatenate((keep, np.zeros(n - keep.shape[0], dtype=bool)))
    return Pcm(samples=np.ascontiguousarray(pcm.samples[keep]))


def old_snr_db(pcm: Pcm, cfg: VadConfig = DEFAULT) -> float:
    energy = frame_energies_db(pcm.samples)
    mask = old_speech_mask(pcm, cfg)
    if energy.size == 0 or not mask.any():
        return 0.0
    power = 10.0 ** (energy / 10.0)
    speech = float(power[mask].mean())
    quiet = power[~mask]
    noise = float(quiet.mean()) if quiet.size >= 5 else float(np.percentile(power, 5))
    return float(min(100.0, 10.0 * np.log10((speech + 1e-12) / (noise + 1e-12))))


def old_verify(pcm: Pcm) -> Measured:
    """The voice check's measures before: EnergyVad.speech_and_trim, then snr_db."""
    return old_speech_seconds(pcm), old_trim_silence(pcm), old_snr_db(pcm)


def new_verify(pcm: Pcm) -> Measured:
    """The voice check's measures now (VoiceVerifier._score with the energy VAD)."""
    return EnergyVad().speech_trim_and_snr(pcm)


# --------------------------------------------------------------------------------- the run
def turned(names: list[str], i: int) -> list[str]:
    k = i % len(names)
    return names[k:] + names[:k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    single_threaded_blas()  # as a server process does at start (cli._serve)
    inputs = [decode_audio(encoded=w) for w in utterances(args.data, "jackson", args.n)]
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    ways: dict[str, Callable[[Pcm], Measured]] = {"before": old_verify, "after": new_verify}
    took: dict[str, list[float]] = {k: [] for k in ways}
    differ = 0
    for i, pcm in enumerate(inputs):
        got: dict[str, Measured] = {}
        for name in turned(list(ways), i):
            t0 = time.perf_counter()
            got[name] = ways[name](pcm)
            took[name].append(time.perf_counter() - t0)
        (net0, cut0, snr0), (net1, cut1, snr1) = got["before"], got["after"]
        differ += not (net0 == net1 and snr0 == snr1 and np.array_equal(cut0.samples, cut1.samples))
    load_end = Path("/proc/loadavg").read_text().split()[:3]
    p50 = {k: statistics.median(v) * 1e3 for k, v in took.items()}
    ratio = p50["before"] / p50["after"]
    print(
        f"voice check's speech, trim and SNR p50: before {p50['before']:.3f} ms, after {p50['after']:.3f} ms "
        f"({ratio:.2f}x faster, {p50['before'] - p50['after']:.3f} ms less per Evaluate)"
    )
    print(
        f"{len(inputs)} utterances of 3 s: {differ} with any net speech, trimmed sample or SNR differing; "
        f"load average {' '.join(load_start)} at the start, {' '.join(load_end)} at the end"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "inputs": len(inputs),
            "p50_ms": p50,
            "speedup_p50": ratio,
            "differing_inputs": differ,
            "load_average_start": load_start,
            "load_average_end": load_end,
        }
        (args.out / "vad.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if differ == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
