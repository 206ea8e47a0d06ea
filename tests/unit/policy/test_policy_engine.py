"""The policy engine: default deny, forbid wins, limits, quiet hours and the low-value exemption."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purchase_guard.domain import (
    ChallengeMethod,
    LimitAction,
    LineItem,
    LowValueExemption,
    Money,
    Order,
    Outcome,
    Policy,
    PurchaseMode,
    QuietHours,
    Reason,
    ReasonCode,
    Role,
    RoleRule,
    SpendSnapshot,
)
from purchase_guard.errors import InvalidArgument
from purchase_guard.policy import PolicyVerdict, evaluate_policy, format_money

NOON_UTC = datetime(2024, 6, 12, 12, 0, tzinfo=UTC)
TZ = "UTC"
NO_SPEND = SpendSnapshot()


def order(total: int, *categories: str, currency: str = "USD") -> Order:
    cats = categories or ("household",)
    items = tuple(
        LineItem(sku=f"sku-{i}", title=f"Item {i}", category=c, quantity=1, unit_price=Money(0, currency))
        for i, c in enumerate(cats)
    )
    return Order(items=items, total=Money(total, currency), merchant="shop")


ADULT_RULE = RoleRule(
    role=Role.ADULT,
    mode=PurchaseMode.ALLOWED,
    max_order_minor=10_000,
    daily_cap_minor=30_000,
    monthly_cap_minor=100_000,
    on_limit=LimitAction.CHALLENGE,
    challenge_method=ChallengeMethod.SPOKEN_PIN,
)
TEEN_RULE = RoleRule(
    role=Role.TEEN,
    mode=PurchaseMode.WITH_CHALLENGE,
    max_order_minor=5_000,
    on_limit=LimitAction.DENY,
    challenge_method=ChallengeMethod.PARENT_APPROVAL,
    blocked_categories=frozenset({"alcohol"}),
)
GUEST_RULE = RoleRule(role=Role.GUEST, mode=PurchaseMode.NEVER)
POLICY = Policy(rules=(ADULT_RULE, TEEN_RULE, GUEST_RULE), blocked_categories=frozenset({"weapons"}))


def decide(
    policy: Policy | None,
    role: Role,
    the_order: Order,
    spend: SpendSnapshot = NO_SPEND,
    now: datetime = NOON_UTC,
    tz: str = TZ,
) -> PolicyVerdict:
    return evaluate_policy(policy, role, the_order, spend, now, tz)


def codes(verdict: PolicyVerdict) -> list[ReasonCode]:
    return [r.code for r in verdict.reasons]


# --- default deny ----------------------------------------------------------------------------


def test_no_policy_denies() -> None:
    """Without any policy, every purchase is denied with ROLE_NOT_ALLOWED, even an adult's."""
    verdict = decide(None, Role.ADULT, order(100))
    assert verdict.effect is Outcome.DENY
    assert codes(verdict) == [ReasonCode.ROLE_NOT_ALLOWED]
    assert verdict.challenge_method is None
    assert not verdict.low_value_exempt


def test_role_without_rule_denies() -> None:
    """A role the policy has no rule for is denied with ROLE_NOT_ALLOWED (default deny)."""
    verdict = decide(POLICY, Role.CHILD, order(100))
    assert verdict.effect is Outcome.DENY
    assert codes(verdict) == [ReasonCode.ROLE_NOT_ALLOWED]
    assert ("cause", "no_rule") in verdict.reasons[0].detail


def test_mode_never_denies() -> None:
    """A role whose mode is NEVER is denied with ROLE_NOT_ALLOWED however small the order."""
    verdict = decide(POLICY, Role.GUEST, order(1))
    assert verdict.effect is Outcome.DENY
    assert codes(verdict) == [ReasonCode.ROLE_NOT_ALLOWED]
    assert "guests" in verdict.reasons[0].message


def test_allowed_mode_allows_within_limits() -> None:
    """An adult whose role may buy outright gets ALLOW with POLICY_ALLOWED when nothing fires."""
    verdict = decide(POLICY, Role.ADULT, order(2_500))
    assert verdict.effect is Outcome.ALLOW
    assert codes(verdict) == [ReasonCode.POLICY_ALLOWED]
    assert verdict.challenge_method is None
    assert not verdict.low_value_exempt
    assert "25.00 USD" in verdict.reasons[0].message


# --- categories ------------------------------------------------------------------------------


def test_household_blocked_category_denies_adult() -> None:
    """An order in a blocked category is denied even for an adult whose role may buy outright."""
    verdict = decide(POLICY, Role.ADULT, order(500, "books", "weapons"))
    assert verdict.effect is Outcome.DENY
    assert codes(verdict) == [ReasonCode.CATEGORY_BLOCKED]
    assert ("categories", "weapons") in verdict.reasons[0].detail
    assert ("scope", "household") in verdict.reasons[0].detail


def test_role_blocked_category_is_case_and_space_insensitive() -> None:
    """A role's blocked category matches regardless of case and surrounding spaces on either side."""
    policy = dataclasses.replace(
        POLICY, rules=(dataclasses.replace(TEEN_RULE, blocked_categories=frozenset({" ALCOHOL "})),)
    )
    verdict = decide(policy, Role.TEEN, order(500, "  Alcohol"))
    assert verdict.effect is Outcome.DENY
    assert codes(verdict)[0] is ReasonCode.CATEGORY_BLOCKED
    assert ("scope", "role") in verdict.reasons[0].detail


def test_category_outside_allowed_list_denies() -> None:
    """With a non-empty allowed list, a category not on it is denied with CATEGORY_BLOCKED."""
    rule = dataclasses.replace(ADULT_RULE, allowed_categories=frozenset({"books", "toys"}))
    policy = Policy(rules=(rule,))
    denied = decide(policy, Role.ADULT, order(500, "books", "snacks"))
    assert denied.effect is Outcome.DENY
    assert codes(denied) == [ReasonCode.CATEGORY_BLOCKED]
    assert ("categories", "snacks") in denied.reasons[0].detail
    assert ("scope", "allowed_list") in denied.reasons[0].detail
    allowed = decide(policy, Role.ADULT, order(500, "Books", "TOYS"))
    assert allowed.effect is Outcome.ALLOW


def test_category_blocked_for_household_is_reported_once() -> None:
    """A category blocked both household-wide and for the role appears in one reason, not two."""
    rule = dataclasses.replace(TEEN_RULE, blocked_categories=frozenset({"weapons"}))
    policy = dataclasses.replace(POLICY, rules=(rule,))
    verdict = decide(policy, Role.TEEN, order(500, "weapons"))
    assert codes(verdict) == [ReasonCode.CATEGORY_BLOCKED, ReasonCode.CHALLENGE_REQUIRED]


def test_uncategorised_item_fails_allowed_list() -> None:
    """An item with an empty category is not on any allowed list, and the message says so plainly."""
    policy = Policy(rules=(dataclasses.replace(ADULT_RULE, allowed_categories=frozenset({"books"})),))
    verdict = decide(policy, Role.ADULT, order(500, ""))
    assert verdict.effect is Outcome.DENY
    assert "(uncategorised)" in verdict.reasons[0].message


# --- amounts ---------------------------------------------------------------------------------


def test_order_over_max_challenges_when_on_limit_is_challenge() -> None:
    """An adult order over the per-order maximum asks for the role's challenge when on_limit is CHALLENGE."""
    verdict = decide(POLICY, Role.ADULT, order(10_001))
    assert verdict.effect is Outcome.CHALLENGE
    assert codes(verdict) == [ReasonCode.AMOUNT_OVER_LIMIT]
    assert verdict.challenge_method is ChallengeMethod.SPOKEN_PIN
    detail = dict(verdict.reasons[0].detail)
    assert detail["limit_minor"] == "10000"
    assert detail["total_minor"] == "10001"
    assert detail["action"] == "CHALLENGE"
    assert "100.01 USD" in verdict.reasons[0].message
    assert "100.00 USD" in verdict.reasons[0].message


def test_order_at_max_is_not_over_limit() -> None:
    """An order exactly at the per-order maximum is within the limit."""
    assert decide(POLICY, Role.ADULT, order(10_000)).effect is Outcome.ALLOW


def test_order_over_max_denies_when_on_limit_is_deny() -> None:
    """A teen order over the per-order maximum is denied when on_limit is DENY, challenge or not."""
    verdict = decide(POLICY, Role.TEEN, order(5_001))
    assert verdict.effect is Outcome.DENY
    assert codes(verdict) == [ReasonCode.AMOUNT_OVER_LIMIT, ReasonCode.CHALLENGE_REQUIRED]
    assert verdict.challenge_method is None


def test_zero_max_means_no_maximum() -> None:
    """max_order_minor 0 means no per-order maximum at all."""
    policy = Policy(rules=(RoleRule(role=Role.ADULT, mode=PurchaseMode.ALLOWED),))
    assert decide(policy, Role.ADULT, order(10**12)).effect is Outcome.ALLOW


def test_member_daily_cap_counts_prior_spend_plus_this_order() -> None:
    """The daily cap fires when the member's spend in the last 24 h plus this order exceeds it."""
    at_cap = SpendSnapshot(member_daily_minor=25_000)
    assert decide(POLICY, Role.ADULT, order(5_000), at_cap).effect is Outcome.ALLOW
    over = decide(POLICY, Role.ADULT, order(5_001), at_cap)
    assert over.effect is Outcome.CHALLENGE
    assert codes(over) == [ReasonCode.DAILY_LIMIT_REACHED]
    detail = dict(over.reasons[0].detail)
    assert detail == {
        "scope": "member",
        "limit_minor": "30000",
        "spent_minor": "25000",
        "total_minor": "5001",
        "currency": "USD",
        "action": "CHALLENGE",
    }
    assert "300.01 USD" in over.reasons[0].message


def test_member_monthly_cap() -> None:
    """The monthly cap fires on the rolling 30-day member spend plus this order."""
    verdict = decide(POLICY, Role.ADULT, order(2_000), SpendSnapshot(member_monthly_minor=99_000))
    assert codes(verdict) == [ReasonCode.MONTHLY_LIMIT_REACHED]
    assert verdict.effect is Outcome.CHALLENGE


def test_household_caps_follow_role_on_limit() -> None:
    """Household daily and monthly caps fire with the action of the buying role's on_limit."""
    policy = dataclasses.replace(POLICY, household_daily_cap_minor=1_000, household_monthly_cap_minor=2_000)
    spend = SpendSnapshot(household_daily_minor=900, household_monthly_minor=1_900)
    adult = decide(policy, Role.ADULT, order(200), spend)
    assert adult.effect is Outcome.CHALLENGE
    assert codes(adult) == [ReasonCode.DAILY_LIMIT_REACHED, ReasonCode.MONTHLY_LIMIT_REACHED]
    assert all(("scope", "household") in r.detail for r in adult.reasons)
    teen = decide(policy, Role.TEEN, order(200), spend)
    assert teen.effect is Outcome.DENY


def test_member_and_household_caps_both_reported() -> None:
    """When the member's and the household's daily caps are both exceeded, both reasons are listed."""
    policy = dataclasses.replace(POLICY, household_daily_cap_minor=30_000)
    spend = SpendSnapshot(member_daily_minor=29_000, household_daily_minor=29_000)
    verdict = decide(policy, Role.ADULT, order(2_000), spend)
    scopes = [dict(r.detail)["scope"] for r in verdict.reasons]
    assert scopes == ["member", "household"]


# --- quiet hours -----------------------------------------------------------------------------

LA = "America/Los_Angeles"
KOLKATA = "Asia/Kolkata"
NIGHT = QuietHours(start_minute=22 * 60, end_minute=7 * 60, action=LimitAction.DENY)


def with_quiet(quiet: QuietHours) -> Policy:
    return dataclasses.replace(POLICY, quiet_hours=quiet)


@pytest.mark.parametrize(
    ("utc", "inside"),
    [
        (datetime(2024, 6, 12, 4, 59, tzinfo=UTC), False),  # 21:59 PDT
        (datetime(2024, 6, 12, 5, 0, tzinfo=UTC), True),  # 22:00 PDT: start is inclusive
        (datetime(2024, 6, 12, 9, 30, tzinfo=UTC), True),  # 02:30 PDT, past midnight
        (datetime(2024, 6, 12, 13, 59, tzinfo=UTC), True),  # 06:59 PDT
        (datetime(2024, 6, 12, 14, 0, tzinfo=UTC), False),  # 07:00 PDT: end is exclusive
    ],
)
def test_quiet_hours_wrap_midnight_in_household_zone(utc: datetime, inside: bool) -> None:
    """Quiet hours 22:00-07:00 wrap midnight in the household's zone; start inclusive, end exclusive."""
    verdict = decide(with_quiet(NIGHT), Role.ADULT, order(100), now=utc, tz=LA)
    assert (verdict.effect is Outcome.DENY) is inside
    assert (ReasonCode.QUIET_HOURS in codes(verdict)) is inside


def test_quiet_hours_follow_spring_forward() -> None:
    """The same UTC time is inside quiet hours before the DST change and outside after it (wall clock)."""
    before = datetime(2024, 3, 9, 14, 30, tzinfo=UTC)  # 06:30 PST
    after = before + timedelta(days=1)  # 07:30 PDT: clocks moved forward overnight
    assert decide(with_quiet(NIGHT), Role.ADULT, order(100), now=before, tz=LA).effect is Outcome.DENY
    assert decide(with_quiet(NIGHT), Role.ADULT, order(100), now=after, tz=LA).effect is Outcome.ALLOW


def test_quiet_hours_cover_both_repeated_hours_at_fall_back() -> None:
    """Both occurrences of 01:30 on the night clocks fall back are inside a 01:00-02:00 window."""
    quiet = QuietHours(start_minute=60, end_minute=120)
    first = datetime(2024, 11, 3, 8, 30, tzinfo=UTC)  # 01:30 PDT
    second = datetime(2024, 11, 3, 9, 30, tzinfo=UTC)  # 01:30 PST
    for now in (first, second):
        verdict = decide(with_quiet(quiet), Role.ADULT, order(100), now=now, tz=LA)
        assert verdict.effect is Outcome.DENY
        assert ("local_time", "01:30") in verdict.reasons[0].detail


def test_quiet_hours_in_half_hour_offset_zone() -> None:
    """Quiet hours use Asia/Kolkata's +05:30 offset: 16:15Z is 21:45 (outside), 16:45Z is 22:15 (inside)."""
    quiet = QuietHours(start_minute=22 * 60, end_minute=6 * 60 + 30)
    outside = datetime(2024, 1, 5, 16, 15, tzinfo=UTC)
    inside = datetime(2024, 1, 5, 16, 45, tzinfo=UTC)
    assert decide(with_quiet(quiet), Role.ADULT, order(100), now=outside, tz=KOLKATA).effect is Outcome.ALLOW
    verdict = decide(with_quiet(quiet), Role.ADULT, order(100), now=inside, tz=KOLKATA)
    assert verdict.effect is Outcome.DENY
    assert "22:15" in verdict.reasons[0].message


def test_quiet_hours_challenge_action() -> None:
    """Quiet hours with action CHALLENGE ask for the role's challenge instead of refusing."""
    quiet = dataclasses.replace(NIGHT, action=LimitAction.CHALLENGE)
    verdict = decide(
        with_quiet(quiet), Role.ADULT, order(100), now=datetime(2024, 6, 12, 6, tzinfo=UTC), tz=LA
    )
    assert verdict.effect is Outcome.CHALLENGE
    assert codes(verdict) == [ReasonCode.QUIET_HOURS]
    assert verdict.challenge_method is ChallengeMethod.SPOKEN_PIN


def test_quiet_hours_with_equal_start_and_end_are_off() -> None:
    """A window whose start equals its end is empty, not a whole day."""
    quiet = QuietHours(start_minute=600, end_minute=600)
    for hour in range(24):
        now = datetime(2024, 6, 12, hour, tzinfo=UTC)
        assert decide(with_quiet(quiet), Role.ADULT, order(100), now=now).effect is Outcome.ALLOW


def test_unknown_time_zone_is_invalid_argument_when_quiet_hours_need_it() -> None:
    """An unknown IANA zone raises InvalidArgument when quiet hours are read in it; otherwise unused."""
    with pytest.raises(InvalidArgument, match="time_zone"):
        decide(with_quiet(NIGHT), Role.ADULT, order(100), tz="Mars/Olympus_Mons")
    assert decide(POLICY, Role.ADULT, order(100), tz="Mars/Olympus_Mons").effect is Outcome.ALLOW


def test_naive_now_is_refused() -> None:
    """A naive `now` is a caller bug and raises instead of guessing a zone."""
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(POLICY, Role.ADULT, order(100), now=datetime(2024, 6, 12, 12))


# --- challenge mode and the low-value exemption ----------------------------------------------

EXEMPT = LowValueExemption(per_order_max_minor=500, cumulative_max_minor=2_000)


def test_with_challenge_mode_challenges_with_rule_method() -> None:
    """A teen order within limits is a CHALLENGE with CHALLENGE_REQUIRED and the rule's method."""
    verdict = decide(POLICY, Role.TEEN, order(1_000))
    assert verdict.effect is Outcome.CHALLENGE
    assert codes(verdict) == [ReasonCode.CHALLENGE_REQUIRED]
    assert verdict.challenge_method is ChallengeMethod.PARENT_APPROVAL
    assert "parent's approval" in verdict.reasons[0].message


def test_low_value_exemption_allows_small_order() -> None:
    """A small teen order under both exemption thresholds is allowed and marked low_value_exempt."""
    policy = dataclasses.replace(POLICY, low_value_exemption=EXEMPT)
    verdict = decide(policy, Role.TEEN, order(500), SpendSnapshot(exempt_since_last_challenge_minor=1_500))
    assert verdict.effect is Outcome.ALLOW
    assert codes(verdict) == [ReasonCode.LOW_VALUE_EXEMPT]
    assert verdict.low_value_exempt
    assert verdict.challenge_method is None
    assert ("exempt_spent_minor", "1500") in verdict.reasons[0].detail


@pytest.mark.parametrize(
    ("total", "exempt_spent"),
    [(501, 0), (500, 1_501)],
    ids=["over-per-order", "over-cumulative"],
)
def test_low_value_exemption_thresholds(total: int, exempt_spent: int) -> None:
    """Over the per-order threshold, or past the cumulative one, the challenge is required again."""
    policy = dataclasses.replace(POLICY, low_value_exemption=EXEMPT)
    verdict = decide(
        policy, Role.TEEN, order(total), SpendSnapshot(exempt_since_last_challenge_minor=exempt_spent)
    )
    assert verdict.effect is Outcome.CHALLENGE
    assert not verdict.low_value_exempt


def test_low_value_exemption_never_overrides_forbid() -> None:
    """A small order in a blocked category is denied even when the exemption would cover its amount."""
    policy = dataclasses.replace(POLICY, low_value_exemption=EXEMPT)
    verdict = decide(policy, Role.TEEN, order(100, "alcohol"))
    assert verdict.effect is Outcome.DENY
    assert ReasonCode.LOW_VALUE_EXEMPT not in codes(verdict)


def test_low_value_exemption_never_overrides_limit_challenge() -> None:
    """A small order that trips quiet hours (action CHALLENGE) still needs the challenge."""
    policy = dataclasses.replace(
        POLICY,
        low_value_exemption=EXEMPT,
        quiet_hours=dataclasses.replace(NIGHT, action=LimitAction.CHALLENGE),
    )
    verdict = decide(policy, Role.TEEN, order(100), now=datetime(2024, 6, 12, 6, tzinfo=UTC), tz=LA)
    assert verdict.effect is Outcome.CHALLENGE
    assert codes(verdict) == [ReasonCode.QUIET_HOURS, ReasonCode.CHALLENGE_REQUIRED]


def test_zero_per_order_threshold_disables_exemption() -> None:
    """An exemption with per_order_max_minor 0 exempts nothing, not even a free order."""
    policy = dataclasses.replace(POLICY, low_value_exemption=LowValueExemption(0, 0))
    assert decide(policy, Role.TEEN, order(0)).effect is Outcome.CHALLENGE


def test_exemption_does_not_apply_to_allowed_mode() -> None:
    """An adult whose role may buy outright gets POLICY_ALLOWED, not an exemption, for a small order."""
    policy = dataclasses.replace(POLICY, low_value_exemption=EXEMPT)
    verdict = decide(policy, Role.ADULT, order(100))
    assert codes(verdict) == [ReasonCode.POLICY_ALLOWED]
    assert not verdict.low_value_exempt


# --- combination -----------------------------------------------------------------------------


def test_deny_wins_and_forbids_come_first() -> None:
    """With a forbid and a limit challenge both firing, the verdict is DENY and lists the forbid first."""
    policy = dataclasses.replace(POLICY, quiet_hours=NIGHT)
    verdict = decide(policy, Role.ADULT, order(20_000), now=datetime(2024, 6, 12, 6, tzinfo=UTC), tz=LA)
    assert verdict.effect is Outcome.DENY
    assert codes(verdict) == [ReasonCode.QUIET_HOURS, ReasonCode.AMOUNT_OVER_LIMIT]
    assert verdict.challenge_method is None


def test_never_mode_still_reports_other_forbids() -> None:
    """A guest buying a blocked category is denied with both ROLE_NOT_ALLOWED and CATEGORY_BLOCKED."""
    verdict = decide(POLICY, Role.GUEST, order(100, "weapons"))
    assert codes(verdict) == [ReasonCode.ROLE_NOT_ALLOWED, ReasonCode.CATEGORY_BLOCKED]


def test_every_reason_has_a_sentence() -> None:
    """Every reason the engine emits has a non-empty human sentence and string detail pairs."""
    policy = dataclasses.replace(POLICY, quiet_hours=NIGHT, household_daily_cap_minor=1)
    verdict = decide(
        policy, Role.TEEN, order(9_000, "alcohol", "weapons"), now=datetime(2024, 6, 12, 6, tzinfo=UTC), tz=LA
    )
    assert len(verdict.reasons) >= 5
    for reason in verdict.reasons:
        assert reason.message.endswith(".")
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in reason.detail)


# --- money -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(7_000, "USD"), "70.00 USD"),
        (Money(5, "EUR"), "0.05 EUR"),
        (Money(1_500, "JPY"), "1500 JPY"),
        (Money(50_000, "KRW"), "50000 KRW"),
        (Money(1_234, "KWD"), "1.234 KWD"),
        (Money(-150, "USD"), "-1.50 USD"),
        (Money(0, "USD"), "0.00 USD"),
    ],
)
def test_format_money(money: Money, text: str) -> None:
    """Minor units format exactly with the currency's decimals: 2 by default, 0 for JPY/KRW, 3 for KWD."""
    assert format_money(money) == text


def test_reason_amounts_use_currency_decimals() -> None:
    """Reason sentences format a zero-decimal currency without a decimal point."""
    policy = Policy(rules=(dataclasses.replace(ADULT_RULE, max_order_minor=10_000),))
    verdict = decide(policy, Role.ADULT, order(12_000, currency="JPY"))
    assert "12000 JPY" in verdict.reasons[0].message
    assert "10000 JPY" in verdict.reasons[0].message


# --- properties ------------------------------------------------------------------------------

CATEGORIES = ["books", "toys", "snacks", "alcohol", "gift-cards", "Games "]
amounts = st.integers(min_value=0, max_value=50_000)
actions = st.sampled_from(LimitAction)

rules = st.builds(
    RoleRule,
    role=st.sampled_from(Role),
    mode=st.sampled_from(PurchaseMode),
    max_order_minor=amounts,
    daily_cap_minor=amounts,
    monthly_cap_minor=amounts,
    on_limit=actions,
    challenge_method=st.sampled_from(ChallengeMethod),
    blocked_categories=st.frozensets(st.sampled_from(CATEGORIES), max_size=3),
    allowed_categories=st.frozensets(st.sampled_from(CATEGORIES), max_size=3),
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    chosen = draw(st.lists(rules, max_size=4, unique_by=lambda r: r.role))
    quiet = draw(st.none() | st.builds(QuietHours, st.integers(0, 1439), st.integers(0, 1439), actions))
    per_order = draw(amounts)
    exemption = draw(
        st.none() | st.builds(LowValueExemption, st.just(per_order), st.integers(per_order, 100_000))
    )
    return Policy(
        rules=tuple(chosen),
        household_daily_cap_minor=draw(amounts),
        household_monthly_cap_minor=draw(amounts),
        blocked_categories=draw(st.frozensets(st.sampled_from(CATEGORIES), max_size=2)),
        quiet_hours=quiet,
        low_value_exemption=exemption,
    )


orders = st.builds(
    lambda total, cats: order(total, *cats),
    amounts,
    st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=4),
)
spends = st.builds(SpendSnapshot, amounts, amounts, amounts, amounts, amounts)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1),  # hypothesis wants naive bounds; values get UTC
    max_value=datetime(2030, 1, 1),
    timezones=st.just(UTC),
)
zones = st.sampled_from(["UTC", LA, KOLKATA])

_SEVERITY = {Outcome.ALLOW: 0, Outcome.CHALLENGE: 1, Outcome.DENY: 2}
_FORBID_ONLY = {ReasonCode.ROLE_NOT_ALLOWED, ReasonCode.CATEGORY_BLOCKED}


def _is_forbid(reason: Reason) -> bool:
    return reason.code in _FORBID_ONLY or dict(reason.detail).get("action") == "DENY"


@given(policies(), st.sampled_from(Role), orders, spends, instants, zones, st.sampled_from(CATEGORIES))
def test_adding_household_blocked_category_never_allows(
    policy: Policy, role: Role, the_order: Order, spend: SpendSnapshot, now: datetime, tz: str, blocked: str
) -> None:
    """Forbid wins: an order with an item in a household-blocked category is always DENY."""
    policy = dataclasses.replace(policy, blocked_categories=policy.blocked_categories | {blocked})
    extra = LineItem("x", "x", blocked.upper(), 1, Money(0, "USD"))
    the_order = dataclasses.replace(the_order, items=(*the_order.items, extra))
    verdict = evaluate_policy(policy, role, the_order, spend, now, tz)
    assert verdict.effect is Outcome.DENY
    assert ReasonCode.CATEGORY_BLOCKED in codes(verdict)


@given(policies(), st.sampled_from(Role), orders, spends, instants, zones)
def test_role_without_rule_never_allows(
    policy: Policy, role: Role, the_order: Order, spend: SpendSnapshot, now: datetime, tz: str
) -> None:
    """Default deny: with the role's rule removed, the verdict is DENY with ROLE_NOT_ALLOWED first."""
    policy = dataclasses.replace(policy, rules=tuple(r for r in policy.rules if r.role is not role))
    verdict = evaluate_policy(policy, role, the_order, spend, now, tz)
    assert verdict.effect is Outcome.DENY
    assert verdict.reasons[0].code is ReasonCode.ROLE_NOT_ALLOWED


@given(policies(), st.sampled_from(Role), orders, spends, instants, zones)
def test_verdict_shape_invariants(
    policy: Policy, role: Role, the_order: Order, spend: SpendSnapshot, now: datetime, tz: str
) -> None:
    """Every verdict has reasons, a method exactly on CHALLENGE, exempt only on ALLOW, forbids first."""
    verdict = evaluate_policy(policy, role, the_order, spend, now, tz)
    assert verdict.reasons
    assert (verdict.challenge_method is not None) == (verdict.effect is Outcome.CHALLENGE)
    if verdict.low_value_exempt:
        assert verdict.effect is Outcome.ALLOW
        assert codes(verdict) == [ReasonCode.LOW_VALUE_EXEMPT]
    if verdict.effect is Outcome.ALLOW:
        assert len(verdict.reasons) == 1
    if verdict.effect is Outcome.DENY:
        flags = [_is_forbid(r) for r in verdict.reasons]
        assert flags[0]
        assert flags == sorted(flags, reverse=True)
    if any(r.code in _FORBID_ONLY for r in verdict.reasons):
        assert verdict.effect is Outcome.DENY


@given(policies(), st.sampled_from(Role), orders, spends, spends, instants, zones)
def test_more_spend_is_never_more_permissive(
    policy: Policy,
    role: Role,
    the_order: Order,
    spend: SpendSnapshot,
    more: SpendSnapshot,
    now: datetime,
    tz: str,
) -> None:
    """Raising any spend figure never moves the verdict from DENY/CHALLENGE towards ALLOW."""
    bigger = SpendSnapshot(
        spend.member_daily_minor + more.member_daily_minor,
        spend.member_monthly_minor + more.member_monthly_minor,
        spend.household_daily_minor + more.household_daily_minor,
        spend.household_monthly_minor + more.household_monthly_minor,
        spend.exempt_since_last_challenge_minor + more.exempt_since_last_challenge_minor,
    )
    before = evaluate_policy(policy, role, the_order, spend, now, tz)
    after = evaluate_policy(policy, role, the_order, bigger, now, tz)
    assert _SEVERITY[after.effect] >= _SEVERITY[before.effect]
