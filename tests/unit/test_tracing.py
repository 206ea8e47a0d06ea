"""Tracing: spans reach the exporter only when switched on, and never carry secrets."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from purchase_guard import tracing
from purchase_guard.tracing import DROPPED_KEY, configure_tracing, span


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    configure_tracing(False, "")


def test_enabled_tracing_exports_nested_decision_spans(exporter: InMemorySpanExporter) -> None:
    """With tracing on, each step's span is exported with its attributes, nested under the decision."""
    configure_tracing(True, "", service_name="guard-test", exporter=exporter)
    with span("guard.evaluate", rpc="evaluate", household_id="hh_1") as root:
        with span("voice.verify", speech_seconds=2.5, verified=True):
            pass
        with span("policy.evaluate") as step:
            step.set(outcome="ALLOW", rules_matched=2)
        root.set(outcome="ALLOW")

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"guard.evaluate", "voice.verify", "policy.evaluate"}
    root_span = spans["guard.evaluate"]
    assert root_span.parent is None
    for child in ("voice.verify", "policy.evaluate"):
        parent = spans[child].parent
        assert parent is not None
        assert parent.span_id == root_span.context.span_id
    assert dict(spans["voice.verify"].attributes or {}) == {"speech_seconds": 2.5, "verified": True}
    assert dict(spans["policy.evaluate"].attributes or {}) == {"outcome": "ALLOW", "rules_matched": 2}
    assert root_span.attributes is not None
    assert root_span.attributes["outcome"] == "ALLOW"
    assert root_span.resource.attributes["service.name"] == "guard-test"


def test_disabled_tracing_exports_nothing(exporter: InMemorySpanExporter) -> None:
    """With tracing off, span() is the shared no-op and nothing reaches an exporter, even one given."""
    configure_tracing(False, "", exporter=exporter)
    with span("voice.verify", speech_seconds=1.0) as handle:
        handle.set(verified=True)
    assert span("a") is span("b")
    assert not tracing.tracing_enabled()
    assert exporter.get_finished_spans() == ()


def test_switching_off_stops_further_spans(exporter: InMemorySpanExporter) -> None:
    """A later configure_tracing(False) stops export; spans made before it were already exported."""
    configure_tracing(True, "", exporter=exporter)
    with span("before"):
        pass
    configure_tracing(False, "")
    with span("after"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["before"]


def test_sensitive_attributes_are_dropped(exporter: InMemorySpanExporter) -> None:
    """Keys naming PINs, audio, embeddings, digits or tokens, and non-scalar values, never reach a span."""
    configure_tracing(True, "", exporter=exporter)
    fields: dict[str, object] = {
        "pin": "7391",
        "spoken_digits": "7391",
        "audio.bytes": 1234,
        "embedding": 0.5,
        "admin_token": "pgh_x",
        "transcript": "buy a dollhouse",
        "samples": b"\x00\x01",
        "scores": [0.1, 0.2],
        "method": "SPOKEN_PIN",
    }
    with span("challenge.confirm", **fields) as handle:  # type: ignore[arg-type]  # bad values on purpose
        handle.set(pin_hash="argon2...", attempts_left=4)

    (exported,) = exporter.get_finished_spans()
    attributes = dict(exported.attributes or {})
    assert attributes == {"method": "SPOKEN_PIN", "attempts_left": 4, DROPPED_KEY: 9}
    assert "7391" not in repr(attributes)


def test_long_strings_are_cut(exporter: InMemorySpanExporter) -> None:
    """A string attribute longer than MAX_STRING_CHARS is exported cut to that length."""
    configure_tracing(True, "", exporter=exporter)
    with span("store.record", merchant="m" * 1000):
        pass
    (exported,) = exporter.get_finished_spans()
    assert exported.attributes is not None
    assert exported.attributes["merchant"] == "m" * tracing.MAX_STRING_CHARS


def test_exception_marks_span_error_without_message(exporter: InMemorySpanExporter) -> None:
    """A raising step propagates its exception and leaves an ERROR span naming only the exception type."""
    configure_tracing(True, "", exporter=exporter)
    with pytest.raises(ValueError, match="secret detail"), span("voice.verify"):
        raise ValueError("secret detail 7391")

    (exported,) = exporter.get_finished_spans()
    assert exported.status.status_code is StatusCode.ERROR
    assert exported.status.description == "ValueError"
    assert exported.attributes is not None
    assert exported.attributes["error.type"] == "ValueError"
    assert exported.events == ()
    assert "7391" not in repr(exported.to_json())


def test_missing_opentelemetry_leaves_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing switched on without the [otel] extra installed stays a no-op instead of failing."""
    for module in list(sys.modules):
        if module == "opentelemetry" or module.startswith("opentelemetry."):
            monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    configure_tracing(True, "http://collector:4317")
    assert not tracing.tracing_enabled()
    with span("voice.verify", verified=True) as handle:
        handle.set(score=0.9)


def test_otlp_exporter_is_built_for_the_endpoint() -> None:
    """Without a test exporter, configure_tracing builds the OTLP/gRPC exporter and switches tracing on."""
    try:
        configure_tracing(True, "http://127.0.0.1:4317")
        assert tracing.tracing_enabled()
    finally:
        configure_tracing(False, "")
    assert not tracing.tracing_enabled()
