"""Digests that bind a challenge to exactly one order and to exactly one set of spoken digits.

A challenge answered for "2 x batteries" must not approve "2 x gift cards": the challenge stores
`order_digest(...)`, and Confirm recomputes it from the order it is given. The encoding is JSON
with sorted keys and fixed separators over NFC-normalised strings, so the same order always gives
the same bytes (whatever Unicode form or item order the client used) and two different orders
never do (JSON quoting makes field boundaries unambiguous, unlike joining with a separator).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import unicodedata

from purchase_guard.challenge.pin import normalize_spoken_digits
from purchase_guard.domain import LineItem, Money, Order

__all__ = ["digits_digest", "digits_match", "issued_digits_digest", "order_digest"]

# Version tags: a future change of encoding gets a new tag instead of silently colliding with v1.
_ORDER_TAG = "purchase-guard/order-digest/v1"
_DIGITS_TAG = b"purchase-guard/digits-digest/v1\x00"


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _money(money: Money) -> dict[str, object]:
    return {"minor_units": money.minor_units, "currency": _nfc(money.currency)}


def _item(item: LineItem) -> dict[str, object]:
    return {
        "sku": _nfc(item.sku),
        "title": _nfc(item.title),
        "category": _nfc(item.category),
        "quantity": item.quantity,
        "unit_price": _money(item.unit_price),
    }


def _canonical(value: object) -> str:
    # ensure_ascii=False keeps text as UTF-8 rather than \u escapes, so NFC alone decides equality.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def order_digest(household_id: str, order: Order) -> str:
    """sha256 hex over household, items (sorted), total, currency and merchant.

    Items are sorted by their own canonical encoding, a total order on every field, so the basket's
    order does not matter but every field of every item does. Text is compared as written (after
    NFC): a changed title or category casing counts as a different order, which errs towards a new
    challenge rather than towards approving something the parent did not see.
    """
    items = sorted(_canonical(_item(item)) for item in order.items)
    document = {
        "tag": _ORDER_TAG,
        "household_id": _nfc(household_id),
        # Embedded as already-canonical strings: sorting and encoding stay one well-defined step.
        "items": items,
        "total": _money(order.total),
        "merchant": _nfc(order.merchant),
    }
    return hashlib.sha256(_canonical(document).encode("utf-8")).hexdigest()


def digits_digest(challenge_id: str, digits: str) -> str:
    """HMAC-SHA256 of the (normalised) digits, keyed by the challenge id; hex.

    Keying by the challenge id salts each challenge, so equal digits in two challenges give unrelated
    digests. It is not secret: a few random digits are spoken aloud anyway, and live two minutes.
    """
    key = _DIGITS_TAG + _nfc(challenge_id).encode("utf-8")
    message = normalize_spoken_digits(digits).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def digits_match(challenge_id: str, expected_digest: str, candidate: str) -> bool:
    """True when the spoken `candidate` matches; constant-time compare, transcript separators ignored."""
    actual = digits_digest(challenge_id, candidate)
    # Compare bytes: compare_digest refuses non-ASCII str, and a corrupted stored digest must give
    # False, not an exception.
    return hmac.compare_digest(actual.encode("utf-8"), expected_digest.encode("utf-8"))


def issued_digits_digest(key: bytes, digits: str) -> str:
    """HMAC-SHA256 of random digits under a household key (`DecisionLog.digits_key`): what is kept
    to avoid asking a household for the same digits twice, without keeping the digits."""
    return hmac.new(
        key, b"purchase-guard/issued-digits/v1\x00" + digits.encode("ascii"), hashlib.sha256
    ).hexdigest()
