"""The household benchmark's accounting (voice/households.py): categories, totals, targets, intervals."""

from __future__ import annotations

import pytest

from purchase_guard.voice.bootstrap import wilson
from purchase_guard.voice.households import (
    ATTACK_OUTCOMES,
    GENUINE_OUTCOMES,
    Attempt,
    Ledger,
    band_of,
    format_table,
    speaker_bootstrap,
    summarise,
    targets,
)

BANDS = (("pin", 2.5), ("command", 6.0), ("long", None))


def _ledger(child_attempts: int, child_allowed: int, strangers: int) -> Ledger:
    led = Ledger()
    outcomes = list(GENUINE_OUTCOMES)
    for i in range(40):
        band = ("pin", "command", "long")[i % 3]
        led.add(Attempt("genuine", outcomes[i % 4], band, f"so/p{i % 5}", f"h{i % 4}", 0, order="in_limit"))
    for i in range(child_attempts):
        out = "allow" if i < child_allowed else ATTACK_OUTCOMES[1 + i % 3]
        led.add(Attempt("child_unenrolled", out, "pin", f"so/c{i % 7}", "h0", 0))
    for i in range(strangers):
        led.add(
            Attempt("stranger", ATTACK_OUTCOMES[1 + i % 3], ("pin", "command")[i % 2], f"lt/s{i}", "h1", 1)
        )
    return led


def test_a_stranger_or_child_can_never_be_counted_as_a_completed_purchase() -> None:
    """Attack attempts only take attack outcomes: 'passed_approval' or 'passed_answer' is refused."""
    for outcome in ("passed_approval", "passed_answer"):
        with pytest.raises(ValueError, match="cannot end as"):
            Attempt("stranger", outcome, "pin", "lt/1", "h", 0)
    with pytest.raises(ValueError, match="cannot end as"):
        Attempt("genuine", "to_parent", "pin", "so/1", "h", 0)
    with pytest.raises(ValueError, match="unknown attempt kind"):
        Attempt("neighbour", "allow", "pin", "so/1", "h", 0)


def test_totals_add_up_over_outcomes_and_bands() -> None:
    """Per kind, outcome counts sum to the attempts, and band attempts sum to the 'all' row."""
    s = summarise(_ledger(30, 0, 20), replicates=50)
    g = s["genuine"]
    assert g["all"]["attempts"] == 40
    assert sum(g["all"][o]["k"] for o in GENUINE_OUTCOMES) == 40
    assert sum(g[b]["attempts"] for b in g if b != "all") == 40
    # 3 of the 4 outcomes are completions (allow, passed_answer, passed_approval).
    assert g["all"]["completed_at_most_one_challenge"]["k"] == 30
    # Without the parent's approval: allow and passed_answer only.
    assert g["all"]["completed_without_parent_approval"]["k"] == 20
    for kind, per in s["attacks"].items():
        assert sum(per["all"][o]["k"] for o in ATTACK_OUTCOMES) == per["all"]["attempts"], kind
        assert sum(per[b]["attempts"] for b in per if b != "all") == per["all"]["attempts"], kind
    assert s["genuine_by"]["order:in_limit"]["attempts"] == 40
    assert "| stranger | all | 20 |" in format_table(s)


def test_targets_need_both_zero_allow_and_enough_attempts() -> None:
    """0 ALLOW in 999 child attempts is not the target; in 1,000 it is; one ALLOW misses it."""

    def child_target(n: int, k: int) -> dict[str, object]:
        return next(t for t in targets(summarise(_ledger(n, k, 10), replicates=20)) if "child" in t["target"])

    assert child_target(999, 0)["met"] is False
    assert child_target(1000, 0)["met"] is True
    missed = child_target(1000, 1)
    assert missed["met"] is False
    assert missed["allowed"] == 1
    genuine = targets(summarise(_ledger(10, 0, 10), replicates=20))[0]
    assert genuine["met"] is False  # 75 % completed
    assert genuine["short_by"] == pytest.approx(0.20)


def test_intervals() -> None:
    """Wilson for 0 of 1,000 tops out near 0.38 %; the speaker bootstrap brackets the pooled rate."""
    lo, hi = wilson(0, 1000)
    assert lo == pytest.approx(0.0, abs=1e-12)
    assert 0.003 < hi < 0.0045
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = speaker_bootstrap({"a": (9, 10), "b": (1, 10), "c": (5, 10)}, replicates=200)
    assert lo < 0.5 < hi


def test_bands_follow_the_thresholds_file_edges() -> None:
    """A take's band is the first whose max net speech it fits under; past the last edge, the last."""
    assert band_of(1.0, BANDS) == "pin"
    assert band_of(2.5, BANDS) == "pin"
    assert band_of(4.0, BANDS) == "command"
    assert band_of(30.0, BANDS) == "long"
