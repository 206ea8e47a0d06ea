"""The verdict rule: a pure function from check results and the policy verdict to a decision.

Modelled on Cedar's authorizer. Every check contributes findings that carry their effect
(`domain.Effect`) and the rule that produced them; the rule below reads only effects:

    any ERROR      -> DENY, reporting the errors (and any forbids)
    any FORBID     -> DENY, reporting the forbids (a forbid always wins)
    any CHALLENGE  -> CHALLENGE by the method policy and the speaker facts allow, or DENY
                      with CHALLENGE_UNAVAILABLE when the household has no way to answer
    a PERMIT       -> ALLOW
    nothing        -> DENY (default deny; the policy engine always says something, so this
                      only guards against a bug)

A DENY never lists a permit or a step-up among its reasons: it names what determined it. Notes
(who spoke, what fell back) ride along with every outcome. Beyond the household's policy some
facts never lead to ALLOW whatever the policy says: they are CHALLENGE findings of the speaker
check (an unknown or unusable voice, a child or guest speaker, a child-like voice), and a
failed check or broadcast audio is an ERROR or FORBID.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from purchase_guard.broadcast.repeat import Replay
from purchase_guard.domain import (
    BroadcastCheck,
    ChallengeMethod,
    Effect,
    Outcome,
    Reason,
    ReasonCode,
    Role,
    SpeakerResult,
    check_error,
    forbid,
    needs_challenge,
    note,
)
from purchase_guard.policy.engine import PolicyVerdict

DEFAULT_CHILD_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class VoiceCheck:
    result: SpeakerResult | None
    error: str | None = None  # the check raised; the text is for the reason, never audio
    # The verified member's enrollment takes sounded like a child's, and no parent has confirmed
    # the member's role since (an ADULT enrolled by mistake, or a child enrolled as one).
    enrolled_child_like: bool = False


@dataclass(frozen=True, slots=True)
class ReplayCheck:
    """Whether the audio is a copy of audio the household sent before (broadcast/repeat.py)."""

    replay_of: Replay | None = None
    error: str | None = None


NO_REPLAY = ReplayCheck()
# No operating point: a likelihood in [0, 1] never reaches it.
NEVER = 2.0


@dataclass(frozen=True, slots=True)
class ChallengeOptions:
    """What the household can answer with; decides whether a challenge is possible at all.

    `has_enrolled_adult`: an adult whose voice AND digit templates are enrolled, so a spoken
    answer (PIN or random digits) can be checked for what it says and who says it.
    """

    has_pin: bool
    pin_throttled: bool
    has_enrolled_adult: bool
    has_parent: bool


# What a decision assumes when the options could not be read: nothing can be answered.
NO_OPTIONS = ChallengeOptions(has_pin=False, pin_throttled=False, has_enrolled_adult=False, has_parent=False)


def policy_failed(what: str) -> PolicyVerdict:
    """The policy verdict when the policy facts could not be read: an error, so the decision is a
    DENY that still carries every other check's findings."""
    return PolicyVerdict(
        Outcome.DENY, (check_error(f"The guard could not decide safely: {what}.", "policy"),), None, False
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[Reason, ...]  # determining findings first, then notes
    challenge_method: ChallengeMethod | None
    low_value_exempt: bool
    member_id: str | None


@dataclass(frozen=True, slots=True)
class UnknownVoiceGate:
    """How a clear voice that matches no enrolled member is handled (Policy.unknown_voice).

    `to_parent`: the household sends such a request to a parent (the default, with a parent to
    ask) rather than to its GUEST rule. `recent` is how many such requests the household sent to
    its parents in the last hour and `limit` how many it may, so a television saying "buy a
    dollhouse" cannot fill every parent's phone.
    """

    to_parent: bool = False
    recent: int = 0
    limit: int = 0


GUEST_RULE_ONLY = UnknownVoiceGate()


def is_unknown_voice(voice: VoiceCheck) -> bool:
    """A clear voice that matched no member (not an error, not audio too poor to tell)."""
    result = voice.result
    return voice.error is None and result is not None and result.usable and not result.verified


def policy_role(voice: VoiceCheck, unknown: UnknownVoiceGate = GUEST_RULE_ONLY) -> Role:
    """The role whose policy rule applies: the verified member's; for an unrecognised voice the
    household sends to a parent, ADULT (the parent who approves answers for it); else GUEST.

    An unverified voice is never treated as any member, and never allowed: it gets the GUEST rule,
    or, sent to a parent, the ADULT rule's caps and categories with the parent's approval on top.
    """
    result = voice.result
    if voice.error is None and result is not None and result.verified and result.role is not None:
        return result.role
    if unknown.to_parent and is_unknown_voice(voice):
        return Role.ADULT
    return Role.GUEST


def is_child_like(result: SpeakerResult, child_threshold: float) -> bool:
    return result.child_likelihood >= 0.0 and result.child_likelihood >= child_threshold


def speaker_reasons(voice: VoiceCheck, child_threshold: float) -> tuple[Reason, ...]:
    """What the speaker check observed, as notes (who spoke, whether the audio was usable, whether
    the voice sounds like a child's); only a failed check is more than a note: an error.

    Whether those facts bar an ALLOW is the verdict rule's business (`speaker_step_up`), so a DENY
    decided by something else still says who spoke and why the voice was not recognised.
    """
    if voice.error is not None:
        return (check_error(f"Speaker verification failed: {voice.error}.", "voice.speaker"),)
    result = voice.result
    if result is None:
        return (check_error("Speaker verification did not run.", "voice.speaker"),)
    score = (("score", f"{result.score:.3f}"), ("threshold", f"{result.threshold:.3f}"))
    out: list[Reason] = []
    if not result.usable:
        out.append(
            note(
                ReasonCode.AUDIO_UNUSABLE,
                f"The audio could not be used to recognise the speaker: {result.problem}.",
                "voice.audio_quality",
            )
        )
    if result.verified and result.member_id is not None:
        out.append(
            note(
                ReasonCode.SPEAKER_VERIFIED,
                "The voice matched an enrolled household member.",
                "voice.speaker",
                (("member_id", result.member_id), *score),
            )
        )
        if result.role is Role.CHILD:
            out.append(
                note(ReasonCode.SPEAKER_CHILD, "The speaker is a child of the household.", "voice.role")
            )
    else:
        problem = f" ({result.problem})" if result.problem and result.usable else ""
        out.append(
            note(
                ReasonCode.SPEAKER_UNKNOWN,
                f"The voice did not match any enrolled household member{problem}.",
                "voice.speaker",
                score,
            )
        )
    if voice.enrolled_child_like:
        out.append(
            note(
                ReasonCode.CHILD_VOICE,
                "This member's enrolled voice sounds like a child's; a parent has not confirmed the role.",
                "voice.enrolled_child_like",
                (("source", "enrollment"),),
            )
        )
    if is_child_like(result, child_threshold):
        out.append(
            note(
                ReasonCode.CHILD_VOICE,
                "The voice sounds like a child's, so the purchase needs a grown-up to confirm it.",
                "voice.child_likeness",
                (("child_likelihood", f"{result.child_likelihood:.3f}"),),
            )
        )
    return tuple(out)


def replay_reasons(replay: ReplayCheck) -> tuple[Reason, ...]:
    if replay.error is not None:
        return (check_error(f"The replay check failed: {replay.error}.", "audio.replay"),)
    found = replay.replay_of
    if found is None:
        return ()
    return (
        forbid(
            ReasonCode.REPLAYED_AUDIO,
            "This audio is a recording of audio this household sent before, played again.",
            "audio.replay",
            (
                ("earlier_decision_id", found.decision_id),
                ("earlier_kind", found.kind),
                ("ber", f"{found.ber:.3f}"),
                ("effective_bits", f"{found.effective_bits:.0f}"),
            ),
        ),
    )


def speaker_step_up(voice: VoiceCheck, child_threshold: float) -> Reason | None:
    """The step-up the speaker facts demand, or None when they allow a plain ALLOW.

    Never ALLOW, whatever the policy says, for an unknown or unusable voice, a child or guest
    speaker, or a voice that sounds like a child's.
    """
    result = voice.result
    if voice.error is not None or result is None:
        return None  # an error already fails the decision closed
    if not result.usable:
        why, because = "the audio was not clear enough to recognise the speaker", ReasonCode.AUDIO_UNUSABLE
    elif not result.verified:
        why, because = "the voice was not recognised", ReasonCode.SPEAKER_UNKNOWN
    elif result.role is Role.CHILD:
        why, because = "the speaker is a child", ReasonCode.SPEAKER_CHILD
    elif result.role is Role.GUEST:
        why, because = "the speaker is a guest", ReasonCode.SPEAKER_VERIFIED
    elif voice.enrolled_child_like:
        why, because = (
            "this voice was enrolled sounding like a child's and no parent has confirmed the role",
            ReasonCode.CHILD_VOICE,
        )
    elif is_child_like(result, child_threshold):
        why, because = "the voice sounds like a child's", ReasonCode.CHILD_VOICE
    else:
        return None
    return needs_challenge(
        ReasonCode.CHALLENGE_REQUIRED,
        f"A grown-up must confirm this purchase: {why}.",
        "voice.never_allow",
        (("because", because.value),),
    )


def choose_method(
    wanted: ChallengeMethod, options: ChallengeOptions
) -> tuple[ChallengeMethod | None, Reason | None]:
    """Fall back to the next method the household can actually answer, never to nothing silently.

    The second value is a note on why the wanted method was not used, or, when no method is
    left, the forbid that makes the decision a DENY.
    """
    order = {
        ChallengeMethod.SPOKEN_PIN: (
            ChallengeMethod.SPOKEN_PIN,
            ChallengeMethod.RANDOM_DIGITS,
            ChallengeMethod.PARENT_APPROVAL,
        ),
        ChallengeMethod.RANDOM_DIGITS: (ChallengeMethod.RANDOM_DIGITS, ChallengeMethod.PARENT_APPROVAL),
        ChallengeMethod.PARENT_APPROVAL: (ChallengeMethod.PARENT_APPROVAL,),
    }[wanted]
    fell_back: Reason | None = None
    for method in order:
        if method is ChallengeMethod.SPOKEN_PIN:
            if options.pin_throttled:
                # Straight to a parent: random digits would let whoever is being kept off the PIN
                # (say, with a recording of a parent's voice) walk around the throttle.
                fell_back = note(
                    ReasonCode.PIN_THROTTLED,
                    "The household PIN is paused or disabled after repeated wrong answers, so a parent "
                    "is asked instead.",
                    "challenge.pin_budget",
                )
                if options.has_parent:
                    return ChallengeMethod.PARENT_APPROVAL, fell_back
                break
            if options.has_pin and options.has_enrolled_adult:
                return method, fell_back
        elif method is ChallengeMethod.RANDOM_DIGITS:
            # Random digits still need an enrolled adult's voice to say them.
            if options.has_enrolled_adult:
                return method, fell_back
        elif options.has_parent:
            return method, fell_back
    return None, forbid(
        ReasonCode.CHALLENGE_UNAVAILABLE,
        "This purchase needs confirming, but no way to confirm it is set up: add a parent, a PIN or an "
        "enrolled adult voice.",
        "challenge.method",
        (("wanted", wanted.value),),
    )


def decide(
    voice: VoiceCheck,
    broadcast: BroadcastCheck,
    policy: PolicyVerdict,
    options: ChallengeOptions,
    child_threshold: float = DEFAULT_CHILD_THRESHOLD,
    *,
    high_child_threshold: float = NEVER,
    replay: ReplayCheck = NO_REPLAY,
    unknown: UnknownVoiceGate = GUEST_RULE_ONLY,
) -> Verdict:
    """`high_child_threshold` is the child detector's high operating point (most children, few
    adults): a verified adult whose voice is that child-like is sent to a parent. `unknown` says
    whether an unrecognised voice goes to a parent (and the policy was evaluated for it as
    `policy_role` says)."""
    # BroadcastCheck.reasons are matches by contract: each is a forbid of the broadcast check
    # unless it asks for a step-up (a weak match of a registered clip); anything else, records
    # made before reasons carried effects included, is a forbid.
    findings: list[Reason] = [
        replace(
            r,
            effect=Effect.CHALLENGE if r.effect is Effect.CHALLENGE else Effect.FORBID,
            rule=r.rule or "broadcast",
        )
        for r in broadcast.reasons
    ]
    if broadcast.error is not None:
        findings.append(check_error(f"Broadcast check failed: {broadcast.error}.", "broadcast"))
    findings.extend(replay_reasons(replay))
    to_parent = unknown.to_parent and options.has_parent and is_unknown_voice(voice)
    if to_parent and unknown.recent >= unknown.limit:
        findings.append(
            forbid(
                ReasonCode.UNKNOWN_VOICE_LIMITED,
                f"The voice was not recognised, and {unknown.recent} purchases asked in voices the "
                "guard did not recognise are already waiting for a parent this hour.",
                "voice.unknown_voice_limit",
                (("recent", str(unknown.recent)), ("limit", str(unknown.limit))),
            )
        )
    findings.extend(policy.reasons)
    findings.extend(speaker_reasons(voice, child_threshold))
    step_up = speaker_step_up(voice, child_threshold)
    if step_up is not None:
        findings.append(step_up)
    result = voice.result
    verified = voice.error is None and result is not None and result.verified
    member_id = result.member_id if verified and result is not None else None

    def of(effect: Effect) -> tuple[Reason, ...]:
        return tuple(r for r in findings if r.effect is effect)

    notes = of(Effect.NOTE)
    errors, forbids = of(Effect.ERROR), of(Effect.FORBID)
    if errors or forbids or policy.effect is Outcome.DENY:
        # The policy engine reports a DENY with its forbids; a DENY without any would be a bug
        # there, and is still a DENY here.
        return Verdict(Outcome.DENY, (*errors, *forbids, *notes), None, False, member_id)

    challenges, permits = of(Effect.CHALLENGE), of(Effect.PERMIT)
    if policy.effect is Outcome.ALLOW and permits and not challenges:
        return Verdict(Outcome.ALLOW, (*permits, *notes), None, policy.low_value_exempt, member_id)

    # A step-up: policy asked for one, or a speaker fact bars a plain ALLOW.
    wanted = policy.challenge_method or ChallengeMethod.SPOKEN_PIN
    verified_adult = verified and result is not None and result.role is Role.ADULT
    if to_parent or (
        result is not None
        and (
            result.role is Role.CHILD
            or (is_child_like(result, child_threshold) and not verified_adult)
            or (verified_adult and is_child_like(result, high_child_threshold))
            or (verified_adult and voice.enrolled_child_like)
        )
    ):
        # A child must not be able to confirm their own purchase by knowing the PIN: a child, an
        # unverified child-like voice, a verified adult whose voice is very child-like (a child
        # who verifies as a parent), and a member whose enrollment already sounded like a child
        # all go to a parent. A verified adult whose voice merely sounds young still gets a
        # challenge, but one they can answer. An unrecognised voice the household sends to a
        # parent goes there too: a PIN would be answered by whoever overheard it.
        wanted = ChallengeMethod.PARENT_APPROVAL
    method, fallback = choose_method(wanted, options)
    if method is None:
        assert fallback is not None  # choose_method always explains a missing method
        return Verdict(Outcome.DENY, (fallback, *notes), None, False, member_id)
    extra = () if fallback is None else (fallback,)
    return Verdict(Outcome.CHALLENGE, (*challenges, *permits, *notes, *extra), method, False, member_id)
