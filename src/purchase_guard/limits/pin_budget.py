"""The household PIN's guess budget: how many wrong PINs are checked, and when (pure, no I/O).

Follows NIST SP 800-63B-4's rate limiting for a memorised secret that is only checked online:

- the first `free_failures` (5) consecutive wrong PINs are checked as they come;
- from then on each further check waits a delay that starts at 30 s and doubles with every
  failure, up to `max_delay` (1 h);
- at the `free_failures`-th failure the parents are notified;
- after `disable_after` (50) failures since the last right PIN, the PIN is disabled until a
  parent sets a new one (and the parents are notified again).

The counters live with the PIN in the store and change in the same transaction as the decision
that checked the PIN, so they survive restarts and are shared by every replica; the pipeline
checks and counts under the household lock, so concurrent answers cannot both be "the fifth".
Only answers whose PIN was actually compared count: an answer refused before the PIN is looked at
(wrong voice, wrong digits heard, a replayed recording) teaches a guesser nothing about the PIN.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from purchase_guard.domain import PinState, Reason, ReasonCode, forbid

__all__ = ["PinBudget", "after_right_pin", "after_wrong_pin", "most_guesses", "pin_gate"]


@dataclass(frozen=True, slots=True)
class PinBudget:
    free_failures: int = 5
    first_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)
    disable_after: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.free_failures <= 10:
            raise ValueError("free_failures must be 1-10 (NIST SP 800-63B-4 allows no more than 100)")
        if self.first_delay < timedelta(seconds=30):
            raise ValueError("first_delay must be at least 30 seconds")
        if self.max_delay < self.first_delay:
            raise ValueError("max_delay must be at least first_delay")
        if not self.free_failures < self.disable_after <= 100:
            raise ValueError("disable_after must be above free_failures and at most 100")

    def delay_after(self, failures: int) -> timedelta:
        """How long after the `failures`-th consecutive failure the next PIN may be checked."""
        if failures < self.free_failures:
            return timedelta(0)
        steps = failures - self.free_failures
        # Capped before doubling far: 2**60 seconds would overflow timedelta.
        delay: timedelta = self.first_delay * (1 << min(steps, 30))
        return min(delay, self.max_delay)


def pin_gate(state: PinState, now: datetime) -> Reason | None:
    """None when a PIN answer may be checked now; else the forbid that refuses it unchecked."""
    if state.disabled_at is not None:
        return forbid(
            ReasonCode.PIN_THROTTLED,
            "The household PIN is disabled after too many wrong answers; a parent must set a new one.",
            "challenge.pin_budget",
            (("state", "disabled"),),
        )
    if state.next_try_at is not None and now < state.next_try_at:
        until = state.next_try_at.isoformat(timespec="seconds")
        return forbid(
            ReasonCode.PIN_THROTTLED,
            f"PIN answers are paused until {until} after repeated wrong answers.",
            "challenge.pin_budget",
            (("state", "paused"), ("until", until)),
        )
    return None


@dataclass(frozen=True, slots=True)
class WrongPin:
    state: PinState  # the PIN as it must be stored next
    notify: str | None  # "pin_throttled" or "pin_disabled" when the parents must hear of it


def after_wrong_pin(state: PinState, now: datetime, budget: PinBudget) -> WrongPin:
    failures = state.failures + 1
    if failures >= budget.disable_after:
        return WrongPin(replace(state, failures=failures, next_try_at=None, disabled_at=now), "pin_disabled")
    delay = budget.delay_after(failures)
    next_try = now + delay if delay else None
    notify = "pin_throttled" if failures == budget.free_failures else None
    return WrongPin(replace(state, failures=failures, next_try_at=next_try), notify)


def after_right_pin(state: PinState) -> PinState:
    return replace(state, failures=0, next_try_at=None)


def most_guesses(budget: PinBudget, period: timedelta, start_failures: int = 0) -> int:
    """The most PINs an attacker can have checked within `period`, starting at `start_failures`
    consecutive failures and answering the moment each pause ends (never more than the budget)."""
    elapsed = timedelta(0)
    failures = start_failures
    guesses = 0
    while failures < budget.disable_after:
        wait = budget.delay_after(failures)
        if elapsed + wait > period:
            break
        elapsed += wait
        failures += 1
        guesses += 1
    return guesses
