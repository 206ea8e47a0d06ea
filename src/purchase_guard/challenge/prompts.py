"""What a challenge says to the person who must answer it, and how it is shown to callers.

Shared by the pipeline (which issues challenges) and the household service (which lists and
resolves parent approvals), so it lives with the challenge rules below both.
"""

from __future__ import annotations

from purchase_guard.domain import Challenge, ChallengeInfo, ChallengeMethod
from purchase_guard.money import format_money


def challenge_info(challenge: Challenge) -> ChallengeInfo:
    total = format_money(challenge.order.total)
    if challenge.method is ChallengeMethod.SPOKEN_PIN:
        prompt = f"To confirm {total} from {challenge.order.merchant}, say your household PIN."
    elif challenge.method is ChallengeMethod.RANDOM_DIGITS:
        spaced = " ".join(challenge.digits_to_repeat)
        prompt = f"To confirm {total}, please repeat these digits: {spaced}."
    else:
        prompt = "I've asked a parent to approve this purchase on their phone."
    return ChallengeInfo(
        challenge_id=challenge.challenge_id,
        method=challenge.method,
        prompt=prompt,
        digits_to_repeat=challenge.digits_to_repeat,
        expires_at=challenge.expires_at,
        attempts_left=challenge.attempts_left,
    )
