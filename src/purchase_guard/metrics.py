"""Prometheus metrics: decisions by outcome and reason, and decision latency."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DECISIONS = Counter(
    "purchase_guard_decisions_total",
    "Decisions made, by RPC and outcome.",
    ["rpc", "outcome"],
)
REASONS = Counter(
    "purchase_guard_decision_reasons_total",
    "Reasons attached to decisions, by RPC and reason code.",
    ["rpc", "reason"],
)
LATENCY = Histogram(
    "purchase_guard_decision_seconds",
    "Time to decide, by RPC.",
    ["rpc"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0),
)
CHECK_ERRORS = Counter(
    "purchase_guard_check_errors_total",
    "Checks that raised and were failed closed, by check.",
    ["check"],
)
EVENTS = Counter(
    "purchase_guard_webhook_deliveries_total",
    "Webhook delivery attempts by result (delivered, retried, dead_lettered).",
    ["result"],
)
