"""A real guard (GE2E weights, SQLite file store) on port 0, driven over real gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.server import SeededDigits, fast_pins, local_settings

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer, build_server
from purchase_guard.app import build_app
from purchase_guard.clock import FrozenClock
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
    settings = local_settings(tmp_path, OPERATOR, max_message_bytes=2 * 1024 * 1024)
    app = build_app(settings, encoder=ge2e, clock=clock, pins=fast_pins(), ids=SeededDigits(20261202))
    running = build_server(app)
    yield running
    running.stop(grace=0)


@pytest.fixture
def operator(server: RunningServer) -> Iterator[GuardClient]:
    client = GuardClient(
        f"127.0.0.1:{server.port}", OPERATOR, timeout=30, backend_token=server.app.backend_token
    )
    yield client
    client.close()
