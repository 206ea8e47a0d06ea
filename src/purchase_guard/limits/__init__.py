"""Limits that hold under abuse: request rate limits and the cross-challenge PIN guess limit.

`rate` holds the token-bucket rule (pure), the `RateLimiter` protocol and its in-process and
Redis implementations; `pin_guesses` holds the per-household limit on wrong PIN answers that
applies across challenges, on top of each challenge's own lockout.
"""

from purchase_guard.limits.pin_guesses import (
    InProcessPinGuessCounter,
    PinGuessCounter,
    PinGuessPolicy,
    RedisPinGuessCounter,
    pin_guess_gate,
    pin_guesses_blocked,
    record_wrong_pin,
)
from purchase_guard.limits.rate import (
    BucketState,
    InProcessRateLimiter,
    RateDecision,
    RateLimit,
    RateLimited,
    RateLimiter,
    RedisRateLimiter,
    enforce,
    take,
)

__all__ = [
    "BucketState",
    "InProcessPinGuessCounter",
    "InProcessRateLimiter",
    "PinGuessCounter",
    "PinGuessPolicy",
    "RateDecision",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "RedisPinGuessCounter",
    "RedisRateLimiter",
    "enforce",
    "pin_guess_gate",
    "pin_guesses_blocked",
    "record_wrong_pin",
    "take",
]
