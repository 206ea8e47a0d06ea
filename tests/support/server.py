"""Settings and PIN hashing for a server built inside a test."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import grpc

from purchase_guard.api.errors import ErrorInterceptor
from purchase_guard.api.gate import GateInterceptor
from purchase_guard.app import App
from purchase_guard.challenge.pin import PinHasher
from purchase_guard.clock import RandomIds
from purchase_guard.config import Settings
from purchase_guard.limits import InProcessRateLimiter
from support.rpc import BACKEND


def local_settings(folder: Path, operator: str, **overrides: Any) -> Settings:
    """A server on a free local port, metrics off, with its SQLite store and operator token file
    in `folder`; `overrides` set or replace any other setting."""
    base: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_port": 0,
        "sqlite_path": folder / "guard.db",
        "operator_token": operator,
        "operator_token_file": folder / "op-token",
        "backend_token": BACKEND,
        "backend_token_file": folder / "backend-token",
    }
    base.update(overrides)
    return Settings(**base).validated()


class SeededDigits(RandomIds):
    """Random ids, but challenge digits from a seeded generator: a test that answers a
    RANDOM_DIGITS challenge with real recordings then says the same digits on every run, so its
    outcome cannot change from run to run with the digits drawn (the content check accepts
    about 90 % of one FSDD speaker's genuine 5-digit answers, not all)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def digits(self, n: int) -> str:
        with self._lock:
            return "".join(self._rng.choice("0123456789") for _ in range(n))


def fast_pins(memory_cost: int = 1024) -> PinHasher:
    """Cheap argon2 parameters keep suites quick; production defaults are tested in unit tests."""
    return PinHasher(time_cost=1, memory_cost=memory_cost)


def front_door(app: App) -> list[grpc.ServerInterceptor]:
    """The interceptors api/server.py puts in front of the servicers, without rate limits: the gate
    (authentication and scope; servicers refuse to run without it) and the error mapping."""
    return [GateInterceptor(app.households, InProcessRateLimiter(), {}), ErrorInterceptor()]
