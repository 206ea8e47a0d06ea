"""The default policy: what a household gets before a parent sets anything."""

from __future__ import annotations

from datetime import UTC, datetime

from purchase_guard.domain import (
    ChallengeMethod,
    LineItem,
    Money,
    Order,
    Outcome,
    ReasonCode,
    Role,
    SpendSnapshot,
)
from purchase_guard.policy import PolicyVerdict, default_policy, evaluate_policy

NOW = datetime(2024, 6, 12, 3, 0, tzinfo=UTC)


def decide(
    role: Role, total: int, category: str = "household", spend: SpendSnapshot | None = None
) -> PolicyVerdict:
    order = Order(
        items=(LineItem("sku-1", "Thing", category, 1, Money(total, "USD")),),
        total=Money(total, "USD"),
        merchant="shop",
    )
    return evaluate_policy(
        default_policy(), role, order, spend or SpendSnapshot(), NOW, "America/Los_Angeles"
    )


def test_adult_buys_everyday_order_outright() -> None:
    """An adult ordering 100.00 is allowed outright, at any hour (no default quiet hours)."""
    verdict = decide(Role.ADULT, 10_000)
    assert verdict.effect is Outcome.ALLOW
    assert verdict.reasons[0].code is ReasonCode.POLICY_ALLOWED


def test_adult_over_order_limit_is_asked_for_pin() -> None:
    """An adult order of 100.01 is not refused but needs the spoken PIN."""
    verdict = decide(Role.ADULT, 10_001)
    assert verdict.effect is Outcome.CHALLENGE
    assert verdict.challenge_method is ChallengeMethod.SPOKEN_PIN


def test_adult_daily_and_monthly_caps() -> None:
    """Adult spend past 300.00 a day or 1000.00 a month needs the spoken PIN."""
    daily = decide(Role.ADULT, 5_000, spend=SpendSnapshot(member_daily_minor=25_001))
    monthly = decide(Role.ADULT, 5_000, spend=SpendSnapshot(member_monthly_minor=95_001))
    assert [r.code for r in daily.reasons] == [ReasonCode.DAILY_LIMIT_REACHED]
    assert [r.code for r in monthly.reasons] == [ReasonCode.MONTHLY_LIMIT_REACHED]
    assert daily.effect is monthly.effect is Outcome.CHALLENGE


def test_teen_needs_parent_approval_up_to_fifty() -> None:
    """A teen order up to 50.00 needs a parent's approval; above it, it is denied."""
    ok = decide(Role.TEEN, 5_000)
    assert ok.effect is Outcome.CHALLENGE
    assert ok.challenge_method is ChallengeMethod.PARENT_APPROVAL
    assert decide(Role.TEEN, 5_001).effect is Outcome.DENY


def test_child_needs_parent_approval_up_to_thirty() -> None:
    """A child order up to 30.00 needs a parent's approval; above it, it is denied."""
    ok = decide(Role.CHILD, 3_000)
    assert ok.effect is Outcome.CHALLENGE
    assert ok.challenge_method is ChallengeMethod.PARENT_APPROVAL
    assert decide(Role.CHILD, 3_001).effect is Outcome.DENY


def test_child_cannot_buy_restricted_categories() -> None:
    """A child is denied alcohol, tobacco, gift cards and adult items however cheap."""
    for category in ("alcohol", "Tobacco", "gift-cards", "adult"):
        verdict = decide(Role.CHILD, 100, category)
        assert verdict.effect is Outcome.DENY, category
        assert verdict.reasons[0].code is ReasonCode.CATEGORY_BLOCKED


def test_teen_cannot_buy_age_restricted_but_may_ask_for_gift_cards() -> None:
    """A teen is denied alcohol but may ask a parent to approve a gift card."""
    assert decide(Role.TEEN, 100, "alcohol").effect is Outcome.DENY
    assert decide(Role.TEEN, 100, "gift-cards").effect is Outcome.CHALLENGE


def test_guest_never_buys() -> None:
    """A guest is denied with ROLE_NOT_ALLOWED even for a tiny order."""
    verdict = decide(Role.GUEST, 1)
    assert verdict.effect is Outcome.DENY
    assert verdict.reasons[0].code is ReasonCode.ROLE_NOT_ALLOWED


def test_default_has_no_household_restrictions() -> None:
    """The default has no household-wide blocks, caps, quiet hours or low-value exemption."""
    policy = default_policy()
    assert policy.blocked_categories == frozenset()
    assert policy.household_daily_cap_minor == policy.household_monthly_cap_minor == 0
    assert policy.quiet_hours is None
    assert policy.low_value_exemption is None
    assert {rule.role for rule in policy.rules} == set(Role)
