"""Policy validation: every bad field is named by path, and categories come back normalised."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purchase_guard.domain import (
    ChallengeMethod,
    LimitAction,
    LowValueExemption,
    Policy,
    PurchaseMode,
    QuietHours,
    Role,
    RoleRule,
)
from purchase_guard.errors import InvalidArgument
from purchase_guard.policy import default_policy, validate_policy

ADULT = RoleRule(role=Role.ADULT, mode=PurchaseMode.ALLOWED, max_order_minor=10_000)
TEEN = RoleRule(role=Role.TEEN, mode=PurchaseMode.WITH_CHALLENGE)
GOOD = Policy(rules=(ADULT, TEEN))


def with_rule(index: int, **changes: Any) -> Policy:
    rules = list(GOOD.rules)
    rules[index] = dataclasses.replace(rules[index], **changes)
    return dataclasses.replace(GOOD, rules=tuple(rules))


def test_valid_policy_passes_unchanged() -> None:
    """A well-formed policy with normalised categories is returned equal to itself."""
    policy = dataclasses.replace(
        GOOD,
        blocked_categories=frozenset({"alcohol"}),
        quiet_hours=QuietHours(22 * 60, 7 * 60, LimitAction.CHALLENGE),
        low_value_exemption=LowValueExemption(500, 2_000),
    )
    assert validate_policy(policy) == policy


def test_default_policy_is_valid() -> None:
    """The shipped default policy passes validation unchanged."""
    assert validate_policy(default_policy()) == default_policy()


def test_categories_are_normalised_and_deduplicated() -> None:
    """Categories come back trimmed, lower case and NFC; spellings that normalise alike merge."""
    policy = dataclasses.replace(
        with_rule(
            1, blocked_categories=frozenset({" Gift-Cards", "gift-cards "}), allowed_categories={"Cafe\u0301"}
        ),
        blocked_categories=frozenset({"ALCOHOL"}),
    )
    result = validate_policy(policy)
    assert result.blocked_categories == frozenset({"alcohol"})
    assert result.rules[1].blocked_categories == frozenset({"gift-cards"})
    assert result.rules[1].allowed_categories == frozenset({"caf\u00e9"})
    assert isinstance(result.rules[1].allowed_categories, frozenset)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (with_rule(1, daily_cap_minor=-1), "rules[1].daily_cap_minor must be >= 0"),
        (with_rule(0, max_order_minor=-5), "rules[0].max_order_minor must be >= 0"),
        (with_rule(1, monthly_cap_minor=-1), "rules[1].monthly_cap_minor must be >= 0"),
        (dataclasses.replace(GOOD, household_daily_cap_minor=-1), "household_daily_cap_minor must be >= 0"),
        (
            dataclasses.replace(GOOD, household_monthly_cap_minor=-1),
            "household_monthly_cap_minor must be >= 0",
        ),
        (with_rule(0, daily_cap_minor=2**63), "rules[0].daily_cap_minor must be <= 9223372036854775807"),
        (with_rule(0, daily_cap_minor=True), "rules[0].daily_cap_minor must be an integer"),
        (with_rule(1, role=Role.ADULT), "rules[1].role ADULT repeats rules[0]"),
        (with_rule(0, role=None), "rules[0].role must be one of ADULT, TEEN, CHILD, GUEST"),
        (with_rule(0, mode=None), "rules[0].mode must be one of ALLOWED, WITH_CHALLENGE, NEVER"),
        (with_rule(0, mode=0), "rules[0].mode must be one of"),
        (with_rule(1, on_limit="DENY"), "rules[1].on_limit must be one of CHALLENGE, DENY"),
        (with_rule(1, challenge_method=None), "rules[1].challenge_method must be one of"),
        (
            dataclasses.replace(GOOD, quiet_hours=QuietHours(-1, 60)),
            "quiet_hours.start_minute must be between",
        ),
        (
            dataclasses.replace(GOOD, quiet_hours=QuietHours(0, 1440)),
            "quiet_hours.end_minute must be between",
        ),
        (
            dataclasses.replace(GOOD, quiet_hours=QuietHours(0, 60, None)),  # type: ignore[arg-type]
            "quiet_hours.action must be one of",
        ),
        (
            dataclasses.replace(GOOD, low_value_exemption=LowValueExemption(-1, 100)),
            "low_value_exemption.per_order_max_minor must be >= 0",
        ),
        (
            dataclasses.replace(GOOD, low_value_exemption=LowValueExemption(10, -1)),
            "low_value_exemption.cumulative_max_minor must be >= 0",
        ),
        (
            dataclasses.replace(GOOD, low_value_exemption=LowValueExemption(600, 500)),
            "low_value_exemption.per_order_max_minor must be <= low_value_exemption.cumulative_max_minor",
        ),
        (
            dataclasses.replace(GOOD, blocked_categories=frozenset({"  "})),
            "blocked_categories contains an empty",
        ),
        (with_rule(1, allowed_categories=frozenset({"x" * 65})), "rules[1].allowed_categories entry 'xxxx"),
        (with_rule(0, blocked_categories=frozenset({"a\nb"})), "rules[0].blocked_categories entry 'a\\nb'"),
        (
            with_rule(0, blocked_categories=frozenset(f"c{i}" for i in range(201))),
            "rules[0].blocked_categories has 201 entries; at most 200",
        ),
    ],
)
def test_invalid_field_is_named_by_path(policy: Policy, message: str) -> None:
    """Each invalid field raises InvalidArgument whose message starts with the field's path."""
    with pytest.raises(InvalidArgument) as caught:
        validate_policy(policy)
    assert str(caught.value).startswith(message)


def test_category_limits_are_inclusive() -> None:
    """A 64-character category and a list of exactly 200 categories are accepted."""
    policy = with_rule(
        0,
        blocked_categories=frozenset({"y" * 64}),
        allowed_categories=frozenset(f"c{i}" for i in range(200)),
    )
    assert len(validate_policy(policy).rules[0].allowed_categories) == 200


def test_padding_does_not_count_towards_category_length() -> None:
    """Length is measured after trimming, so spaces around a 64-character category are fine."""
    policy = dataclasses.replace(GOOD, blocked_categories=frozenset({"  " + "z" * 64 + "  "}))
    assert validate_policy(policy).blocked_categories == frozenset({"z" * 64})


def test_empty_rules_are_valid() -> None:
    """A policy with no rules is valid: it simply denies everyone."""
    assert validate_policy(Policy(rules=())) == Policy(rules=())


category_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["C"]), min_size=1, max_size=20
).filter(lambda s: s.strip() != "")
rules = st.builds(
    RoleRule,
    role=st.sampled_from(Role),
    mode=st.sampled_from(PurchaseMode),
    on_limit=st.sampled_from(LimitAction),
    challenge_method=st.sampled_from(ChallengeMethod),
    blocked_categories=st.frozensets(category_text, max_size=5),
)


@given(st.lists(rules, max_size=4, unique_by=lambda r: r.role), st.frozensets(category_text, max_size=5))
def test_validation_is_idempotent(rule_list: list[RoleRule], blocked: frozenset[str]) -> None:
    """Validating an already validated policy changes nothing."""
    try:
        once = validate_policy(Policy(rules=tuple(rule_list), blocked_categories=blocked))
    except InvalidArgument:
        return  # e.g. a category that lower-cases past 64 characters
    assert validate_policy(once) == once
