"""Sign-in throttling, before any attempt reaches the guard.

Failures are counted per key within a sliding window; the console uses two keys per attempt:
the client's address (one machine trying many credentials) and the credential's first
characters (many machines trying one credential's remaining characters). An attempt is refused,
without asking the guard, when any of its keys

- has `max_failures` failures in the window: locked until the oldest of them leaves it, or
- has fewer, but its last failure is more recent than `base_delay * 2**(failures - 1)` seconds
  (1 s, 2 s, 4 s, 8 s with the defaults): a growing delay that costs a parent who mistyped once
  nothing and a guesser most of their rate.

A success clears the credential key only: an address's failures stay until they age out, or a
valid credential could be used to reset the count between guesses at others.

The guard has limits of its own; these only keep the console from being a faster way in.
Memory is bounded: past `max_keys`, keys whose failures all aged out are dropped, then the
oldest.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

CREDENTIAL_PREFIX_CHARS = 12


def address_key(address: str) -> str:
    return f"addr:{address}"


def credential_key(token: str) -> str:
    # Hashed so the store never holds even a piece of a credential in clear.
    prefix = token[:CREDENTIAL_PREFIX_CHARS]
    return "cred:" + hashlib.sha256(prefix.encode("utf-8", "replace")).hexdigest()[:32]


class SignInThrottle:
    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        base_delay_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._base = base_delay_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait_seconds(self, keys: Sequence[str]) -> float:
        """0 when an attempt may go ahead now; otherwise how long until it may."""
        now = self._clock()
        with self._lock:
            return max((self._wait(key, now) for key in keys), default=0.0)

    def failed(self, keys: Sequence[str]) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times is None:
                    times = self._failures[key] = deque()
                self._prune(times, now)
                times.append(now)
                self._failures.move_to_end(key)
            self._bound(now)

    def succeeded(self, credential: str) -> None:
        with self._lock:
            self._failures.pop(credential, None)

    def _wait(self, key: str, now: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        self._prune(times, now)
        if not times:
            return 0.0
        if len(times) >= self._max:
            return max(0.0, times[-self._max] + self._window - now)
        delay = self._base * float(2 ** (len(times) - 1))
        return max(0.0, times[-1] + delay - now)

    def _prune(self, times: deque[float], now: float) -> None:
        while times and now - times[0] >= self._window:
            times.popleft()

    def _bound(self, now: float) -> None:
        if len(self._failures) <= self._max_keys:
            return
        for key in [k for k, t in self._failures.items() if not t or now - t[-1] >= self._window]:
            del self._failures[key]
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
