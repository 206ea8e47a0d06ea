"""The pocketsphinx candidate for the digit check, kept as a measurement (it lost; see docs/challenges.md).

Verifier: forced alignment of the expected digits (set_align_text) against a free digit loop
(JSGF), both with the US-English acoustic model in the pocketsphinx wheel; score = (log
acoustic score of the alignment - that of the loop) per expected digit. Also reports the loop's
exact recognition, the figure issue 17 quoted. Used by eval_answers.py --psx.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.voice.audio import Pcm, to_pcm16
from purchase_guard.voice.bootstrap import wilson
from purchase_guard.voice.digits import evaluation as ev
from purchase_guard.voice.digits.corpus import WORDS, fsdd_join, load_flac

SPOKEN = [w.lower() for w in WORDS]


class Sphinx:
    def __init__(self) -> None:
        import pocketsphinx as ps

        model = ps.get_model_path()
        cfg = ps.Config(
            hmm=os.path.join(model, "en-us", "en-us"),
            dict=os.path.join(model, "en-us", "cmudict-en-us.dict"),
            lm=None,
            loglevel="FATAL",
        )
        self.dec = ps.Decoder(cfg)
        grammar = "#JSGF V1.0;\ngrammar digits;\npublic <s> = (" + " | ".join(SPOKEN) + ")+ ;\n"
        self.dec.add_jsgf_string("loop", grammar)

    def _run(self, pcm: Pcm) -> tuple[str, float]:
        self.dec.start_utt()
        self.dec.process_raw(to_pcm16(pcm), full_utt=True)
        self.dec.end_utt()
        hyp, segs = self.dec.hyp(), self.dec.seg()
        if hyp is None or segs is None:
            return "", -math.inf
        words = [s.word.split("(")[0] for s in segs]
        digits = "".join(str(SPOKEN.index(w)) for w in words if w in SPOKEN)
        return digits, sum(math.log(max(s.ascore, 1e-300)) for s in segs)

    def free(self, pcm: Pcm) -> tuple[str, float]:
        self.dec.activate_search("loop")
        return self._run(pcm)

    def forced(self, pcm: Pcm, digits: str) -> float:
        self.dec.set_align_text(" ".join(SPOKEN[int(c)] for c in digits))
        return self._run(pcm)[1]


def measure(data: Path, fsdd_per_speaker: int, seed: int) -> dict[str, Any]:
    folds = ev.make_folds(data)
    sphinx = Sphinx()
    rng = random.Random(f"psx/{seed}")
    trials: list[ev.Trial] = []
    exact = {"fsdd": [0, 0], "speechocean": [0, 0]}
    times = []

    def add(group: str, spk: str, pcm: Pcm, exp: list[tuple[str, str]], truth: str | None) -> None:
        t0 = time.process_time()
        hyp, open_score = sphinx.free(pcm)
        for kind, digits in exp:
            s = (sphinx.forced(pcm, digits) - open_score) / len(digits)
            trials.append(
                ev.Trial(
                    group,
                    spk,
                    folds.fold_of[spk],
                    kind,
                    "generic",
                    len(digits),
                    s if math.isfinite(s) else -math.inf,
                )
            )
        times.append(time.process_time() - t0)
        if truth is not None:
            exact[group][0] += hyp == truth
            exact[group][1] += 1

    for spk in folds.fsdd:
        for i in range(fsdd_per_speaker):
            digits = "".join(rng.choice("0123456789") for _ in range(4))
            pcm, _ = fsdd_join(data, spk, digits, [rng.randrange(10, 50) for _ in digits], rng)
            add("fsdd", spk, pcm, [(ev.GENUINE, digits), (ev.CHANGED, ev._change_one(rng, digits))], digits)
            if i % 2 == 0:
                rev = Pcm(np.ascontiguousarray(pcm.samples[::-1]))
                add("fsdd", spk, rev, [(ev.REVERSED, ev._random_digits(rng))], None)
    for u in folds.so_strings:
        add(
            "speechocean",
            u.speaker,
            load_flac(u.path),
            [(ev.GENUINE, u.digits), (ev.CHANGED, ev._change_one(rng, u.digits))],
            u.digits,
        )
    by_spk: dict[str, int] = {}
    for u in folds.so_other:
        if by_spk.get(u.speaker, 0) < 2:
            by_spk[u.speaker] = by_spk.get(u.speaker, 0) + 1
            add("speechocean", u.speaker, load_flac(u.path), [(ev.OTHER_WORDS, ev._random_digits(rng))], None)
    # Two threshold rules: the evaluation's (refusal quantiles, unbounded), and the same capped
    # at 0 (accept whenever the alignment is at least as good as the loop).
    judged, thresholds = ev.held_out_acceptance(trials, folds.k, cap=None)
    judged_cap, _ = ev.held_out_acceptance(trials, folds.k, cap=0.0)
    rows = []
    for rule, got in (("refusal-quantiles", judged), ("capped-at-0", judged_cap)):
        for group in ("fsdd", "speechocean"):
            for kind in (ev.GENUINE, ev.CHANGED, ev.OTHER_WORDS, ev.REVERSED):
                sel = [ok for t, ok in got if t.group == group and t.kind == kind and t.mode == "generic"]
                if sel:
                    k, n = int(sum(sel)), len(sel)
                    rows.append(
                        {
                            "rule": rule,
                            "group": group,
                            "kind": kind,
                            "accepted": k,
                            "n": n,
                            "rate": k / n,
                            "ci95": list(wilson(k, n)),
                        }
                    )
    ties = sum(1 for t in trials if t.score == 0.0)
    return {
        "method": "pocketsphinx 5 en-us: forced alignment vs JSGF digit loop, log acoustic score per digit",
        "exact_recognition": {
            g: {"right": v[0], "n": v[1], "rate": v[0] / v[1] if v[1] else None} for g, v in exact.items()
        },
        "fold_thresholds": thresholds["generic"],
        "scores_exactly_zero": {"n": ties, "of": len(trials)},
        "results": rows,
        "cpu_ms_per_answer_p50": 1000 * float(np.percentile(times, 50)),
        "cpu_ms_per_answer_p99": 1000 * float(np.percentile(times, 99)),
    }
