"""Fit the speaker-verification thresholds and write src/purchase_guard/voice/thresholds.json.

    python scripts/calibrate_voice.py [--data ../shared/data] [--out build/voice-eval]
        [--encoder ge2e|ecapa] [--ecapa-model-dir models/spkrec-ecapa-voxceleb]

Thresholds are chosen on the fit half of the speakers and the printed table reports the
other half; see docs/voice.md for the rule and the last measured numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from script_paths import default_data_dir

from purchase_guard.voice.evaluation import main

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=default_data_dir(),
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "voice-eval")
    parser.add_argument("--encoder", choices=["ge2e", "ecapa", "fake"], default="ge2e")
    parser.add_argument("--ecapa-model-dir", type=Path, default=None)
    args = parser.parse_args()
    extra = ["--ecapa-model-dir", str(args.ecapa_model_dir)] if args.ecapa_model_dir else []
    sys.exit(
        main(
            [
                *extra,
                "--data",
                str(args.data),
                "--out",
                str(args.out),
                "--encoder",
                args.encoder,
                "--calibrate",
                "--thresholds",
                str(ROOT / "src" / "purchase_guard" / "voice" / "thresholds.json"),
            ]
        )
    )
