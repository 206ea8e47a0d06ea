"""Bad input on every RPC: a clear status, the server keeps serving, stored data is unchanged."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.audio import wav_bytes
from support.rpc import as_backend, status_of

from purchase_guard._gen.purchaseguard.v1 import common_pb2, guard_pb2, guard_pb2_grpc
from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def tone(seconds: float = 2.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


GOOD_AUDIO = wav_bytes(tone(), 16000)


def order(total: int = 1000, unit: int | None = None, currency: str = "USD", qty: int = 1) -> dict[str, Any]:
    return {
        "items": [
            {
                "sku": "s",
                "title": "t",
                "category": "c",
                "quantity": qty,
                "unit_price": {"minor_units": str(total if unit is None else unit), "currency": currency},
            }
        ],
        "total": {"minor_units": str(total), "currency": currency},
        "merchant": "m",
    }


@pytest.fixture
def household(operator: GuardClient) -> str:
    hid: str = operator.create_household("Bad input", "America/New_York", "USD")["household"]["household_id"]
    return hid


@pytest.fixture
def raw_stub(server: RunningServer) -> Iterator[guard_pb2_grpc.PurchaseGuardStub]:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 << 20)]
    )
    yield guard_pb2_grpc.PurchaseGuardStub(as_backend(channel))
    channel.close()


def state(operator: GuardClient, hid: str) -> tuple[Any, ...]:
    return (
        operator.list_decisions(hid),
        operator.list_members(hid),
        operator.get_policy(hid),
        operator.verify_audit(hid),
    )


def assert_still_serving(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


CASES: list[tuple[str, Callable[[GuardClient, str], object], grpc.StatusCode]] = [
    ("garbage audio", lambda c, h: c.evaluate("b1", h, "d", order(), b"\x00garbage" * 100), INVALID),
    ("truncated wav", lambda c, h: c.evaluate("b2", h, "d", order(), GOOD_AUDIO[:30]), INVALID),
    ("empty audio", lambda c, h: c.evaluate("b3", h, "d", order(), b""), INVALID),
    (
        "4 kHz audio",
        lambda c, h: c.evaluate("b4", h, "d", order(), wav_bytes(tone(rate=4000), 4000)),
        INVALID,
    ),
    (
        "96 kHz audio",
        lambda c, h: c.evaluate("b5", h, "d", order(), wav_bytes(tone(rate=96000), 96000)),
        INVALID,
    ),
    (
        "too long audio",
        lambda c, h: c.evaluate("b6", h, "d", order(), wav_bytes(tone(40.0, 8000), 8000)),
        INVALID,
    ),
    ("negative amount", lambda c, h: c.evaluate("b7", h, "d", order(-5), GOOD_AUDIO), INVALID),
    ("total mismatch", lambda c, h: c.evaluate("b8", h, "d", order(1000, unit=999), GOOD_AUDIO), INVALID),
    ("bad currency", lambda c, h: c.evaluate("b9", h, "d", order(currency="XYZ"), GOOD_AUDIO), INVALID),
    ("other currency", lambda c, h: c.evaluate("b10", h, "d", order(currency="EUR"), GOOD_AUDIO), INVALID),
    ("zero quantity", lambda c, h: c.evaluate("b11", h, "d", order(0, qty=0), GOOD_AUDIO), INVALID),
    ("missing request id", lambda c, h: c.evaluate("", h, "d", order(), GOOD_AUDIO), INVALID),
    (
        "unknown household",
        lambda c, h: c.evaluate("b12", "hh_nope", "d", order(), GOOD_AUDIO),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "unknown challenge",
        lambda c, h: c.confirm("b13", h, "chl_nope", order(), "1", GOOD_AUDIO),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "unknown member enroll",
        lambda c, h: c.enroll(h, "mem_nope", [GOOD_AUDIO] * 3),
        grpc.StatusCode.NOT_FOUND,
    ),
    ("weak pin", lambda c, h: c.set_pin(h, "1234"), INVALID),
    ("non-digit pin", lambda c, h: c.set_pin(h, "12a4"), INVALID),
    ("bad time zone", lambda c, h: c.create_household("x", "Mars/Olympus", "USD"), INVALID),
    ("bad currency household", lambda c, h: c.create_household("x", "Europe/Paris", "EURO"), INVALID),
    ("parent child", lambda c, h: c.add_member(h, "Kid", "CHILD", True), INVALID),
    (
        "negative cap",
        lambda c, h: c.set_policy(
            h,
            {
                "rules": [
                    {
                        "role": "ADULT",
                        "mode": "PURCHASE_ALLOWED",
                        "daily_cap_minor": "-1",
                        "on_limit": "LIMIT_DENY",
                        "challenge_method": "SPOKEN_PIN",
                    }
                ]
            },
        ),
        INVALID,
    ),
]


@pytest.mark.parametrize(("name", "call", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_clear_status_and_changes_nothing(
    name: str,
    call: Callable[[GuardClient, str], object],
    code: grpc.StatusCode,
    operator: GuardClient,
    household: str,
    server: RunningServer,
) -> None:
    """Each malformed request gets its specific status with a message, and the household is untouched."""
    before = state(operator, household)
    with pytest.raises(grpc.RpcError) as info:
        call(operator, household)
    assert info.value.code() is code, info.value.details()
    assert info.value.details()
    assert state(operator, household) == before
    assert_still_serving(server)


def test_pcm16_with_wrong_rate_or_odd_length(
    raw_stub: guard_pb2_grpc.PurchaseGuardStub, household: str
) -> None:
    """Raw PCM16 needs a rate in 8-48 kHz and whole samples."""
    samples = struct.pack("<100h", *range(100))
    for rate, data in ((0, samples), (7999, samples), (16000, samples + b"\x01")):
        req = guard_pb2.EvaluateRequest(
            request_id=f"p{rate}{len(data)}",
            household_id=household,
            device_id="d",
            order=common_pb2.Order(
                items=[
                    common_pb2.LineItem(
                        sku="s",
                        category="c",
                        quantity=1,
                        unit_price=common_pb2.Money(minor_units=1, currency="USD"),
                    )
                ],
                total=common_pb2.Money(minor_units=1, currency="USD"),
                merchant="m",
            ),
            audio=common_pb2.Audio(pcm16=common_pb2.RawPcm16(samples=data, sample_rate_hz=rate)),
        )
        assert status_of(lambda r=req: raw_stub.Evaluate(r, timeout=10)) is INVALID


def test_oversized_payload_is_refused_by_size(
    raw_stub: guard_pb2_grpc.PurchaseGuardStub, household: str, server: RunningServer
) -> None:
    """A message over the configured maximum is RESOURCE_EXHAUSTED and the server keeps serving."""
    req = guard_pb2.EvaluateRequest(
        request_id="huge",
        household_id=household,
        device_id="d",
        audio=common_pb2.Audio(encoded=b"\0" * (3 << 20)),
    )
    assert status_of(lambda: raw_stub.Evaluate(req, timeout=10)) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(server)


def test_huge_line_item_count_is_invalid(operator: GuardClient, household: str) -> None:
    """More than 100 line items is INVALID_ARGUMENT, not a slow decision."""
    big = order()
    big["items"] = big["items"] * 101
    big["total"]["minor_units"] = str(1000 * 101)
    assert status_of(lambda: operator.evaluate("many", household, "d", big, GOOD_AUDIO)) is INVALID


def test_silent_audio_is_a_decision_not_an_error(
    operator: GuardClient, household: str, tmp_path: Path
) -> None:
    """Decodable but silent audio is a normal answer (never ALLOW) with AUDIO_UNUSABLE."""
    silent = wav_bytes(np.zeros(32000, dtype=np.float32), 16000)
    resp = operator.evaluate("silent", household, "d", order(), silent)
    assert resp["outcome"] in ("DENY", "CHALLENGE")
    assert "AUDIO_UNUSABLE" in {r["code"] for r in resp["reasons"]}
