"""Time and id sources, injected so tests can freeze them and decisions can be replayed."""

from __future__ import annotations

import secrets
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC now."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to; used by unit tests and by the replay test mode."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware start")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


class OffsetClock:
    """System time shifted by an adjustable offset: a controllable clock for a live test server."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._offset += delta


class IdSource(Protocol):
    def new_id(self, prefix: str) -> str: ...

    def digits(self, n: int) -> str: ...


class RandomIds:
    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{uuid.uuid4().hex}"

    def digits(self, n: int) -> str:
        return "".join(str(secrets.randbelow(10)) for _ in range(n))


class SequentialIds:
    """Deterministic ids for tests."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def new_id(self, prefix: str) -> str:
        with self._lock:
            self._n += 1
            return f"{prefix}_{self._n:06d}"

    def digits(self, n: int) -> str:
        with self._lock:
            self._n += 1
            return str(self._n * 7919 % (10**n)).zfill(n)
