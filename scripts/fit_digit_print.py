"""PIN answers scored against the member's digit takes: k-fold evaluation, then the shipped fit.

    python scripts/fit_digit_print.py [--data ../shared/data] [--out reports/voice] [--folds 5]

Material (every speaker in ../shared/data who said digit strings):
- speechocean762: speakers with >= 2 digit strings and >= 3 other sentences. The first three
  sentences are the voiceprint; each digit string in turn is the answer and the speaker's
  other digit strings are the digit takes.
- FSDD: each of the six speakers enrolled as in the tests (three 4-digit joins of takes 0-2),
  digit takes = the six guided-enrollment prompts from takes 0-2 of each digit, answers = 30
  random 5-digit joins from takes 10 and up.
Impostor trials: every other speaker's answers, scored against the target's models.
Scores: A = cosine to the voiceprint centroid (shipped); C = max(A, cosine to the digit takes'
centroid). A uses the band threshold of thresholds.json; C the same plus `delta`, fitted on
the fitting speakers' impostor trials so that C's false-match rate is no higher than A's
(voice/digit_print.py).

Protocol: targets split into --folds folds over speakers (seeded); delta fitted on the impostor
trials of targets outside the fold, FRR and FMR counted on the fold's targets, with impostor
answers from speakers outside the fitting set only. Intervals: Wilson over trials (few
speakers: read them as rough). Then delta is fitted on every speaker and written to
src/purchase_guard/voice/digit_print.json with what it was fitted on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from script_paths import ROOT, default_data_dir

from purchase_guard.voice.bootstrap import wilson
from purchase_guard.voice.digit_print import DigitPrintCalibration, centroid, combined, fit_delta
from purchase_guard.voice.digits.checker import ENROLLMENT_PROMPTS
from purchase_guard.voice.digits.corpus import fsdd_join, load_flac, speechocean_ages, speechocean_utterances
from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.vad import EnergyVad
from purchase_guard.voice.verifier import Thresholds

VOICE = ROOT / "src" / "purchase_guard" / "voice"
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
RULE = (
    "smallest delta (grid 0.001) with FMR(max(voiceprint, digit takes) >= band threshold + delta) "
    "<= FMR(voiceprint >= band threshold) on impostor digit answers of the fitting speakers"
)


@dataclass
class Target:
    speaker: str
    corpus: str
    group: str
    voiceprint: np.ndarray[Any, Any]
    # (answer embedding, net speech s, digit-takes centroid for that answer)
    answers: list[tuple[np.ndarray[Any, Any], float, np.ndarray[Any, Any]]]


def build_targets(data: Path, seed: int) -> list[Target]:
    enc = Ge2eEncoder()
    vad = EnergyVad()

    def embed(pcm: Any) -> tuple[np.ndarray[Any, Any], float]:
        net, trimmed = vad.speech_and_trim(pcm)
        return np.asarray(enc.embed(trimmed.samples), dtype=np.float64), net

    out: list[Target] = []
    ages = speechocean_ages(data)
    by: dict[str, list[Any]] = {}
    for u in speechocean_utterances(data):
        by.setdefault(u.speaker, []).append(u)
    for speaker, utts in sorted(by.items()):
        digits = [u for u in utts if u.digits]
        plain = [u for u in utts if not u.digits]
        if len(digits) < 2 or len(plain) < 3:
            continue
        vp = centroid([embed(load_flac(u.path))[0] for u in plain[:3]])
        embs = [embed(load_flac(u.path)) for u in digits]
        answers = []
        for i, (e, net) in enumerate(embs):
            answers.append((e, net, centroid([x for j, (x, _) in enumerate(embs) if j != i])))
        age = ages.get(speaker, 0)
        out.append(
            Target(
                speaker, "speechocean", "child" if age <= 12 else "teen" if age < 18 else "adult", vp, answers
            )
        )
    rng = random.Random(seed)
    for speaker in FSDD_SPEAKERS:
        enroll = [
            embed(fsdd_join(data, speaker, d, [t] * len(d), rng)[0])[0]
            for d, t in (("3817", 0), ("5092", 1), ("6641", 2))
        ]
        seen: dict[str, int] = {}
        takes = []
        for prompt in ENROLLMENT_PROMPTS:
            idx = []
            for d in prompt:
                idx.append(seen.get(d, 0) % 3)
                seen[d] = seen.get(d, 0) + 1
            takes.append(embed(fsdd_join(data, speaker, prompt, idx, rng)[0])[0])
        dc = centroid(takes)
        answers = []
        for k in range(30):
            digits = "".join(rng.choice("0123456789") for _ in range(5))
            e, net = embed(
                fsdd_join(data, speaker, digits, [10 + (k + 7 * i) % 40 for i in range(5)], rng)[0]
            )
            answers.append((e, net, dc))
        out.append(Target(speaker, "fsdd", "adult", centroid(enroll), answers))
    return out


def scores(
    targets: Sequence[Target], answer_from: Sequence[Target], thresholds: Thresholds, genuine: bool
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(A, digit score, band threshold) per trial: each target's own answers (genuine), or
    every other speaker's answers in `answer_from` against each target (impostor)."""
    a, d, t = [], [], []
    for tgt in targets:
        # An impostor is scored against the target's digit takes: any of the target's answer
        # records carries the centroid used for it (for FSDD all the same; for speechocean the
        # takes without one string, which is as good as all of them for an outsider).
        dc_all = centroid([x[2] for x in tgt.answers])
        pool = (
            [(e, net, dc) for e, net, dc in tgt.answers]
            if genuine
            else [
                (e, net, dc_all) for o in answer_from if o.speaker != tgt.speaker for e, net, _ in o.answers
            ]
        )
        for e, net, dc in pool:
            u = e / np.linalg.norm(e)
            a.append(float(tgt.voiceprint @ u))
            d.append(float(dc @ u))
            t.append(thresholds.band_for(net).threshold)
    return np.asarray(a), np.asarray(d), np.asarray(t)


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else 0.0, "ci95": [lo, hi]}


def kfold(targets: list[Target], thresholds: Thresholds, folds: int, seed: int) -> dict[str, Any]:
    order = list(range(len(targets)))
    random.Random(seed).shuffle(order)
    # Round-robin after sorting by corpus keeps FSDD's six adults spread over the folds.
    order.sort(key=lambda i: targets[i].corpus)
    fold_of = {i: n % folds for n, i in enumerate(order)}
    tally = {
        k: {"frr_A": [0, 0], "frr_C": [0, 0], "fmr_A": [0, 0], "fmr_C": [0, 0]}
        for k in ("all", "fsdd", "speechocean")
    }
    deltas = []
    for f in range(folds):
        fit = [t for i, t in enumerate(targets) if fold_of[i] != f]
        test = [t for i, t in enumerate(targets) if fold_of[i] == f]
        ia, idg, it = scores(fit, fit, thresholds, genuine=False)
        delta, _ = fit_delta(ia, idg, it)
        deltas.append(delta)
        for tgt in test:
            ga, gd, gt = scores([tgt], [], thresholds, genuine=True)
            xa, xd, xt = scores([tgt], test, thresholds, genuine=False)
            for key in ("all", tgt.corpus):
                row = tally[key]
                row["frr_A"][0] += int(np.sum(ga < gt))
                row["frr_C"][0] += int(np.sum(combined(ga, gd) < gt + delta))
                row["frr_A"][1] += ga.size
                row["frr_C"][1] += ga.size
                row["fmr_A"][0] += int(np.sum(xa >= xt))
                row["fmr_C"][0] += int(np.sum(combined(xa, xd) >= xt + delta))
                row["fmr_A"][1] += xa.size
                row["fmr_C"][1] += xa.size
    return {
        "deltas": deltas,
        "by": {key: {m: rate(*v) for m, v in row.items()} for key, row in tally.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "voice")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--calibration", type=Path, default=VOICE / "digit_print.json")
    parser.add_argument("--no-write", action="store_true", help="evaluate only; leave the shipped file")
    args = parser.parse_args()
    encoder_name = Ge2eEncoder.name
    thresholds = Thresholds.load(encoder_name)
    targets = build_targets(args.data, args.seed)
    result = kfold(targets, thresholds, args.folds, args.seed)
    ia, idg, it = scores(targets, targets, thresholds, genuine=False)
    delta, usable = fit_delta(ia, idg, it)
    speakers = {c: sum(t.corpus == c for t in targets) for c in ("fsdd", "speechocean")}
    groups = {g: sum(t.group == g for t in targets) for g in ("adult", "teen", "child")}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    calib = DigitPrintCalibration(
        encoder_name,
        usable,
        delta,
        RULE,
        {
            "speakers_by_corpus": speakers,
            "speakers_by_group": groups,
            "impostor_trials": int(ia.size),
            "date": dt.date.today().isoformat(),
            "git_commit": commit,
        },
        thresholds.backend,
        thresholds.vad,
    )
    lines = [
        f"PIN answers against digit takes: {len(targets)} speakers ({speakers}; groups {groups}), "
        f"{args.folds}-fold over speakers, seed {args.seed}",
        f"fold deltas: {', '.join(f'{d:.3f}' for d in result['deltas'])}; "
        f"shipped fit on all: {delta:.3f} (usable {usable})",
        "| material | FRR voiceprint (A) | FRR with digit takes (C) | FMR A | FMR C |",
        "|---|---|---|---|---|",
    ]
    for key, row in result["by"].items():
        cells = []
        for m in ("frr_A", "frr_C", "fmr_A", "fmr_C"):
            r = row[m]
            lo, hi = (100 * x for x in r["ci95"])
            cells.append(f"{100 * r['rate']:.1f} % [{lo:.1f}-{hi:.1f}] ({r['k']}/{r['n']})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digit_print.json").write_text(
        json.dumps({"kfold": result, "shipped": calib.to_mapping()}, indent=1), "utf-8"
    )
    (args.out / "digit_print.md").write_text(text + "\n", "utf-8")
    if not args.no_write:
        doc = (
            json.loads(args.calibration.read_text("utf-8")) if args.calibration.exists() else {"encoders": {}}
        )
        doc["encoders"][encoder_name] = calib.to_mapping()
        args.calibration.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", "utf-8")
        print(f"wrote {args.calibration}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
