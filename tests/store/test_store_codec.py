"""The store codec: exact JSON round-trips of domain values and the timestamp format."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purchase_guard.domain import (
    Challenge,
    ChallengeInfo,
    ChallengeMethod,
    ChallengeStatus,
    Decision,
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
    SpeakerResult,
)
from purchase_guard.serial import dumps, format_ts, parse_ts
from purchase_guard.store import codec

text = st.text(max_size=12)
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
minor = st.integers(min_value=-(2**62), max_value=2**62)
zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])
instants = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones)
categories = st.frozensets(text, max_size=3)

money = st.builds(Money, minor_units=minor, currency=st.sampled_from(["EUR", "USD", "JPY"]))
line_items = st.builds(
    LineItem, sku=ids, title=text, category=text, quantity=st.integers(0, 99), unit_price=money
)
orders = st.builds(
    Order, items=st.tuples(line_items) | st.tuples(line_items, line_items), total=money, merchant=text
)
reasons = st.builds(
    Reason,
    code=st.sampled_from(ReasonCode),
    message=text,
    detail=st.lists(st.tuples(text, text), max_size=3).map(tuple),
)
speakers = st.builds(
    SpeakerResult,
    member_id=st.none() | ids,
    role=st.none() | st.sampled_from(Role),
    score=finite,
    threshold=finite,
    verified=st.booleans(),
    child_likelihood=finite,
    encoder=text,
    usable=st.booleans(),
    problem=text,
)
challenge_infos = st.builds(
    ChallengeInfo,
    challenge_id=ids,
    method=st.sampled_from(ChallengeMethod),
    prompt=text,
    digits_to_repeat=st.text(alphabet="0123456789", max_size=8),
    expires_at=instants,
    attempts_left=st.integers(0, 10),
)
decisions = st.builds(
    Decision,
    decision_id=ids,
    household_id=ids,
    kind=st.sampled_from(["evaluate", "confirm"]),
    request_id=ids,
    device_id=text,
    outcome=st.sampled_from(Outcome),
    reasons=st.lists(reasons, max_size=3).map(tuple),
    speaker=st.none() | speakers,
    policy_revision=st.integers(0, 10**6),
    total=money,
    decided_at=instants,
    challenge=st.none() | challenge_infos,
    member_id=st.none() | ids,
)
role_rules = st.builds(
    RoleRule,
    role=st.sampled_from(Role),
    mode=st.sampled_from(PurchaseMode),
    max_order_minor=minor,
    daily_cap_minor=minor,
    monthly_cap_minor=minor,
    on_limit=st.sampled_from(LimitAction),
    challenge_method=st.sampled_from(ChallengeMethod),
    blocked_categories=categories,
    allowed_categories=categories,
)
policies = st.builds(
    Policy,
    rules=st.lists(role_rules, max_size=4).map(tuple),
    household_daily_cap_minor=minor,
    household_monthly_cap_minor=minor,
    blocked_categories=categories,
    quiet_hours=st.none()
    | st.builds(QuietHours, st.integers(0, 1439), st.integers(0, 1439), st.sampled_from(LimitAction)),
    low_value_exemption=st.none() | st.builds(LowValueExemption, minor, minor),
    revision=st.integers(0, 10**6),
)
challenges = st.builds(
    Challenge,
    challenge_id=ids,
    household_id=ids,
    decision_id=ids,
    method=st.sampled_from(ChallengeMethod),
    order_digest=text,
    order=orders,
    member_id=st.none() | ids,
    status=st.sampled_from(ChallengeStatus),
    attempts_left=st.integers(0, 10),
    expires_at=instants,
    created_at=instants,
    expected_digits_hash=text,
    digits_to_repeat=st.text(alphabet="0123456789", max_size=8),
    resolved_by=st.none() | ids,
)


@given(decisions)
def test_decision_round_trips(decision: Decision) -> None:
    """Any Decision survives to_json/from_json unchanged, with its times in UTC."""
    back = codec.decision_from_json(codec.decision_to_json(decision))
    assert back == decision
    assert back.decided_at.utcoffset() == timedelta(0)


@given(policies)
def test_policy_round_trips(policy: Policy) -> None:
    """Any Policy survives to_json/from_json unchanged, category sets included."""
    assert codec.policy_from_json(codec.policy_to_json(policy)) == policy


@given(challenges)
def test_challenge_round_trips(challenge: Challenge) -> None:
    """Any Challenge, with its Order, survives to_json/from_json unchanged."""
    assert codec.challenge_from_json(codec.challenge_to_json(challenge)) == challenge


@given(policies)
def test_equal_values_give_equal_json(policy: Policy) -> None:
    """Encoding is deterministic: sets are sorted, so rebuilding the value gives the same text."""
    rebuilt = dataclasses.replace(policy, blocked_categories=frozenset(sorted(policy.blocked_categories)))
    assert codec.policy_to_json(rebuilt) == codec.policy_to_json(policy)


@pytest.mark.parametrize(
    ("kind", "values", "encode"),
    [
        (Decision, decisions, codec.decision_to_dict),
        (Policy, policies, codec.policy_to_dict),
        (Challenge, challenges, codec.challenge_to_dict),
        (RoleRule, role_rules, codec.role_rule_to_dict),
        (SpeakerResult, speakers, codec.speaker_to_dict),
        (ChallengeInfo, challenge_infos, codec.challenge_info_to_dict),
        (Order, orders, codec.order_to_dict),
        (LineItem, line_items, codec.line_item_to_dict),
        (Reason, reasons, codec.reason_to_dict),
        (Money, money, codec.money_to_dict),
    ],
)
@settings(max_examples=5)
@given(data=st.data())
def test_codec_covers_every_field(
    kind: type,
    values: st.SearchStrategy[object],
    encode: Callable[[Any], dict[str, Any]],
    data: st.DataObject,
) -> None:
    """Each encoder writes exactly the dataclass's fields: a new domain field cannot be dropped silently."""
    assert set(encode(data.draw(values))) == {f.name for f in dataclasses.fields(kind)}


def test_timestamps_are_fixed_width_utc() -> None:
    """format_ts writes UTC with microseconds and a Z, zero-padded to a fixed width."""
    when = datetime(987, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=1)))
    assert format_ts(when) == "0987-01-02T02:04:05.000006Z"
    assert parse_ts("0987-01-02T02:04:05.000006Z") == when


@given(instants, instants)
def test_timestamp_text_order_is_time_order(a: datetime, b: datetime) -> None:
    """Comparing formatted timestamps as text gives the same answer as comparing the instants."""
    assert (format_ts(a) < format_ts(b)) == (a < b)
    assert parse_ts(format_ts(a)) == a


def test_naive_datetimes_are_rejected() -> None:
    """A naive datetime cannot be stored: its instant is unknown."""
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="offset"):
        parse_ts("2026-01-01T00:00:00")


def test_json_is_strict() -> None:
    """Non-finite floats are refused, since PostgreSQL's JSON types reject them."""
    speaker = SpeakerResult(None, None, float("nan"), 0.5, False, -1.0, "ge2e")
    with pytest.raises(ValueError, match="JSON"):
        dumps(codec.speaker_to_dict(speaker))
    assert json.loads(dumps({"b": 1, "a": [1.5]})) == {"a": [1.5], "b": 1}
