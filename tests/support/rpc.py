"""gRPC test helpers."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest


def status_of(call: Callable[[], object]) -> grpc.StatusCode:
    """Run a call that must fail, and return its gRPC status code."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()
    return code


# The backend credential every test server is started with (support.server.local_settings).
BACKEND = "pgb_test-backend-" + "k" * 32
GUARD_PREFIX = "/purchaseguard.v1.PurchaseGuard/"


class _BackendAuth(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the backend credential to Evaluate and Confirm calls that carry no credential of their own."""

    def __init__(self, token: str) -> None:
        self._meta = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        if details.method.startswith(GUARD_PREFIX) and not any(
            k == "authorization" for k, _ in (details.metadata or ())
        ):
            details = details._replace(metadata=(*(details.metadata or ()), self._meta))
        return continuation(details, request)


def as_backend(channel: grpc.Channel, token: str = BACKEND) -> grpc.Channel:
    """`channel` with the backend credential on decision calls, as the voice backend sends it."""
    return grpc.intercept_channel(channel, _BackendAuth(token))
