"""The PIN back-off grows with each lockout and stops at a day; the challenge constants."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purchase_guard.challenge.throttle import APPROVAL_EXPIRY, DEFAULT_EXPIRY, MAX_ATTEMPTS, pin_backoff


@pytest.mark.parametrize(
    ("lockouts", "pause"),
    [
        (0, timedelta(0)),
        (1, timedelta(minutes=1)),
        (2, timedelta(minutes=5)),
        (3, timedelta(minutes=15)),
        (4, timedelta(hours=1)),
        (5, timedelta(hours=4)),
        (6, timedelta(hours=24)),
        (7, timedelta(hours=24)),
        (10_000, timedelta(hours=24)),
    ],
)
def test_backoff_schedule(lockouts: int, pause: timedelta) -> None:
    """No pause before any lockout, then 1 min, 5 min, 15 min, 1 h, 4 h, and 24 h from then on."""
    assert pin_backoff(lockouts) == pause


@given(st.integers(min_value=0, max_value=1_000))
def test_backoff_never_shrinks_and_is_capped(lockouts: int) -> None:
    """One more lockout never shortens the pause, and no pause is longer than a day."""
    assert pin_backoff(lockouts + 1) >= pin_backoff(lockouts)
    assert pin_backoff(lockouts) <= timedelta(days=1)


def test_negative_lockouts_rejected() -> None:
    """A negative lockout count is a caller bug and raises ValueError."""
    with pytest.raises(ValueError, match=">= 0"):
        pin_backoff(-1)


def test_challenge_constants() -> None:
    """Five attempts per challenge; spoken challenges live 2 minutes, parent approvals 24 hours."""
    assert (5, timedelta(minutes=2), timedelta(hours=24)) == (MAX_ATTEMPTS, DEFAULT_EXPIRY, APPROVAL_EXPIRY)
