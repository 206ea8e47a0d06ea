"""Fit the packaged digit model: src/purchase_guard/voice/digits/digits_model.json + digits_bank.npz.

    python scripts/train_digits.py [--data ../shared/data] [--trials-cache FILE]

The bank holds templates from every FSDD speaker and every speechocean762-train digit reader
(training.build_bank, at most evaluation.BANK_PER_DIGIT per digit). The two thresholds come
from the k-fold run of evaluation.run_folds (every trial scored with a bank that excluded its
speaker), by the same rule the evaluation applies per fold (evaluation.choose_threshold).
The JSON records what was fitted on, the constants, and the bank's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from script_paths import ROOT, default_data_dir

from purchase_guard.voice.digits import dtw
from purchase_guard.voice.digits import evaluation as ev
from purchase_guard.voice.digits.model import BANK_FILE, META_FILE, MODEL_FORMAT, MODEL_VERSION, bank_to_npz
from purchase_guard.voice.digits.training import build_bank

NAME = "digits-dtw/1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out-dir", type=Path, default=ROOT / "src" / "purchase_guard" / "voice" / "digits")
    parser.add_argument("--fsdd-answers", type=int, default=40)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--trials-cache", type=Path, default=None)
    args = parser.parse_args()
    trials, _, _ = ev.trials_for(args.data, args.fsdd_answers, args.seed, args.trials_cache)
    th_member = ev.choose_threshold(trials, "member")
    th_generic = ev.choose_threshold(trials, "generic")
    folds = ev.make_folds(args.data)
    params = ev.base_params()
    cuts = build_bank(args.data, folds.fsdd, folds.so_strings, params)
    bank = ev.select_bank(cuts, ev.BANK_PER_DIGIT, args.seed)
    blob = bank_to_npz(bank)
    meta = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "name": NAME,
        "features": dtw.FEATURES,
        "params": {
            "filler_cost": params.filler_cost,
            "stay_penalty": params.stay_penalty,
            "threshold_member": th_member,
            "threshold_generic": th_generic,
            "threshold_enroll": params.threshold_enroll,
            "threshold_enroll_generic": params.threshold_enroll_generic,
        },
        "bank_sha256": hashlib.sha256(blob).hexdigest(),
        "fitted_on": {
            "script": "scripts/train_digits.py",
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "bank": {
                "fsdd_speakers": list(folds.fsdd),
                "fsdd_takes": "0-2 of each digit, joined into ENROLLMENT_PROMPTS",
                "speechocean762_train_digit_strings": len(folds.so_strings),
                "speechocean762_train_speakers": len({u.speaker for u in folds.so_strings}),
                "templates": len(bank),
                "per_digit_at_most": ev.BANK_PER_DIGIT,
            },
            "thresholds": {
                "rule": (
                    f"changed-digit quantile {ev.CHANGED_QUANTILE}, other-words quantile {ev.OTHER_QUANTILE}"
                ),
                "trials": len(trials),
                "run": ev.run_key(args.fsdd_answers, args.seed),
            },
        },
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / BANK_FILE).write_bytes(blob)
    (args.out_dir / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    print(
        f"wrote {args.out_dir / META_FILE}: {len(bank)} templates, thresholds member {th_member:.3f} "
        f"generic {th_generic:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
