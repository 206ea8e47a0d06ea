"""The interceptor that applies request limits before any servicer runs.

Three refusals, all before the request touches the store or the model:

- A request whose bytes are not a valid protobuf is INVALID_ARGUMENT. (gRPC's own
  deserialisation failure is reported as INTERNAL, which tells a caller the guard is broken
  rather than that their request is; so this interceptor takes the raw bytes and parses them.)

- A call whose deadline has already passed is answered DEADLINE_EXCEEDED and not processed.
  A request can sit in the server's queue past its deadline (all workers busy); running it
  then would spend model time on an answer nobody waits for, and record a decision the
  caller never saw.
- Evaluate, Confirm and EnrollVoice take one token from a per-household and, where the
  request names one, a per-device bucket. An empty bucket is RESOURCE_EXHAUSTED with a
  `retry-after-ms` trailer; a limiter that cannot be reached is UNAVAILABLE (fail closed:
  nothing is decided unmetered, and no ALLOW can come out of it).

It must be the outermost interceptor (first in the server's list): it answers with
`context.abort` itself, and an inner `ErrorInterceptor` would remap that abort to INTERNAL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from purchase_guard.errors import Unavailable
from purchase_guard.ids import is_valid_id
from purchase_guard.limits.rate import RateLimit, RateLimited, RateLimiter, enforce
from purchase_guard.logs import get_logger

log = get_logger("purchase_guard.api.limits")

EVALUATE = "/purchaseguard.v1.PurchaseGuard/Evaluate"
CONFIRM = "/purchaseguard.v1.PurchaseGuard/Confirm"
ENROLL = "/purchaseguard.v1.HouseholdAdmin/EnrollVoice"
RETRY_AFTER_KEY = "retry-after-ms"

# Only ids the pipeline would accept become bucket keys; anything else shares one bucket, so
# malformed ids can neither make huge Redis keys nor mint fresh buckets at will.
_INVALID_KEY = "~invalid"


@dataclass(frozen=True, slots=True)
class MethodLimits:
    per_household: RateLimit | None = None
    per_device: RateLimit | None = None


def default_method_limits(
    *,
    evaluate_per_household_per_minute: int = 60,
    evaluate_per_device_per_minute: int = 20,
    confirm_per_household_per_minute: int = 30,
    confirm_per_device_per_minute: int = 10,
    enroll_per_household_per_hour: int = 20,
) -> dict[str, MethodLimits]:
    """Limits far above what a family does (a purchase is a minute's conversation) and far below
    what a script needs to probe voices or PINs."""
    return {
        EVALUATE: MethodLimits(
            RateLimit("evaluate-household", evaluate_per_household_per_minute, 60.0),
            RateLimit("evaluate-device", evaluate_per_device_per_minute, 60.0),
        ),
        CONFIRM: MethodLimits(
            RateLimit("confirm-household", confirm_per_household_per_minute, 60.0),
            RateLimit("confirm-device", confirm_per_device_per_minute, 60.0),
        ),
        ENROLL: MethodLimits(RateLimit("enroll-household", enroll_per_household_per_hour, 3600.0)),
    }


def _key(value: object) -> str:
    return value if isinstance(value, str) and is_valid_id(value) else _INVALID_KEY


def limit_checks(limits: MethodLimits, request: Any) -> list[tuple[RateLimit, str]]:
    """The (limit, key) pairs a request is charged against."""
    household = _key(getattr(request, "household_id", ""))
    checks: list[tuple[RateLimit, str]] = []
    if limits.per_household is not None:
        checks.append((limits.per_household, household))
    device = getattr(request, "device_id", "")
    if limits.per_device is not None and device:
        # Devices are keyed within their household: two households may use the same device name.
        checks.append((limits.per_device, f"{household}/{_key(device)}"))
    return checks


def deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


class LimitsInterceptor(grpc.ServerInterceptor):
    def __init__(self, limiter: RateLimiter, limits: Mapping[str, MethodLimits] | None = None) -> None:
        self._limiter = limiter
        self._limits = dict(default_method_limits() if limits is None else limits)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        parse = handler.request_deserializer
        method = details.method
        limits = self._limits.get(method)

        def wrapped(raw: Any, context: grpc.ServicerContext) -> Any:
            request = raw
            if parse is not None:
                try:
                    request = parse(raw)
                except Exception:
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message"
                    )
            if deadline_passed(context):
                log.warning("deadline_passed_before_start", method=method)
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "the deadline passed before the request could start; nothing was done",
                )
            if limits is not None:
                self._charge(method, limits, request, context)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=None,  # parsed in `wrapped`, where a failure can be INVALID_ARGUMENT
            response_serializer=handler.response_serializer,
        )

    def _charge(self, method: str, limits: MethodLimits, request: Any, context: grpc.ServicerContext) -> None:
        try:
            enforce(self._limiter, limit_checks(limits, request))
        except RateLimited as exc:
            log.warning("rate_limited", method=method, retry_after_s=exc.retry_after_s)
            retry_ms = max(1, math.ceil(exc.retry_after_s * 1000))
            context.set_trailing_metadata(((RETRY_AFTER_KEY, str(retry_ms)),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except Unavailable:
            log.warning("rate_limiter_unavailable", method=method)
            context.abort(
                grpc.StatusCode.UNAVAILABLE, "the rate limiter is unavailable; the request was not processed"
            )
