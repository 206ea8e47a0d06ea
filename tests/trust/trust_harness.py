"""Shared pieces of the trust suites: guards assembled with the limits interceptor or TLS,
synthetic speech, request builders and a snapshot of a household's stored state."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile as sf
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from support.rpc import as_backend
from support.server import fast_pins, local_settings

from purchase_guard._gen.purchaseguard.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    guard_pb2,
    guard_pb2_grpc,
)
from purchase_guard.api.errors import ErrorInterceptor
from purchase_guard.api.gate import GateInterceptor, MethodLimits
from purchase_guard.api.server import RunningServer, build_server
from purchase_guard.api.servicers import HouseholdAdminServicer, PurchaseGuardServicer
from purchase_guard.app import App, build_app
from purchase_guard.clock import FrozenClock
from purchase_guard.config import Settings
from purchase_guard.domain import Member, Role, Voiceprint
from purchase_guard.limits import InProcessRateLimiter
from purchase_guard.limits.rate import RateLimiter
from purchase_guard.store.protocol import Store
from purchase_guard.voice.encoder import SpeakerEncoder

OPERATOR = "op-" + "t" * 40
ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # a Wednesday noon in Los Angeles
CALL_TIMEOUT_S = 20.0  # every call in the trust suites has a deadline: a hang fails, it never blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def trust_settings(tmp: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"max_message_bytes": 2 * 1024 * 1024, "grace_seconds": 1.0}
    base.update(overrides)
    return local_settings(tmp, OPERATOR, **base)


def make_app(
    tmp: Path, encoder: SpeakerEncoder, *, store: Store | None = None, clock: Any = None, **overrides: Any
) -> App:
    return build_app(
        trust_settings(tmp, **overrides),
        store=store,
        encoder=encoder,
        clock=clock or FrozenClock(NOW),
        pins=fast_pins(),
    )


def real_server(app: App) -> RunningServer:
    """The production server factory (health probe every 2 s, error interceptor)."""
    return build_server(app)


@dataclass
class AssembledGuard:
    """A guard assembled like `build_server`, plus the limits interceptor and optional TLS."""

    server: grpc.Server
    port: int
    app: App
    health: health.HealthServicer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0).wait()
        self.app.store.close()


def assemble_guard(
    app: App,
    *,
    limiter: RateLimiter | None = None,
    limits: dict[str, MethodLimits] | None = None,
    credentials: grpc.ServerCredentials | None = None,
    workers: int = 4,
) -> AssembledGuard:
    # The gate outermost, as api/server.py wires it: it authenticates every call (servicers refuse
    # to run without its principal); without a limiter given, nothing is rate limited.
    interceptors: list[grpc.ServerInterceptor] = [
        GateInterceptor(
            app.households, limiter or InProcessRateLimiter(), limits if limiter is not None else {}
        ),
        ErrorInterceptor(),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", app.settings.max_message_bytes)],
    )
    guard_pb2_grpc.add_PurchaseGuardServicer_to_server(PurchaseGuardServicer(app.guard), server)
    admin_pb2_grpc.add_HouseholdAdminServicer_to_server(HouseholdAdminServicer(app.households), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return AssembledGuard(server, port, app, health_servicer)


# ------------------------------------------------------------------ audio
def speech_like(seconds: float = 2.5, rate: int = 16000, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A harmonic, syllable-modulated signal between quiet stretches, which the energy VAD counts
    as speech (the quiet lead and tail give it the contrast it measures against)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 3 * t))) / rate
    sig = sum(np.sin(k * phase) / k for k in range(1, 20))
    sig = sig * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2)
    sig = 0.3 * sig / np.max(np.abs(sig))
    quiet = int(0.3 * rate)
    out = np.concatenate([np.zeros(quiet), sig, np.zeros(quiet)])
    out = out + 0.001 * rng.standard_normal(out.shape[0])
    return out.astype(np.float32)


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


SPEECH_WAV = encode(speech_like(), 16000)


# ------------------------------------------------------------------ requests
def order_pb(total: int = 1500, currency: str = "USD", qty: int = 1) -> common_pb2.Order:
    return common_pb2.Order(
        items=[
            common_pb2.LineItem(
                sku="sku-1",
                title="Crayons",
                category="toys",
                quantity=qty,
                unit_price=common_pb2.Money(minor_units=total // qty, currency=currency),
            )
        ],
        total=common_pb2.Money(minor_units=total, currency=currency),
        merchant="shop",
    )


def evaluate_pb(
    request_id: str, household_id: str, device_id: str = "kitchen", audio: bytes = SPEECH_WAV
) -> guard_pb2.EvaluateRequest:
    return guard_pb2.EvaluateRequest(
        request_id=request_id,
        household_id=household_id,
        device_id=device_id,
        order=order_pb(),
        audio=common_pb2.Audio(encoded=audio),
    )


def operator_meta(token: str = OPERATOR) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Stubs:
    channel: grpc.Channel
    guard: guard_pb2_grpc.PurchaseGuardStub = field(init=False)
    admin: admin_pb2_grpc.HouseholdAdminStub = field(init=False)
    health: health_pb2_grpc.HealthStub = field(init=False)

    def __post_init__(self) -> None:
        self.guard = guard_pb2_grpc.PurchaseGuardStub(self.channel)
        self.admin = admin_pb2_grpc.HouseholdAdminStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def health_status(self) -> int:
        resp = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(resp.status)


@contextmanager
def stubs(target: str, credentials: grpc.ChannelCredentials | None = None, **options: Any) -> Iterator[Stubs]:
    opts = [("grpc.max_send_message_length", 64 << 20), *options.items()]
    channel = (
        grpc.insecure_channel(target, options=opts)
        if credentials is None
        else grpc.secure_channel(target, credentials, options=opts)
    )
    try:
        yield Stubs(as_backend(channel))
    finally:
        channel.close()


def create_household(s: Stubs, name: str = "Trust", currency: str = "USD") -> tuple[str, str]:
    resp = s.admin.CreateHousehold(
        admin_pb2.CreateHouseholdRequest(name=name, time_zone="America/Los_Angeles", currency=currency),
        metadata=operator_meta(),
        timeout=CALL_TIMEOUT_S,
    )
    return resp.household.household_id, resp.admin_token


def seed_voiceprint(store: Store, household_id: str, encoder_name: str, dim: int = 256) -> str:
    """An adult parent with a stored voiceprint, written straight to the store (no enrollment audio),
    so that every Evaluate really runs the encoder."""
    member_id = f"mem_seed_{household_id[-8:]}"
    store.add_member(Member(member_id, household_id, "Seed", Role.ADULT, True, NOW))
    vec = np.random.default_rng(7).standard_normal(dim)
    vec /= np.linalg.norm(vec)
    store.put_voiceprint(
        Voiceprint(member_id, household_id, encoder_name, tuple(float(x) for x in vec), 3, NOW)
    )
    return member_id


def snapshot(s: Stubs, household_id: str) -> tuple[bytes, ...]:
    """Everything a bad call must leave unchanged: decisions, members, policy, notifications,
    approvals and the audit chain (entry count included)."""
    meta = operator_meta()
    calls: Sequence[tuple[Callable[..., Any], Any]] = (
        (s.admin.ListDecisions, admin_pb2.ListDecisionsRequest(household_id=household_id, limit=500)),
        (s.admin.ListMembers, admin_pb2.ListMembersRequest(household_id=household_id)),
        (s.admin.GetPolicy, admin_pb2.GetPolicyRequest(household_id=household_id)),
        (s.admin.ListNotifications, admin_pb2.ListNotificationsRequest(household_id=household_id)),
        (s.admin.ListPendingApprovals, admin_pb2.ListPendingApprovalsRequest(household_id=household_id)),
        (s.admin.VerifyAudit, admin_pb2.VerifyAuditRequest(household_id=household_id)),
    )
    return tuple(
        fn(req, metadata=meta, timeout=CALL_TIMEOUT_S).SerializeToString(deterministic=True)
        for fn, req in calls
    )


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0, every_s: float = 0.1) -> bool:
    """Poll until `predicate` holds; False if it never did within the (generous) bound."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if predicate():
                return True
        except Exception:  # a probe that fails now may succeed on the next poll
            pass
        time.sleep(every_s)
    return False


# ------------------------------------------------------------------ external processes
def serve_subprocess(
    env_overrides: dict[str, str], *, wrapper: str | None = None, log_path: Path
) -> subprocess.Popen[bytes]:
    """`python -m purchase_guard serve` (or a wrapper that patches, then runs the same module)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASE_GUARD_")}
    env.update(env_overrides)
    args = [sys.executable, "-m", "purchase_guard", "serve"] if wrapper is None else [sys.executable, wrapper]
    out = log_path.open("wb")
    return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        with stubs(f"127.0.0.1:{port}") as s:
            return s.health_status() == health_pb2.HealthCheckResponse.SERVING

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if up():
                return
        except AssertionError:
            raise
        except Exception:  # not listening yet
            time.sleep(0.2)
            continue
    raise AssertionError("server did not become SERVING")


def require_or_skip(what: str) -> None:
    """Skip a test whose service or tool is missing; under PURCHASE_GUARD_REQUIRE_SERVICES=1 (CI), fail it."""
    import pytest

    if os.environ.get("PURCHASE_GUARD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (PURCHASE_GUARD_REQUIRE_SERVICES=1) but is not available")
    pytest.skip(f"{what} not available")


def require_binary(name: str) -> None:
    if shutil.which(name) is None:
        require_or_skip(name)


class Redis:
    """A redis-server of our own on a free port, to stop and start at will."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        assert wait_for(lambda: bool(client.ping()), 20), "redis-server did not start"
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def watch_health(target: str) -> tuple[list[int], threading.Thread, grpc.Channel]:
    """Stream health statuses (Watch) into a list from a background thread."""
    seen: list[int] = []
    channel = grpc.insecure_channel(target)
    stub = health_pb2_grpc.HealthStub(channel)

    def run() -> None:
        try:
            for resp in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120):
                seen.append(int(resp.status))
        except grpc.RpcError:
            pass  # the stream ends when the server goes away

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return seen, thread, channel
