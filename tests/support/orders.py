"""The order and reason helpers the server-level suites share."""

from __future__ import annotations

from typing import Any


def order(total: int) -> dict[str, Any]:
    """A one-item order of `total` minor units, in the client's dict form."""
    return {
        "items": [
            {
                "sku": "sku-1",
                "title": "Thing",
                "category": "household",
                "quantity": 1,
                "unit_price": {"minor_units": str(total), "currency": "USD"},
            }
        ],
        "total": {"minor_units": str(total), "currency": "USD"},
        "merchant": "example-shop",
    }


def codes(resp: dict[str, Any]) -> set[str]:
    """The reason codes of a decision in the client's dict form."""
    return {r["code"] for r in resp.get("reasons", [])}
