"""Train the child-voice detector and write src/purchase_guard/voice/child_<encoder>.json.

    python scripts/train_child_detector.py [--data ../shared/data] [--encoder ge2e]
        [--ecapa-model-dir models/spkrec-ecapa-voxceleb] [--out reports/child]

Trains on half of speechocean762-train's speakers (children 6-12 vs adults 19+), prints and
writes (JSON + Markdown under --out) the accuracy on the other, held-out half. Method:
purchase_guard/voice/child_training.py and docs/voice.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from script_paths import default_data_dir

from purchase_guard.voice.child_training import Sample, age_class, measure, split_speakers, train
from purchase_guard.voice.evaluation import EmbeddingCache, Utt, _load, make_encoder, speechocean_rows

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "speechocean762-train"


def load_samples(
    data: Path, encoder_kind: str, model_dir: Path | None, cache_file: Path | None = None
) -> tuple[str, list[Sample]]:
    # The shared data folder, or a speechocean762-style folder itself.
    root = data / CORPUS if (data / CORPUS).is_dir() else data
    by_spk, ages = speechocean_rows(root)
    encoder = make_encoder(encoder_kind, model_dir)
    if cache_file is not None and cache_file.is_file():
        # Embeddings only (no audio), keyed by encoder name so a model swap recomputes.
        z = np.load(cache_file, allow_pickle=False)
        if str(z["encoder"]) == encoder.name:
            return encoder.name, [
                Sample(str(spk), str(utt), ages[str(spk)], float(sp), np.asarray(e, dtype=np.float64))
                for spk, utt, sp, e in zip(z["speakers"], z["utts"], z["speech"], z["emb"], strict=True)
            ]
    utts = [
        Utt(CORPUS, spk, utt, _load(path))
        for spk in sorted(by_spk)
        if spk in ages
        for utt, path in sorted(by_spk[spk])
    ]
    cache = EmbeddingCache(encoder)
    cache.fill(utts)
    samples = [
        Sample(u.speaker, u.utt_id, ages[u.speaker], cache.speech(u), cache.emb(u).astype(np.float64))
        for u in utts
    ]
    if cache_file is not None:
        np.savez(
            cache_file,
            encoder=encoder.name,
            speakers=np.array([s.speaker for s in samples]),
            utts=np.array([s.utt_id for s in samples]),
            speech=np.array([s.speech_s for s in samples]),
            emb=np.stack([s.embedding for s in samples]),
        )
    return encoder.name, samples


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.1f} %"


def markdown(report: dict[str, Any]) -> str:
    h = report["heldout"]
    lines = [
        f"# Child-voice detector ({report['encoder']})",
        "",
        f"Trained on {report['train_speakers']} speakers, reported on {report['heldout_speakers']} "
        f"held-out speakers of {CORPUS}. Threshold rule: {report['threshold_rule']}.",
        "",
        "| held-out measure | children flagged | adults flagged | n child | n adult |",
        "|---|---|---|---|---|",
    ]
    for key in ("utterances", "pin_length_utterances", "speakers_majority"):
        r = h[key]
        lines.append(
            f"| {key} | {_pct(r['children_flagged'])} | {_pct(r['adults_flagged'])} | "
            f"{int(r['n_child'])} | {int(r['n_adult'])} |"
        )
    lines += [
        "",
        f"Held-out AUC {h.get('auc', math.nan):.3f}; 13-15 year olds flagged: "
        f"{_pct(h['teens_13_15_flagged'])} of {h['n_teen_utterances']} utterances.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=default_data_dir(),
    )
    parser.add_argument("--encoder", choices=["ge2e", "ecapa", "fake"], default="ge2e")
    parser.add_argument("--ecapa-model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "child")
    parser.add_argument(
        "--rule",
        choices=["eer", "recall"],
        default="eer",
        help="operating threshold: equal-error point, or flag 95%% of training children",
    )
    parser.add_argument("--cache", type=Path, default=None, help="npz of embeddings to reuse between runs")
    parser.add_argument(
        "--weights-out",
        type=Path,
        default=None,
        help="default: src/purchase_guard/voice/child_<encoder>.json",
    )
    args = parser.parse_args()
    started = time.monotonic()
    name, samples = load_samples(args.data, args.encoder, args.ecapa_model_dir, args.cache)
    print(f"embedded {len(samples)} utterances with {name} in {time.monotonic() - started:.0f} s")
    ages = {s.speaker: s.age for s in samples}
    split = split_speakers(ages)
    train_set = [s for s in samples if split[s.speaker] == "train"]
    heldout = [s for s in samples if split[s.speaker] in ("heldout", "teen")]
    det, meta = train(train_set, name, CORPUS, args.rule)
    result = measure(det, heldout)
    report = {
        "encoder": name,
        "corpus": CORPUS,
        "train_speakers": len({s.speaker for s in train_set if age_class(s.age) in ("child", "adult")}),
        "heldout_speakers": len({s.speaker for s in heldout if age_class(s.age) in ("child", "adult")}),
        "threshold_rule": meta["threshold_rule"],
        "penalty": meta["penalty"],
        "cv_auc_by_penalty": meta["cv_auc_by_penalty"],
        "training_oof": {
            "children_flagged": meta["training_oof_children_flagged"],
            "adults_flagged": meta["training_oof_adults_flagged"],
        },
        "heldout": result,
        "seconds": round(time.monotonic() - started, 1),
    }
    det = type(det)(
        encoder=det.encoder,
        mean=det.mean,
        scale=det.scale,
        weights=det.weights,
        bias=det.bias,
        meta={**meta, "heldout": result},
    )
    weights_out = args.weights_out or ROOT / "src" / "purchase_guard" / "voice" / f"child_{args.encoder}.json"
    weights_out.write_text(json.dumps(det.to_mapping(), indent=1) + "\n", "utf-8")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"child_{args.encoder}.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    md = markdown(report)
    (args.out / f"child_{args.encoder}.md").write_text(md, "utf-8")
    print(md)
    print(f"wrote {weights_out} and {args.out}/child_{args.encoder}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
