"""Fit the shipped speaker-verification system: thresholds.json (+ backend_<encoder>.json).

    python scripts/calibrate_voice.py [--data ../shared/data] [--system raw-centroid]
        [--vad energy|silero] [--cache-dir DIR] [--encoder ge2e|ecapa] [--ecapa-model-dir DIR]

The system is fitted on every speaker of the shared data except the few held back for the
data tests (voice/fitting.py): back-end on all of them, thresholds on the out-of-fold scores
of an inner 5-fold over them. Its accuracy on speakers never fitted on is what
`purchase-guard eval speakers` (make eval) measures by k-fold; docs/voice.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from script_paths import default_data_dir

from purchase_guard.app import encoder_for
from purchase_guard.voice.eval_kfold import SYSTEMS, git_commit, load_table, vad_by_name
from purchase_guard.voice.fitting import fit_shipped_system, write_json

ROOT = Path(__file__).resolve().parents[1]
VOICE = ROOT / "src" / "purchase_guard" / "voice"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="raw-centroid")
    parser.add_argument("--vad", choices=["energy", "silero"], default="energy")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--encoder", choices=["ge2e", "ecapa"], default="ge2e")
    parser.add_argument("--ecapa-model-dir", type=Path, default=None)
    parser.add_argument("--thresholds", type=Path, default=VOICE / "thresholds.json")
    args = parser.parse_args()
    encoder = encoder_for(args.encoder, args.ecapa_model_dir)
    table = load_table(args.data, encoder, vad_by_name(args.vad), args.cache_dir)
    entry, backend = fit_shipped_system(table, SYSTEMS[args.system], git_commit(ROOT))
    doc = json.loads(args.thresholds.read_text("utf-8")) if args.thresholds.exists() else {}
    doc["version"] = 2
    doc.setdefault("encoders", {})[encoder.name] = entry
    write_json(args.thresholds, doc)
    print(f"wrote {args.thresholds}")
    backend_file = VOICE / f"backend_{args.encoder}.json"
    if backend is not None:
        write_json(backend_file, backend)
        print(f"wrote {backend_file}")
    elif backend_file.exists():
        backend_file.unlink()  # a stale back-end must not outlive the thresholds it belonged to
        print(f"removed {backend_file} (the system has no fitted back-end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
