"""A real guard (GE2E weights, SQLite file store) on port 0, driven over real gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer, build_server
from purchase_guard.app import build_app
from purchase_guard.challenge.pin import PinHasher
from purchase_guard.clock import FrozenClock
from purchase_guard.config import Settings
from purchase_guard.voice.encoder import SpeakerEncoder
from purchase_guard.voice.ge2e import Ge2eEncoder

OPERATOR = "op-" + "x" * 40


@pytest.fixture(scope="session")
def ge2e() -> SpeakerEncoder:
    """One model load for the whole session; the encoder is stateless between calls."""
    return Ge2eEncoder()


@pytest.fixture
def clock() -> FrozenClock:
    # A Wednesday noon in Los Angeles: outside any quiet hours the tests set by default.
    return FrozenClock(datetime(2026, 11, 25, 20, 0, tzinfo=UTC))


@pytest.fixture
def server(tmp_path: Path, ge2e: SpeakerEncoder, clock: FrozenClock) -> Iterator[RunningServer]:
    settings = Settings(
        listen="127.0.0.1:0",
        metrics_port=0,
        sqlite_path=tmp_path / "guard.db",
        operator_token=OPERATOR,
        operator_token_file=tmp_path / "op-token",
        max_message_bytes=2 * 1024 * 1024,
    ).validated()
    # Cheaper argon2 parameters keep the suite quick; production defaults are tested in unit tests.
    app = build_app(settings, encoder=ge2e, clock=clock, pins=PinHasher(time_cost=1, memory_cost=1024))
    running = build_server(app)
    yield running
    running.stop(grace=0)


@pytest.fixture
def operator(server: RunningServer) -> Iterator[GuardClient]:
    client = GuardClient(f"127.0.0.1:{server.port}", OPERATOR, timeout=30)
    yield client
    client.close()
