"""Pure rules for answering a challenge: state checks, attempts, lockout. No I/O, no clock reads.

The service layer gathers the facts (does the order digest match, does the voice belong
to an enrolled adult, are the digits right) and these functions turn them into the
outcome and the challenge's next state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from purchase_guard.domain import Challenge, ChallengeMethod, ChallengeStatus, Outcome, Reason, ReasonCode


@dataclass(frozen=True, slots=True)
class AnswerVerdict:
    outcome: Outcome
    reasons: tuple[Reason, ...]
    challenge: Challenge  # the challenge as it must be stored next
    locked_now: bool = False  # this answer used the last attempt: notify parents, throttle PIN
    passed: bool = False


def _deny(challenge: Challenge, code: ReasonCode, message: str) -> AnswerVerdict:
    return AnswerVerdict(Outcome.DENY, (Reason(code, message),), challenge)


def state_check(challenge: Challenge, now: datetime) -> AnswerVerdict | None:
    """A verdict when the challenge can no longer be answered at all, else None."""
    status = challenge.status
    if status is ChallengeStatus.CANCELLED and challenge.cancel_reason is not None:
        return AnswerVerdict(
            Outcome.DENY,
            (
                Reason(
                    challenge.cancel_reason,
                    "This challenge was cancelled: the request came from broadcast audio heard by many "
                    "homes.",
                    challenge.cancel_detail,
                ),
            ),
            challenge,
        )
    if status in (ChallengeStatus.PASSED, ChallengeStatus.CANCELLED):
        return _deny(challenge, ReasonCode.CHALLENGE_CLOSED, "This challenge was already used or cancelled.")
    if status is ChallengeStatus.LOCKED:
        return _deny(
            challenge, ReasonCode.CHALLENGE_LOCKED, "This challenge is locked after too many wrong answers."
        )
    if status is ChallengeStatus.REJECTED:
        return _deny(challenge, ReasonCode.APPROVAL_REJECTED, "A parent rejected this purchase.")
    if now >= challenge.expires_at:
        return _deny(
            challenge, ReasonCode.CHALLENGE_EXPIRED, "This challenge expired; ask again to start over."
        )
    return None


def wrong_answer(challenge: Challenge, reasons: tuple[Reason, ...]) -> AnswerVerdict:
    """Spend one attempt; the last one locks the challenge."""
    left = max(0, challenge.attempts_left - 1)
    if left == 0:
        locked = replace(challenge, attempts_left=0, status=ChallengeStatus.LOCKED)
        lock_reason = Reason(
            ReasonCode.CHALLENGE_LOCKED,
            "Too many wrong answers: the challenge is locked and the parents have been notified.",
        )
        return AnswerVerdict(Outcome.DENY, (*reasons, lock_reason), locked, locked_now=True)
    return AnswerVerdict(Outcome.CHALLENGE, reasons, replace(challenge, attempts_left=left))


def order_mismatch(challenge: Challenge) -> AnswerVerdict:
    # Counted as a wrong attempt: swapping the order under an issued challenge is an attack pattern.
    return wrong_answer(
        challenge,
        (
            Reason(
                ReasonCode.ORDER_MISMATCH,
                "The order differs from the one this challenge was issued for; nothing was bought.",
            ),
        ),
    )


def approval_state(challenge: Challenge) -> AnswerVerdict:
    """Confirm on a PARENT_APPROVAL challenge reports the parent's decision (polling)."""
    if challenge.status is ChallengeStatus.APPROVED:
        return AnswerVerdict(
            Outcome.ALLOW,
            (Reason(ReasonCode.APPROVAL_GRANTED, "A parent approved this purchase."),),
            replace(challenge, status=ChallengeStatus.PASSED),
            passed=True,
        )
    return AnswerVerdict(
        Outcome.CHALLENGE,
        (Reason(ReasonCode.CHALLENGE_REQUIRED, "Waiting for a parent to approve this purchase."),),
        challenge,
    )


def voice_answer(challenge: Challenge, *, speaker_ok: bool, digits_ok: bool) -> AnswerVerdict:
    """Judge a spoken answer (PIN or repeated digits) that must come from an enrolled adult.

    When the voice is wrong the digits are reported as not accepted too, whatever they
    were: saying only "wrong voice" would tell an impostor that the PIN was right.
    """
    if speaker_ok and digits_ok:
        return AnswerVerdict(
            Outcome.ALLOW,
            (
                Reason(
                    ReasonCode.CHALLENGE_PASSED, "The challenge was answered correctly by an adult's voice."
                ),
            ),
            replace(challenge, status=ChallengeStatus.PASSED),
            passed=True,
        )
    what = "PIN" if challenge.method is ChallengeMethod.SPOKEN_PIN else "digits"
    reasons: list[Reason] = []
    if not speaker_ok:
        reasons.append(
            Reason(
                ReasonCode.SPEAKER_MISMATCH,
                "The answer was not spoken by an enrolled adult of the household.",
            )
        )
    reasons.append(Reason(ReasonCode.PIN_INCORRECT, f"The spoken {what} was not accepted."))
    return wrong_answer(challenge, tuple(reasons))


_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_TOKEN = re.compile(r"[a-z]+|\d")


def normalise_digits(spoken: str) -> str:
    """Digits from a transcript: "4 8-1 5", "4815" and "four eight one five" all give 4815."""
    out = []
    for token in _TOKEN.findall(spoken.lower()):
        if token.isdigit():
            out.append(token)
        elif token in _WORDS:
            out.append(_WORDS[token])
    return "".join(out)
