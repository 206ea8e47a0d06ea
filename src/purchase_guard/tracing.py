"""OpenTelemetry tracing of the decision steps: opt-in by settings, optional at install.

`configure_tracing` is called once at start with `Settings.otel_enabled` and
`Settings.otel_endpoint`; the pipeline wraps each step in `with span("voice.verify", ...)`.
OpenTelemetry is the optional extra `purchase-guard[otel]`, so nothing here imports it at
module level: when tracing is off, or the extra is missing, `span()` hands back one shared
no-op object and costs a global read, which keeps the call sites free of `if` clutter.

Span attributes are an export channel like log lines, so the same masking rule holds: a key
that names a PIN, audio, an embedding, a token or a transcript is dropped (never exported),
only str/int/float/bool values pass, and long strings are cut. An exception inside a span
marks it ERROR with the exception's type only: messages and stack traces are not exported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from purchase_guard.logs import MASKED, get_logger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

AttributeValue = str | int | float | bool

TRACER_NAME = "purchase_guard"
MAX_STRING_CHARS = 128
DROPPED_KEY = "purchase_guard.dropped_attributes"

# Word-level match (split on . _ -), so "audio.bytes" and "pin_hash" go but "spinner" stays.
_SENSITIVE_WORDS = frozenset(
    {
        "pin",
        "audio",
        "pcm",
        "samples",
        "embedding",
        "embeddings",
        "voiceprint",
        "digits",
        "token",
        "authorization",
        "transcript",
        "secret",
        "password",
        "dsn",
    }
)
_WORD_SPLIT = re.compile(r"[._\-]+")

log = get_logger("purchase_guard.tracing")


class SpanHandle(Protocol):
    """What a `with span(...) as s` block may do with its span: add attributes found later."""

    def set(self, **attributes: AttributeValue) -> None: ...


class _NoopSpan:
    """The disabled path: one shared instance, usable as the context manager and the handle."""

    __slots__ = ()

    def set(self, **attributes: AttributeValue) -> None:
        return None

    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NOOP = _NoopSpan()


@dataclass(frozen=True, slots=True)
class _Tracing:
    provider: TracerProvider
    tracer: Tracer


_state: _Tracing | None = None


class _LiveSpan:
    __slots__ = ("_dropped", "_span")

    def __init__(self, otel_span: Span, dropped: int) -> None:
        self._span = otel_span
        self._dropped = dropped

    def set(self, **attributes: AttributeValue) -> None:
        clean, dropped = safe_attributes(attributes)
        self._span.set_attributes(clean)
        if dropped:
            self._dropped += dropped
            self._span.set_attribute(DROPPED_KEY, self._dropped)


def is_sensitive_key(key: str) -> bool:
    """True when an attribute name says it could carry a PIN, audio, an embedding or a secret."""
    lowered = key.lower()
    return lowered in MASKED or not _SENSITIVE_WORDS.isdisjoint(_WORD_SPLIT.split(lowered))


def safe_attributes(attributes: Mapping[str, object]) -> tuple[dict[str, AttributeValue], int]:
    """The attributes that may be exported, and how many were dropped.

    Values other than str/int/float/bool are dropped too: bytes or arrays here would be
    audio or embeddings, whatever the key says.
    """
    clean: dict[str, AttributeValue] = {}
    dropped = 0
    for key, value in attributes.items():
        if is_sensitive_key(key) or not isinstance(value, str | int | float | bool):
            dropped += 1
            continue
        clean[key] = value[:MAX_STRING_CHARS] if isinstance(value, str) else value
    return clean, dropped


def configure_tracing(
    enabled: bool,
    endpoint: str,
    service_name: str = "purchase-guard",
    *,
    exporter: SpanExporter | None = None,
) -> None:
    """Switch tracing on (OTLP/gRPC to `endpoint`) or off; replaces any earlier configuration.

    An empty endpoint leaves the exporter's default (OTEL_EXPORTER_OTLP_ENDPOINT, else
    localhost:4317); an `http://` endpoint is plaintext, `https://` uses TLS. `exporter` is
    for tests: its spans are exported synchronously instead of in batches. Tracing is
    diagnostics, not a safety check, so a missing `[otel]` extra logs a warning and leaves
    tracing off rather than stopping the server.
    """
    global _state  # noqa: PLW0603 - one process-wide tracer provider, swapped atomically
    previous, _state = _state, None
    if previous is not None:
        previous.provider.shutdown()
    if not enabled:
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        processor: SpanProcessor
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint or None))
        else:
            processor = SimpleSpanProcessor(exporter)
    except ImportError as exc:
        log.warning(
            "tracing_unavailable", missing=exc.name or "opentelemetry", hint="install purchase-guard[otel]"
        )
        return
    # Not the global provider: set_tracer_provider may be called once per process, and owning
    # it here lets configure_tracing be called again (tests, reloads) without a warning.
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(processor)
    _state = _Tracing(provider, provider.get_tracer(TRACER_NAME))
    log.info("tracing_enabled", endpoint=endpoint or "default", service_name=service_name)


def shutdown_tracing() -> None:
    """Flush spans still in the batch and switch tracing off; call after the server has stopped."""
    configure_tracing(False, "")


def tracing_enabled() -> bool:
    return _state is not None


def span(name: str, **attributes: AttributeValue) -> AbstractContextManager[SpanHandle]:
    """A span named `name` around a `with` block, child of the current span; a no-op when off.

    Attribute names that could carry a PIN, audio, an embedding or a secret are dropped.
    """
    state = _state
    if state is None:
        return _NOOP
    return _live_span(state.tracer, name, attributes)


@contextmanager
def _live_span(tracer: Tracer, name: str, attributes: Mapping[str, object]) -> Iterator[SpanHandle]:
    from opentelemetry.trace import Status, StatusCode

    clean, dropped = safe_attributes(attributes)
    if dropped:
        clean[DROPPED_KEY] = dropped
    # The SDK's own exception recording would export the message and stack trace, which may
    # quote request data; the type name is enough to find the failing step.
    with tracer.start_as_current_span(
        name, attributes=clean, record_exception=False, set_status_on_exception=False
    ) as otel_span:
        try:
            yield _LiveSpan(otel_span, dropped)
        except BaseException as exc:
            otel_span.set_attribute("error.type", type(exc).__name__)
            otel_span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
