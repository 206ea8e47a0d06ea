"""The pure parts of events: which decisions become which events, the retry back-off, webhook URL
rules and the signature a receiver checks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from purchase_guard.domain import (
    Challenge,
    ChallengeMethod,
    ChallengeStatus,
    Decision,
    EventKind,
    LineItem,
    Money,
    Notification,
    Order,
    Outcome,
    ReasonCode,
    forbid,
    permit,
)
from purchase_guard.errors import InvalidArgument
from purchase_guard.events.derive import approval_expired, decision_events
from purchase_guard.events.signing import (
    ForgedDelivery,
    signature,
    signed_headers,
    verify_delivery,
    wire_body,
)
from purchase_guard.events.worker import Attempt, backoff_s
from purchase_guard.household.service import webhook_url

NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
ORDER = Order(
    (LineItem("sku", "Dollhouse", "toys", 1, Money(17000, "USD")),), Money(17000, "USD"), "toy-shop"
)


def decision(outcome: Outcome, *reasons: object, kind: str = "evaluate") -> Decision:
    return Decision(
        "dec_1",
        "hh_1",
        kind,
        "req-1",
        "kitchen",
        outcome,
        tuple(reasons),
        None,
        1,
        ORDER.total,
        NOW,  # type: ignore[arg-type]
    )


def challenge(method: ChallengeMethod, status: ChallengeStatus = ChallengeStatus.PENDING) -> Challenge:
    return Challenge(
        "chl_1",
        "hh_1",
        "dec_1",
        method,
        "digest",
        ORDER,
        "mem_kid",
        status,
        5,
        NOW + timedelta(hours=24),
        NOW,
    )


def test_an_allow_is_a_purchase_allowed_event_with_its_reasons() -> None:
    """ALLOW -> one purchase_allowed event naming the decision, with the determining codes only."""
    (event,) = decision_events(
        decision(Outcome.ALLOW, permit(ReasonCode.POLICY_ALLOWED, "ok", "policy")), ORDER
    )
    assert event.kind is EventKind.PURCHASE_ALLOWED
    assert event.decision_id == "dec_1"
    assert event.reasons == (ReasonCode.POLICY_ALLOWED,)
    assert event.dedup == "purchase_allowed:dec_1"


def test_a_parent_approval_challenge_is_an_approval_request_and_a_pin_one_is_not() -> None:
    """A new PARENT_APPROVAL challenge asks the parents; a SPOKEN_PIN challenge is no event."""
    d = decision(Outcome.CHALLENGE)
    (event,) = decision_events(d, ORDER, challenge(ChallengeMethod.PARENT_APPROVAL))
    assert event.kind is EventKind.APPROVAL_REQUESTED
    assert event.challenge_id == "chl_1"
    assert event.member_id == "mem_kid"
    assert decision_events(d, ORDER, challenge(ChallengeMethod.SPOKEN_PIN)) == ()


def test_approvals_broadcasts_and_notices() -> None:
    """An approval decision is approved/rejected; a broadcast forbid is broadcast_blocked; lock and PIN
    notices become their events; an ordinary DENY is nothing."""
    approved = decision_events(decision(Outcome.ALLOW, kind="approval"), ORDER)
    assert [e.kind for e in approved] == [EventKind.APPROVAL_APPROVED]
    rejected = decision_events(decision(Outcome.DENY, kind="approval"), ORDER)
    assert [e.kind for e in rejected] == [EventKind.APPROVAL_REJECTED]
    blocked = decision_events(
        decision(Outcome.DENY, forbid(ReasonCode.BROADCAST_MATCH, "b", "broadcast")), ORDER
    )
    assert [e.kind for e in blocked] == [EventKind.BROADCAST_BLOCKED]
    notices = tuple(
        Notification(f"ntf_{k}", "hh_1", k, "msg", None, NOW) for k in ("challenge_locked", "pin_throttled")
    )
    noticed = decision_events(
        decision(Outcome.DENY, forbid(ReasonCode.PIN_INCORRECT, "x", "c")), ORDER, None, notices
    )
    assert [e.kind for e in noticed] == [EventKind.CHALLENGE_LOCKED, EventKind.PIN_THROTTLED]
    assert decision_events(decision(Outcome.DENY, forbid(ReasonCode.SPEAKER_UNKNOWN, "x", "v")), ORDER) == ()


def test_an_expired_approval_is_keyed_on_its_challenge() -> None:
    """The expiry event's dedup is the challenge's, so two sweeps cannot queue it twice."""
    event = approval_expired(challenge(ChallengeMethod.PARENT_APPROVAL))
    assert event.kind is EventKind.APPROVAL_EXPIRED
    assert event.dedup == "approval_expired:chl_1"
    assert event.occurred_at == NOW + timedelta(hours=24)


def test_backoff_grows_jittered_and_capped() -> None:
    """Each delay lies in [d/2, d] for d = base * 2^(n-1), and never above the cap."""
    rng = random.Random(1)
    for n in range(1, 20):
        ceiling = min(60.0, 2.0 * 2 ** (n - 1))
        delay = backoff_s(n, 2.0, 60.0, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_which_answers_are_retried() -> None:
    """Timeouts (no status), 408, 429 and 5xx retry; 2xx delivers; other 4xx do neither."""
    assert all(Attempt(s).retryable for s in (0, 408, 429, 500, 503))
    assert not any(Attempt(s).retryable for s in (400, 401, 404, 410, 301))
    assert Attempt(204).delivered
    assert not Attempt(302).delivered


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "http://10.0.0.5/x",
        "ftp://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",
        "https:///nohost",
        "",
    ],
)
def test_webhook_urls_refused(url: str) -> None:
    """Plain http off the machine, other schemes, credentials in the URL, no host: refused, naming url."""
    with pytest.raises(InvalidArgument) as info:
        webhook_url(url)
    assert info.value.field == "url"


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/x", "http://127.0.0.1:8080/x", "http://[::1]/x", "http://localhost/x"]
)
def test_webhook_urls_accepted(url: str) -> None:
    """https anywhere, http to a loopback receiver."""
    assert webhook_url(url) == url


def test_signature_is_hmac_over_timestamp_and_body() -> None:
    """The header is v1=HMAC-SHA256(secret, ts + '.' + body); verify_delivery accepts exactly that."""
    event = decision_events(decision(Outcome.ALLOW), ORDER)[0]
    body = wire_body(event)
    headers = signed_headers("whsec_x", event, body, now_s=1_700_000_000)
    assert headers["PurchaseGuard-Signature"] == signature("whsec_x", 1_700_000_000, body)
    assert verify_delivery("whsec_x", headers, body, now_s=1_700_000_100)["kind"] == "purchase_allowed"
    with pytest.raises(ForgedDelivery):
        verify_delivery("whsec_x", headers, body, now_s=1_700_001_000)  # replayed 15 minutes later
    with pytest.raises(ForgedDelivery):
        verify_delivery("whsec_x", {**headers, "PurchaseGuard-Event-Id": "99"}, body, now_s=1_700_000_000)
    assert b"audio" not in body


def test_event_kinds_mirror_the_proto() -> None:
    """Every EventKind has the proto value EVENT_<NAME> and the proto has no other (but unspecified)."""
    from purchase_guard._gen.purchaseguard.v1 import admin_pb2

    names = {v.name for v in admin_pb2.DESCRIPTOR.enum_types_by_name["EventKind"].values if v.number}
    assert names == {f"EVENT_{k.name}" for k in EventKind}
