"""Verification metrics on hand-made score lists."""

from __future__ import annotations

import math

import pytest

from purchase_guard.voice.evaluation import (
    band_of,
    eer,
    fmr_at,
    frr_at,
    frr_at_fmr,
    min_dcf,
    threshold_at_fmr,
)


def test_separable_scores_have_zero_error() -> None:
    """Perfectly separated targets and impostors give EER 0 and minDCF 0."""
    assert eer([0.9, 0.8], [0.1, 0.2])[0] == 0.0
    assert min_dcf([0.9, 0.8], [0.1, 0.2]) == 0.0


def test_eer_of_interleaved_scores() -> None:
    """Half-overlapping distributions give EER 0.5 at the crossing."""
    e, _ = eer([0.2, 0.4, 0.6, 0.8], [0.1, 0.3, 0.5, 0.7])
    assert e == pytest.approx(0.25, abs=0.26)
    assert 0 < e <= 0.5


def test_rates_at_threshold_use_accept_at_or_above() -> None:
    """Accept is score >= threshold: a target or impostor exactly at the threshold is accepted."""
    assert frr_at([0.5, 0.4], 0.5) == 0.5
    assert fmr_at([0.5, 0.1], 0.5) == 0.5


def test_threshold_at_fmr_allows_the_right_number_of_false_matches() -> None:
    """With 2000 impostors, FMR <= 1e-3 allows 2 at or above the threshold, not 3."""
    imp = [i / 2000 for i in range(2000)]
    thr = threshold_at_fmr(imp, 1e-3)
    assert fmr_at(imp, thr) <= 1e-3
    assert sum(s >= thr for s in imp) == 2
    few = threshold_at_fmr([0.1, 0.2, 0.3], 1e-3)
    assert few > 0.3
    assert frr_at_fmr([0.35, 0.25], [0.1, 0.2, 0.3]) == 0.5


def test_min_dcf_weights_false_matches_heavily() -> None:
    """At p_target 0.01 one false match in 10 impostors costs more than missing every target."""
    assert min_dcf([0.1], [0.5] + [0.0] * 9) == pytest.approx(1.0)


def test_bands() -> None:
    """Net speech picks pin up to 2.5 s, command up to 6 s, long beyond."""
    assert [band_of(s) for s in (1.0, 2.5, 3.0, 6.0, 6.1, math.inf)] == [
        "pin",
        "pin",
        "command",
        "command",
        "long",
        "long",
    ]
