"""Two guards sharing one PostgreSQL store, as replicas behind a load balancer: purchases decided by
either are delivered once each to the household's receiver (a delivery claimed by one replica's
worker is not taken by the other's), and either replica's stream shows both replicas' events."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from console.console_world import OPERATOR, make_family, order, start_guard, voice
from events.conftest import FAST
from events.receiver import Receiver
from psycopg.conninfo import make_conninfo
from support.rpc import BACKEND

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer
from purchase_guard.clock import FrozenClock

DEFAULT_POSTGRES_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@pytest.fixture
def shared_dsn() -> Iterator[str]:
    base = os.environ.get("PURCHASE_GUARD_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    try:
        with psycopg.connect(base, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        message = f"PostgreSQL for tests is unreachable ({type(exc).__name__})"
        if os.environ.get("PURCHASE_GUARD_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (required: PURCHASE_GUARD_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    schema = f"guard_events_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield make_conninfo(base, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


@pytest.fixture
def replicas(tmp_path: Path, shared_dsn: str) -> Iterator[list[RunningServer]]:
    # One folder: both read the same master key file, as replicas share their key.
    pg = {"store": "postgres", "postgres_dsn": shared_dsn, "postgres_pool_size": 3}
    running = [start_guard(tmp_path, **FAST, **pg), start_guard(tmp_path, **FAST, **pg)]
    yield running
    for r in running:
        r.stop(grace=0)


def test_two_replicas_deliver_each_event_once(replicas: list[RunningServer]) -> None:
    """Eight purchases alternating between the replicas: eight events, ids 1-8, each posted once,
    and each replica's WatchEvents lists all eight."""
    receiver = Receiver()
    clients = [
        GuardClient(f"127.0.0.1:{r.port}", OPERATOR, timeout=20, backend_token=BACKEND) for r in replicas
    ]
    try:
        family = make_family(clients[0], "Replicas")
        family.guard.set_webhook(family.household_id, receiver.url)
        via = [c.with_token(family.token) for c in clients]
        clocks = [r.app.clock for r in replicas]
        assert all(isinstance(c, FrozenClock) for c in clocks)
        for n, guard in zip(range(8), itertools.cycle(via), strict=False):
            reply = guard.evaluate(f"r-{n}", family.household_id, "kitchen", order(1000), voice("low", 7))
            assert reply["outcome"] == "ALLOW", reply
            for clock in clocks:  # past the 1-day replay window of the one synthetic recording
                clock.advance(timedelta(days=1, minutes=1))  # type: ignore[attr-defined]
        end = time.monotonic() + 30
        while time.monotonic() < end and len(set(receiver.ids())) < 8:
            time.sleep(0.05)
        time.sleep(1.0)  # room for a double delivery to show
        assert sorted(receiver.ids()) == list(range(1, 9))
        for guard in via:
            assert [int(e["event_id"]) for e in guard.watch_events(family.household_id)] == list(range(1, 9))
    finally:
        for c in clients:
            c.close()
        receiver.close()
