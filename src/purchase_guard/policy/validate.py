"""Checks a policy a parent sent before it is stored, and returns it in its one normal form.

Validation happens once, at SetPolicy, so the engine can trust what it reads on every decision
(it still re-normalises categories, as a second line of defence for policies stored before a rule
here existed). Every message names the offending field by path, e.g. "rules[1].daily_cap_minor
must be >= 0", because the caller is a settings screen that has to point at the right box.
"""

from __future__ import annotations

import dataclasses
import enum
import unicodedata
from collections.abc import Iterable

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
from purchase_guard.policy.categories import MAX_CATEGORIES, MAX_CATEGORY_LENGTH, normalize_category

__all__ = ["validate_policy"]

# Amounts travel as proto int64; anything larger could not be sent back to the client intact.
_MAX_MINOR = 2**63 - 1
_LAST_MINUTE = 24 * 60 - 1


def validate_policy(policy: Policy) -> Policy:
    """Returns `policy` with categories normalised (NFC, trimmed, lower case), or raises InvalidArgument."""
    seen: dict[Role, int] = {}
    rules: list[RoleRule] = []
    for i, rule in enumerate(policy.rules):
        path = f"rules[{i}]"
        if not isinstance(rule, RoleRule):
            raise InvalidArgument(f"{path} must be a RoleRule", field=path)
        _check_enum(f"{path}.role", rule.role, Role)
        if rule.role in seen:
            raise InvalidArgument(
                f"{path}.role {rule.role.value} repeats rules[{seen[rule.role]}]; one rule per role"
            )
        seen[rule.role] = i
        _check_enum(f"{path}.mode", rule.mode, PurchaseMode)
        _check_enum(f"{path}.on_limit", rule.on_limit, LimitAction)
        _check_enum(f"{path}.challenge_method", rule.challenge_method, ChallengeMethod)
        _check_amount(f"{path}.max_order_minor", rule.max_order_minor)
        _check_amount(f"{path}.daily_cap_minor", rule.daily_cap_minor)
        _check_amount(f"{path}.monthly_cap_minor", rule.monthly_cap_minor)
        rules.append(
            dataclasses.replace(
                rule,
                blocked_categories=_categories(f"{path}.blocked_categories", rule.blocked_categories),
                allowed_categories=_categories(f"{path}.allowed_categories", rule.allowed_categories),
            )
        )

    _check_amount("household_daily_cap_minor", policy.household_daily_cap_minor)
    _check_amount("household_monthly_cap_minor", policy.household_monthly_cap_minor)
    blocked = _categories("blocked_categories", policy.blocked_categories)

    if policy.quiet_hours is not None:
        _check_quiet_hours(policy.quiet_hours)
    if policy.low_value_exemption is not None:
        _check_exemption(policy.low_value_exemption)

    return dataclasses.replace(policy, rules=tuple(rules), blocked_categories=blocked)


def _check_enum(path: str, value: object, kind: type[enum.Enum]) -> None:
    # The API layer maps an UNSPECIFIED proto value to None (or leaves an int); both are refused
    # here rather than guessed, since guessing a purchase mode is guessing a permission.
    if not isinstance(value, kind):
        names = ", ".join(member.name for member in kind)
        raise InvalidArgument(f"{path} must be one of {names}", field=path)


def _check_amount(path: str, value: object) -> None:
    # bool is an int subclass; True as a cap is a conversion bug, not one minor unit.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{path} must be an integer number of minor units", field=path)
    if value < 0:
        raise InvalidArgument(f"{path} must be >= 0", field=path)
    if value > _MAX_MINOR:
        raise InvalidArgument(f"{path} must be <= {_MAX_MINOR}", field=path)


def _check_quiet_hours(quiet: QuietHours) -> None:
    for name in ("start_minute", "end_minute"):
        value = getattr(quiet, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _LAST_MINUTE:
            raise InvalidArgument(f"quiet_hours.{name} must be between 0 and {_LAST_MINUTE}")
    _check_enum("quiet_hours.action", quiet.action, LimitAction)


def _check_exemption(exemption: LowValueExemption) -> None:
    _check_amount("low_value_exemption.per_order_max_minor", exemption.per_order_max_minor)
    _check_amount("low_value_exemption.cumulative_max_minor", exemption.cumulative_max_minor)
    if exemption.per_order_max_minor > exemption.cumulative_max_minor:
        # Such an order could never be exempt anyway; refusing says so instead of silently not working.
        raise InvalidArgument(
            "low_value_exemption.per_order_max_minor must be <= low_value_exemption.cumulative_max_minor"
        )


def _categories(path: str, categories: Iterable[object]) -> frozenset[str]:
    raw = list(categories)
    if len(raw) > MAX_CATEGORIES:
        raise InvalidArgument(
            f"{path} has {len(raw)} entries; at most {MAX_CATEGORIES} are allowed", field=path
        )
    normalised: set[str] = set()
    # Sorted so the same bad policy always gets the same message.
    for value in sorted(raw, key=repr):
        if not isinstance(value, str):
            raise InvalidArgument(f"{path} entries must be strings", field=path)
        # Control characters would let a category hide text in logs and UIs: refused as typed.
        # (Invisible format characters are not refused: normalising removes them on both sides.)
        if any(unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") for ch in value):
            raise InvalidArgument(f"{path} entry {value[:16]!r} contains control characters", field=path)
        category = normalize_category(value)
        if not category:
            raise InvalidArgument(f"{path} contains an empty category", field=path)
        if len(category) > MAX_CATEGORY_LENGTH:
            raise InvalidArgument(
                f"{path} entry {category[:16]!r}... is longer than {MAX_CATEGORY_LENGTH} characters"
            )
        normalised.add(category)
    return frozenset(normalised)
