"""Test-mode only: the TestControl service (the guard's clock) and the replay suite's extra calls.

`add_test_control(server, app)` is called by the server factory only when settings.test_mode
is on; a production server never exposes a way to move its clock. The client half
(`ReplayControl`, `policy_mapping_problem`) lives here too because only api/ may import the
generated code: the replay runner talks to TestControl and BroadcastRegistry through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from purchase_guard._gen.purchaseguard.v1 import (
    admin_pb2,
    broadcast_pb2,
    broadcast_pb2_grpc,
    common_pb2,
    testing_pb2,
    testing_pb2_grpc,
)
from purchase_guard.api import convert
from purchase_guard.api.client import ClientTls, open_channel
from purchase_guard.api.gate import current_principal
from purchase_guard.app import App
from purchase_guard.clock import Clock
from purchase_guard.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from purchase_guard.household.service import HouseholdService
from purchase_guard.logs import get_logger

log = get_logger("purchase_guard.api.testing")

SERVICE_NAME = testing_pb2.DESCRIPTOR.services_by_name["TestControl"].full_name
# A replay `wait` of more than this is a scenario bug (a typo like 24d for 24h), not a test.
MAX_ADVANCE = timedelta(days=400)


class TestControlServicer(testing_pb2_grpc.TestControlServicer):
    """Moves the clock of a test-mode guard; operator credential only."""

    def __init__(self, clock: Clock, households: HouseholdService) -> None:
        self._clock = clock
        self._households = households

    def _require_operator(self, context: grpc.ServicerContext) -> None:
        if not current_principal().is_operator:
            raise PermissionDenied("TestControl needs the operator credential")

    def AdvanceClock(
        self, request: testing_pb2.AdvanceClockRequest, context: grpc.ServicerContext
    ) -> testing_pb2.AdvanceClockResponse:
        self._require_operator(context)
        delta = request.by.ToTimedelta()
        if delta < timedelta(0):
            raise InvalidArgument("by must not be negative: the clock only moves forward")
        if delta > MAX_ADVANCE:
            raise InvalidArgument(f"by must be at most {MAX_ADVANCE.days} days")
        advance = getattr(self._clock, "advance", None)
        if advance is None:
            raise FailedPrecondition("this server's clock cannot be moved (not a test-mode clock)")
        advance(delta)
        now = self._clock.now()
        log.info("clock_advanced", seconds=delta.total_seconds(), now=now.isoformat())
        return testing_pb2.AdvanceClockResponse(now=convert.ts(now))

    def GetClock(
        self, request: testing_pb2.GetClockRequest, context: grpc.ServicerContext
    ) -> testing_pb2.GetClockResponse:
        self._require_operator(context)
        return testing_pb2.GetClockResponse(now=convert.ts(self._clock.now()))


def add_test_control(server: grpc.Server, app: App) -> None:
    """Register TestControl on `server`; refuses unless the app runs in test mode."""
    if not app.settings.test_mode:
        raise RuntimeError("TestControl may only be registered when settings.test_mode is on")
    testing_pb2_grpc.add_TestControlServicer_to_server(TestControlServicer(app.clock, app.households), server)


# ------------------------------------------------------------------------------ client side
def policy_mapping_problem(policy: Mapping[str, Any]) -> str:
    """Why a proto JSON policy mapping would be refused by SetPolicy, or "" when it is fine."""
    try:
        pb = json_format.ParseDict(dict(policy), admin_pb2.Policy())
        from purchase_guard.policy.validate import validate_policy

        validate_policy(convert.policy_from_pb(pb))
    except (json_format.ParseError, InvalidArgument) as exc:
        return str(exc)
    return ""


class ReplayControl:
    """The calls the replay runner needs beyond GuardClient: the test clock and broadcast clips."""

    def __init__(self, target: str, token: str, timeout: float = 60.0, tls: ClientTls | None = None) -> None:
        self._channel = open_channel(target, tls)
        self._testing = testing_pb2_grpc.TestControlStub(self._channel)
        self._broadcast = broadcast_pb2_grpc.BroadcastRegistryStub(self._channel)
        self._meta = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def clock_now(self) -> datetime:
        resp = self._testing.GetClock(
            testing_pb2.GetClockRequest(), metadata=self._meta, timeout=self._timeout
        )
        return convert.from_ts(resp.now)

    def advance_clock(self, delta: timedelta) -> datetime:
        by = Duration()
        by.FromTimedelta(delta)
        resp = self._testing.AdvanceClock(
            testing_pb2.AdvanceClockRequest(by=by), metadata=self._meta, timeout=self._timeout
        )
        return convert.from_ts(resp.now)

    def register_clip(self, label: str, audio: bytes) -> dict[str, Any]:
        req = broadcast_pb2.RegisterClipRequest(label=label, audio=common_pb2.Audio(encoded=audio))
        return _dict(self._broadcast.RegisterClip(req, metadata=self._meta, timeout=self._timeout))

    def remove_clip(self, clip_id: str) -> None:
        req = broadcast_pb2.RemoveClipRequest(clip_id=clip_id)
        self._broadcast.RemoveClip(req, metadata=self._meta, timeout=self._timeout)

    def list_clips(self) -> dict[str, Any]:
        req = broadcast_pb2.ListClipsRequest(include_promoted=True)
        return _dict(self._broadcast.ListClips(req, metadata=self._meta, timeout=self._timeout))

    def has_service(self, name: str) -> bool:
        """Whether the server implements `name` ("clock" or "broadcast"): UNIMPLEMENTED means no."""
        probe = self.clock_now if name == "clock" else self.list_clips
        try:
            probe()
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                return False
            raise
        return True


def _dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)
