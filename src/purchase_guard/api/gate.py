"""The front door: every unary call is parsed, authenticated, scoped and metered here, in that order.

1. A request whose bytes are not a valid protobuf is INVALID_ARGUMENT (gRPC's own
   deserialisation failure would be INTERNAL, which tells a caller the guard is broken).
2. A call whose deadline has already passed is DEADLINE_EXCEEDED and not processed (it sat in
   the queue; an answer nobody waits for would still record a decision).
3. Authentication: the bearer token, or on an mTLS listener the verified client certificate,
   becomes a `Principal`. No credential, or an unknown one, is UNAUTHENTICATED before anything
   else happens: no rate-limit bucket is charged, no payload validated, nothing looked up.
4. Authorisation of the method and scope: decision RPCs (Evaluate, Confirm) take backend and
   device credentials only; admin and data RPCs take the operator, a household's token or a
   parent's credential; the broadcast registry and the test clock take the operator only. A
   request naming a household the credential is not for is PERMISSION_DENIED, and so is a device
   credential naming another device, still before the payload is looked at.
5. Rate limits, charged only now, per authenticated caller and below it per household and per
   device. An empty bucket is RESOURCE_EXHAUSTED with a `retry-after-ms` trailer; a limiter that
   cannot be reached or answers nonsense is UNAVAILABLE (fail closed: nothing runs unmetered).

The principal travels to the servicers in a context variable (`current_principal`). This must be
the outermost interceptor: it answers with `context.abort` itself, and an inner `ErrorInterceptor`
would remap that abort to INTERNAL.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from purchase_guard._gen.purchaseguard.v1 import (
    admin_pb2,
    broadcast_pb2,
    guard_pb2,
    privacy_pb2,
    testing_pb2,
)
from purchase_guard.errors import GuardError, PermissionDenied, Unauthenticated, Unavailable
from purchase_guard.household.principals import ADMINS, DECIDERS, Principal, PrincipalKind
from purchase_guard.ids import is_valid_id
from purchase_guard.limits.rate import RateLimit, RateLimited, RateLimiter, enforce
from purchase_guard.logs import get_logger

log = get_logger("purchase_guard.api.gate")

EVALUATE = "/purchaseguard.v1.PurchaseGuard/Evaluate"
CONFIRM = "/purchaseguard.v1.PurchaseGuard/Confirm"
ENROLL = "/purchaseguard.v1.HouseholdAdmin/EnrollVoice"
CHECK_TAKE = "/purchaseguard.v1.HouseholdAdmin/CheckEnrollmentTake"
RETRY_AFTER_KEY = "retry-after-ms"

# Only ids the pipeline would accept become bucket keys; anything else shares one bucket, so
# malformed ids can neither make huge Redis keys nor mint fresh buckets at will.
_INVALID_KEY = "~invalid"

_PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("purchase_guard_principal")


def current_principal() -> Principal:
    """The authenticated caller of the call being served (set by `GateInterceptor`)."""
    try:
        return _PRINCIPAL.get()
    except LookupError:
        # A servicer reached without the gate: a wiring bug, never a reason to serve anonymously.
        raise GuardError("no authenticated principal for this call") from None


def _methods(descriptor: Any, service: str) -> list[str]:
    svc = descriptor.services_by_name[service]
    return [f"/{svc.full_name}/{m.name}" for m in svc.methods]


def method_rules() -> dict[str, frozenset[PrincipalKind]]:
    """Which principals may call each method of the guard's own services."""
    operator = frozenset({PrincipalKind.OPERATOR})
    rules: dict[str, frozenset[PrincipalKind]] = {}
    for name in _methods(guard_pb2.DESCRIPTOR, "PurchaseGuard"):
        rules[name] = DECIDERS
    for name in _methods(admin_pb2.DESCRIPTOR, "HouseholdAdmin"):
        rules[name] = ADMINS
    for name in _methods(privacy_pb2.DESCRIPTOR, "HouseholdData"):
        rules[name] = ADMINS
    for name in _methods(broadcast_pb2.DESCRIPTOR, "BroadcastRegistry"):
        rules[name] = operator
    for name in _methods(testing_pb2.DESCRIPTOR, "TestControl"):
        rules[name] = operator
    return rules


@dataclass(frozen=True, slots=True)
class MethodLimits:
    per_caller: RateLimit | None = None  # for credentials scoped to a household or device
    per_backend: RateLimit | None = None  # for fleet-wide backend credentials (a whole platform)
    per_household: RateLimit | None = None
    per_device: RateLimit | None = None


def default_method_limits(
    *,
    evaluate_per_household_per_minute: int = 60,
    evaluate_per_device_per_minute: int = 20,
    confirm_per_household_per_minute: int = 30,
    confirm_per_device_per_minute: int = 10,
    enroll_per_household_per_hour: int = 20,
    decisions_per_caller_per_minute: int = 120,
    decisions_per_backend_per_minute: int = 60_000,
) -> dict[str, MethodLimits]:
    """Limits far above what a family does (a purchase is a minute's conversation) and far below
    what a script needs to probe voices or PINs. A backend speaks for a whole fleet, so its own
    bucket is a fleet's; the household and device buckets still hold for each home."""
    caller = RateLimit("decide-caller", decisions_per_caller_per_minute, 60.0)
    backend = RateLimit("decide-backend", decisions_per_backend_per_minute, 60.0)
    return {
        EVALUATE: MethodLimits(
            caller,
            backend,
            RateLimit("evaluate-household", evaluate_per_household_per_minute, 60.0),
            RateLimit("evaluate-device", evaluate_per_device_per_minute, 60.0),
        ),
        CONFIRM: MethodLimits(
            caller,
            backend,
            RateLimit("confirm-household", confirm_per_household_per_minute, 60.0),
            RateLimit("confirm-device", confirm_per_device_per_minute, 60.0),
        ),
        ENROLL: MethodLimits(
            per_household=RateLimit("enroll-household", enroll_per_household_per_hour, 3600.0)
        ),
        # Live feedback runs the decoder and VAD (and the digit aligner) on every take recorded:
        # enough for a family re-recording takes, not for a service to check audio at scale.
        CHECK_TAKE: MethodLimits(
            per_household=RateLimit("check-take-household", 6 * enroll_per_household_per_hour, 3600.0)
        ),
    }


def _key(value: object) -> str:
    return value if isinstance(value, str) and is_valid_id(value) else _INVALID_KEY


def limit_checks(limits: MethodLimits, principal: Principal, request: Any) -> list[tuple[RateLimit, str]]:
    """The (limit, key) pairs an authenticated request is charged against."""
    checks: list[tuple[RateLimit, str]] = []
    own = limits.per_backend if principal.kind is PrincipalKind.BACKEND else limits.per_caller
    if own is not None:
        checks.append((own, principal.caller_id))
    household = _key(getattr(request, "household_id", ""))
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


class Authenticator(Protocol):
    def authenticate(self, token: str | None, client_certificate: str | None = None) -> Principal: ...


def bearer_token(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


def client_certificate(context: grpc.ServicerContext) -> str | None:
    """The verified mTLS client certificate's subject (common name), if the transport has one."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or ()
    for name in names:
        text = name.decode("utf-8", errors="replace") if isinstance(name, bytes) else str(name)
        if text:
            return text
    return None


def check_method(principal: Principal, allowed: frozenset[PrincipalKind]) -> None:
    if principal.kind not in allowed:
        what = "deciding purchases" if allowed == DECIDERS else "this call"
        raise PermissionDenied(f"a {principal.kind.value} credential is not accepted for {what}")


def check_scope(principal: Principal, request: Any) -> None:
    """PERMISSION_DENIED for a request that names a household (or device) the credential is not for."""
    household = getattr(request, "household_id", None)
    if isinstance(household, str) and household and not principal.may_name(household):
        raise PermissionDenied("this credential is not valid for that household")
    if principal.kind is PrincipalKind.DEVICE:
        device = getattr(request, "device_id", "")
        if device != principal.device_id:
            raise PermissionDenied("a device credential speaks only for its own device_id")


class GateInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter,
        limits: Mapping[str, MethodLimits] | None = None,
        *,
        mtls: bool = False,
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._limits = dict(default_method_limits() if limits is None else limits)
        self._rules = method_rules()
        self._mtls = mtls

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        parse = handler.request_deserializer
        method = details.method
        allowed = self._rules.get(method)
        limits = self._limits.get(method)

        def admit(raw: Any, context: grpc.ServicerContext) -> tuple[Any, Principal | None]:
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
            if allowed is None:  # not one of the guard's services (health checks)
                return request, None
            principal = self._admit(method, allowed, request, context)
            if limits is not None:
                self._charge(method, limits, principal, request, context)
            return request, principal

        if handler.unary_stream is not None:
            # Server streaming (WatchEvents): admitted exactly like a unary call, before the first
            # message; the principal stays set for the whole stream.
            streaming = handler.unary_stream

            def streamed(raw: Any, context: grpc.ServicerContext) -> Any:
                request, principal = admit(raw, context)
                if principal is None:
                    yield from streaming(request, context)
                    return
                token = _PRINCIPAL.set(principal)
                try:
                    yield from streaming(request, context)
                finally:
                    _PRINCIPAL.reset(token)

            return grpc.unary_stream_rpc_method_handler(
                streamed, request_deserializer=None, response_serializer=handler.response_serializer
            )
        inner = handler.unary_unary
        assert inner is not None

        def wrapped(raw: Any, context: grpc.ServicerContext) -> Any:
            request, principal = admit(raw, context)
            if principal is None:
                return inner(request, context)
            token = _PRINCIPAL.set(principal)
            try:
                return inner(request, context)
            finally:
                _PRINCIPAL.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=None,  # parsed in `wrapped`, where a failure can be INVALID_ARGUMENT
            response_serializer=handler.response_serializer,
        )

    def _admit(
        self, method: str, allowed: frozenset[PrincipalKind], request: Any, context: grpc.ServicerContext
    ) -> Principal:
        try:
            certificate = client_certificate(context) if self._mtls else None
            principal = self._authenticator.authenticate(bearer_token(context), certificate)
            check_method(principal, allowed)
            check_scope(principal, request)
        except Unauthenticated as exc:
            log.info("unauthenticated", method=method)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except PermissionDenied as exc:
            log.info("permission_denied", method=method)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except Unavailable as exc:
            log.warning("authentication_unavailable", method=method)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"credentials cannot be checked right now: {exc}")
        return principal

    def _charge(
        self,
        method: str,
        limits: MethodLimits,
        principal: Principal,
        request: Any,
        context: grpc.ServicerContext,
    ) -> None:
        try:
            enforce(self._limiter, limit_checks(limits, principal, request))
        except RateLimited as exc:
            log.warning("rate_limited", method=method, retry_after_s=exc.retry_after_s)
            retry_ms = max(1, math.ceil(exc.retry_after_s * 1000))
            context.set_trailing_metadata(((RETRY_AFTER_KEY, str(retry_ms)),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except Exception as exc:
            # Unavailable, or a backend that answered something unusable: fail closed, and say so
            # in words (never the driver's text or an object's repr).
            log.warning("rate_limiter_unavailable", method=method, error=type(exc).__name__)
            context.abort(
                grpc.StatusCode.UNAVAILABLE, "the rate limiter is unavailable; the request was not processed"
            )
