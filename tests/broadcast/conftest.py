"""Fixtures of the broadcast suites: the shared Redis, with a key prefix unique to each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

REDIS_URL = os.environ.get("PURCHASE_GUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def bc_redis() -> Iterator[tuple[Any, str]]:
    """A Redis client and a key prefix unique to this test; every key under it is deleted after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("PURCHASE_GUARD_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis at {REDIS_URL} is required (PURCHASE_GUARD_REQUIRE_SERVICES=1)")
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"pg-broadcast-test:{uuid.uuid4().hex}"
    yield client, prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()
