"""The parental-control engine: a pure function from a policy snapshot to a verdict.

Modelled on Cedar's semantics so the answer is easy to reason about:

* default deny: no policy, or no rule for the speaker's role, refuses the purchase;
* forbid wins: once any check says DENY, nothing (not even the low-value exemption) turns it into
  an ALLOW or a CHALLENGE;
* the verdict carries every finding that fired, forbids first, each with its effect (FORBID or
  CHALLENGE; PERMIT for what allows) and the rule that produced it, so a parent (and the audit
  log) can see all of why, and the verdict rule never has to guess an effect from a code.

Everything the decision depends on comes in as a parameter, including `now` and the household's
time zone, so a recorded decision can be replayed bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from purchase_guard.domain import (
    ChallengeMethod,
    Effect,
    LimitAction,
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
    forbid,
    needs_challenge,
    permit,
)
from purchase_guard.errors import InvalidArgument
from purchase_guard.money import format_money
from purchase_guard.policy.categories import normalize_category

__all__ = ["PolicyVerdict", "evaluate_policy", "format_money"]

MINUTES_PER_DAY = 24 * 60
Detail = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    effect: Outcome  # ALLOW, CHALLENGE or DENY
    reasons: tuple[Reason, ...]  # every finding that fired, forbids first, each with its effect
    challenge_method: ChallengeMethod | None  # set exactly when effect is CHALLENGE
    low_value_exempt: bool  # the ALLOW came from the exemption; the caller books it as exempt spend


def _limit_finding(action: LimitAction, code: ReasonCode, message: str, rule: str, detail: Detail) -> Reason:
    # A limit's action is the parent's choice: DENY forbids, CHALLENGE asks for a step-up. Anything
    # else (a newer enum value) fails closed as a forbid.
    if action is LimitAction.CHALLENGE:
        return needs_challenge(code, message, rule, detail)
    return forbid(code, message, rule, detail)


_PLURAL = {Role.ADULT: "adults", Role.TEEN: "teens", Role.CHILD: "children", Role.GUEST: "guests"}

_METHOD_PHRASE = {
    ChallengeMethod.SPOKEN_PIN: "the household PIN",
    ChallengeMethod.RANDOM_DIGITS: "repeating a few random digits",
    ChallengeMethod.PARENT_APPROVAL: "a parent's approval",
}


def _plural(role: Role) -> str:
    return _PLURAL.get(role, "members with this role")


def _hhmm(minute_of_day: int) -> str:
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


def _categories_text(categories: list[str]) -> str:
    # An empty category is a catalogue gap, not a category called "", so say so in the sentence.
    shown = [c if c else "(uncategorised)" for c in categories]
    return ", ".join(shown)


def evaluate_policy(
    policy: Policy | None,
    role: Role,
    order: Order,
    spend: SpendSnapshot,
    now: datetime,
    time_zone: str,
) -> PolicyVerdict:
    """Decides what the household policy says about `role` buying `order` at `now`.

    `spend` holds what was already committed in the rolling windows (this order not included);
    `time_zone` is the household's IANA zone, used only for quiet hours. Raises `InvalidArgument`
    for an unknown time zone when quiet hours need it and `ValueError` for a naive `now`: both are
    caller bugs, and the pipeline turns any exception into DENY with GUARD_ERROR.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("evaluate_policy needs a timezone-aware `now`")

    if policy is None:
        return _deny(
            [
                forbid(
                    ReasonCode.ROLE_NOT_ALLOWED,
                    "This household has no purchase policy yet, so purchases are refused.",
                    "policy.no_policy",
                    (("role", role.value), ("cause", "no_policy")),
                )
            ]
        )

    rule = policy.rule_for(role)
    findings: list[Reason] = []
    if rule is None:
        findings.append(
            forbid(
                ReasonCode.ROLE_NOT_ALLOWED,
                f"The household policy has no rule for {_plural(role)}, so they may not buy.",
                "policy.role_rule",
                (("role", role.value), ("cause", "no_rule")),
            )
        )
    elif rule.mode is PurchaseMode.NEVER:
        findings.append(
            forbid(
                ReasonCode.ROLE_NOT_ALLOWED,
                f"The household policy does not let {_plural(role)} buy anything.",
                "policy.role_mode",
                (("role", role.value), ("cause", "mode_never")),
            )
        )

    # Checks below still run for a role that may not buy at all: "every rule that fired" keeps the
    # audit record complete, and the verdict is DENY regardless.
    findings.extend(_category_findings(policy, rule, role, order))
    findings.extend(_amount_findings(policy, rule, role, order, spend))
    if policy.quiet_hours is not None:
        quiet = _quiet_hours_finding(policy.quiet_hours, now, time_zone)
        if quiet is not None:
            findings.append(quiet)

    forbids = [f for f in findings if f.effect is Effect.FORBID]
    challenges = [f for f in findings if f.effect is Effect.CHALLENGE]
    mode_reason = _challenge_required(rule, role) if rule is not None else None
    if mode_reason is not None:
        challenges.append(mode_reason)

    # `_limit_finding` made every action it does not know a forbid, so an unknown one fails closed.
    if rule is None or forbids:
        return _deny(forbids + challenges)

    if rule.mode is PurchaseMode.ALLOWED:
        if challenges:
            # The role may buy outright, but a limit or quiet hours asks for a challenge first.
            return PolicyVerdict(Outcome.CHALLENGE, tuple(challenges), rule.challenge_method, False)
        return PolicyVerdict(
            Outcome.ALLOW,
            (
                permit(
                    ReasonCode.POLICY_ALLOWED,
                    f"The household policy lets {_plural(role)} buy this order of "
                    f"{format_money(order.total)}.",
                    "policy.role_mode",
                    (("role", role.value), ("total_minor", str(order.total.minor_units))),
                ),
            ),
            None,
            False,
        )

    if rule.mode is PurchaseMode.WITH_CHALLENGE:
        if challenges == [mode_reason]:
            # Only the mode asked for a challenge: the one case the exemption may waive (like
            # PSD2's low-value exemption, it never waives a limit or quiet hours).
            exempt = _low_value_exemption(policy, order, spend)
            if exempt is not None:
                return PolicyVerdict(Outcome.ALLOW, (exempt,), None, True)
        return PolicyVerdict(Outcome.CHALLENGE, tuple(challenges), rule.challenge_method, False)

    # A mode this engine does not know (a newer enum value): default deny.
    return _deny(
        [
            forbid(
                ReasonCode.ROLE_NOT_ALLOWED,
                f"The household policy's purchase mode for {_plural(role)} is not understood, "
                "so purchases are refused.",
                "policy.role_mode",
                (("role", role.value), ("cause", "unknown_mode")),
            )
        ]
    )


def _deny(reasons: list[Reason]) -> PolicyVerdict:
    return PolicyVerdict(Outcome.DENY, tuple(reasons), None, False)


def _category_findings(policy: Policy, rule: RoleRule | None, role: Role, order: Order) -> list[Reason]:
    # Normalised here as well as in validate_policy so an unvalidated policy (an old stored one, a
    # hand-built one in a test) cannot be bypassed by case or spacing.
    ordered = sorted({normalize_category(item.category) for item in order.items})
    household_blocked = {normalize_category(c) for c in policy.blocked_categories}
    findings: list[Reason] = []

    hit = [c for c in ordered if c in household_blocked]
    if hit:
        findings.append(
            _category_finding(
                hit, "household", f"This order includes {_categories_text(hit)}, which nobody here may buy."
            )
        )
    if rule is None:
        return findings

    already = set(hit)
    role_blocked = {normalize_category(c) for c in rule.blocked_categories}
    hit = [c for c in ordered if c in role_blocked and c not in already]
    if hit:
        already.update(hit)
        findings.append(
            _category_finding(
                hit,
                "role",
                f"This order includes {_categories_text(hit)}, which {_plural(role)} may not buy.",
            )
        )
    allowed = {normalize_category(c) for c in rule.allowed_categories}
    if allowed:
        hit = [c for c in ordered if c not in allowed and c not in already]
        if hit:
            findings.append(
                _category_finding(
                    hit,
                    "allowed_list",
                    f"This order includes {_categories_text(hit)}, which is not among the categories "
                    f"{_plural(role)} may buy.",
                )
            )
    return findings


def _category_finding(categories: list[str], scope: str, message: str) -> Reason:
    return forbid(
        ReasonCode.CATEGORY_BLOCKED,
        message,
        f"policy.categories.{scope}",
        (("categories", ",".join(categories)), ("scope", scope)),
    )


def _amount_findings(
    policy: Policy,
    rule: RoleRule | None,
    role: Role,
    order: Order,
    spend: SpendSnapshot,
) -> list[Reason]:
    # Household caps follow the role's on_limit too; without a rule, deny is the default.
    on_limit = rule.on_limit if rule is not None else LimitAction.DENY
    total = order.total
    findings: list[Reason] = []

    def money(minor: int) -> str:
        return format_money(Money(minor, total.currency))

    if rule is not None and rule.max_order_minor > 0 and total.minor_units > rule.max_order_minor:
        findings.append(
            _limit_finding(
                on_limit,
                ReasonCode.AMOUNT_OVER_LIMIT,
                f"This order of {money(total.minor_units)} is over the {money(rule.max_order_minor)} "
                f"limit per order for {_plural(role)}.",
                "policy.max_order",
                (
                    ("limit_minor", str(rule.max_order_minor)),
                    ("total_minor", str(total.minor_units)),
                    ("currency", total.currency),
                    ("action", on_limit.value),
                ),
            )
        )

    # (code, whose, window phrase, cap, already spent); 0 means no cap, as in the proto.
    caps: list[tuple[ReasonCode, str, str, int, int]] = []
    if rule is not None:
        caps.append(
            (
                ReasonCode.DAILY_LIMIT_REACHED,
                "member",
                "24 hours",
                rule.daily_cap_minor,
                spend.member_daily_minor,
            )
        )
        caps.append(
            (
                ReasonCode.MONTHLY_LIMIT_REACHED,
                "member",
                "30 days",
                rule.monthly_cap_minor,
                spend.member_monthly_minor,
            )
        )
    caps.append(
        (
            ReasonCode.DAILY_LIMIT_REACHED,
            "household",
            "24 hours",
            policy.household_daily_cap_minor,
            spend.household_daily_minor,
        )
    )
    caps.append(
        (
            ReasonCode.MONTHLY_LIMIT_REACHED,
            "household",
            "30 days",
            policy.household_monthly_cap_minor,
            spend.household_monthly_minor,
        )
    )
    for code, scope, window, cap, spent in caps:
        if cap <= 0 or spent + total.minor_units <= cap:
            continue
        who = "this member's" if scope == "member" else "the household's"
        period = "daily" if code is ReasonCode.DAILY_LIMIT_REACHED else "monthly"
        findings.append(
            _limit_finding(
                on_limit,
                code,
                f"This order of {money(total.minor_units)} would bring {who} spending over the last "
                f"{window} to {money(spent + total.minor_units)}, over the limit of {money(cap)}.",
                f"policy.{scope}_{period}_cap",
                (
                    ("scope", scope),
                    ("limit_minor", str(cap)),
                    ("spent_minor", str(spent)),
                    ("total_minor", str(total.minor_units)),
                    ("currency", total.currency),
                    ("action", on_limit.value),
                ),
            )
        )
    return findings


def _quiet_hours_finding(quiet: QuietHours, now: datetime, time_zone: str) -> Reason | None:
    start, end = quiet.start_minute, quiet.end_minute
    if start == end:
        # An empty window, not a 24 h one: "from 22:00 to 22:00" is how a UI clears quiet hours.
        return None
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument(f"household.time_zone {time_zone!r} is not a known IANA time zone") from exc
    # Wall-clock time in the household, so quiet hours follow DST the way the family's clocks do.
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    # End is exclusive, so 22:00-07:00 lets a purchase through at 07:00 sharp.
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    return _limit_finding(
        quiet.action,
        ReasonCode.QUIET_HOURS,
        f"Purchases are paused during quiet hours, {_hhmm(start)} to {_hhmm(end)} household time; "
        f"it is {_hhmm(minute)} there now.",
        "policy.quiet_hours",
        (
            ("start_minute", str(start)),
            ("end_minute", str(end)),
            ("local_time", _hhmm(minute)),
            ("time_zone", time_zone),
            ("action", quiet.action.value),
        ),
    )


def _challenge_required(rule: RoleRule, role: Role) -> Reason | None:
    if rule.mode is not PurchaseMode.WITH_CHALLENGE:
        return None
    phrase = _METHOD_PHRASE.get(rule.challenge_method, "a challenge")
    return needs_challenge(
        ReasonCode.CHALLENGE_REQUIRED,
        f"Purchases by {_plural(role)} need {phrase}.",
        "policy.role_mode",
        (("role", role.value), ("method", rule.challenge_method.value)),
    )


def _low_value_exemption(policy: Policy, order: Order, spend: SpendSnapshot) -> Reason | None:
    exemption = policy.low_value_exemption
    if exemption is None:
        return None
    total = order.total.minor_units
    # per_order_max_minor 0 disables the exemption rather than exempting free orders: a zero
    # threshold reads as "off" to a parent, and failing towards a challenge is the safe side.
    if exemption.per_order_max_minor <= 0 or total > exemption.per_order_max_minor:
        return None
    if spend.exempt_since_last_challenge_minor + total > exemption.cumulative_max_minor:
        return None

    def money(minor: int) -> str:
        return format_money(Money(minor, order.total.currency))

    return permit(
        ReasonCode.LOW_VALUE_EXEMPT,
        f"This order of {money(total)} is small enough to go through without a challenge "
        f"(up to {money(exemption.per_order_max_minor)} per order and "
        f"{money(exemption.cumulative_max_minor)} in total between challenges).",
        "policy.low_value_exemption",
        (
            ("per_order_max_minor", str(exemption.per_order_max_minor)),
            ("cumulative_max_minor", str(exemption.cumulative_max_minor)),
            ("exempt_spent_minor", str(spend.exempt_since_last_challenge_minor)),
            ("total_minor", str(total)),
            ("currency", order.total.currency),
        ),
    )
