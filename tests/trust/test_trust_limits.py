"""Rate limits: the pure rule, the in-process backend, and the Redis backend against the real Redis
(a unique key prefix per test). The PIN's guess budget is in tests/unit/limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from purchase_guard.errors import ResourceExhausted, Unavailable
from purchase_guard.limits import (
    BucketState,
    InProcessRateLimiter,
    RateDecision,
    RateLimit,
    RateLimited,
    RedisRateLimiter,
    enforce,
    take,
)

LIMIT = RateLimit("evaluate-device", 3, 60.0)  # 3 per minute: one token every 20 s
T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


class Ticker:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_fresh_bucket_allows_a_burst_of_capacity_then_refuses_with_the_wait() -> None:
    """Capacity requests pass at once; the next is refused with the time until one token is back."""
    state: BucketState | None = None
    allowed = []
    for _ in range(4):
        state, decision = take(state, LIMIT, 0.0)
        allowed.append(decision.allowed)
    assert allowed == [True, True, True, False]
    assert decision.retry_after_s == pytest.approx(20.0)


def test_tokens_refill_with_time_and_never_beyond_capacity() -> None:
    """After the refill period a drained bucket is full again, and a long idle does not bank extra tokens."""
    state: BucketState | None = None
    for _ in range(3):
        state, _ = take(state, LIMIT, 0.0)
    state, decision = take(state, LIMIT, 20.0)
    assert decision.allowed
    state, decision = take(state, LIMIT, 10_000.0)
    assert decision.remaining == 2


def test_refused_requests_do_not_push_the_retry_further_out() -> None:
    """Hammering a drained bucket does not consume tokens: the retry hint only shrinks with time."""
    state: BucketState | None = None
    for _ in range(3):
        state, _ = take(state, LIMIT, 0.0)
    waits = []
    for now in (1.0, 2.0, 3.0):
        state, decision = take(state, LIMIT, now)
        waits.append(decision.retry_after_s)
    assert waits == sorted(waits, reverse=True)
    assert waits[-1] == pytest.approx(17.0)


def test_a_clock_going_backwards_refills_nothing() -> None:
    """A time earlier than the stored one adds no tokens (no refill from clock jumps)."""
    state: BucketState | None = None
    for _ in range(3):
        state, _ = take(state, LIMIT, 100.0)
    _, decision = take(state, LIMIT, 50.0)
    assert not decision.allowed


@pytest.mark.parametrize(
    ("name", "capacity", "per"), [("x", 0, 1.0), ("x", 1, 0.0), ("", 1, 1.0), ("a:b", 1, 1.0)]
)
def test_nonsense_limits_are_refused(name: str, capacity: int, per: float) -> None:
    """A limit with no capacity, no period, or a name that could collide with another key is rejected."""
    with pytest.raises(ValueError, match="must"):
        RateLimit(name, capacity, per)


def test_in_process_limiter_keeps_one_bucket_per_limit_and_key() -> None:
    """Different keys and different limits have separate buckets."""
    limiter = InProcessRateLimiter(now=Ticker())
    other = RateLimit("evaluate-household", 3, 60.0)
    assert [limiter.hit(LIMIT, "a").allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(LIMIT, "b").allowed
    assert limiter.hit(other, "a").allowed


def test_in_process_limiter_forgets_the_least_recent_keys_beyond_its_bound() -> None:
    """Flooding keys cannot grow memory without bound: at most max_keys buckets are kept."""
    limiter = InProcessRateLimiter(max_keys=10, now=Ticker())
    for i in range(1000):
        limiter.hit(LIMIT, f"k{i}")
    assert len(limiter._buckets) == 10


def test_enforce_charges_every_bucket_and_names_the_limit_with_a_retry_hint() -> None:
    """Over the device limit, the household bucket is still charged; ResourceExhausted with a hint."""
    ticker = Ticker()
    limiter = InProcessRateLimiter(now=ticker)
    household = RateLimit("evaluate-household", 5, 60.0)
    checks = [(household, "hh"), (LIMIT, "hh/dev")]
    for _ in range(3):
        enforce(limiter, checks)
    with pytest.raises(RateLimited, match="evaluate-device") as info:
        enforce(limiter, checks)
    assert isinstance(info.value, ResourceExhausted)
    assert info.value.retry_after_s == pytest.approx(20.0)
    # 4 household tokens are gone: one more from another device passes, the next does not.
    enforce(limiter, [(household, "hh"), (LIMIT, "hh/dev2")])
    with pytest.raises(RateLimited, match="evaluate-household"):
        enforce(limiter, [(household, "hh"), (LIMIT, "hh/dev3")])


class DownLimiter:
    def hit(self, limit: RateLimit, key: str) -> RateDecision:
        raise Unavailable("down")


def test_enforce_fails_closed_when_the_limiter_is_down() -> None:
    """A limiter that cannot be reached raises Unavailable; nothing is let through unmetered."""
    with pytest.raises(Unavailable):
        enforce(DownLimiter(), [(LIMIT, "k")])


# ------------------------------------------------------------------ Redis
def test_redis_limiter_is_shared_between_replicas(shared_redis: tuple[Any, str]) -> None:
    """Two limiter instances on one Redis (two replicas) draw from one bucket per key."""
    client, prefix = shared_redis
    slow = RateLimit("evaluate-device", 3, 3600.0)  # no refill within the test
    a, b = RedisRateLimiter(client, prefix=prefix), RedisRateLimiter(client, prefix=prefix)
    results = [a.hit(slow, "hh/dev").allowed, b.hit(slow, "hh/dev").allowed, a.hit(slow, "hh/dev").allowed]
    refused = b.hit(slow, "hh/dev")
    assert results == [True, True, True]
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 1200.0
    assert a.hit(slow, "hh/other").allowed


def test_redis_buckets_expire_once_they_would_be_full(shared_redis: tuple[Any, str]) -> None:
    """Each bucket carries a TTL no longer than its refill time (plus a second), so idle keys vanish."""
    client, prefix = shared_redis
    RedisRateLimiter(client, prefix=prefix).hit(RateLimit("enroll-household", 2, 60.0), "hh")
    ttl = client.pttl(f"{prefix}enroll-household:hh")
    assert 0 < ttl <= 61_000


def test_redis_limiter_fails_closed_when_redis_is_unreachable() -> None:
    """With Redis unreachable the limiter raises Unavailable (the interceptor answers UNAVAILABLE)."""
    limiter = RedisRateLimiter.from_url("redis://127.0.0.1:1/0", timeout_s=0.2)
    with pytest.raises(Unavailable):
        limiter.hit(LIMIT, "k")
