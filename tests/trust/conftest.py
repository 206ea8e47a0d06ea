"""Fixtures of the trust suites (hostile input, limits, faults): one GE2E load per session, and
the shared Redis at 127.0.0.1:6379 (skipped when absent, failed under PURCHASE_GUARD_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from trust.trust_harness import require_or_skip

from purchase_guard.voice.encoder import SpeakerEncoder
from purchase_guard.voice.ge2e import Ge2eEncoder

SHARED_REDIS = os.environ.get("PURCHASE_GUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def trust_encoder() -> SpeakerEncoder:
    """The real GE2E encoder, loaded once for the trust suites."""
    return Ge2eEncoder()


@pytest.fixture
def shared_redis() -> Iterator[tuple[Any, str]]:
    """A client of the shared Redis and a key prefix unique to this test (its keys are removed after)."""
    import redis

    client = redis.Redis.from_url(SHARED_REDIS, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        require_or_skip(f"Redis at {SHARED_REDIS}")
    prefix = f"pg-trust-test:{uuid.uuid4().hex}:"
    yield client, prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from trust.fuzz_strategies import FUZZ_COUNTS

    if FUZZ_COUNTS:
        total = sum(FUZZ_COUNTS.values())
        terminalreporter.write_line(f"trust fuzz: {total} inputs tried")
        for kind, n in sorted(FUZZ_COUNTS.items()):
            terminalreporter.write_line(f"  {kind}: {n}")
