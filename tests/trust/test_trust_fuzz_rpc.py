"""Fuzzing every RPC of a real server: malformed protobuf bytes, and well-formed requests full of
hostile values (damaged audio, extreme rates, huge line-item counts, unicode oddities, int64
extremes). Every call has a deadline; none may hang, answer INTERNAL or UNKNOWN, or change what
is stored when it is refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trust.fuzz_strategies import (
    FUZZ_COUNTS,
    encoded_audio,
    extreme_rate,
    int32,
    int64,
    mutated_bytes,
    odd_text,
)
from trust.trust_harness import (
    SPEECH_WAV,
    AssembledGuard,
    Stubs,
    assemble_guard,
    create_household,
    make_app,
    operator_meta,
    order_pb,
    seed_voiceprint,
    snapshot,
)

from purchase_guard._gen.purchaseguard.v1 import admin_pb2, common_pb2, guard_pb2
from purchase_guard.limits import InProcessRateLimiter
from purchase_guard.voice.encoder import SpeakerEncoder

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
DEADLINE_S = 30.0  # generous: a hang shows as DEADLINE_EXCEEDED, which fails the test
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

SERVICES = {
    "purchaseguard.v1.PurchaseGuard": guard_pb2.DESCRIPTOR.services_by_name["PurchaseGuard"],
    "purchaseguard.v1.HouseholdAdmin": admin_pb2.DESCRIPTOR.services_by_name["HouseholdAdmin"],
}
METHODS = [f"/{name}/{m.name}" for name, svc in SERVICES.items() for m in svc.methods]


@dataclass
class Target:
    guard: AssembledGuard
    stubs: Stubs
    household_id: str
    member_id: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, trust_encoder: SpeakerEncoder) -> Iterator[Target]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-rpc")
    app = make_app(tmp, trust_encoder, max_audio_seconds=10.0)
    # Limits far above the fuzz volume: these suites exercise the handlers, not the limiter.
    guard = assemble_guard(app, limiter=InProcessRateLimiter(), limits={}, workers=4)
    channel = grpc.insecure_channel(guard.target, options=[("grpc.max_send_message_length", 64 << 20)])
    s = Stubs(channel)
    hid, _ = create_household(s, "Fuzz target")
    member = seed_voiceprint(app.store, hid, trust_encoder.name)
    s.admin.SetPin(
        admin_pb2.SetPinRequest(household_id=hid, pin="7391"), metadata=operator_meta(), timeout=30
    )
    yield Target(guard, s, hid, member)
    channel.close()
    guard.stop()


class Baseline:
    """The stored state a refused call must not change; re-read after a call that succeeded."""

    def __init__(self, t: Target) -> None:
        self.t = t
        self.state = snapshot(t.stubs, t.household_id)

    def after(self, code: grpc.StatusCode, *, allow_change: bool) -> None:
        now = snapshot(self.t.stubs, self.t.household_id)
        if code is not grpc.StatusCode.OK or not allow_change:
            assert now == self.state, f"state changed after a call answered {code}"
        self.state = now


def call(fn: Any, request: Any, *, meta: bool = True) -> tuple[grpc.StatusCode, Any]:
    try:
        response = fn(request, timeout=DEADLINE_S, metadata=operator_meta() if meta else None)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
        details = exc.details()  # type: ignore[attr-defined]
        response = None
    else:
        code, details = grpc.StatusCode.OK, ""
    assert code not in FORBIDDEN, f"{code}: {details}"
    return code, response


# ------------------------------------------------------------------ malformed bytes, every method
@pytest.mark.parametrize("method", METHODS)
@FUZZ
@given(data=st.one_of(st.binary(max_size=512), mutated_bytes(b"")))
def test_random_bytes_to_every_method(target: Target, method: str, data: bytes) -> None:
    """Arbitrary bytes to any method: a status a caller can act on, and nothing stored changes
    unless the call succeeded (random bytes can be a valid, empty-ish request)."""
    FUZZ_COUNTS["rpc (random bytes)"] += 1
    baseline = Baseline(target)
    raw = target.stubs.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    code, _ = call(raw, data)
    baseline.after(code, allow_change=True)


@FUZZ
@given(
    data=mutated_bytes(
        guard_pb2.EvaluateRequest(
            request_id="r",
            household_id="hh_x",
            device_id="d",
            order=order_pb(),
            audio=common_pb2.Audio(encoded=SPEECH_WAV[:2000]),
        ).SerializeToString()
    )
)
def test_damaged_evaluate_bytes(target: Target, data: bytes) -> None:
    """A valid Evaluate request, damaged (truncated, bit flips, bad UTF-8, long varints): never INTERNAL."""
    FUZZ_COUNTS["rpc (damaged Evaluate bytes)"] += 1
    raw = target.stubs.channel.unary_unary(
        "/purchaseguard.v1.PurchaseGuard/Evaluate", request_serializer=None, response_deserializer=None
    )
    baseline = Baseline(target)
    code, _ = call(raw, data)
    baseline.after(code, allow_change=False)  # household "hh_x" does not exist: nothing may change


# ------------------------------------------------------------------ well-formed, hostile values
@st.composite
def hostile_order(draw: Any) -> common_pb2.Order:
    n = draw(st.one_of(st.integers(0, 3), st.sampled_from([100, 101, 5000])))
    item = common_pb2.LineItem(
        sku=draw(st.one_of(st.just("sku"), odd_text())),
        title=draw(odd_text()),
        category=draw(st.one_of(st.just("toys"), odd_text())),
        quantity=draw(int32()),
        unit_price=common_pb2.Money(
            minor_units=draw(int64()), currency=draw(st.sampled_from(["USD", "usd", "", "XXX", "\u0000SD"]))
        ),
    )
    return common_pb2.Order(
        items=[item] * n,
        total=common_pb2.Money(
            minor_units=draw(int64()), currency=draw(st.sampled_from(["USD", " usd ", "EUR", "ZZZ"]))
        ),
        merchant=draw(st.one_of(st.just("shop"), odd_text(300))),
    )


@st.composite
def hostile_audio(draw: Any) -> common_pb2.Audio:
    kind = draw(st.sampled_from(["encoded", "pcm16", "none"]))
    if kind == "encoded":
        return common_pb2.Audio(encoded=draw(st.one_of(encoded_audio(), st.just(SPEECH_WAV))))
    if kind == "pcm16":
        samples = draw(st.binary(max_size=20000))
        return common_pb2.Audio(
            pcm16=common_pb2.RawPcm16(samples=samples, sample_rate_hz=draw(extreme_rate()))
        )
    return common_pb2.Audio()


def hostile_id(t: Target) -> st.SearchStrategy[str]:
    return st.one_of(st.just(t.household_id), odd_text(), st.just("hh_" + "a" * 200))


@FUZZ
@given(data=st.data())
def test_evaluate_with_hostile_values(target: Target, data: st.DataObject) -> None:
    """Evaluate with hostile field values: never INTERNAL, never ALLOW (no voice can match the seeded
    print), and a refused request stores nothing."""
    FUZZ_COUNTS["rpc (hostile Evaluate)"] += 1
    req = guard_pb2.EvaluateRequest(
        request_id=data.draw(st.one_of(st.uuids().map(str), odd_text())),
        household_id=data.draw(hostile_id(target)),
        device_id=data.draw(st.one_of(st.just("kitchen"), odd_text())),
        order=data.draw(st.one_of(hostile_order(), st.just(order_pb()))),
        audio=data.draw(hostile_audio()),
        transcript=data.draw(st.one_of(st.just(""), odd_text(), st.just("x" * 2001))),
    )
    baseline = Baseline(target)
    code, resp = call(target.stubs.guard.Evaluate, req, meta=False)
    if resp is not None:
        assert resp.outcome != common_pb2.ALLOW
    baseline.after(code, allow_change=True)


@FUZZ
@given(data=st.data())
def test_confirm_with_hostile_values(target: Target, data: st.DataObject) -> None:
    """Confirm with hostile ids, digits, orders and audio: never INTERNAL or ALLOW; refused stores nothing."""
    FUZZ_COUNTS["rpc (hostile Confirm)"] += 1
    req = guard_pb2.ConfirmRequest(
        request_id=data.draw(st.one_of(st.uuids().map(str), odd_text())),
        household_id=data.draw(hostile_id(target)),
        challenge_id=data.draw(st.one_of(st.just("chl_missing"), odd_text())),
        order=data.draw(st.one_of(hostile_order(), st.just(order_pb()))),
        spoken_digits=data.draw(st.one_of(st.just("7391"), odd_text(), st.just("1" * 201))),
        audio=data.draw(hostile_audio()),
        device_id=data.draw(st.one_of(st.just(""), odd_text())),
    )
    baseline = Baseline(target)
    code, resp = call(target.stubs.guard.Confirm, req, meta=False)
    if resp is not None:
        assert resp.outcome != common_pb2.ALLOW
    baseline.after(code, allow_change=True)


@FUZZ
@given(data=st.data())
def test_admin_calls_with_hostile_values(target: Target, data: st.DataObject) -> None:
    """Admin calls with hostile names, roles, PINs, limits, policies and ids: never INTERNAL; refused calls
    change nothing."""
    FUZZ_COUNTS["rpc (hostile admin)"] += 1
    hid = data.draw(hostile_id(target))
    admin = target.stubs.admin
    choice = data.draw(
        st.sampled_from(["create", "member", "pin", "list", "policy", "resolve", "remove", "enroll"])
    )
    if choice == "create":
        req: Any = admin_pb2.CreateHouseholdRequest(
            name=data.draw(odd_text(120)),
            time_zone=data.draw(
                st.one_of(st.sampled_from(["UTC", "../../etc/passwd", "Mars/Olympus", "\x00"]), odd_text())
            ),
            currency=data.draw(st.one_of(st.just("USD"), odd_text(5))),
        )
        fn = admin.CreateHousehold
    elif choice == "member":
        req = admin_pb2.AddMemberRequest(
            household_id=hid,
            display_name=data.draw(odd_text(120)),
            role=data.draw(int32()),
            is_parent=data.draw(st.booleans()),
        )
        fn = admin.AddMember
    elif choice == "pin":
        req = admin_pb2.SetPinRequest(
            household_id=hid, pin=data.draw(st.one_of(odd_text(12), st.just("0000")))
        )
        fn = admin.SetPin
    elif choice == "list":
        req = admin_pb2.ListDecisionsRequest(household_id=hid, limit=data.draw(int32()))
        fn = admin.ListDecisions
    elif choice == "policy":
        rule = admin_pb2.RoleRule(
            role=data.draw(int32()),
            mode=data.draw(int32()),
            challenge_method=data.draw(int32()),
            on_limit=data.draw(int32()),
            max_order_minor=data.draw(int64()),
            daily_cap_minor=data.draw(int64()),
            monthly_cap_minor=data.draw(int64()),
            blocked_categories=data.draw(st.lists(odd_text(20), max_size=3)),
        )
        policy = admin_pb2.Policy(
            rules=[rule] * data.draw(st.sampled_from([0, 1, 2, 500])),
            household_daily_cap_minor=data.draw(int64()),
            household_monthly_cap_minor=data.draw(int64()),
            blocked_categories=data.draw(st.lists(odd_text(20), max_size=3)),
        )
        req = admin_pb2.SetPolicyRequest(household_id=hid, policy=policy)
        fn = admin.SetPolicy
    elif choice == "resolve":
        req = admin_pb2.ResolveApprovalRequest(
            household_id=hid,
            challenge_id=data.draw(odd_text()),
            parent_member_id=data.draw(st.one_of(st.just(target.member_id), odd_text())),
            approve=data.draw(st.booleans()),
        )
        fn = admin.ResolveApproval
    elif choice == "remove":
        req = admin_pb2.RemoveMemberRequest(household_id=hid, member_id=data.draw(odd_text()))
        fn = admin.RemoveMember
    else:
        req = admin_pb2.EnrollVoiceRequest(
            household_id=hid,
            member_id=data.draw(st.one_of(st.just(target.member_id), odd_text())),
            utterances=data.draw(st.lists(hostile_audio(), max_size=12)),
        )
        fn = admin.EnrollVoice
    baseline = Baseline(target)
    code, _ = call(fn, req)
    baseline.after(code, allow_change=True)
