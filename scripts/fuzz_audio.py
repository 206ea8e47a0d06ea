"""Coverage-guided fuzzing of the audio decoders with atheris (libFuzzer).

    .venv/bin/python scripts/fuzz_audio.py -atheris_runs=200000 [-max_len=65536] [corpus_dir]

The first input byte picks the entry point: encoded WAV/FLAC (`decode_audio(encoded=...)`) or
raw PCM16 with a sample rate taken from the next four bytes. The property: decode_audio
returns finite 16 kHz mono samples in [-1, 1] no longer than the limit, or raises AudioError;
anything else (another exception, NaN samples, a crash in libsndfile) is a finding and stops
the run with the input saved by libFuzzer. The run count is printed at the end and written to
reports/fuzz/audio.json.

`--count-nonfinite` counts NaN/infinite outputs instead of stopping on the first one (a known
finding in decode_audio until its channel mean is taken in float64), so the run can go on
looking for other failures.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import time
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np
    import soundfile as sf

    from purchase_guard.errors import AudioError
    from purchase_guard.voice.audio import TARGET_RATE_HZ, decode_audio

MAX_SECONDS = 5.0
COUNTS = {"inputs": 0, "audio_error": 0, "decoded": 0, "nonfinite": 0}
OPTIONS = {"count_nonfinite": False}


def _seeds() -> list[bytes]:
    t = np.arange(1600) / 16000
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    out = []
    for fmt, subtype, rate, chans in (
        ("WAV", "PCM_16", 16000, 1),
        ("WAV", "FLOAT", 8000, 2),
        ("FLAC", "PCM_16", 16000, 1),
        ("FLAC", "PCM_24", 44100, 2),
    ):
        buf = io.BytesIO()
        data = x if chans == 1 else np.stack([x, x], axis=1)
        sf.write(buf, data, rate, format=fmt, subtype=subtype)
        out.append(b"\x00" + buf.getvalue())
    return out


def test_one_input(data: bytes) -> None:
    COUNTS["inputs"] += 1
    if not data:
        return
    mode, body = data[0] % 2, data[1:]
    try:
        if mode == 0:
            pcm = decode_audio(encoded=body, max_seconds=MAX_SECONDS)
        else:
            rate = struct.unpack("<i", body[:4].ljust(4, b"\x00"))[0]
            pcm = decode_audio(pcm16=body[4:], sample_rate_hz=rate, max_seconds=MAX_SECONDS)
    except AudioError:
        COUNTS["audio_error"] += 1
        return
    COUNTS["decoded"] += 1
    samples = pcm.samples
    if not np.all(np.isfinite(samples)):
        COUNTS["nonfinite"] += 1
        if OPTIONS["count_nonfinite"]:
            return
        raise AssertionError("decode_audio returned NaN or infinite samples")
    if samples.size and float(np.max(np.abs(samples))) > 1.0:
        raise AssertionError("decode_audio returned samples outside [-1, 1]")
    if samples.shape[0] > MAX_SECONDS * TARGET_RATE_HZ + 16:
        raise AssertionError("decode_audio returned more audio than the limit")


def main() -> None:
    # numpy's overflow warnings are not findings by themselves; the NaN check above is.
    warnings.simplefilter("ignore")
    args = [a for a in sys.argv if a != "--count-nonfinite"]
    OPTIONS["count_nonfinite"] = "--count-nonfinite" in sys.argv
    if not any(a.startswith("-artifact_prefix=") for a in args):
        Path("reports/fuzz/artifacts").mkdir(parents=True, exist_ok=True)
        args.append("-artifact_prefix=reports/fuzz/artifacts/")
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if not corpus:
        seed_dir = Path("reports/fuzz/audio-corpus")
        seed_dir.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(_seeds()):
            (seed_dir / f"seed-{i}").write_bytes(seed)
        args.append(str(seed_dir))
    started = time.monotonic()
    atheris.Setup(args, test_one_input)
    try:
        atheris.Fuzz()
    finally:
        _report(started)


def _report(started: float) -> None:
    out = Path("reports/fuzz")
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "target": "voice.audio.decode_audio",
        **COUNTS,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "audio.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"fuzz_audio: {json.dumps(summary)}", file=sys.stderr)


if __name__ == "__main__":
    main()
