"""A per-household limit on wrong PIN answers, across challenges.

Each challenge locks after a few wrong answers and every lockout lengthens the household's
PIN pause (`challenge.throttle`). That bounds guesses per challenge; this bounds them per
household per hour, whatever the number of challenges, so a guesser who opens challenge
after challenge (or whose challenges expire before they lock) still gets at most
`max_wrong` guesses an hour. The rule is pure (`pin_guesses_blocked`); the counter is a
sliding window behind a small protocol, in-process or in Redis (shared by replicas).

Failure is closed: if the counter cannot be read, `pin_guess_gate` answers with a
GUARD_ERROR reason and the caller must DENY without checking the PIN.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from purchase_guard.domain import Reason, ReasonCode, check_error, forbid
from purchase_guard.errors import Unavailable
from purchase_guard.logs import get_logger

log = get_logger("purchase_guard.limits")


@dataclass(frozen=True, slots=True)
class PinGuessPolicy:
    # 10 an hour is two locked challenges' worth: enough for a parent who mistypes, far too
    # few to walk a 4-digit space (10,000 codes would take about six weeks of nonstop trying).
    max_wrong: int = 10
    window: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.max_wrong < 1:
            raise ValueError("max_wrong must be at least 1")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")


def pin_guesses_blocked(wrong_in_window: int, policy: PinGuessPolicy) -> bool:
    """The rule: once `max_wrong` wrong answers fall inside the window, no further PIN is checked."""
    return wrong_in_window >= policy.max_wrong


class PinGuessCounter(Protocol):
    def wrong_since(self, household_id: str, since: datetime) -> int:
        """Wrong PIN answers for the household at or after `since`. Raises Unavailable."""
        ...

    def record_wrong(self, household_id: str, at: datetime) -> None:
        """Count one wrong answer at `at`. Raises Unavailable."""
        ...


class InProcessPinGuessCounter:
    """Timestamps per household in this process; keeps at most `keep` per household."""

    def __init__(self, keep: int = 1000) -> None:
        self._events: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def wrong_since(self, household_id: str, since: datetime) -> int:
        with self._lock:
            return sum(1 for at in self._events.get(household_id, ()) if at >= since)

    def record_wrong(self, household_id: str, at: datetime) -> None:
        with self._lock:
            self._events.setdefault(household_id, deque(maxlen=self._keep)).append(at)


class RedisPinGuessCounter:
    """One sorted set per household (score = time of the wrong answer), shared by replicas."""

    def __init__(
        self, client: Any, *, prefix: str = "pg:pin:", retain: timedelta = timedelta(days=1)
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._retain = retain

    def _key(self, household_id: str) -> str:
        return f"{self._prefix}{household_id}"

    def wrong_since(self, household_id: str, since: datetime) -> int:
        import redis

        try:
            return int(self._client.zcount(self._key(household_id), since.timestamp(), "+inf"))
        except redis.RedisError as exc:
            raise Unavailable(f"PIN guess counter unavailable: {type(exc).__name__}") from exc

    def record_wrong(self, household_id: str, at: datetime) -> None:
        import redis

        key = self._key(household_id)
        stamp = at.timestamp()
        try:
            pipe = self._client.pipeline(transaction=True)
            # A unique member per answer: two wrong answers in the same microsecond both count.
            pipe.zadd(key, {f"{stamp:.6f}:{uuid.uuid4().hex}": stamp})
            pipe.zremrangebyscore(key, "-inf", stamp - self._retain.total_seconds())
            pipe.expire(key, int(self._retain.total_seconds()))
            pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"PIN guess counter unavailable: {type(exc).__name__}") from exc


def pin_guess_gate(
    counter: PinGuessCounter, policy: PinGuessPolicy, household_id: str, now: datetime
) -> Reason | None:
    """None when a PIN answer may be checked; else the reason to DENY with (never raises)."""
    try:
        wrong = counter.wrong_since(household_id, now - policy.window)
    except Exception as exc:
        log.warning("pin_guess_counter_failed", error=type(exc).__name__)
        return check_error(
            "The guard could not decide safely: the PIN guess counter is unavailable.", "challenge.pin_budget"
        )
    if pin_guesses_blocked(wrong, policy):
        minutes = int(policy.window.total_seconds() // 60)
        return forbid(
            ReasonCode.PIN_THROTTLED,
            f"Too many wrong PIN answers for this household in the last {minutes} minutes; try later.",
            "challenge.pin_budget",
        )
    return None


def record_wrong_pin(counter: PinGuessCounter, household_id: str, now: datetime) -> None:
    """Count a wrong answer; a failing counter is logged, not raised (the answer is a DENY already)."""
    try:
        counter.record_wrong(household_id, now)
    except Exception as exc:
        log.warning("pin_guess_record_failed", error=type(exc).__name__)
