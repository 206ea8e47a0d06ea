"""Challenge answer rules: state checks, attempts, lockout, digit normalisation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from purchase_guard.challenge.rules import (
    approval_state,
    normalise_digits,
    order_mismatch,
    state_check,
    voice_answer,
)
from purchase_guard.domain import (
    Challenge,
    ChallengeMethod,
    ChallengeStatus,
    LineItem,
    Money,
    Order,
    Outcome,
    ReasonCode,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ORDER = Order((LineItem("sku1", "Dollhouse", "toys", 1, Money(17000, "USD")),), Money(17000, "USD"), "shop")


def challenge(method: ChallengeMethod = ChallengeMethod.SPOKEN_PIN, **kw: object) -> Challenge:
    base = Challenge(
        challenge_id="chl_1",
        household_id="hh_1",
        decision_id="dec_1",
        method=method,
        order_digest="d",
        order=ORDER,
        member_id="mem_1",
        status=ChallengeStatus.PENDING,
        attempts_left=5,
        expires_at=NOW + timedelta(minutes=2),
        created_at=NOW,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (ChallengeStatus.PASSED, ReasonCode.CHALLENGE_CLOSED),
        (ChallengeStatus.CANCELLED, ReasonCode.CHALLENGE_CLOSED),
        (ChallengeStatus.LOCKED, ReasonCode.CHALLENGE_LOCKED),
        (ChallengeStatus.REJECTED, ReasonCode.APPROVAL_REJECTED),
    ],
)
def test_closed_challenges_deny(status: ChallengeStatus, code: ReasonCode) -> None:
    """A used, cancelled, locked or rejected challenge can never be answered again."""
    v = state_check(challenge(status=status), NOW)
    assert v is not None
    assert v.outcome is Outcome.DENY
    assert v.reasons[0].code is code


def test_expiry_is_exclusive_at_the_deadline() -> None:
    """At exactly expires_at the challenge is expired; one second before it is not."""
    c = challenge()
    assert state_check(c, c.expires_at - timedelta(seconds=1)) is None
    v = state_check(c, c.expires_at)
    assert v is not None
    assert v.reasons[0].code is ReasonCode.CHALLENGE_EXPIRED


def test_five_wrong_answers_lock() -> None:
    """Each wrong answer costs an attempt; the fifth locks the challenge and asks for notification."""
    c = challenge()
    for left in (4, 3, 2, 1):
        v = voice_answer(c, speaker_ok=True, digits_ok=False)
        assert v.outcome is Outcome.CHALLENGE
        assert v.challenge.attempts_left == left
        assert not v.locked_now
        c = v.challenge
    v = voice_answer(c, speaker_ok=True, digits_ok=False)
    assert v.outcome is Outcome.DENY
    assert v.locked_now
    assert v.challenge.status is ChallengeStatus.LOCKED
    assert ReasonCode.CHALLENGE_LOCKED in {r.code for r in v.reasons}


def test_right_pin_wrong_voice_does_not_reveal_the_pin_was_right() -> None:
    """A correct PIN in the wrong voice is refused and reported as PIN not accepted too."""
    v = voice_answer(challenge(), speaker_ok=False, digits_ok=True)
    codes = {r.code for r in v.reasons}
    assert v.outcome is Outcome.CHALLENGE
    assert codes == {ReasonCode.SPEAKER_MISMATCH, ReasonCode.PIN_INCORRECT}


def test_correct_answer_passes_and_closes() -> None:
    """Right digits in an adult's voice pass, and the challenge becomes single-use PASSED."""
    v = voice_answer(challenge(), speaker_ok=True, digits_ok=True)
    assert v.outcome is Outcome.ALLOW
    assert v.passed
    assert v.challenge.status is ChallengeStatus.PASSED


def test_order_mismatch_costs_an_attempt() -> None:
    """Confirming a different order is refused with ORDER_MISMATCH and spends an attempt."""
    v = order_mismatch(challenge())
    assert v.reasons[0].code is ReasonCode.ORDER_MISMATCH
    assert v.challenge.attempts_left == 4


def test_parent_approval_polling() -> None:
    """Confirm on a pending approval waits; on an approved one it allows once and closes."""
    pending = approval_state(challenge(ChallengeMethod.PARENT_APPROVAL))
    assert pending.outcome is Outcome.CHALLENGE
    approved = approval_state(challenge(ChallengeMethod.PARENT_APPROVAL, status=ChallengeStatus.APPROVED))
    assert approved.outcome is Outcome.ALLOW
    assert approved.challenge.status is ChallengeStatus.PASSED


@pytest.mark.parametrize(
    ("spoken", "digits"),
    [("4815", "4815"), ("4 8-1 5", "4815"), ("four eight one five", "4815"), ("Oh one two", "012"), ("", "")],
)
def test_normalise_digits(spoken: str, digits: str) -> None:
    """Transcribed answers in digits or words normalise to the same digit string."""
    assert normalise_digits(spoken) == digits
