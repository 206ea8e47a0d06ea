"""The limits interceptor on a real server: rate limits per household and device with a retry
hint, deadlines honoured before any work, malformed protobufs answered INVALID_ARGUMENT."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from trust.trust_harness import (
    AssembledGuard,
    assemble_guard,
    create_household,
    evaluate_pb,
    make_app,
    operator_meta,
    seed_voiceprint,
    snapshot,
    stubs,
)

from purchase_guard._gen.purchaseguard.v1 import admin_pb2, common_pb2, guard_pb2
from purchase_guard.api.gate import (
    CHECK_TAKE,
    CONFIRM,
    ENROLL,
    EVALUATE,
    RETRY_AFTER_KEY,
    GateInterceptor,
    MethodLimits,
    default_method_limits,
)
from purchase_guard.limits import InProcessRateLimiter, RateLimit
from purchase_guard.voice.encoder import Embedding, Samples, SpeakerEncoder

LIMITS = {
    EVALUATE: MethodLimits(
        per_household=RateLimit("evaluate-household", 4, 3600.0),
        per_device=RateLimit("evaluate-device", 2, 3600.0),
    ),
    CONFIRM: MethodLimits(
        per_household=RateLimit("confirm-household", 2, 3600.0),
        per_device=RateLimit("confirm-device", 2, 3600.0),
    ),
    ENROLL: MethodLimits(per_household=RateLimit("enroll-household", 1, 3600.0)),
}


class GatedEncoder:
    """Delegates to the real encoder; the first embed blocks until the test releases it."""

    def __init__(self, inner: SpeakerEncoder) -> None:
        self._inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.entered = threading.Event()
        self.release = threading.Event()
        self._armed = True

    def embed(self, samples_16k: Samples) -> Embedding:
        if self._armed:
            self._armed = False
            self.entered.set()
            self.release.wait(60)
        return self._inner.embed(samples_16k)

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        return [self.embed(x) for x in batch]


@pytest.fixture
def limited(tmp_path: Path, trust_encoder: SpeakerEncoder) -> Iterator[AssembledGuard]:
    app = make_app(tmp_path, trust_encoder)
    guard = assemble_guard(app, limiter=InProcessRateLimiter(), limits=LIMITS)
    yield guard
    guard.stop()


def _code_and_trailers(call: Any) -> tuple[grpc.StatusCode, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err: Any = info.value
    return err.code(), dict(err.trailing_metadata() or ())


def test_device_limit_refuses_with_resource_exhausted_and_a_retry_hint(limited: AssembledGuard) -> None:
    """Past the per-device limit Evaluate is RESOURCE_EXHAUSTED with a retry-after-ms trailer, and the
    refused request leaves nothing stored."""
    with stubs(limited.target) as s:
        hid, _ = create_household(s)
        for i in range(2):
            s.guard.Evaluate(evaluate_pb(f"r{i}", hid, "kitchen"), timeout=30)
        before = snapshot(s, hid)
        code, trailers = _code_and_trailers(
            lambda: s.guard.Evaluate(evaluate_pb("r9", hid, "kitchen"), timeout=30)
        )
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(trailers[RETRY_AFTER_KEY]) > 0
        assert snapshot(s, hid) == before


def test_household_limit_holds_across_devices_and_spares_other_households(limited: AssembledGuard) -> None:
    """Rotating device ids does not escape the per-household limit; another household is unaffected."""
    with stubs(limited.target) as s:
        hid, _ = create_household(s)
        other, _ = create_household(s, "Other")
        for i in range(4):
            s.guard.Evaluate(evaluate_pb(f"r{i}", hid, f"device-{i}"), timeout=30)
        code, _ = _code_and_trailers(
            lambda: s.guard.Evaluate(evaluate_pb("r5", hid, "device-new"), timeout=30)
        )
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert s.guard.Evaluate(evaluate_pb("r6", other, "device-0"), timeout=30).decision_id


def test_confirm_is_limited_per_household(limited: AssembledGuard) -> None:
    """Confirm calls (e.g. PIN guesses on unknown challenges) are limited too, before any lookup."""
    with stubs(limited.target) as s:
        hid, _ = create_household(s)
        req = evaluate_pb("x", hid)
        codes = []
        for i in range(3):
            confirm = guard_pb2.ConfirmRequest(
                request_id=f"c{i}",
                household_id=hid,
                challenge_id="chl_missing",
                order=req.order,
                audio=req.audio,
            )
            try:
                s.guard.Confirm(confirm, timeout=30)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert codes == [
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ]


def test_enrollment_is_limited_per_household(limited: AssembledGuard) -> None:
    """A second enrollment within the hour is refused before any audio is decoded."""
    with stubs(limited.target) as s:
        hid, _ = create_household(s)
        req = admin_pb2.EnrollVoiceRequest(
            household_id=hid, member_id="mem_none", utterances=[common_pb2.Audio(encoded=b"not audio")]
        )
        first, _ = _code_and_trailers(lambda: s.admin.EnrollVoice(req, metadata=operator_meta(), timeout=30))
        second, _ = _code_and_trailers(lambda: s.admin.EnrollVoice(req, metadata=operator_meta(), timeout=30))
        assert first is not grpc.StatusCode.RESOURCE_EXHAUSTED
        assert second is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_malformed_protobuf_is_invalid_argument_not_internal(limited: AssembledGuard) -> None:
    """Bytes that are not the request message are INVALID_ARGUMENT (gRPC alone says INTERNAL)."""
    with stubs(limited.target) as s:
        raw = s.channel.unary_unary(EVALUATE, request_serializer=None, response_deserializer=None)
        code, _ = _code_and_trailers(lambda: raw(b"\x0a\x05ab", timeout=10))
        assert code is grpc.StatusCode.INVALID_ARGUMENT


def test_a_request_whose_deadline_passed_in_the_queue_is_not_processed(
    tmp_path: Path, trust_encoder: SpeakerEncoder
) -> None:
    """With the only worker busy, a request whose deadline expires while queued is never decided:
    no decision is recorded for it once the worker gets to it."""
    gated = GatedEncoder(trust_encoder)
    app = make_app(tmp_path, gated)
    guard = assemble_guard(app, limiter=InProcessRateLimiter(), workers=1)
    try:
        with stubs(guard.target) as s:
            hid, _ = create_household(s)
            seed_voiceprint(app.store, hid, gated.name)
            first = threading.Thread(target=lambda: s.guard.Evaluate(evaluate_pb("busy", hid), timeout=120))
            first.start()
            assert gated.entered.wait(60)
            with pytest.raises(grpc.RpcError) as info:
                s.guard.Evaluate(evaluate_pb("late", hid), timeout=0.5)
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            gated.release.set()
            first.join(120)
            # One worker, first in first out: once this call is answered the late one was handled.
            s.guard.Evaluate(evaluate_pb("after", hid), timeout=60)
            decided = s.admin.ListDecisions(
                admin_pb2.ListDecisionsRequest(household_id=hid, limit=50),
                metadata=operator_meta(),
                timeout=30,
            )
            assert sorted(d.request_id for d in decided.decisions) == ["after", "busy"]
    finally:
        gated.release.set()
        guard.stop()


class FakeContext:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self.remaining

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")

    def set_trailing_metadata(self, md: Any) -> None:
        pass


class Refuse:
    """An authenticator that is never reached for a call outside the guard's services."""

    def authenticate(self, token: str | None, client_certificate: str | None = None) -> Any:
        raise AssertionError("not reached")


def test_interceptor_never_calls_the_servicer_after_the_deadline() -> None:
    """Unit check of the rule: time_remaining() <= 0 aborts DEADLINE_EXCEEDED and the servicer never runs."""
    called: list[Any] = []
    handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: called.append(req))
    details = type("D", (), {"method": "/x.Y/Z"})()
    wrapped = GateInterceptor(Refuse(), InProcessRateLimiter()).intercept_service(lambda _: handler, details)
    assert wrapped is not None
    ctx = FakeContext(0.0)
    with pytest.raises(RuntimeError):
        wrapped.unary_unary(b"req", ctx)  # type: ignore[misc]
    assert ctx.aborted is not None
    assert ctx.aborted[0] is grpc.StatusCode.DEADLINE_EXCEEDED
    assert called == []
    wrapped.unary_unary(b"req", FakeContext(None))  # type: ignore[misc]
    assert called == [b"req"]


def test_default_limits_cover_evaluate_confirm_and_enrollment() -> None:
    """The shipped limits meter the expensive or guessable calls (decisions, enrollment and the live
    take check that runs the decoder and aligner), per household (and device)."""
    limits = default_method_limits()
    assert set(limits) == {EVALUATE, CONFIRM, ENROLL, CHECK_TAKE}
    check, enroll = limits[CHECK_TAKE].per_household, limits[ENROLL].per_household
    assert check is not None
    assert enroll is not None
    assert check.capacity > enroll.capacity
    assert all(m.per_household is not None for m in limits.values())
    assert limits[EVALUATE].per_device is not None
