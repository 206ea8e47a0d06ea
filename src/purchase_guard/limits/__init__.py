"""Limits that hold under abuse: request rate limits and the household PIN's guess budget.

`rate` holds the token-bucket rule (pure), the `RateLimiter` protocol and its in-process and
Redis implementations; `pin_budget` holds the PIN's guess budget (pure; the counters live with
the PIN in the store), which applies across challenges on top of each challenge's own lockout.
"""

from purchase_guard.limits.pin_budget import (
    PinBudget,
    after_right_pin,
    after_wrong_pin,
    most_guesses,
    pin_gate,
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
    "InProcessRateLimiter",
    "PinBudget",
    "RateDecision",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "RedisRateLimiter",
    "after_right_pin",
    "after_wrong_pin",
    "enforce",
    "most_guesses",
    "pin_gate",
    "take",
]
