"""How many PIN guesses a challenge allows, how long challenges live, and the growing back-off.

A four-digit PIN is only as strong as the limit on guessing it. Five attempts per challenge, and a
pause that grows with every locked challenge, leave a guesser about 30 tries in the first day and
five per day after that: against 10,000 PINs (fewer once common ones are refused) that is years of
trying, during which every lockout notifies the parents.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = ["APPROVAL_EXPIRY", "BACKOFF_STEPS", "DEFAULT_EXPIRY", "MAX_ATTEMPTS", "pin_backoff"]

MAX_ATTEMPTS = 5  # per challenge; the sixth wrong answer is never heard
DEFAULT_EXPIRY = timedelta(minutes=2)  # a spoken PIN or digits are answered in the same conversation
APPROVAL_EXPIRY = timedelta(hours=24)  # a parent may only see the request at the end of the day

# Pause after the n-th lockout (index n - 1); the last step repeats for every lockout after it.
BACKOFF_STEPS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=4),
    timedelta(hours=24),
)


def pin_backoff(lockouts: int) -> timedelta:
    """How long PIN challenges stay throttled after the `lockouts`-th lockout (0 -> no pause).

    The counter is the household's `PinState.lockouts`; resetting it after a correct PIN is the
    caller's decision.
    """
    if lockouts < 0:
        raise ValueError("lockouts must be >= 0")
    if lockouts == 0:
        return timedelta(0)
    return BACKOFF_STEPS[min(lockouts, len(BACKOFF_STEPS)) - 1]
