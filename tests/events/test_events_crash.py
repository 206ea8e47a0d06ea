"""At least once across a crash: the guard is killed with SIGKILL while a receiver holds its webhook
delivery open; restarted on the same store, it delivers the event again, with the same event id.

The guard runs as `python -m purchase_guard serve` (the trust suite's harness), with the FakeEncoder
world of the console suite so the family needs no recordings."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from pathlib import Path

from console.console_world import OPERATOR, make_family, order, thresholds_file, voice
from events.receiver import HOLD, Receiver
from support.rpc import BACKEND
from trust.trust_harness import free_port, serve_subprocess, wait_for, wait_listening

from purchase_guard.api.client import GuardClient


def serve_env(folder: Path, port: int) -> dict[str, str]:
    return {
        "PURCHASE_GUARD_LISTEN": f"127.0.0.1:{port}",
        "PURCHASE_GUARD_METRICS_PORT": "0",
        "PURCHASE_GUARD_SQLITE_PATH": str(folder / "guard.db"),
        "PURCHASE_GUARD_MASTER_KEY_FILE": str(folder / "master-key"),
        "PURCHASE_GUARD_OPERATOR_TOKEN": OPERATOR,
        "PURCHASE_GUARD_BACKEND_TOKEN": BACKEND,
        "PURCHASE_GUARD_TEST_MODE": "1",
        "PURCHASE_GUARD_ENCODER": "fake",
        "PURCHASE_GUARD_THRESHOLDS_FILE": str(thresholds_file(folder, "fake-spectral/1", "fake-spectral/2")),
        "PURCHASE_GUARD_BROADCAST_ENABLED": "0",
        "PURCHASE_GUARD_LOG_LEVEL": "warning",
        "PURCHASE_GUARD_EVENTS_POLL_SECONDS": "0.05",
        "PURCHASE_GUARD_WEBHOOK_TIMEOUT_SECONDS": "5",
        "PURCHASE_GUARD_WEBHOOK_LEASE_SECONDS": "6",
        "PURCHASE_GUARD_WEBHOOK_RETRY_BASE_SECONDS": "0.1",
        "PURCHASE_GUARD_WEBHOOK_RETRY_CAP_SECONDS": "1",
    }


def _state(db: Path, household_id: str, event_id: int) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT state FROM outbox WHERE household_id = ? AND event_id = ?", (household_id, event_id)
        ).fetchone()
    return str(row[0]) if row else ""


def test_an_event_in_flight_at_sigkill_is_delivered_after_restart(tmp_path: Path) -> None:
    """Receiver holds the first POST; SIGKILL; the restarted guard posts the same event id again once
    the dead guard's claim runs out, and records it delivered."""
    port = free_port()
    receiver = Receiver(HOLD)
    proc = serve_subprocess(serve_env(tmp_path, port), log_path=tmp_path / "serve-1.log")
    try:
        wait_listening(port, proc)
        client = GuardClient(f"127.0.0.1:{port}", OPERATOR, timeout=20, backend_token=BACKEND)
        family = make_family(client, "Crash")
        family.guard.set_webhook(family.household_id, receiver.url)
        reply = family.guard.evaluate("buy-1", family.household_id, "kitchen", order(1000), voice("low", 7))
        assert reply["outcome"] == "ALLOW", reply
        client.close()
        assert wait_for(receiver.holding.is_set, 30), "the delivery never reached the receiver"
        first = receiver.ids()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        receiver.release()  # the answer goes nowhere: the guard that asked is gone
        assert _state(tmp_path / "guard.db", family.household_id, first[0]) == "pending"

        proc = serve_subprocess(serve_env(tmp_path, port), log_path=tmp_path / "serve-2.log")
        wait_listening(port, proc)
        assert wait_for(lambda: len(receiver.ids()) >= 2, 60), "not delivered after the restart"
        assert set(receiver.ids()) == set(first)
        assert receiver.received[-1].event["decision_id"] == reply["decision_id"]
        assert wait_for(
            lambda: _state(tmp_path / "guard.db", family.household_id, first[0]) == "delivered", 30
        )
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
        receiver.close()
