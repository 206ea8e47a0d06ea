"""The one interceptor that maps the error tree to gRPC status codes, with machine-readable details.

A refusal of bad input (`errors.InvalidArgument`) carries a google.rpc `BadRequest` in the
`grpc-status-details-bin` trailer beside the message: one field violation per field it names. A
refused enrollment names every unusable take by the request field that carried it
(`utterances[2]` for EnrollVoice, `takes[4]` for EnrollDigits) with that take's problem. Clients
read it with `grpc_status.rpc_status.from_call` (the CLI and the console do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

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

# The repeated request field whose items an enrollment's take indexes point into, per method.
TAKE_FIELDS: dict[str, str] = {
    "/purchaseguard.v1.HouseholdAdmin/EnrollVoice": "utterances",
    "/purchaseguard.v1.HouseholdAdmin/EnrollDigits": "takes",
}


def status_for(exc: errors.GuardError) -> grpc.StatusCode:
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def field_violations(exc: errors.GuardError, method: str) -> list[tuple[str, str]]:
    """(field path, problem) pairs for a refusal of bad input; empty when it names no field."""
    if not isinstance(exc, errors.InvalidArgument):
        return []
    if isinstance(exc, errors.EnrollmentRejected):
        takes = exc.field or TAKE_FIELDS.get(method, "takes")
        if exc.problems:
            return [(f"{takes}[{index}]", problem) for index, problem in exc.problems]
        return [(takes, str(exc))]
    if not exc.field:
        return []
    # The whole sentence (it starts with the field path): what a person is shown beside the field.
    return [(exc.field, str(exc))]


def rich_status(code: grpc.StatusCode, message: str, violations: list[tuple[str, str]]) -> grpc.Status:
    """A status whose details hold a BadRequest with `violations` (google.rpc.Status in the trailer)."""
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad)
    number = getattr(code_pb2, code.name)
    proto = status_pb2.Status(code=number, message=message, details=[detail])
    status: grpc.Status = rpc_status.to_status(proto)
    return status


def _abort(exc: errors.GuardError, method: str, context: grpc.ServicerContext) -> NoReturn:
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("guard_error", method=method, error=type(exc).__name__)
        context.abort(code, "internal error; the request was not applied")
    violations = field_violations(exc, method)
    if violations:
        context.abort_with_status(rich_status(code, str(exc), violations))
    context.abort(code, str(exc))
    raise AssertionError("unreachable")  # abort raises


def _unexpected(exc: Exception, method: str, context: grpc.ServicerContext) -> NoReturn:
    # Servicers never call abort themselves; this is only for truly unexpected errors.
    log.exception("unhandled_error", method=method, error=type(exc).__name__)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; the request was not applied")
    raise AssertionError("unreachable")


class ErrorInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None:
            return handler
        method = details.method
        if handler.unary_stream is not None:
            streaming = handler.unary_stream

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from streaming(request, context)
                except errors.GuardError as exc:
                    _abort(exc, method, context)
                except grpc.RpcError:
                    raise
                except Exception as exc:
                    if not context.is_active():
                        return  # the client went away mid-stream; nothing to answer
                    _unexpected(exc, method, context)

            return grpc.unary_stream_rpc_method_handler(
                streamed,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except errors.GuardError as exc:
                _abort(exc, method, context)
            except Exception as exc:
                _unexpected(exc, method, context)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
