"""Train the shipped child-voice detector and write src/purchase_guard/voice/child_<encoder>.json.

    python scripts/train_child_detector.py [--data ../shared/data] [--spec pca16+acoustic-all]
        [--vad energy|silero] [--cache-dir DIR] [--encoder ge2e] [--weights-out FILE]

Fitted on every speaker of the shared data except the few held back for the data tests
(voice/fitting.py): children 12 and under from speechocean762 vs adults of every corpus
(balanced, child_training._training_rows), penalty and both operating points (challenge:
5 % of adults, high: 1 %) from an inner 5-fold over speakers. Held-out accuracy by k-fold:
`purchase-guard eval speakers` (make eval); figures in docs/voice.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from script_paths import default_data_dir

from purchase_guard.app import encoder_for
from purchase_guard.voice.eval_kfold import CHILD_SPECS, git_commit, load_table, vad_by_name
from purchase_guard.voice.fitting import fit_shipped_child, write_json

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--spec", choices=sorted(CHILD_SPECS), default="pca16+acoustic-all")
    parser.add_argument("--vad", choices=["energy", "silero"], default="energy")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--encoder", choices=["ge2e", "ecapa"], default="ge2e")
    parser.add_argument("--ecapa-model-dir", type=Path, default=None)
    parser.add_argument("--weights-out", type=Path, default=None)
    args = parser.parse_args()
    encoder = encoder_for(args.encoder, args.ecapa_model_dir)
    table = load_table(args.data, encoder, vad_by_name(args.vad), args.cache_dir)
    det = fit_shipped_child(table, CHILD_SPECS[args.spec], git_commit(ROOT))
    out = args.weights_out or ROOT / "src" / "purchase_guard" / "voice" / f"child_{args.encoder}.json"
    write_json(out, det.to_mapping())
    print(f"wrote {out}: operating points {dict(det.operating_points)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
