"""The one timestamp format and the one canonical JSON, shared by the audit chain and the store.

They sit below both on purpose: the audit chain hashes records written in these forms, and
the store writes rows in them, so neither may own them without the other importing it.

Timestamps are stored in UTC with microseconds in a fixed-width form
(`2026-05-09T07:35:25.000000Z`) so that text comparison orders them correctly in SQLite and
PostgreSQL alike. JSON is compact, key-sorted and strict: one text per value.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

__all__ = ["dumps", "format_ts", "parse_ts"]


def format_ts(when: datetime) -> str:
    """Fixed-width ISO-8601 UTC with microseconds; text order equals time order."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    u = when.astimezone(UTC)
    # Built by hand: strftime("%Y") does not zero-pad years below 1000 on every platform.
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}Z"
    )


def parse_ts(text: str) -> datetime:
    """Inverse of `format_ts`; rejects timestamps without an offset."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return parsed.astimezone(UTC)


def dumps(obj: object) -> str:
    """Compact, key-sorted, strict JSON (no NaN/Infinity, which PostgreSQL's JSON rejects)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
