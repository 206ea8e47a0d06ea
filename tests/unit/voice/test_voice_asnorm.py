"""AS-norm (voice/asnorm.py): a score counts for less when its sides resemble the cohort."""

from __future__ import annotations

import numpy as np
import pytest

from purchase_guard.voice.asnorm import Cohort, unit_rows


def test_a_probe_like_the_cohort_scores_lower_than_an_unusual_one_with_the_same_raw_score() -> None:
    """Same raw cosine to the model, but one probe resembles many cohort speakers: its normalised
    score is lower, because resembling everyone is what an impostor's score also does."""
    rng = np.random.default_rng(0)
    crowd = rng.standard_normal(64)
    cohort = Cohort(unit_rows(crowd + 0.3 * rng.standard_normal((200, 64))), k=20)
    model = unit_rows(rng.standard_normal(64))
    common = unit_rows(crowd + 0.3 * rng.standard_normal(64))
    unusual = unit_rows(rng.standard_normal(64))
    raw = np.array([[0.6], [0.6]])
    normed = cohort.normalise(raw, model, np.vstack([common, unusual]))
    assert normed[0, 0] < normed[1, 0]


def test_cohort_bounds_are_checked() -> None:
    """An empty cohort, non-finite rows or k larger than the cohort are refused."""
    with pytest.raises(ValueError, match="cohort"):
        Cohort(np.zeros((0, 8)), 1)
    with pytest.raises(ValueError, match="cohort"):
        Cohort(np.full((3, 8), np.nan), 1)
    with pytest.raises(ValueError, match="k must"):
        Cohort(unit_rows(np.ones((3, 8))), 4)
