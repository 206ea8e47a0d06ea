"""The masked audit record: what it holds, and what it must never hold."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from purchase_guard.audit.chain import canonical_json
from purchase_guard.audit.records import MASKED_KEYS, audit_body, is_masked_key
from purchase_guard.domain import (
    ChallengeInfo,
    ChallengeMethod,
    Decision,
    Effect,
    LineItem,
    Money,
    Order,
    Outcome,
    Reason,
    ReasonCode,
    Role,
    SpeakerResult,
)
from purchase_guard.errors import GuardError

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DIGITS = "582913"


def order() -> Order:
    items = (
        LineItem("sku-a", "AA batteries (secret title)", "household", 2, Money(450, "EUR")),
        LineItem("sku-b", "Game", "games", 1, Money(5999, "EUR")),
    )
    return Order(items, Money(6899, "EUR"), "shop-1")


def decision(**changes: object) -> Decision:
    base = Decision(
        decision_id="dec_1",
        household_id="hh_1",
        kind="evaluate",
        request_id="req_1",
        device_id="dev_1",
        outcome=Outcome.CHALLENGE,
        reasons=(
            Reason(
                ReasonCode.CHALLENGE_REQUIRED,
                "over the limit",
                (("limit", "5000"),),
                Effect.CHALLENGE,
                "policy.max_order",
            ),
        ),
        speaker=SpeakerResult("mem_1", Role.TEEN, 0.72, 0.7, True, 0.1, "ge2e-v1"),
        policy_revision=4,
        total=Money(6899, "EUR"),
        decided_at=T0,
        challenge=ChallengeInfo(
            "chl_1",
            ChallengeMethod.RANDOM_DIGITS,
            f"Please say {DIGITS}",
            DIGITS,
            T0 + timedelta(minutes=5),
            3,
        ),
        member_id="mem_1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_record_holds_what_a_reviewer_needs() -> None:
    """The record names decision, device, outcome, reasons, scores, policy revision, order and challenge."""
    record = json.loads(audit_body(decision(), order(), {"pipeline": "v1"}))
    assert record["decision_id"] == "dec_1"
    assert record["kind"] == "evaluate"
    assert record["request_id"] == "req_1"
    assert record["device_id"] == "dev_1"
    assert record["outcome"] == "CHALLENGE"
    assert record["reasons"] == [
        {
            "code": "CHALLENGE_REQUIRED",
            "message": "over the limit",
            "detail": {"limit": "5000"},
            "effect": "CHALLENGE",
            "rule": "policy.max_order",
        }
    ]
    assert record["determining"] == ["CHALLENGE_REQUIRED"]
    assert record["speaker"]["member_id"] == "mem_1"
    assert record["speaker"]["score"] == 0.72
    assert record["speaker"]["threshold"] == 0.7
    assert record["speaker"]["child_likelihood"] == 0.1
    assert record["speaker"]["encoder"] == "ge2e-v1"
    assert record["policy_revision"] == 4
    assert record["order"]["merchant"] == "shop-1"
    assert record["order"]["items"][0] == {
        "sku": "sku-a",
        "category": "household",
        "quantity": 2,
        "unit_price_minor": 450,
        "amount_minor": 900,
    }
    assert record["challenge"]["challenge_id"] == "chl_1"
    assert record["challenge"]["method"] == "RANDOM_DIGITS"
    assert record["extra"] == {"pipeline": "v1"}


def test_record_never_holds_the_digits_or_item_titles() -> None:
    """Neither the digits to repeat nor the prompt carrying them reach the record; nor do free-text titles."""
    body = audit_body(decision(), order(), {})
    assert DIGITS not in body
    assert "Please say" not in body
    assert "secret title" not in body


def test_body_is_canonical_json() -> None:
    """The body is canonical JSON, so the same decision always hashes the same."""
    body = audit_body(decision(), order(), {"b": "1", "a": "2"})
    assert canonical_json(json.loads(body)) == body
    assert audit_body(decision(), order(), {"a": "2", "b": "1"}) == body


def test_record_without_order_speaker_or_challenge() -> None:
    """Missing parts are null rather than absent."""
    record = json.loads(audit_body(decision(speaker=None, challenge=None), None, {}))
    assert record["order"] is None
    assert record["speaker"] is None
    assert record["challenge"] is None


def test_non_finite_scores_are_null() -> None:
    """A NaN or infinite score is recorded as null: strict JSON has no such numbers."""
    speaker = SpeakerResult(None, None, float("nan"), float("inf"), False, -1.0, "ge2e-v1", usable=False)
    record = json.loads(audit_body(decision(speaker=speaker), None, {}))
    assert record["speaker"]["score"] is None
    assert record["speaker"]["threshold"] is None
    assert record["speaker"]["child_likelihood"] == -1.0


@pytest.mark.parametrize(
    "key",
    [
        "pin",
        "PIN",
        "user_pin",
        "pin-code",
        "rawAudio",
        "audio_b64",
        "embedding",
        "digits_to_repeat",
        "spokenDigits",
    ],
)
def test_masked_keys_in_extra_are_refused(key: str) -> None:
    """A denylisted key in `extra`, in any spelling, raises; neither key nor value is written."""
    with pytest.raises(GuardError, match="masked key") as caught:
        audit_body(decision(), None, {key: "1234"})
    assert "1234" not in str(caught.value)


def test_masked_keys_in_reason_detail_are_refused() -> None:
    """The denylist also covers keys that arrive inside reason details."""
    reason = Reason(ReasonCode.PIN_INCORRECT, "wrong PIN", (("pin", "1234"),))
    with pytest.raises(GuardError, match="masked key"):
        audit_body(decision(reasons=(reason,)), None, {})


@pytest.mark.parametrize("key", ["shipping", "spinner", "merchant", "category", "n_utterances", "pipeline"])
def test_harmless_keys_pass(key: str) -> None:
    """Keys that merely contain a masked word's letters are allowed."""
    assert not is_masked_key(key)
    audit_body(decision(), None, {key: "x"})


def test_denylist_covers_the_secrets() -> None:
    """The denylist names PINs, audio, embeddings and spoken digits."""
    assert {"pin", "pin_hash", "audio", "embedding", "digits", "digits_to_repeat"} <= MASKED_KEYS
