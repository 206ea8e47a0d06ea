"""TestControl: a test-mode guard's clock moves forward on the operator's request, and only then."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from support.rpc import status_of
from support.server import fast_pins, front_door, local_settings

from purchase_guard._gen.purchaseguard.v1 import admin_pb2_grpc, testing_pb2, testing_pb2_grpc
from purchase_guard.api.client import GuardClient
from purchase_guard.api.servicers import HouseholdAdminServicer
from purchase_guard.api.testing_servicer import ReplayControl, add_test_control
from purchase_guard.app import App, build_app
from purchase_guard.clock import FrozenClock

OPERATOR = "op-" + "t" * 40
START = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def app_for(tmp_path: Path, thresholds: Path, test_mode: bool) -> App:
    settings = local_settings(tmp_path, OPERATOR, encoder="fake", test_mode=True, thresholds_file=thresholds)
    if not test_mode:
        # The fake encoder needs test mode to validate; switch it off afterwards for this check only.
        settings = replace(settings, test_mode=False)
    return build_app(settings, clock=FrozenClock(START), pins=fast_pins())


@pytest.fixture
def running(tmp_path: Path, fake_thresholds: Path) -> Iterator[tuple[App, str]]:
    app = app_for(tmp_path, fake_thresholds, test_mode=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=front_door(app))
    admin_pb2_grpc.add_HouseholdAdminServicer_to_server(HouseholdAdminServicer(app.households), server)
    add_test_control(server, app)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield app, f"127.0.0.1:{port}"
    server.stop(0)
    app.store.close()


def test_operator_advances_the_clock(running: tuple[App, str]) -> None:
    """AdvanceClock moves the server's clock by the duration and answers the new time; GetClock agrees."""
    app, address = running
    control = ReplayControl(address, OPERATOR)
    try:
        assert control.clock_now() == START
        now = control.advance_clock(timedelta(hours=24, seconds=1))
        assert now == START + timedelta(hours=24, seconds=1)
        assert app.clock.now() == now
        assert control.clock_now() == now
    finally:
        control.close()


def test_clock_never_goes_back(running: tuple[App, str]) -> None:
    """A negative duration is INVALID_ARGUMENT and the clock stays where it was."""
    app, address = running
    channel = grpc.insecure_channel(address)
    stub = testing_pb2_grpc.TestControlStub(channel)
    by = Duration()
    by.FromTimedelta(timedelta(seconds=-5))
    meta = (("authorization", f"Bearer {OPERATOR}"),)
    try:
        code = status_of(lambda: stub.AdvanceClock(testing_pb2.AdvanceClockRequest(by=by), metadata=meta))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert app.clock.now() == START
    finally:
        channel.close()


def advance_status(address: str, token: str) -> grpc.StatusCode:
    channel = grpc.insecure_channel(address)
    stub = testing_pb2_grpc.TestControlStub(channel)
    meta = (("authorization", f"Bearer {token}"),) if token else ()
    request = testing_pb2.AdvanceClockRequest(by=Duration(seconds=60))
    try:
        return status_of(lambda: stub.AdvanceClock(request, metadata=meta))
    finally:
        channel.close()


def test_only_the_operator_may_move_the_clock(running: tuple[App, str]) -> None:
    """A household's own token is PERMISSION_DENIED and no token is UNAUTHENTICATED."""
    app, address = running
    admin = GuardClient(address, OPERATOR)
    household_token = admin.create_household("H", "Europe/Paris", "EUR")["admin_token"]
    admin.close()
    for token, expected in (
        (household_token, grpc.StatusCode.PERMISSION_DENIED),
        ("", grpc.StatusCode.UNAUTHENTICATED),
    ):
        assert advance_status(address, token) is expected
    assert app.clock.now() == START


def test_not_registered_outside_test_mode(tmp_path: Path, fake_thresholds: Path) -> None:
    """add_test_control refuses a server whose settings are not in test mode."""
    app = app_for(tmp_path, fake_thresholds, test_mode=False)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    try:
        with pytest.raises(RuntimeError, match="test_mode"):
            add_test_control(server, app)
    finally:
        app.store.close()
