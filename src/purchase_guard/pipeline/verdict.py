"""The verdict rule: a pure function from check results and the policy verdict to a decision.

Modelled on Cedar's evaluation: every reason that fired is kept, a forbid (DENY) always
wins over a challenge, a challenge wins over an allow, and ALLOW needs a positive
reason with nothing against it. Beyond the household's policy, some facts can never
lead to ALLOW whatever the policy says: a failed check, broadcast audio, an unknown or
unusable voice, a child or guest speaker, or a child-like voice.
"""

from __future__ import annotations

from dataclasses import dataclass

from purchase_guard.domain import (
    BroadcastCheck,
    ChallengeMethod,
    Outcome,
    Reason,
    ReasonCode,
    Role,
    SpeakerResult,
)
from purchase_guard.policy.engine import PolicyVerdict

DEFAULT_CHILD_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class VoiceCheck:
    result: SpeakerResult | None
    error: str | None = None  # the check raised; the text is for the reason, never audio


@dataclass(frozen=True, slots=True)
class ChallengeOptions:
    """What the household can answer with; decides whether a challenge is possible at all."""

    has_pin: bool
    pin_throttled: bool
    has_enrolled_adult: bool
    has_parent: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[Reason, ...]
    challenge_method: ChallengeMethod | None
    low_value_exempt: bool
    member_id: str | None


def policy_role(voice: VoiceCheck) -> Role:
    """The role whose policy rule applies: the verified member's, else GUEST.

    An unverified voice is treated as the least trusted role rather than as any member,
    so a household's GUEST rule is what an unknown voice gets.
    """
    result = voice.result
    if voice.error is None and result is not None and result.verified and result.role is not None:
        return result.role
    return Role.GUEST


def is_child_like(result: SpeakerResult, child_threshold: float) -> bool:
    return result.child_likelihood >= 0.0 and result.child_likelihood >= child_threshold


def speaker_reasons(voice: VoiceCheck, child_threshold: float) -> tuple[Reason, ...]:
    if voice.error is not None:
        return (Reason(ReasonCode.GUARD_ERROR, f"Speaker verification failed: {voice.error}."),)
    result = voice.result
    if result is None:
        return (Reason(ReasonCode.GUARD_ERROR, "Speaker verification did not run."),)
    score = (("score", f"{result.score:.3f}"), ("threshold", f"{result.threshold:.3f}"))
    out: list[Reason] = []
    if not result.usable:
        out.append(
            Reason(
                ReasonCode.AUDIO_UNUSABLE,
                f"The audio could not be used to recognise the speaker: {result.problem}.",
            )
        )
    if result.verified and result.member_id is not None:
        out.append(
            Reason(
                ReasonCode.SPEAKER_VERIFIED,
                "The voice matched an enrolled household member.",
                (("member_id", result.member_id), *score),
            )
        )
        if result.role is Role.CHILD:
            out.append(Reason(ReasonCode.SPEAKER_CHILD, "The speaker is a child of the household."))
    else:
        problem = f" ({result.problem})" if result.problem and result.usable else ""
        out.append(
            Reason(
                ReasonCode.SPEAKER_UNKNOWN,
                f"The voice did not match any enrolled household member{problem}.",
                score,
            )
        )
    if is_child_like(result, child_threshold):
        out.append(
            Reason(
                ReasonCode.CHILD_VOICE,
                "The voice sounds like a child's, so the purchase needs a grown-up to confirm it.",
                (("child_likelihood", f"{result.child_likelihood:.3f}"),),
            )
        )
    return tuple(out)


def choose_method(
    wanted: ChallengeMethod, options: ChallengeOptions
) -> tuple[ChallengeMethod | None, Reason | None]:
    """Fall back to the next method the household can actually answer, never to nothing silently."""
    order = {
        ChallengeMethod.SPOKEN_PIN: (
            ChallengeMethod.SPOKEN_PIN,
            ChallengeMethod.RANDOM_DIGITS,
            ChallengeMethod.PARENT_APPROVAL,
        ),
        ChallengeMethod.RANDOM_DIGITS: (ChallengeMethod.RANDOM_DIGITS, ChallengeMethod.PARENT_APPROVAL),
        ChallengeMethod.PARENT_APPROVAL: (ChallengeMethod.PARENT_APPROVAL,),
    }[wanted]
    note: Reason | None = None
    for method in order:
        if method is ChallengeMethod.SPOKEN_PIN:
            if options.pin_throttled:
                note = Reason(
                    ReasonCode.PIN_THROTTLED,
                    "The household PIN is temporarily blocked after repeated wrong answers.",
                )
                continue
            if options.has_pin and options.has_enrolled_adult:
                return method, note
        elif method is ChallengeMethod.RANDOM_DIGITS:
            # Random digits still need an enrolled adult's voice to say them.
            if options.has_enrolled_adult:
                return method, note
        elif options.has_parent:
            return method, note
    return None, note or Reason(
        ReasonCode.CHALLENGE_UNAVAILABLE,
        "No way to confirm this purchase is set up: add a parent, a PIN or an enrolled adult voice.",
    )


def decide(
    voice: VoiceCheck,
    broadcast: BroadcastCheck,
    policy: PolicyVerdict,
    options: ChallengeOptions,
    child_threshold: float = DEFAULT_CHILD_THRESHOLD,
) -> Verdict:
    broadcast_reasons = broadcast.reasons
    if broadcast.error is not None:
        broadcast_reasons = (
            *broadcast_reasons,
            Reason(ReasonCode.GUARD_ERROR, f"Broadcast check failed: {broadcast.error}."),
        )
    voice_reasons = speaker_reasons(voice, child_threshold)
    reasons = (*broadcast_reasons, *policy.reasons, *voice_reasons)
    result = voice.result
    verified = voice.error is None and result is not None and result.verified
    member_id = result.member_id if verified and result is not None else None

    def deny(extra: tuple[Reason, ...] = ()) -> Verdict:
        # Like Cedar, a DENY reports what determined it: permits and "a challenge would do" are
        # dropped, since no challenge is offered.
        kept = tuple(r for r in (*extra, *reasons) if r.code not in _PERMIT_CODES)
        return Verdict(Outcome.DENY, _forbids_first(kept), None, False, member_id)

    if broadcast_reasons or any(r.code is ReasonCode.GUARD_ERROR for r in voice_reasons):
        return deny()
    if policy.effect is Outcome.DENY:
        return deny()

    never_allow = (
        not verified
        or (result is not None and result.role in (Role.CHILD, Role.GUEST))
        or (result is not None and is_child_like(result, child_threshold))
    )
    if policy.effect is Outcome.ALLOW and not never_allow:
        return Verdict(Outcome.ALLOW, reasons, None, policy.low_value_exempt, member_id)

    # A challenge: either policy asked for one or the speaker facts forbid a plain ALLOW.
    wanted = policy.challenge_method or ChallengeMethod.SPOKEN_PIN
    verified_adult = verified and result is not None and result.role is Role.ADULT
    if result is not None and (
        result.role is Role.CHILD or (is_child_like(result, child_threshold) and not verified_adult)
    ):
        # A child must not be able to confirm their own purchase by knowing the PIN. A verified
        # adult whose voice merely sounds young (the detector flags ~15% of adults) still gets a
        # challenge, but one they can answer: the PIN in their own, voiceprint-matched voice.
        wanted = ChallengeMethod.PARENT_APPROVAL
    extra: tuple[Reason, ...] = ()
    if policy.effect is Outcome.ALLOW:
        extra = (Reason(ReasonCode.CHALLENGE_REQUIRED, "A grown-up must confirm this purchase."),)
    method, note = choose_method(wanted, options)
    if note is not None:
        extra = (*extra, note)
    if method is None:
        return deny(extra)
    return Verdict(Outcome.CHALLENGE, (*reasons, *extra), method, False, member_id)


_PERMIT_CODES = frozenset(
    {ReasonCode.CHALLENGE_REQUIRED, ReasonCode.POLICY_ALLOWED, ReasonCode.LOW_VALUE_EXEMPT}
)
_FORBID_CODES = frozenset(
    {
        ReasonCode.KNOWN_BROADCAST,
        ReasonCode.BROADCAST_MATCH,
        ReasonCode.GUARD_ERROR,
        ReasonCode.ROLE_NOT_ALLOWED,
        ReasonCode.CATEGORY_BLOCKED,
    }
)


def _forbids_first(reasons: tuple[Reason, ...]) -> tuple[Reason, ...]:
    return tuple(sorted(reasons, key=lambda r: r.code not in _FORBID_CODES))
