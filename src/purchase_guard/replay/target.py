"""Where scenarios run: a throwaway in-process guard per scenario, or a running guard over gRPC.

In process, every scenario gets its own server, SQLite file and frozen clock, so scenarios
cannot see each other's households, spend or broadcast window and each can start at the
local time it declares. Against a remote target the households are still fresh (the server
assigns new ids every run) and time moves through the test-only TestControl service.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc

from purchase_guard.api.client import ClientTls, GuardClient
from purchase_guard.api.testing_servicer import ReplayControl
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.replay.schema import REAL_WAIT_S
from purchase_guard.voice.encoder import SpeakerEncoder

if TYPE_CHECKING:
    from purchase_guard.app import App

# A Wednesday noon in Los Angeles: outside any quiet hours a scenario is likely to set, the same
# instant the integration tests use.
DEFAULT_START = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
RPC_TIMEOUT_S = 60.0
DEFAULT_GAP = timedelta(hours=49)
# A `wait` against a server without TestControl may sleep for real, but only this long.
MAX_REAL_WAIT_S = REAL_WAIT_S


class ReplayError(Exception):
    """The target cannot do what a scenario asks (no clock control, no broadcast registry...)."""


class Session(Protocol):
    """One scenario's view of a guard."""

    client: GuardClient  # carries the operator credential

    def advance(self, delta: timedelta) -> None: ...

    def can(self, capability: str) -> bool: ...

    def register_clip(self, label: str, audio: bytes) -> None: ...

    def close(self) -> None: ...


class Target(Protocol):
    description: str

    def open(self, start: datetime | None) -> Session: ...

    def close(self) -> None: ...


def _register(control: ReplayControl, label: str, audio: bytes) -> str:
    try:
        return str(control.register_clip(label, audio).get("clip", {}).get("clip_id", ""))
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            raise ReplayError(
                "this guard has no BroadcastRegistry service (broadcast defence not wired)"
            ) from exc
        raise


class InProcessSession:
    def __init__(
        self,
        encoder: SpeakerEncoder,
        start: datetime,
        thresholds_file: Path | None = None,
        before_close: Callable[[App], None] | None = None,
    ) -> None:
        from purchase_guard.api.server import build_server
        from purchase_guard.app import build_app
        from purchase_guard.challenge.pin import PinHasher
        from purchase_guard.config import Settings

        self._dir = Path(tempfile.mkdtemp(prefix="pg-replay-"))
        token = "replay-" + secrets.token_urlsafe(32)
        settings = Settings(
            listen="127.0.0.1:0",
            metrics_port=0,
            sqlite_path=self._dir / "guard.db",
            operator_token=token,
            operator_token_file=self._dir / "operator-token",
            test_mode=True,
            thresholds_file=thresholds_file,
        ).validated()
        self.clock = FrozenClock(start)
        # Cheap argon2 parameters: the hash cost is not what a scenario tests, and a corpus sets
        # a PIN in every household (20 in a fleet case).
        # Sequential ids make an in-process run repeatable: the same digits to repeat, the same ids.
        pins = PinHasher(time_cost=1, memory_cost=1024)
        app = build_app(settings, encoder=encoder, clock=self.clock, ids=SequentialIds(), pins=pins)
        self._app = app
        self._before_close = before_close
        self._server = build_server(app)
        address = f"127.0.0.1:{self._server.port}"
        self.client = GuardClient(address, token, timeout=RPC_TIMEOUT_S, backend_token=app.backend_token)
        self._control = ReplayControl(address, token, timeout=RPC_TIMEOUT_S)
        self._caps: dict[str, bool] = {}

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    def can(self, capability: str) -> bool:
        if capability == "clock":
            return True
        if capability not in self._caps:
            self._caps[capability] = self._control.has_service(capability)
        return self._caps[capability]

    def register_clip(self, label: str, audio: bytes) -> None:
        _register(self._control, label, audio)

    def close(self) -> None:
        self.client.close()
        self._control.close()
        try:
            if self._before_close is not None:
                self._before_close(self._app)
        finally:
            self._server.stop(grace=0)
            shutil.rmtree(self._dir, ignore_errors=True)


class InProcessTarget:
    """A fresh guard per scenario on 127.0.0.1:0 with the real GE2E encoder (loaded once)."""

    description = "in-process guard (throwaway SQLite store, frozen clock)"

    def __init__(
        self,
        encoder: SpeakerEncoder | None = None,
        thresholds_file: Path | None = None,
        before_close: Callable[[App], None] | None = None,
    ) -> None:
        """`thresholds_file` is for an encoder without packaged thresholds (the fake one in tests);
        `before_close` sees each scenario's guard (its store) after the scenario, before it is gone."""
        self._thresholds_file = thresholds_file
        self._before_close = before_close
        if encoder is None:
            from purchase_guard.voice.ge2e import Ge2eEncoder

            encoder = Ge2eEncoder()
        self._encoder = encoder

    def open(self, start: datetime | None) -> Session:
        return InProcessSession(
            self._encoder, start or DEFAULT_START, self._thresholds_file, self._before_close
        )

    def close(self) -> None:
        return None


class RemoteSession:
    def __init__(
        self, client: GuardClient, control: ReplayControl, caps: dict[str, bool], gap: timedelta
    ) -> None:
        self.client = client
        self._control = control
        self._caps = caps
        self._gap = gap
        self._clips: list[str] = []

    def advance(self, delta: timedelta) -> None:
        if self.can("clock"):
            self._control.advance_clock(delta)
            return
        seconds = delta.total_seconds()
        if seconds > MAX_REAL_WAIT_S:
            raise ReplayError(
                f"waiting {seconds:g} s needs a test-mode guard (PURCHASE_GUARD_TEST_MODE=1, TestControl); "
                f"without it only waits up to {MAX_REAL_WAIT_S:g} s are done in real time"
            )
        import time

        time.sleep(seconds)

    def can(self, capability: str) -> bool:
        if capability not in self._caps:
            self._caps[capability] = self._control.has_service(capability)
        return self._caps[capability]

    def register_clip(self, label: str, audio: bytes) -> None:
        clip_id = _register(self._control, label, audio)
        if clip_id:
            self._clips.append(clip_id)

    def close(self) -> None:
        # The guard outlives the run: take this scenario's clips off its denylist again, and move
        # its clock past the broadcast window (and the promotion of fleet clusters to the
        # denylist), so the next scenario's recordings are not matched against this one's.
        for clip_id in self._clips:
            # Best effort: a clip left behind only affects audio that no other scenario plays.
            with contextlib.suppress(grpc.RpcError):
                self._control.remove_clip(clip_id)
        if self._gap and self.can("clock"):
            self._control.advance_clock(self._gap)

    def move_to(self, start: datetime) -> None:
        """Advance to the next instant with `start`'s local time of day (the clock never goes back)."""
        if not self.can("clock"):
            raise ReplayError(
                "a scenario with `start` needs a test-mode guard (TestControl) on a remote target"
            )
        now = self._control.clock_now().astimezone(start.tzinfo)
        target = now.replace(hour=start.hour, minute=start.minute, second=start.second, microsecond=0)
        if target < now:
            target += timedelta(days=1)
        self._control.advance_clock(target - now)


class RemoteTarget:
    """A running guard; the token must be the operator credential (households are created), and
    `backend_token` a backend credential for Evaluate and Confirm.

    `gap` is how far the guard's clock is moved after each scenario when it can be moved; the
    default clears the default broadcast window (10 min) and promotion period (48 h).
    """

    def __init__(
        self,
        address: str,
        token: str,
        gap: timedelta = DEFAULT_GAP,
        tls: ClientTls | None = None,
        backend_token: str = "",
    ) -> None:
        self.description = f"guard at {address}" + (" (TLS)" if tls else "")
        self._gap = gap
        self._client = GuardClient(
            address, token, timeout=RPC_TIMEOUT_S, tls=tls, backend_token=backend_token
        )
        self._control = ReplayControl(address, token, timeout=RPC_TIMEOUT_S, tls=tls)
        self._caps: dict[str, bool] = {}

    def open(self, start: datetime | None) -> Session:
        session = RemoteSession(self._client, self._control, self._caps, self._gap)
        # Without clock control the scenario is skipped by the engine (it requires "clock").
        if start is not None and session.can("clock"):
            session.move_to(start)
        return session

    def close(self) -> None:
        self._client.close()
        self._control.close()
