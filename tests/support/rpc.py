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
