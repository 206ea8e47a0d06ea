"""The shape of every id a caller sends (household, member, device, request, challenge).

Below every package that takes ids, so the pipeline, the household service, privacy and the
rate limiter all accept exactly the same ones.
"""

from __future__ import annotations

import re

from purchase_guard.errors import InvalidArgument

__all__ = ["ID_PATTERN", "is_valid_id", "validate_id"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.match(value) is not None


def validate_id(value: str, field: str) -> str:
    """`value` unchanged, or InvalidArgument naming `field` and the accepted shape."""
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if not ID_PATTERN.match(value):
        raise InvalidArgument(
            f"{field} must be 1-128 characters of letters, digits, '.', '_', ':' or '-'", field=field
        )
    return value
