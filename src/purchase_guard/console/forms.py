"""The policy editor's form, both ways, and where each of the guard's complaints belongs (pure).

The guard validates a policy (policy/validate.py) and is the authority on what is allowed; this
module only turns the policy (proto JSON mapping, as GuardClient speaks it) into form values a
parent can read (amounts in the household's currency, "19:00" for quiet hours) and back, and
refuses only what cannot be turned into a policy at all ("abc" as an amount). A negative cap is
sent as it is, so the parent sees the guard's own message for it.

The guard names a bad field by its path ("rules[2].max_order_minor must be >= 0"), in a google.rpc
BadRequest field violation when it sends one and at the start of its message in any case;
`errors_by_field` maps either to the form field, so the message appears next to the right box.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from purchase_guard.money import EXPONENTS

ROLES = ("ADULT", "TEEN", "CHILD", "GUEST")
ROLE_LABELS = {"ADULT": "Adults", "TEEN": "Teens (13-17)", "CHILD": "Children (under 13)", "GUEST": "Guests"}
NO_RULE = "NO_RULE"
MODES = (
    ("PURCHASE_ALLOWED", "May buy (within the limits below)"),
    ("PURCHASE_WITH_CHALLENGE", "Only after a challenge"),
    ("PURCHASE_NEVER", "Never"),
    (NO_RULE, "No rule (may not buy)"),
)
LIMIT_ACTIONS = (("LIMIT_CHALLENGE", "Ask for the challenge"), ("LIMIT_DENY", "Refuse"))
CHALLENGE_METHODS = (
    ("SPOKEN_PIN", "Spoken PIN (digits and voice must match an adult)"),
    ("RANDOM_DIGITS", "Repeat random digits (voice must match an adult)"),
    ("PARENT_APPROVAL", "A parent approves in this console"),
)
UNKNOWN_VOICE = (
    ("UNKNOWN_VOICE_PARENT_APPROVAL", "Ask a parent to approve (never bought without one)"),
    ("UNKNOWN_VOICE_GUEST_RULE", "Treat it as a guest (the guests' rule decides)"),
)
DEFAULT_UNKNOWN_VOICE = "UNKNOWN_VOICE_PARENT_APPROVAL"
VOICE_ADAPTATION = (
    ("VOICE_ADAPTATION_ON", "Learn from purchases a PIN or a parent confirmed"),
    ("VOICE_ADAPTATION_OFF", "Keep the enrolled voices as they are"),
)
DEFAULT_VOICE_ADAPTATION = "VOICE_ADAPTATION_ON"
_MAX_MINOR = 2**63 - 1
_AMOUNT = re.compile(r"^(-?)(\d+)(?:\.(\d+))?$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_RULE_FIELDS = {
    "mode": "mode",
    "role": "mode",
    "max_order_minor": "max_order",
    "daily_cap_minor": "daily_cap",
    "monthly_cap_minor": "monthly_cap",
    "on_limit": "on_limit",
    "challenge_method": "challenge_method",
    "blocked_categories": "blocked_categories",
    "allowed_categories": "allowed_categories",
}
_TOP_FIELDS = {
    "household_daily_cap_minor": "household.daily_cap",
    "household_monthly_cap_minor": "household.monthly_cap",
    "blocked_categories": "household.blocked_categories",
    "quiet_hours": "quiet.enabled",
    "quiet_hours.start_minute": "quiet.start",
    "quiet_hours.end_minute": "quiet.end",
    "quiet_hours.action": "quiet.action",
    "low_value_exemption": "exemption.enabled",
    "low_value_exemption.per_order_max_minor": "exemption.per_order",
    "low_value_exemption.cumulative_max_minor": "exemption.cumulative",
    "unknown_voice": "household.unknown_voice",
    "voice_adaptation": "household.voice_adaptation",
}
_LABELS = {
    "mode": "Purchases",
    "max_order": "Per-order maximum",
    "daily_cap": "Daily cap",
    "monthly_cap": "Monthly cap",
    "on_limit": "When a limit is reached",
    "challenge_method": "Challenge",
    "blocked_categories": "Blocked categories",
    "allowed_categories": "Only these categories",
    "household": "Whole household",
    "quiet": "Quiet hours",
    "exemption": "Low-value exemption",
    "enabled": "On or off",
    "start": "From",
    "end": "Until",
    "action": "During quiet hours",
    "per_order": "Per-order limit",
    "cumulative": "Total since the last challenge",
}
# A field path at the start of a guard message: "rules[2].max_order_minor must be ...".
_PATH = re.compile(r"^(?:policy\.)?([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)*)\b")
_RULE_PATH = re.compile(r"^rules\[(\d+)\](?:\.([a-z_]+))?$")


@dataclass
class PolicyForm:
    """Values as the form shows them, by field name, plus what went wrong where."""

    values: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)
    # Errors that belong to no single field.
    general: list[str] = field(default_factory=list)
    # The roles in the order their rules were sent: the guard's rules[i] is roles_sent[i].
    roles_sent: tuple[str, ...] = ()

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.general


def field_label(name: str) -> str:
    """ "CHILD.max_order" -> "Children (under 13): Per-order maximum", for the error summary."""
    group, _, item = name.partition(".")
    head = ROLE_LABELS.get(group) or _LABELS.get(group, group)
    return f"{head}: {_LABELS.get(item, item)}" if item else head


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency, 2)


def amount_text(minor: object, currency: str) -> str:
    """Minor units as the form shows them; 0 ("none") as an empty box."""
    value = int(str(minor or 0))
    if value == 0:
        return ""
    exp = exponent(currency)
    if exp == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"


def parse_amount(text: str, currency: str) -> int:
    """An amount typed in the currency's major unit ("170", "170.5", "170.50") as minor units;
    blank is 0 (no limit). Raises ValueError with a sentence for the parent."""
    raw = text.strip().replace(" ", "")
    if not raw:
        return 0
    m = _AMOUNT.match(raw)
    exp = exponent(currency)
    example = "25" if exp == 0 else "25." + "0" * exp
    if m is None:
        raise ValueError(f"enter an amount in {currency} using digits and a decimal point, e.g. {example}")
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    if len(frac) > exp:
        raise ValueError(
            f"{currency} amounts have {exp} decimal places" if exp else f"{currency} amounts have no decimals"
        )
    value = int(whole) * int(10**exp) + int(frac.ljust(exp, "0") or "0")
    if value > _MAX_MINOR:
        raise ValueError("that amount is too large")
    return -value if sign else value


def time_text(minute: object) -> str:
    m = int(str(minute or 0))
    return f"{m // 60:02d}:{m % 60:02d}"


def parse_time(text: str) -> int:
    m = _TIME.match(text.strip())
    if m is None:
        raise ValueError("enter a time as HH:MM, e.g. 21:30")
    return int(m.group(1)) * 60 + int(m.group(2))


def categories_text(values: Sequence[str] | None) -> str:
    return ", ".join(values or ())


def parse_categories(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]


def policy_to_form(policy: Mapping[str, Any], currency: str) -> PolicyForm:
    values: dict[str, str] = {}
    rules = {str(r.get("role")): r for r in policy.get("rules", [])}
    for role in ROLES:
        rule = rules.get(role)
        p = f"{role}."
        values[p + "mode"] = str(rule.get("mode", "PURCHASE_NEVER")) if rule is not None else NO_RULE
        rule = rule or {}
        values[p + "max_order"] = amount_text(rule.get("max_order_minor"), currency)
        values[p + "daily_cap"] = amount_text(rule.get("daily_cap_minor"), currency)
        values[p + "monthly_cap"] = amount_text(rule.get("monthly_cap_minor"), currency)
        on_limit = str(rule.get("on_limit", "LIMIT_DENY"))
        values[p + "on_limit"] = on_limit if on_limit in dict(LIMIT_ACTIONS) else "LIMIT_DENY"
        method = str(rule.get("challenge_method", "PARENT_APPROVAL"))
        values[p + "challenge_method"] = method if method in dict(CHALLENGE_METHODS) else "PARENT_APPROVAL"
        values[p + "blocked_categories"] = categories_text(rule.get("blocked_categories"))
        values[p + "allowed_categories"] = categories_text(rule.get("allowed_categories"))
    values["household.daily_cap"] = amount_text(policy.get("household_daily_cap_minor"), currency)
    values["household.monthly_cap"] = amount_text(policy.get("household_monthly_cap_minor"), currency)
    values["household.blocked_categories"] = categories_text(policy.get("blocked_categories"))
    unknown = str(policy.get("unknown_voice", DEFAULT_UNKNOWN_VOICE))
    values["household.unknown_voice"] = unknown if unknown in dict(UNKNOWN_VOICE) else DEFAULT_UNKNOWN_VOICE
    adapt = str(policy.get("voice_adaptation", DEFAULT_VOICE_ADAPTATION))
    values["household.voice_adaptation"] = (
        adapt if adapt in dict(VOICE_ADAPTATION) else DEFAULT_VOICE_ADAPTATION
    )
    quiet = policy.get("quiet_hours")
    values["quiet.enabled"] = "on" if quiet is not None else ""
    if quiet is None:
        # What the boxes offer when a parent switches quiet hours on.
        quiet = {"start_minute": 21 * 60, "end_minute": 7 * 60, "action": "LIMIT_DENY"}
    values["quiet.start"] = time_text(quiet.get("start_minute", 0))
    values["quiet.end"] = time_text(quiet.get("end_minute", 0))
    values["quiet.action"] = str(quiet.get("action", "LIMIT_DENY"))
    exemption = policy.get("low_value_exemption")
    values["exemption.enabled"] = "on" if exemption is not None else ""
    exemption = exemption or {}
    values["exemption.per_order"] = amount_text(exemption.get("per_order_max_minor"), currency)
    values["exemption.cumulative"] = amount_text(exemption.get("cumulative_max_minor"), currency)
    values["revision"] = str(policy.get("revision", "0"))
    return PolicyForm(values)


def form_to_policy(submitted: Mapping[str, str], currency: str) -> tuple[dict[str, Any], PolicyForm]:
    """The policy the form describes, and the form as submitted (with the values it could not read)."""
    form = PolicyForm({k: v for k, v in submitted.items() if k != "csrf_token"})
    get = form.values.get

    def amount(name: str) -> int:
        try:
            return parse_amount(get(name, ""), currency)
        except ValueError as exc:
            form.add(name, str(exc))
            return 0

    def choice(name: str, options: Sequence[tuple[str, str]]) -> str:
        value = get(name, "")
        if value not in dict(options):
            form.add(name, "choose one of the options")
        return value

    rules: list[dict[str, Any]] = []
    sent: list[str] = []
    for role in ROLES:
        p = f"{role}."
        mode = choice(p + "mode", MODES)
        if mode == NO_RULE:
            continue
        rules.append(
            {
                "role": role,
                "mode": mode,
                "max_order_minor": str(amount(p + "max_order")),
                "daily_cap_minor": str(amount(p + "daily_cap")),
                "monthly_cap_minor": str(amount(p + "monthly_cap")),
                "on_limit": choice(p + "on_limit", LIMIT_ACTIONS),
                "challenge_method": choice(p + "challenge_method", CHALLENGE_METHODS),
                "blocked_categories": parse_categories(get(p + "blocked_categories", "")),
                "allowed_categories": parse_categories(get(p + "allowed_categories", "")),
            }
        )
        sent.append(role)
    policy: dict[str, Any] = {
        "rules": rules,
        "household_daily_cap_minor": str(amount("household.daily_cap")),
        "household_monthly_cap_minor": str(amount("household.monthly_cap")),
        "blocked_categories": parse_categories(get("household.blocked_categories", "")),
        "unknown_voice": choice("household.unknown_voice", UNKNOWN_VOICE),
        "voice_adaptation": choice("household.voice_adaptation", VOICE_ADAPTATION),
    }
    if get("quiet.enabled"):
        quiet: dict[str, Any] = {"action": choice("quiet.action", LIMIT_ACTIONS)}
        for key, name in (("start_minute", "quiet.start"), ("end_minute", "quiet.end")):
            try:
                quiet[key] = parse_time(get(name, ""))
            except ValueError as exc:
                form.add(name, str(exc))
        policy["quiet_hours"] = quiet
    if get("exemption.enabled"):
        policy["low_value_exemption"] = {
            "per_order_max_minor": str(amount("exemption.per_order")),
            "cumulative_max_minor": str(amount("exemption.cumulative")),
        }
    form.roles_sent = tuple(sent)
    return policy, form


def field_for_path(path: str, roles_sent: Sequence[str]) -> str | None:
    """The form field a guard field path ("rules[1].daily_cap_minor", "quiet_hours.end_minute") names."""
    path = path.removeprefix("policy.")
    m = _RULE_PATH.match(path)
    if m is not None:
        index = int(m.group(1))
        if index >= len(roles_sent):
            return None
        sub = _RULE_FIELDS.get(m.group(2) or "mode")
        return f"{roles_sent[index]}.{sub}" if sub else f"{roles_sent[index]}.mode"
    return _TOP_FIELDS.get(path)


def errors_by_field(form: PolicyForm, message: str, violations: Sequence[tuple[str, str]]) -> PolicyForm:
    """Puts the guard's refusal next to the fields it names: each BadRequest violation when there
    are any, else the field path the message starts with; what fits no field stays general."""
    placed = False
    for path, description in violations:
        name = field_for_path(path, form.roles_sent)
        if name is None:
            form.general.append(f"{path}: {description}")
        else:
            form.add(name, description)
        placed = True
    if not placed:
        m = _PATH.match(message)
        name = field_for_path(m.group(1), form.roles_sent) if m else None
        if name is None:
            form.general.append(message)
        else:
            form.add(name, message)
    return form
