"""The broadcast evaluation's pooling of several runs and its intervals (scripts/eval_broadcast.py).

The issue's headline figures come from `pool`: an error there would misreport them, so it is
checked on hand-made runs whose pooled values are known.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import eval_broadcast as ev


def run(
    seed: int, detected: int, pairs: int, false_matches: int, neg_pairs: int, rate5: float
) -> dict[str, Any]:
    """One run's result with the fields `pool` reads; sources "a" and "b" split the pairs."""
    half = pairs // 2
    per_pair = {
        key: {
            "pairs": pairs,
            "detected": detected,
            "rate": detected / pairs,
            "_by_source": {"a": [detected - half // 2, half], "b": [half // 2, pairs - half]},
            "_by_kind": {"libri": [detected, pairs]},
            "_found": [(0.1, 500.0)] * detected,
            "missed": {"ber_above_threshold": pairs - detected, "too_few_bits": 0},
        }
        for key in ("10dB", "5dB", "0dB")
    }
    hard = {"same_speaker_same_words": 1, "shared_noise": 0}
    return {
        "split": "test",
        "quick": False,
        "tail_rt60_s": 0.4,
        "clips": 10,
        "latency": {"marker": seed},
        "seed": seed,
        "per_pair": per_pair,
        "events": {
            "homes_per_event": 10,
            "events": 10,
            "snr_db": 5.0,
            "flagged_from_third": rate5,
            "first_two_late_caught": 1.0,
            "all_households_flagged_or_cancelled": 1.0,
        },
        "denylist": {
            "clips": 10,
            "rule": "0.27/300",
            "5dB": rate5,
            "0dB": rate5 / 2,
            "false_refusals": 1,
            "negative_utterances": 100,
            "sweep": {"0.27/300": {"5dB": rate5, "0dB": rate5 / 2, "false_refusals": 1}},
        },
        "false_matches": {
            "rule": {"ber_limit": 0.27},
            "utterances": 100,
            "pairs": neg_pairs,
            "false_matches": false_matches,
            "false_verdicts": 0,
            "search_seconds": 1.0,
            "hard_pairs": hard,
            "hard_false_matches": hard,
            "false_matches_by_scene": {"no_scene": false_matches},
            "hard_accepted_exhaustive": hard,
            "hard_min_ber_exhaustive": {"same_speaker_same_words": 0.1 * seed, "shared_noise": 0.2},
            "worst": [{"ber": 0.05 * seed, "a": f"x{seed}", "b": "y"}],
            "_found": [(0.1, 500.0)] * false_matches,
        },
        "shared_events": {"events": 2, "homes_per_event": 12, "pairs": 100, "matched": seed},
    }


def test_pool_sums_counts_and_recomputes_rates_from_them() -> None:
    """Pairs, detections and false matches are summed and the rates recomputed from the sums,
    not averaged; equal-sized rates (events, denylist) are averaged; latency is the first run's."""
    # Runs of different sizes: the mean of their rates (0.65) is not the pooled rate.
    pooled = ev.pool([run(1, 90, 100, 3, 1000, 0.9), run(2, 80, 200, 1, 1000, 0.7)])
    assert (pooled["per_pair"]["5dB"]["pairs"], pooled["per_pair"]["5dB"]["detected"]) == (300, 170)
    assert pooled["per_pair"]["5dB"]["rate"] == pytest.approx(170 / 300)
    assert pooled["per_pair"]["5dB"]["missed"]["ber_above_threshold"] == 130
    assert len(pooled["per_pair"]["5dB"]["_found"]) == 170
    fm = pooled["false_matches"]
    assert (fm["pairs"], fm["false_matches"], fm["rate"]) == (2000, 4, pytest.approx(0.002))
    assert fm["hard_min_ber_exhaustive"]["same_speaker_same_words"] == pytest.approx(0.1)
    assert [w["a"] for w in fm["worst"]] == ["x1", "x2"]
    assert pooled["events"]["flagged_from_third"] == pytest.approx(0.8)
    assert pooled["events"]["events"] == 20
    assert pooled["denylist"]["5dB"] == pytest.approx(0.8)
    assert pooled["denylist"]["false_refusals"] == 2
    assert pooled["denylist"]["sweep"]["0.27/300"]["false_refusals"] == 2
    assert (pooled["shared_events"]["matched"], pooled["shared_events"]["rate"]) == (3, pytest.approx(0.015))
    assert pooled["latency"] == {"marker": 1}
    assert [x["false_matches"] for x in pooled["per_seed"]] == [3, 1]


def test_pooled_detection_interval_holds_the_rate_and_narrows_with_more_sources() -> None:
    """The bootstrap interval contains the pooled rate, and more sources of the same spread
    give a narrower interval."""
    rng = np.random.default_rng(3)
    few = np.array([[int(rng.integers(80, 100)), 100] for _ in range(5)])
    many = np.array([[int(rng.integers(80, 100)), 100] for _ in range(80)])
    for counts in (few, many):
        lo, hi = ev.source_bootstrap(counts)
        assert lo <= counts[:, 0].sum() / counts[:, 1].sum() <= hi
    assert np.diff(ev.source_bootstrap(many))[0] < np.diff(ev.source_bootstrap(few))[0]


def test_false_match_interval_is_the_exact_binomial_one() -> None:
    """Zero events give [0, about 3.69 / n] (the 95 % one-sided bound); 16 in 1,130,256 give
    the interval the documentation quotes for that count."""
    lo, hi = ev.poisson_interval(0, 1_000_000)
    assert lo == 0.0
    assert hi == pytest.approx(3.69e-6, rel=0.01)
    lo, hi = ev.poisson_interval(16, 1_130_256)
    assert (lo, hi) == (pytest.approx(8.09e-6, rel=0.01), pytest.approx(2.30e-5, rel=0.01))
