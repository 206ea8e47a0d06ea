"""The content-check contract: does this answer audio say these digits (in this voice)?

Results carry scores and a human-readable problem, never digits: a PIN must not reach a
reason, a log line or an audit record, so `problem` texts are fixed sentences without any
digit, and the recognised string lives only in DigitHypothesis, for the caller to hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.digits.templates import DigitTemplates

MIN_DIGITS = 4
MAX_DIGITS = 8

# Fixed problem sentences; tests check that none of them holds a digit.
NO_SPEECH = "the answer audio holds no speech"
TOO_SHORT = "the answer audio is too short to hold the expected digits"
NOT_THE_DIGITS = "the answer audio does not say the expected digits"
NO_DIGITS_HEARD = "no digits were heard in the answer audio"
WRONG_LENGTH = "the answer audio does not hold the expected number of digits"


def validate_expected(expected: str) -> str:
    """`expected` if it is 4-8 ASCII digits; ValueError (a caller bug) otherwise, without echoing it."""
    if not isinstance(expected, str) or not (MIN_DIGITS <= len(expected) <= MAX_DIGITS):
        raise ValueError(f"expected digits must be {MIN_DIGITS}-{MAX_DIGITS} ASCII digits")
    if not all("0" <= c <= "9" for c in expected):
        raise ValueError("expected digits must be ASCII digits only")
    return expected


@dataclass(frozen=True)
class DigitCheck:
    """Verdict of the content check on one answer.

    `score` is minus the extra cost (per expected digit) of explaining the audio as exactly the
    expected digits rather than as the best competing sequence of digits, pauses and other
    speech: 0 when nothing explains the audio better, more negative the more something does.
    `span` is where (seconds) the expected digits were found, for the speaker check.
    """

    accepted: bool
    score: float
    threshold: float
    span: tuple[float, float]
    problem: str  # "" when accepted; never contains digits
    checker: str  # versioned name of the checker that decided
    used_member_templates: bool  # the member's templates covered every expected digit


@dataclass(frozen=True)
class DigitHypothesis:
    """What the audio most likely says. `digits` is secret material (may be a PIN): never log it."""

    digits: str
    span: tuple[float, float]
    confidence: float  # mean per-frame margin of the recognised digits over the filler, >= 0 is good
    problem: str  # "" when digits were heard; never contains digits

    def __repr__(self) -> str:  # keeps the digits out of tracebacks and debug logs
        return f"DigitHypothesis(n_digits={len(self.digits)}, span={self.span}, problem={self.problem!r})"


class DigitChecker(Protocol):
    name: str

    def check(self, pcm: Pcm, expected: str, templates: DigitTemplates | None) -> DigitCheck:
        """Accept only if the audio says `expected` (4-8 digits); ValueError for a malformed `expected`."""
        ...

    def recognise(self, pcm: Pcm, n_digits: int | None, templates: DigitTemplates | None) -> DigitHypothesis:
        """Best digit string the audio says (exactly `n_digits` of them when given)."""
        ...
