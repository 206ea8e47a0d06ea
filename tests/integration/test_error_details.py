"""Refusals a program can read: google.rpc BadRequest field violations beside the message, end to end
over real gRPC, read back the way the CLI and the console read them."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from support.audio import wav_bytes

from purchase_guard.api.client import GuardClient
from purchase_guard.cli import print_refusal
from purchase_guard.console.guard_api import refusal_from_rpc

SILENCE = wav_bytes(np.zeros(16000 * 2, dtype=np.float32), 16000)


@pytest.fixture
def household(operator: GuardClient) -> str:
    hid: str = operator.create_household("Details", "America/New_York", "USD")["household"]["household_id"]
    return hid


def _refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_refused_enrollment_names_each_take_and_its_problem(
    operator: GuardClient, household: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three silent takes: INVALID_ARGUMENT whose BadRequest names utterances[0..2], each with a problem;
    the CLI prints every violation under the message."""
    member = operator.add_member(household, "Ann", "ADULT", True)["member"]["member_id"]
    exc = _refused(lambda: operator.enroll(household, member, [SILENCE] * 3))
    refusal = refusal_from_rpc(exc)
    assert refusal.code == "INVALID_ARGUMENT"
    assert [v.field for v in refusal.violations] == ["utterances[0]", "utterances[1]", "utterances[2]"]
    assert all(v.description for v in refusal.violations)
    print_refusal(exc)
    err = capsys.readouterr().err
    assert "error: INVALID_ARGUMENT:" in err
    assert "  utterances[1]: " in err


def test_bad_policy_field_is_named(operator: GuardClient, household: str) -> None:
    """A negative cap in rule 0 is refused with a violation on rules[0].daily_cap_minor (what the console
    policy editor places next to the field)."""
    policy = {
        "rules": [
            {
                "role": "ADULT",
                "mode": "PURCHASE_ALLOWED",
                "daily_cap_minor": "-5",
                "on_limit": "LIMIT_DENY",
                "challenge_method": "SPOKEN_PIN",
            }
        ]
    }
    refusal = refusal_from_rpc(_refused(lambda: operator.set_policy(household, policy)))
    assert refusal.code == "INVALID_ARGUMENT"
    assert [(v.field, v.description) for v in refusal.violations] == [
        ("rules[0].daily_cap_minor", "rules[0].daily_cap_minor must be >= 0")
    ]


def test_bad_order_field_is_named(operator: GuardClient, household: str) -> None:
    """An order in another currency than the household's names order.total.currency."""
    order = {
        "items": [
            {
                "sku": "s",
                "title": "t",
                "category": "c",
                "quantity": 1,
                "unit_price": {"minor_units": "100", "currency": "EUR"},
            }
        ],
        "total": {"minor_units": "100", "currency": "EUR"},
        "merchant": "m",
    }
    exc = _refused(lambda: operator.evaluate("r-1", household, "kitchen", order, SILENCE))
    refusal = refusal_from_rpc(exc)
    assert refusal.code == "INVALID_ARGUMENT"
    assert [v.field for v in refusal.violations] == ["order.total.currency"]


def test_a_refusal_without_a_field_has_no_details(operator: GuardClient) -> None:
    """NOT_FOUND carries only its message: details are for bad input, not invented elsewhere."""
    refusal = refusal_from_rpc(_refused(lambda: operator.get_household("hh_missing")))
    assert refusal.code in ("NOT_FOUND", "PERMISSION_DENIED")
    assert refusal.violations == ()
