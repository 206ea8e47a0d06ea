"""Webhook signatures: what the guard sends, and the check a receiver runs before trusting a delivery.

Every delivery is an HTTP POST of the event as JSON (`wire_body`) with three headers:

    PurchaseGuard-Event-Id:   the event's id (monotonic per household; de-duplicate on it)
    PurchaseGuard-Timestamp:  Unix seconds when this attempt was signed
    PurchaseGuard-Signature:  v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>

The secret is the one SetWebhook returned (once). A receiver recomputes the HMAC over the raw body
exactly as received and compares in constant time (a forgery fails), refuses a timestamp more than
`tolerance_s` away from its own clock (an old delivery replayed fails), and remembers event ids it
has processed (delivery is at least once: the same event may arrive again after a retry or a crash).
`verify_delivery` does the first two; docs/api.md shows it in a receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from purchase_guard.domain import Event
from purchase_guard.serial import format_ts
from purchase_guard.store.codec import order_to_dict

EVENT_ID_HEADER = "PurchaseGuard-Event-Id"
TIMESTAMP_HEADER = "PurchaseGuard-Timestamp"
SIGNATURE_HEADER = "PurchaseGuard-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


class ForgedDelivery(ValueError):
    """The delivery is not signed with the endpoint's secret, or its timestamp is out of range."""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def event_to_wire(event: Event) -> dict[str, Any]:
    """The event as the webhook JSON (and the proto Event's JSON mapping names)."""
    return {
        "event_id": event.event_id,
        "household_id": event.household_id,
        "kind": event.kind.value,
        "occurred_at": format_ts(event.occurred_at),
        "decision_id": event.decision_id,
        "challenge_id": event.challenge_id,
        "member_id": event.member_id,
        "device_id": event.device_id,
        "outcome": None if event.outcome is None else event.outcome.value,
        "reasons": [r.value for r in event.reasons],
        "order": None if event.order is None else order_to_dict(event.order),
        "message": event.message,
    }


def wire_body(event: Event) -> bytes:
    return json.dumps(event_to_wire(event), sort_keys=True, separators=(",", ":")).encode()


def signed_headers(secret: str, event: Event, body: bytes, now_s: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if now_s is None else now_s
    return {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: str(event.event_id),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    raise ForgedDelivery(f"missing {name} header")


def verify_delivery(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> dict[str, Any]:
    """The delivered event (parsed JSON) if `body` is signed with `secret` within `tolerance_s` of now;
    raises ForgedDelivery otherwise. Receivers should also drop event ids they have processed."""
    raw_ts = _header(headers, TIMESTAMP_HEADER)
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise ForgedDelivery("the timestamp is not an integer") from None
    now = time.time() if now_s is None else now_s
    if abs(now - timestamp) > tolerance_s:
        raise ForgedDelivery("the timestamp is too far from now (an old delivery replayed?)")
    given = _header(headers, SIGNATURE_HEADER)
    if not hmac.compare_digest(given.encode(), signature(secret, timestamp, body).encode()):
        raise ForgedDelivery("the signature does not match")
    event: dict[str, Any] = json.loads(body)
    if str(event.get("event_id")) != _header(headers, EVENT_ID_HEADER):
        raise ForgedDelivery("the event id header does not match the body")
    return event
