"""The PIN's guess budget (NIST SP 800-63B-4): free failures, growing pauses, notification, disable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from purchase_guard.domain import PinState, ReasonCode
from purchase_guard.limits import PinBudget, after_right_pin, after_wrong_pin, most_guesses, pin_gate

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
BUDGET = PinBudget()


def pin(**changes: object) -> PinState:
    base = PinState("hh_1", "argon2id$hash", T0)
    return PinState(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **changes})  # type: ignore[arg-type]


def test_five_wrong_pins_pass_unpaused_then_pauses_start_at_30_s_and_double() -> None:
    """The first five consecutive failures set no pause; the fifth notifies the parents and pauses the
    next check 30 s; each further failure doubles the pause."""
    state, now = pin(), T0
    for n in range(1, 5):
        wrong = after_wrong_pin(state, now, BUDGET)
        state = wrong.state
        assert (state.failures, state.next_try_at, wrong.notify) == (n, None, None)
    fifth = after_wrong_pin(state, now, BUDGET)
    assert fifth.notify == "pin_throttled"
    assert fifth.state.next_try_at == now + timedelta(seconds=30)
    sixth = after_wrong_pin(fifth.state, now, BUDGET)
    assert sixth.state.next_try_at == now + timedelta(seconds=60)
    assert sixth.notify is None


def test_pauses_never_exceed_an_hour() -> None:
    """However many failures, the pause is at most max_delay (1 h)."""
    assert BUDGET.delay_after(40) == timedelta(hours=1)
    assert BUDGET.delay_after(11) == timedelta(seconds=30 * 64)


def test_the_fiftieth_failure_disables_the_pin_and_notifies() -> None:
    """At disable_after failures the PIN is disabled (no pause can be waited out) and parents hear of it."""
    wrong = after_wrong_pin(pin(failures=49), T0, BUDGET)
    assert wrong.notify == "pin_disabled"
    assert wrong.state.disabled_at == T0
    reason = pin_gate(wrong.state, T0 + timedelta(days=365))
    assert reason is not None
    assert reason.code is ReasonCode.PIN_THROTTLED
    assert "parent must set a new one" in reason.message


def test_the_gate_refuses_during_a_pause_and_opens_after_it() -> None:
    """A paused PIN is refused until next_try_at, then checked again."""
    paused = pin(failures=6, next_try_at=T0 + timedelta(minutes=1))
    assert pin_gate(paused, T0) is not None
    assert pin_gate(paused, T0 + timedelta(minutes=1)) is None


def test_a_right_pin_resets_the_count() -> None:
    """The right PIN ends the run of failures: count and pause cleared."""
    after = after_right_pin(pin(failures=7, next_try_at=T0))
    assert (after.failures, after.next_try_at) == (0, None)


def test_most_guesses_an_attacker_can_get() -> None:
    """Guessing as fast as the pauses allow: 5 free, then 30 s, 60 s, ... up to 1 h pauses; at most 50
    in total, ever, before a parent must set a new PIN."""
    assert most_guesses(BUDGET, timedelta(0)) == 5
    # 5 at once; 8 more after pauses of 30 s .. 64 min (30 * (2**8 - 1) s = 2 h 7.5 min in all);
    # then one an hour for the remaining 21 h 52.5 min: 21 more. 34 in the first day.
    assert most_guesses(BUDGET, timedelta(days=1)) == 34
    # A day later (from 34 failures) one an hour: 24 a day at most, until 50 disable the PIN.
    assert most_guesses(BUDGET, timedelta(days=1), start_failures=34) == 16
    assert most_guesses(BUDGET, timedelta(days=365)) == 50


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"free_failures": 0}, "free_failures"),
        ({"first_delay": timedelta(seconds=10)}, "first_delay"),
        ({"disable_after": 101}, "disable_after"),
        ({"disable_after": 5}, "disable_after"),
    ],
)
def test_budgets_outside_nist_bounds_are_refused(changes: dict[str, object], problem: str) -> None:
    """A budget looser than NIST allows (or one that disables before it pauses) cannot be built."""
    with pytest.raises(ValueError, match=problem):
        PinBudget(**changes)  # type: ignore[arg-type]
