"""Token-bucket rate limits: one pure rule, an in-process limiter and a Redis limiter.

A bucket holds at most `capacity` tokens and refills at `capacity / per_seconds` tokens a
second; a request takes one token or is refused with the time until one is back. The rule
(`take`) is a pure function of the stored state and the time, so the two implementations
cannot disagree about what a limit means: the in-process one applies it under a lock, the
Redis one runs the same arithmetic in a Lua script so that every replica sharing the Redis
sees one bucket per key (and uses Redis' clock, so replicas with skewed clocks agree).

Failure is closed: a limiter that cannot reach its backend raises `errors.Unavailable`, and
callers refuse the request rather than letting it through unmetered.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from purchase_guard.errors import ResourceExhausted, Unavailable


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`capacity` requests in a burst, refilled evenly over `per_seconds`."""

    name: str
    capacity: int
    per_seconds: float

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        if not self.per_seconds > 0:
            raise ValueError("per_seconds must be positive")
        if not self.name or ":" in self.name:
            # The name is part of a storage key; a colon would let two limits share one bucket.
            raise ValueError("name must be non-empty and without ':'")

    @property
    def rate_per_second(self) -> float:
        return self.capacity / self.per_seconds


@dataclass(frozen=True, slots=True)
class BucketState:
    tokens: float
    updated_s: float


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    remaining: int
    retry_after_s: float  # 0 when allowed


def take(
    state: BucketState | None, limit: RateLimit, now_s: float, cost: int = 1
) -> tuple[BucketState, RateDecision]:
    """The token-bucket rule. A missing state is a full bucket; time going backwards refills nothing."""
    if cost < 1:
        raise ValueError("cost must be at least 1")
    if state is None:
        tokens = float(limit.capacity)
    else:
        elapsed = max(0.0, now_s - state.updated_s)
        tokens = min(float(limit.capacity), state.tokens + elapsed * limit.rate_per_second)
    if tokens >= cost:
        tokens -= cost
        return BucketState(tokens, now_s), RateDecision(True, int(tokens), 0.0)
    wait = (cost - tokens) / limit.rate_per_second
    # A refused request does not consume anything, so hammering does not push the retry further out.
    return BucketState(tokens, now_s), RateDecision(False, 0, wait)


class RateLimiter(Protocol):
    def hit(self, limit: RateLimit, key: str) -> RateDecision:
        """Take one token from `limit`'s bucket for `key`. Raises Unavailable if the backend is down."""
        ...


class RateLimited(ResourceExhausted):
    """A rate limit was hit; `retry_after_s` says when one more request would be accepted."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def enforce(limiter: RateLimiter, checks: Iterable[tuple[RateLimit, str]]) -> None:
    """Take a token from every (limit, key); raise RateLimited naming the first limit that refused.

    Every bucket is charged even after one refuses: a caller that is over its device limit
    still spends household tokens, which is what stops one household's many devices (or a
    script rotating device ids) from multiplying the allowance.
    """
    refused: list[tuple[RateLimit, RateDecision]] = []
    for limit, key in checks:
        decision = limiter.hit(limit, key)
        if not decision.allowed:
            refused.append((limit, decision))
    if refused:
        limit, decision = max(refused, key=lambda r: r[1].retry_after_s)
        retry = math.ceil(decision.retry_after_s * 1000) / 1000
        raise RateLimited(
            f"rate limit {limit.name} exceeded ({limit.capacity} per {limit.per_seconds:g} s); "
            f"retry after {retry:.3f} s",
            retry,
        )


class InProcessRateLimiter:
    """Buckets in this process only: right for one replica, and for tests.

    At most `max_keys` buckets are kept; the least recently used goes first. Forgetting a
    bucket only ever refills it, so an attacker who floods keys to evict others gains at most
    one fresh burst per evicted key, and cannot exhaust memory.
    """

    def __init__(self, *, max_keys: int = 100_000, now: Callable[[], float] = time.monotonic) -> None:
        self._buckets: OrderedDict[tuple[str, str], BucketState] = OrderedDict()
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._now = now

    def hit(self, limit: RateLimit, key: str) -> RateDecision:
        with self._lock:
            bucket = (limit.name, key)
            state, decision = take(self._buckets.get(bucket), limit, self._now())
            self._buckets[bucket] = state
            self._buckets.move_to_end(bucket)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return decision


# Same arithmetic as `take`, run atomically in Redis with Redis' own clock.
_BUCKET_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = capacity
if stored[1] then
  local elapsed = now - tonumber(stored[2])
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tonumber(stored[1]) + elapsed * rate)
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], ttl_ms)
return {allowed, tostring(tokens), tostring(wait)}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica that uses the same Redis and `prefix`.

    Each bucket is one hash that expires once it would be full again, so idle keys cost nothing.
    Any Redis error (down, timeout, refused) becomes `errors.Unavailable`.
    """

    def __init__(self, client: Any, *, prefix: str = "pg:rl:") -> None:
        # `client` is a redis.Redis; typed loosely so this module imports without redis-py.
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_BUCKET_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "pg:rl:", timeout_s: float = 0.5) -> RedisRateLimiter:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, prefix=prefix)

    def hit(self, limit: RateLimit, key: str) -> RateDecision:
        import redis

        ttl_ms = max(1000, math.ceil(limit.per_seconds * 1000) + 1000)
        try:
            allowed, tokens, wait = self._script(
                keys=[f"{self._prefix}{limit.name}:{key}"],
                args=[limit.capacity, repr(limit.rate_per_second), ttl_ms],
            )
        except redis.RedisError as exc:
            raise Unavailable(f"rate limiter unavailable: {type(exc).__name__}") from exc
        try:
            return RateDecision(bool(int(allowed)), int(float(tokens)), float(wait))
        except (TypeError, ValueError) as exc:
            # Something answered on the Redis port, but not the bucket script's reply.
            raise Unavailable("rate limiter unavailable: Redis gave an unusable reply") from exc
