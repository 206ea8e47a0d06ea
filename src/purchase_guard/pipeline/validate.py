"""Input validation for decision requests: pure, raises InvalidArgument naming the field at fault."""

from __future__ import annotations

import hashlib
import json
import unicodedata

from purchase_guard.domain import AudioInput, Order
from purchase_guard.errors import InvalidArgument
from purchase_guard.money import is_currency

MAX_ITEMS = 100
MAX_QUANTITY = 1000
# Far above any household purchase, far below int64 overflow when multiplied and summed.
MAX_MINOR_UNITS = 10**12


def _text(value: str, field: str, *, required: bool, limit: int = 200) -> None:
    if required and not value.strip():
        raise InvalidArgument(f"{field} is required", field=field)
    if len(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters", field=field)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise InvalidArgument(f"{field} contains control characters", field=field)


def validate_order(order: Order, household_currency: str) -> Order:
    if not order.items:
        raise InvalidArgument("order.items must contain at least one line item", field="order.items")
    if len(order.items) > MAX_ITEMS:
        raise InvalidArgument(
            f"order.items has {len(order.items)} lines; at most {MAX_ITEMS} are accepted", field="order.items"
        )
    _text(order.merchant, "order.merchant", required=True)
    if not is_currency(order.total.currency):
        raise InvalidArgument(
            f"order.total.currency {order.total.currency!r} is not an ISO 4217 code",
            field="order.total.currency",
        )
    if order.total.currency != household_currency:
        raise InvalidArgument(
            f"order.total.currency is {order.total.currency} but the household uses {household_currency}",
            field="order.total.currency",
        )
    if not 0 <= order.total.minor_units <= MAX_MINOR_UNITS:
        raise InvalidArgument(
            "order.total.minor_units must be between 0 and 10^12", field="order.total.minor_units"
        )
    computed = 0
    for i, item in enumerate(order.items):
        where = f"order.items[{i}]"
        _text(item.sku, f"{where}.sku", required=True, limit=128)
        _text(item.title, f"{where}.title", required=False)
        _text(item.category, f"{where}.category", required=True, limit=64)
        if not 1 <= item.quantity <= MAX_QUANTITY:
            raise InvalidArgument(
                f"{where}.quantity must be 1-{MAX_QUANTITY}, got {item.quantity}", field=f"{where}.quantity"
            )
        if item.unit_price.currency != order.total.currency:
            raise InvalidArgument(
                f"{where}.unit_price.currency {item.unit_price.currency!r} differs from the order total's "
                f"{order.total.currency}",
                field=f"{where}.unit_price.currency",
            )
        if not 0 <= item.unit_price.minor_units <= MAX_MINOR_UNITS:
            raise InvalidArgument(
                f"{where}.unit_price.minor_units must be between 0 and 10^12",
                field=f"{where}.unit_price.minor_units",
            )
        computed += item.quantity * item.unit_price.minor_units
    if computed != order.total.minor_units:
        raise InvalidArgument(
            f"order.total.minor_units is {order.total.minor_units} but the line items add up to {computed}",
            field="order.total.minor_units",
        )
    return order


def request_digest(
    kind: str, household_id: str, device_id: str, order: Order, audio: AudioInput, extra: str = ""
) -> str:
    """Fingerprint of a request, so a reused request id with a different request is refused."""
    payload = {
        "kind": kind,
        "household": household_id,
        "device": device_id,
        "merchant": order.merchant,
        "total": [order.total.minor_units, order.total.currency],
        "items": [
            [i.sku, i.title, i.category, i.quantity, i.unit_price.minor_units, i.unit_price.currency]
            for i in order.items
        ],
        "audio": hashlib.sha256((audio.encoded or b"") + (audio.pcm16 or b"")).hexdigest(),
        "rate": audio.sample_rate_hz,
        "extra": hashlib.sha256(extra.encode()).hexdigest(),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()
