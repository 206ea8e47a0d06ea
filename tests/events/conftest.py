"""A real guard (whole app, FakeEncoder, synthetic voices; see console/console_world.py) with fast
webhook retries, and real HTTP receivers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from console.console_world import OPERATOR, Family, make_family, start_guard
from events.receiver import Receiver
from support.rpc import BACKEND

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer

FAST = {
    "events_poll_seconds": 0.05,
    "webhook_timeout_seconds": 1.0,
    "webhook_lease_seconds": 3.0,
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_cap_seconds": 0.2,
    "webhook_max_attempts": 4,
    "replay_window_days": 1,
}


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_guard(tmp_path, **FAST)
    yield running
    running.stop(grace=0)


@pytest.fixture
def operator(guard: RunningServer) -> Iterator[GuardClient]:
    client = GuardClient(f"127.0.0.1:{guard.port}", OPERATOR, timeout=20, backend_token=BACKEND)
    yield client
    client.close()


@pytest.fixture
def family(operator: GuardClient) -> Family:
    return make_family(operator, "The Smiths")


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*script: int) -> Receiver:
        r = Receiver(*script)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
