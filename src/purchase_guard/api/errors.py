"""The one interceptor that maps the error tree to gRPC status codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from purchase_guard import errors
from purchase_guard.logs import get_logger

log = get_logger("purchase_guard.api")

# Most specific first: the first isinstance match wins.
STATUS: tuple[tuple[type[errors.GuardError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_for(exc: errors.GuardError) -> grpc.StatusCode:
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


class ErrorInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except errors.GuardError as exc:
                code = status_for(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("guard_error", method=method, error=type(exc).__name__)
                    context.abort(code, "internal error; the request was not applied")
                context.abort(code, str(exc))
            except Exception as exc:
                # Servicers never call abort themselves; this is only for truly unexpected errors.
                log.exception("unhandled_error", method=method, error=type(exc).__name__)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; the request was not applied")

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
