"""Pure rules for answering a challenge: state checks, attempts, lockout. No I/O, no clock reads.

The service layer gathers the facts (`AnswerFacts`: does the order digest match, may the PIN be
checked now, does the voice belong to an enrolled adult, does the audio say what was expected)
and `judge_answer` turns them and the challenge as it stood into the outcome and the
challenge's next state. The facts are recorded with the decision, so a stored answer can be
judged again by today's rules (pipeline/rerun.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from purchase_guard.domain import (
    Challenge,
    ChallengeMethod,
    ChallengeStatus,
    Effect,
    Outcome,
    Reason,
    ReasonCode,
    check_error,
    forbid,
    needs_challenge,
    permit,
)


@dataclass(frozen=True, slots=True)
class AnswerVerdict:
    outcome: Outcome
    reasons: tuple[Reason, ...]
    challenge: Challenge  # the challenge as it must be stored next
    locked_now: bool = False  # this answer used the last attempt: notify parents, throttle PIN
    passed: bool = False


@dataclass(frozen=True, slots=True)
class AnswerFacts:
    """What the service found out about one answer. Facts not gathered (because an earlier stage
    already decides) are None; `judge_answer` never reads a fact its earlier stages make moot."""

    order_matches: bool
    # SPOKEN_PIN only: is a PIN set, and if the PIN may not be checked now, why (throttle, budget,
    # or an error reading the budget).
    pin_set: bool = True
    pin_blocked: Reason | None = None
    # The spoken answer, each fact on the audio itself:
    # - replayed: the audio is a copy of audio the household sent before (broadcast/repeat.py);
    # - speaker_ok: an enrolled adult's voice, on the stretch where the digits were heard;
    # - child_like: that stretch sounds very like a child (the detector's high operating point);
    # - heard_ok: the audio says the expected digits (random digits; for a PIN, the candidate);
    # - transcript_ok: the backend's transcript, when sent, agrees with the audio;
    # - content_ok: the secret is right (the PIN's hash matched; for random digits, heard_ok);
    # - check_failed: a content or replay check could not run (the answer fails closed).
    speaker_ok: bool | None = None
    content_ok: bool | None = None
    replayed: bool | None = None
    child_like: bool | None = None
    heard_ok: bool | None = None
    transcript_ok: bool | None = None
    check_failed: bool = False


def pre_answer(challenge: Challenge, facts: AnswerFacts, now: datetime) -> AnswerVerdict | None:
    """The verdict when the answer is decided before its audio is judged, else None."""
    closed = state_check(challenge, now)
    if closed is not None:
        return closed
    if not facts.order_matches:
        return order_mismatch(challenge)
    if challenge.method is ChallengeMethod.PARENT_APPROVAL:
        return approval_state(challenge)
    if challenge.method is ChallengeMethod.SPOKEN_PIN:
        if not facts.pin_set:
            return AnswerVerdict(
                Outcome.DENY,
                (forbid(ReasonCode.CHALLENGE_UNAVAILABLE, "The household has no PIN set.", "challenge.pin"),),
                challenge,
            )
        if facts.pin_blocked is not None:
            return AnswerVerdict(Outcome.DENY, (facts.pin_blocked,), challenge)
    return None


def judge_answer(challenge: Challenge, facts: AnswerFacts, now: datetime) -> AnswerVerdict:
    """The whole rule for one answer to `challenge` (as it stood) at `now`."""
    early = pre_answer(challenge, facts, now)
    if early is not None:
        return early
    if facts.check_failed:
        # Nothing about the answer is known: refused, and no attempt is spent on the guard's fault.
        return AnswerVerdict(
            Outcome.DENY,
            (check_error("The guard could not check the answer audio safely.", "challenge.answer"),),
            challenge,
        )
    if facts.replayed:
        return wrong_answer(
            challenge,
            (
                needs_challenge(
                    ReasonCode.REPLAYED_AUDIO,
                    "The answer is a recording of audio this household sent before, played again.",
                    "audio.replay",
                ),
            ),
        )
    if facts.speaker_ok is None or facts.content_ok is None:
        raise ValueError("a spoken answer needs its speaker and content facts")
    if not facts.speaker_ok or facts.child_like:
        # Said first and without the content's verdict: an impostor learns nothing about the PIN.
        return voice_answer(challenge, speaker_ok=False, digits_ok=False, child_like=bool(facts.child_like))
    if facts.transcript_ok is False:
        return wrong_answer(
            challenge,
            (
                needs_challenge(
                    ReasonCode.TRANSCRIPT_MISMATCH,
                    "The transcript of the answer does not agree with what the answer audio says.",
                    "challenge.answer_transcript",
                ),
            ),
        )
    if facts.heard_ok is False:
        what = "PIN" if challenge.method is ChallengeMethod.SPOKEN_PIN else "digits"
        return wrong_answer(
            challenge,
            (
                needs_challenge(
                    ReasonCode.DIGITS_NOT_HEARD,
                    f"The answer audio does not say the expected {what}.",
                    "challenge.answer_content",
                ),
            ),
        )
    return voice_answer(challenge, speaker_ok=True, digits_ok=facts.content_ok)


def _deny(challenge: Challenge, code: ReasonCode, message: str) -> AnswerVerdict:
    return AnswerVerdict(Outcome.DENY, (forbid(code, message, "challenge.state"),), challenge)


def state_check(challenge: Challenge, now: datetime) -> AnswerVerdict | None:
    """A verdict when the challenge can no longer be answered at all, else None."""
    status = challenge.status
    if status is ChallengeStatus.CANCELLED and challenge.cancel_reason is not None:
        return AnswerVerdict(
            Outcome.DENY,
            (
                forbid(
                    challenge.cancel_reason,
                    "This challenge was cancelled: the request came from broadcast audio heard by many "
                    "homes.",
                    "broadcast.late_catch",
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
    """Spend one attempt; the last one locks the challenge.

    What was wrong with the answer asks for another one (a step-up, effect CHALLENGE) while
    attempts are left; on the last attempt it is part of what refuses the purchase (FORBID).
    """
    left = max(0, challenge.attempts_left - 1)
    if left == 0:
        locked = replace(challenge, attempts_left=0, status=ChallengeStatus.LOCKED)
        lock_reason = forbid(
            ReasonCode.CHALLENGE_LOCKED,
            "Too many wrong answers: the challenge is locked and the parents have been notified.",
            "challenge.attempts",
        )
        refused = tuple(replace(r, effect=Effect.FORBID) for r in reasons)
        return AnswerVerdict(Outcome.DENY, (*refused, lock_reason), locked, locked_now=True)
    retry = tuple(replace(r, effect=Effect.CHALLENGE) for r in reasons)
    return AnswerVerdict(Outcome.CHALLENGE, retry, replace(challenge, attempts_left=left))


def order_mismatch(challenge: Challenge) -> AnswerVerdict:
    # Counted as a wrong attempt: swapping the order under an issued challenge is an attack pattern.
    return wrong_answer(
        challenge,
        (
            needs_challenge(
                ReasonCode.ORDER_MISMATCH,
                "The order differs from the one this challenge was issued for; nothing was bought.",
                "challenge.order_digest",
            ),
        ),
    )


def approval_state(challenge: Challenge) -> AnswerVerdict:
    """Confirm on a PARENT_APPROVAL challenge reports the parent's decision (polling)."""
    if challenge.status is ChallengeStatus.APPROVED:
        return AnswerVerdict(
            Outcome.ALLOW,
            (permit(ReasonCode.APPROVAL_GRANTED, "A parent approved this purchase.", "approval.parent"),),
            replace(challenge, status=ChallengeStatus.PASSED),
            passed=True,
        )
    return AnswerVerdict(
        Outcome.CHALLENGE,
        (
            needs_challenge(
                ReasonCode.CHALLENGE_REQUIRED,
                "Waiting for a parent to approve this purchase.",
                "approval.parent",
            ),
        ),
        challenge,
    )


def voice_answer(
    challenge: Challenge, *, speaker_ok: bool, digits_ok: bool, child_like: bool = False
) -> AnswerVerdict:
    """Judge a spoken answer (PIN or repeated digits) that must come from an enrolled adult.

    When the voice is wrong the digits are reported as not accepted too, whatever they
    were: saying only "wrong voice" would tell an impostor that the PIN was right.
    """
    if speaker_ok and digits_ok:
        return AnswerVerdict(
            Outcome.ALLOW,
            (
                permit(
                    ReasonCode.CHALLENGE_PASSED,
                    "The challenge was answered correctly by an adult's voice.",
                    "challenge.answer",
                ),
            ),
            replace(challenge, status=ChallengeStatus.PASSED),
            passed=True,
        )
    what = "PIN" if challenge.method is ChallengeMethod.SPOKEN_PIN else "digits"
    reasons: list[Reason] = []
    if child_like:
        reasons.append(
            needs_challenge(
                ReasonCode.CHILD_VOICE,
                "The answer sounds like a child's voice; a grown-up must answer.",
                "challenge.answer_child_likeness",
            )
        )
    elif not speaker_ok:
        reasons.append(
            needs_challenge(
                ReasonCode.SPEAKER_MISMATCH,
                "The answer was not spoken by an enrolled adult of the household.",
                "challenge.answer_voice",
            )
        )
    reasons.append(
        needs_challenge(ReasonCode.PIN_INCORRECT, f"The spoken {what} was not accepted.", "challenge.answer")
    )
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
