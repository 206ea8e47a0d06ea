"""What hearing the answer adds to Confirm: its latency against the voice check alone, same run.

    python scripts/bench_confirm.py --out reports/bench [--n 40]

One household of the composed guard (real GE2E, the shipped digit checker, SQLite), its parent an
FSDD speaker with voice and digits enrolled. For each of `n` spoken-PIN answers (a new recording
each time, so the replay check sees new audio), interleaved answer by answer so all three see the
same machine conditions:

- `confirm`: the whole Confirm call in process (replay check, content check, speaker check on
  the digits' span, child likelihood, the transaction), after an untimed Evaluate opened the
  challenge;
- `voice_check`: the bare speaker check of the same audio (decode, VAD trim, GE2E embedding),
  the baseline;
- `content_check`: the digit content check of the same audio with the member's templates.

Prints p50/p99 of each and the ratios to the voice check, and writes <out>/confirm.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from eval_attacks import Lab, fsdd, fsdd_parent_home, pin_of, request_audio, wav
from script_paths import ROOT, default_data_dir

from purchase_guard.domain import ChallengeMethod
from purchase_guard.logs import configure_logging
from purchase_guard.voice.audio import decode_audio
from purchase_guard.voice.digits import load_digit_checker
from purchase_guard.voice.digits.training import fsdd_enrollment
from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.vad import trim_silence

SPEAKER = "jackson"


def stats(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    configure_logging("error")
    rng = random.Random(args.seed)
    encoder = Ge2eEncoder()
    checker = load_digit_checker()
    checker.warm_up()
    templates = checker.build_templates([(p, prompt) for p, prompt, _ in fsdd_enrollment(args.data, SPEAKER)])
    series: dict[str, list[float]] = {"confirm": [], "voice_check": [], "content_check": []}
    outcomes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(args.data, Path(tmp))
        pin = pin_of(rng)
        hid, me = fsdd_parent_home(lab, SPEAKER, pin, rng, ChallengeMethod.SPOKEN_PIN)
        for i in range(args.n + 3):
            lab.svc.set_pin(me, hid, pin)  # wrong answers must not pause the PIN mid-run
            request, _ = request_audio(lab, SPEAKER, rng)
            decision = lab.evaluate(hid, request)
            if decision.challenge is None:
                continue
            answer = wav(fsdd(lab, SPEAKER, pin, rng, 20, 50).samples)
            assert answer.encoded is not None
            t0 = time.perf_counter()
            final = lab.confirm(hid, decision, answer, pin)
            t1 = time.perf_counter()
            pcm = decode_audio(encoded=answer.encoded)
            encoder.embed(trim_silence(pcm).samples)
            t2 = time.perf_counter()
            checker.check(pcm, pin, templates)
            t3 = time.perf_counter()
            if i < 3:  # warm-up: caches, the first numba and torch calls
                continue
            series["confirm"].append(1000 * (t1 - t0))
            series["voice_check"].append(1000 * (t2 - t1))
            series["content_check"].append(1000 * (t3 - t2))
            outcomes[final.outcome.value] = outcomes.get(final.outcome.value, 0) + 1
    result: dict[str, Any] = {k: stats(v) for k, v in series.items()}
    base = result["voice_check"]["p50_ms"]
    result["confirm_over_voice_check_p50"] = result["confirm"]["p50_ms"] / base
    result["content_over_voice_check_p50"] = result["content_check"]["p50_ms"] / base
    result["added_by_hearing_p50_ms"] = result["confirm"]["p50_ms"] - base
    result["outcomes"] = outcomes
    result["speaker"] = SPEAKER
    for key in ("confirm", "voice_check", "content_check"):
        v = result[key]
        print(f"{key:<14} p50 {v['p50_ms']:7.1f} ms   p99 {v['p99_ms']:7.1f} ms   (n={v['n']})")
    print(
        f"Confirm / voice check (p50): {result['confirm_over_voice_check_p50']:.2f}; "
        f"content check / voice check: {result['content_over_voice_check_p50']:.2f}; outcomes {outcomes}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "confirm.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'confirm.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
