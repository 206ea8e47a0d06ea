"""The verdict rule: what can and cannot lead to ALLOW."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from purchase_guard.broadcast.repeat import Replay
from purchase_guard.domain import (
    BroadcastCheck,
    ChallengeMethod,
    Effect,
    LimitAction,
    LineItem,
    Money,
    Order,
    Outcome,
    Policy,
    PurchaseMode,
    Reason,
    ReasonCode,
    Role,
    RoleRule,
    SpeakerResult,
    SpendSnapshot,
    forbid,
    needs_challenge,
    permit,
)
from purchase_guard.pipeline.verdict import (
    GUEST_RULE_ONLY,
    ChallengeOptions,
    ReplayCheck,
    UnknownVoiceGate,
    VoiceCheck,
    decide,
    policy_role,
)
from purchase_guard.policy.engine import PolicyVerdict, evaluate_policy

ALLOW = PolicyVerdict(
    Outcome.ALLOW, (permit(ReasonCode.POLICY_ALLOWED, "ok", "policy.role_mode"),), None, False
)
CHALLENGE_PIN = PolicyVerdict(
    Outcome.CHALLENGE,
    (needs_challenge(ReasonCode.AMOUNT_OVER_LIMIT, "over", "policy.max_order"),),
    ChallengeMethod.SPOKEN_PIN,
    False,
)
DENY = PolicyVerdict(
    Outcome.DENY,
    (
        needs_challenge(ReasonCode.AMOUNT_OVER_LIMIT, "over", "policy.max_order"),
        forbid(ReasonCode.CATEGORY_BLOCKED, "blocked", "policy.categories.household"),
    ),
    None,
    False,
)
FULL = ChallengeOptions(has_pin=True, pin_throttled=False, has_enrolled_adult=True, has_parent=True)


def speaker(
    role: Role | None, *, verified: bool = True, child: float = -1.0, usable: bool = True
) -> VoiceCheck:
    return VoiceCheck(
        SpeakerResult(
            member_id="mem_1" if role else None,
            role=role,
            score=0.9 if verified else 0.3,
            threshold=0.75,
            verified=verified,
            child_likelihood=child,
            encoder="fake/1",
            usable=usable,
            problem="" if usable else "only 0.2 s of speech",
        )
    )


def test_verified_adult_within_policy_is_allowed() -> None:
    """A verified adult whose policy allows the order gets ALLOW with SPEAKER_VERIFIED."""
    v = decide(speaker(Role.ADULT), BroadcastCheck(), ALLOW, FULL)
    assert v.outcome is Outcome.ALLOW
    assert ReasonCode.SPEAKER_VERIFIED in {r.code for r in v.reasons}
    assert v.member_id == "mem_1"


@pytest.mark.parametrize(
    ("voice", "code"),
    [
        (speaker(None, verified=False), ReasonCode.SPEAKER_UNKNOWN),
        (speaker(Role.CHILD), ReasonCode.SPEAKER_CHILD),
        (speaker(Role.GUEST), ReasonCode.SPEAKER_VERIFIED),
        (speaker(Role.ADULT, child=0.9), ReasonCode.CHILD_VOICE),
        (speaker(None, verified=False, usable=False), ReasonCode.AUDIO_UNUSABLE),
    ],
)
def test_facts_that_never_allow_turn_allow_into_challenge(voice: VoiceCheck, code: ReasonCode) -> None:
    """Unknown, child, guest, child-like or unusable voices never get ALLOW even when policy allows."""
    v = decide(voice, BroadcastCheck(), ALLOW, FULL)
    assert v.outcome is Outcome.CHALLENGE
    assert code in {r.code for r in v.reasons}


def test_child_voice_is_challenged_by_parent_approval_not_pin() -> None:
    """A child cannot confirm their own purchase with a PIN: the challenge goes to a parent."""
    v = decide(speaker(Role.CHILD), BroadcastCheck(), CHALLENGE_PIN, FULL)
    assert v.challenge_method is ChallengeMethod.PARENT_APPROVAL
    v2 = decide(speaker(None, verified=False, child=0.95), BroadcastCheck(), ALLOW, FULL)
    assert v2.challenge_method is ChallengeMethod.PARENT_APPROVAL


def test_child_like_verified_adult_gets_a_challenge_they_can_answer() -> None:
    """A voiceprint-verified adult who sounds young is challenged (never a plain ALLOW) by the PIN."""
    v = decide(speaker(Role.ADULT, child=0.95), BroadcastCheck(), ALLOW, FULL)
    assert v.outcome is Outcome.CHALLENGE
    assert ReasonCode.CHILD_VOICE in {r.code for r in v.reasons}
    assert v.challenge_method is ChallengeMethod.SPOKEN_PIN


def test_policy_deny_wins_over_everything() -> None:
    """A forbid from policy is a DENY even for a verified adult, listed first, although the policy
    verdict listed a step-up before it; the step-up is not among a DENY's reasons."""
    v = decide(speaker(Role.ADULT), BroadcastCheck(), DENY, FULL)
    assert v.outcome is Outcome.DENY
    assert v.reasons[0].code is ReasonCode.CATEGORY_BLOCKED
    assert v.reasons[0].effect is Effect.FORBID
    assert ReasonCode.AMOUNT_OVER_LIMIT not in {r.code for r in v.reasons}


def test_blocked_category_over_the_maximum_is_denied_for_the_category_alone() -> None:
    """An adult order in a blocked category and over a per-order maximum that asks for a challenge is
    a DENY determined by the category: the over-limit step-up does not appear among its reasons."""
    rule = RoleRule(
        Role.ADULT,
        PurchaseMode.ALLOWED,
        max_order_minor=1000,
        on_limit=LimitAction.CHALLENGE,
        blocked_categories=frozenset({"alcohol"}),
    )
    order = Order((LineItem("w", "Wine", "alcohol", 1, Money(5000, "USD")),), Money(5000, "USD"), "shop")
    now = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
    policy = evaluate_policy(Policy((rule,)), Role.ADULT, order, SpendSnapshot(), now, "UTC")
    assert ReasonCode.AMOUNT_OVER_LIMIT in {r.code for r in policy.reasons}  # it did fire
    v = decide(speaker(Role.ADULT), BroadcastCheck(), policy, FULL)
    assert v.outcome is Outcome.DENY
    assert [r.code for r in v.reasons if r.effect is not Effect.NOTE] == [ReasonCode.CATEGORY_BLOCKED]


def test_deny_does_not_list_permits() -> None:
    """A DENY keeps the reasons that determined it, not CHALLENGE_REQUIRED or POLICY_ALLOWED."""
    hit = BroadcastCheck(reasons=(Reason(ReasonCode.KNOWN_BROADCAST, "ad"),))
    v = decide(speaker(Role.ADULT), hit, ALLOW, FULL)
    codes = {r.code for r in v.reasons}
    assert all(r.effect in (Effect.FORBID, Effect.NOTE) for r in v.reasons)
    assert ReasonCode.KNOWN_BROADCAST in codes
    assert not codes & {ReasonCode.POLICY_ALLOWED, ReasonCode.CHALLENGE_REQUIRED}


def test_voice_check_error_fails_closed() -> None:
    """An exception in speaker verification gives DENY with GUARD_ERROR, never ALLOW."""
    v = decide(VoiceCheck(None, error="boom"), BroadcastCheck(), ALLOW, FULL)
    assert v.outcome is Outcome.DENY
    assert ReasonCode.GUARD_ERROR in {r.code for r in v.reasons}


def test_broadcast_match_and_broadcast_error_deny() -> None:
    """Broadcast audio, or a failing broadcast check, is DENY whatever the voice and policy."""
    hit = BroadcastCheck(reasons=(Reason(ReasonCode.BROADCAST_MATCH, "tv"),))
    assert decide(speaker(Role.ADULT), hit, ALLOW, FULL).outcome is Outcome.DENY
    err = BroadcastCheck(error="redis down")
    assert decide(speaker(Role.ADULT), err, ALLOW, FULL).outcome is Outcome.DENY


LOW_VALUE = PolicyVerdict(
    Outcome.ALLOW, (permit(ReasonCode.LOW_VALUE_EXEMPT, "small", "policy.low_value"),), None, True
)


@pytest.mark.parametrize("policy", [ALLOW, LOW_VALUE], ids=["allowed", "low-value-exempt"])
def test_a_weak_known_clip_match_is_a_step_up_never_allow(policy: PolicyVerdict) -> None:
    """SUSPECTED_BROADCAST (a clip match too weak to refuse) turns an ALLOW, a low-value
    exemption included, into a challenge; it is a step-up, not a refusal."""
    weak = BroadcastCheck(
        reasons=(needs_challenge(ReasonCode.SUSPECTED_BROADCAST, "like an ad", "broadcast.denylist"),)
    )
    v = decide(speaker(Role.ADULT), weak, policy, FULL)
    assert v.outcome is Outcome.CHALLENGE
    assert v.challenge_method is ChallengeMethod.SPOKEN_PIN
    assert [(r.code, r.effect) for r in v.reasons if r.code is ReasonCode.SUSPECTED_BROADCAST] == [
        (ReasonCode.SUSPECTED_BROADCAST, Effect.CHALLENGE)
    ]
    assert not v.low_value_exempt


def test_a_strong_clip_match_still_refuses_beside_a_weak_one() -> None:
    """A refusing match of one clip wins over a weak match of another: DENY."""
    both = BroadcastCheck(
        reasons=(
            needs_challenge(ReasonCode.SUSPECTED_BROADCAST, "like an ad", "broadcast.denylist"),
            forbid(ReasonCode.KNOWN_BROADCAST, "the ad", "broadcast.denylist"),
        )
    )
    assert decide(speaker(Role.ADULT), both, ALLOW, FULL).outcome is Outcome.DENY


def test_pin_method_falls_back_when_no_pin_is_set() -> None:
    """Without a PIN, a SPOKEN_PIN challenge becomes RANDOM_DIGITS (an enrolled adult can still answer)."""
    opts = ChallengeOptions(has_pin=False, pin_throttled=False, has_enrolled_adult=True, has_parent=True)
    v = decide(speaker(Role.ADULT), BroadcastCheck(), CHALLENGE_PIN, opts)
    assert v.challenge_method is ChallengeMethod.RANDOM_DIGITS


def test_a_throttled_pin_falls_back_to_a_parent_never_to_random_digits() -> None:
    """A paused or disabled PIN is not offered, and the fallback is a parent's approval, not random
    digits (which a recording of a parent, kept off the PIN by the throttle, might answer);
    PIN_THROTTLED is reported. Without a parent there is no way to confirm: DENY."""
    opts = ChallengeOptions(has_pin=True, pin_throttled=True, has_enrolled_adult=True, has_parent=True)
    v = decide(speaker(Role.ADULT), BroadcastCheck(), CHALLENGE_PIN, opts)
    assert v.challenge_method is ChallengeMethod.PARENT_APPROVAL
    assert ReasonCode.PIN_THROTTLED in {r.code for r in v.reasons}
    orphan = ChallengeOptions(has_pin=True, pin_throttled=True, has_enrolled_adult=True, has_parent=False)
    assert decide(speaker(Role.ADULT), BroadcastCheck(), CHALLENGE_PIN, orphan).outcome is Outcome.DENY


def test_a_verified_adult_with_a_very_child_like_voice_goes_to_a_parent() -> None:
    """Above the high operating point a verified ADULT is treated as a possible child who verified as
    a parent: the challenge is a parent's approval, not the PIN; below it, the PIN."""
    v = decide(
        speaker(Role.ADULT, child=0.9), BroadcastCheck(), CHALLENGE_PIN, FULL, 0.5, high_child_threshold=0.8
    )
    assert v.challenge_method is ChallengeMethod.PARENT_APPROVAL
    w = decide(
        speaker(Role.ADULT, child=0.7), BroadcastCheck(), CHALLENGE_PIN, FULL, 0.5, high_child_threshold=0.8
    )
    assert w.challenge_method is ChallengeMethod.SPOKEN_PIN


def test_a_member_enrolled_with_a_child_like_voice_goes_to_a_parent_until_confirmed() -> None:
    """A verified ADULT whose enrollment sounded like a child (and no parent confirmed the role) never
    gets a plain ALLOW nor the PIN: a parent approves."""
    voice = speaker(Role.ADULT)
    flagged = VoiceCheck(voice.result, enrolled_child_like=True)
    v = decide(flagged, BroadcastCheck(), ALLOW, FULL)
    assert v.outcome is Outcome.CHALLENGE
    assert v.challenge_method is ChallengeMethod.PARENT_APPROVAL
    assert ReasonCode.CHILD_VOICE in {r.code for r in v.reasons}


def test_a_replay_of_earlier_household_audio_is_refused() -> None:
    """Audio that copies what the household sent before is DENY with REPLAYED_AUDIO, even for a
    verified adult within policy; a replay check that failed is DENY with GUARD_ERROR."""
    earlier = Replay("dec_earlier", "evaluate", 0.02, 900.0)
    v = decide(speaker(Role.ADULT), BroadcastCheck(), ALLOW, FULL, replay=ReplayCheck(replay_of=earlier))
    assert v.outcome is Outcome.DENY
    assert v.reasons[0].code is ReasonCode.REPLAYED_AUDIO
    broken = decide(speaker(Role.ADULT), BroadcastCheck(), ALLOW, FULL, replay=ReplayCheck(error="store"))
    assert broken.outcome is Outcome.DENY
    assert ReasonCode.GUARD_ERROR in {r.code for r in broken.reasons}


def test_no_way_to_answer_means_deny() -> None:
    """With no PIN, no enrolled adult and no parent, a needed challenge cannot be issued: DENY."""
    none = ChallengeOptions(has_pin=False, pin_throttled=False, has_enrolled_adult=False, has_parent=False)
    v = decide(speaker(None, verified=False), BroadcastCheck(), ALLOW, none)
    assert v.outcome is Outcome.DENY
    assert ReasonCode.CHALLENGE_UNAVAILABLE in {r.code for r in v.reasons}


def test_policy_role_is_guest_for_unverified_voices() -> None:
    """The policy rule applied to an unverified voice is GUEST's, never a member's."""
    assert policy_role(speaker(Role.ADULT, verified=False)) is Role.GUEST
    assert policy_role(VoiceCheck(None, error="x")) is Role.GUEST
    assert policy_role(speaker(Role.TEEN)) is Role.TEEN


TO_PARENT = UnknownVoiceGate(to_parent=True, recent=0, limit=3)


def test_an_unrecognised_voice_sent_to_a_parent_is_held_to_the_adult_rule_never_a_member() -> None:
    """With the household's default (unknown voices go to a parent) a clear unrecognised voice is
    evaluated under the ADULT rule; unusable audio, a failed check and a guest-rule household still
    get GUEST."""
    assert policy_role(speaker(None, verified=False), TO_PARENT) is Role.ADULT
    assert policy_role(speaker(None, verified=False, usable=False), TO_PARENT) is Role.GUEST
    assert policy_role(VoiceCheck(None, error="x"), TO_PARENT) is Role.GUEST
    assert policy_role(speaker(None, verified=False), GUEST_RULE_ONLY) is Role.GUEST
    assert policy_role(speaker(Role.CHILD), TO_PARENT) is Role.CHILD


@pytest.mark.parametrize("policy", [ALLOW, CHALLENGE_PIN], ids=["policy-allows", "policy-wants-pin"])
def test_an_unrecognised_voice_goes_to_a_parent_never_to_allow_or_a_pin(policy: PolicyVerdict) -> None:
    """An unrecognised voice the policy would allow (or send to the PIN) gets PARENT_APPROVAL, with
    SPEAKER_UNKNOWN among the reasons: a parent near-miss is asked about, not refused, and whoever
    overheard the PIN cannot answer for it."""
    v = decide(speaker(None, verified=False), BroadcastCheck(), policy, FULL, unknown=TO_PARENT)
    assert v.outcome is Outcome.CHALLENGE
    assert v.challenge_method is ChallengeMethod.PARENT_APPROVAL
    assert {ReasonCode.SPEAKER_UNKNOWN, ReasonCode.CHALLENGE_REQUIRED} <= {r.code for r in v.reasons}
    assert v.member_id is None


def test_unrecognised_voices_past_the_hourly_limit_are_refused() -> None:
    """Once `limit` unrecognised-voice requests are waiting this hour, the next is DENY with
    UNKNOWN_VOICE_LIMITED (a broadcast cannot fill the parents' phones); below it, a parent is asked."""
    full = UnknownVoiceGate(to_parent=True, recent=3, limit=3)
    v = decide(speaker(None, verified=False), BroadcastCheck(), ALLOW, FULL, unknown=full)
    assert v.outcome is Outcome.DENY
    assert v.reasons[0].code is ReasonCode.UNKNOWN_VOICE_LIMITED
    below = UnknownVoiceGate(to_parent=True, recent=2, limit=3)
    assert decide(speaker(None, verified=False), BroadcastCheck(), ALLOW, FULL, unknown=below).outcome is (
        Outcome.CHALLENGE
    )
    # The limit is about unrecognised voices only: a verified parent is not held to it.
    assert decide(speaker(Role.ADULT), BroadcastCheck(), ALLOW, FULL, unknown=full).outcome is Outcome.ALLOW


def test_an_unrecognised_voice_with_no_parent_to_ask_or_a_policy_forbid_is_denied() -> None:
    """Without a parent the step-up cannot happen (the GUEST rule's DENY stands), and a forbid of the
    ADULT rule (a blocked category) or a broadcast match still decides DENY."""
    no_parent = ChallengeOptions(has_pin=True, pin_throttled=False, has_enrolled_adult=True, has_parent=False)
    v = decide(speaker(None, verified=False), BroadcastCheck(), ALLOW, no_parent, unknown=TO_PARENT)
    assert v.outcome is not Outcome.ALLOW
    assert v.challenge_method is not ChallengeMethod.PARENT_APPROVAL
    assert decide(speaker(None, verified=False), BroadcastCheck(), DENY, FULL, unknown=TO_PARENT).outcome is (
        Outcome.DENY
    )
    match = BroadcastCheck(reasons=(forbid(ReasonCode.BROADCAST_MATCH, "m", "broadcast.fleet"),))
    assert (
        decide(speaker(None, verified=False), match, ALLOW, FULL, unknown=TO_PARENT).outcome is Outcome.DENY
    )
