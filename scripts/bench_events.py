"""Webhook delivery, measured: events sent, retried, dead-lettered, lost, and delivery latency.

    python scripts/bench_events.py --out reports/events [--per-household 50]

Three runs, each against a real guard (the whole app with the FakeEncoder world of the console
suite: tests/console/console_world.py) and a real HTTP receiver (http.server, tests/events):

  steady    4 households, every delivery answered 200 at once.
  failures  the receiver answers 503 to 25% of deliveries, 429 to 10%, hangs up on 5%, and 410 to
            5% of events (those become dead letters; the run then replays them once the receiver
            takes everything).
  sigkill   `python -m purchase_guard serve` as a subprocess; the receiver is slow (0.3 s a
            delivery); the guard is killed with SIGKILL half-way through the purchases, restarted
            on the same store, and the rest are made.

Every purchase is a real Evaluate (ALLOW: one purchase_allowed event each). "lost" counts events
queued in the outbox that the receiver never answered 2xx for, plus ALLOW decisions a client got
with no event queued: both must be 0. Latency is from the Evaluate answer reaching the client to
the first delivery the receiver answered 2xx, per event (the steady run's is the delivery path
alone; the failure run's includes back-off). Writes delivery.json to --out and prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from console.console_world import OPERATOR, Family, make_family, order, start_guard, voice
from events.receiver import Received, Receiver
from events.test_events_crash import serve_env
from google.protobuf.duration_pb2 import Duration
from support.rpc import BACKEND
from trust.trust_harness import free_port, serve_subprocess, wait_listening

from purchase_guard._gen.purchaseguard.v1 import testing_pb2, testing_pb2_grpc
from purchase_guard.api.client import GuardClient
from purchase_guard.clock import FrozenClock

FAST = {
    "events_poll_seconds": 0.05,
    "webhook_timeout_seconds": 1.0,
    "webhook_lease_seconds": 3.0,
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_cap_seconds": 0.5,
    "webhook_max_attempts": 10,
    "replay_window_days": 1,
    # The bench makes more purchases from one device than a family would in a minute.
    "rate_limits_enabled": False,
}
DAY = timedelta(days=1, minutes=1)


def pct(values: list[float], p: float) -> float | None:
    return round(float(np.percentile(np.asarray(values), p)) * 1000, 1) if values else None


def uncapped(family: Family) -> None:
    """An adult may buy without caps, so a long run is never stopped by a spend limit."""
    policy = family.guard.get_policy(family.household_id)["policy"]
    policy.pop("revision", None)
    policy["household_daily_cap_minor"] = "0"
    policy["household_monthly_cap_minor"] = "0"
    for rule in policy["rules"]:
        if rule["role"] == "ADULT":
            rule.update(
                mode="PURCHASE_ALLOWED", daily_cap_minor="0", monthly_cap_minor="0", max_order_minor="0"
            )
    family.guard.set_policy(family.household_id, policy)


class Run:
    """The purchases of one run and what the receiver saw of them."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.answered: dict[str, float] = {}  # decision id -> when its ALLOW reached the client
        self.households: list[Family] = []
        self.dead_lettered = 0

    def buy(self, family: Family, n: int, advance: Callable[[], None]) -> None:
        reply = family.guard.evaluate(
            f"bench-{n}", family.household_id, "kitchen", order(1000), voice("low", 7)
        )
        self.answered[reply["decision_id"]] = time.monotonic()
        if reply["outcome"] != "ALLOW":
            raise SystemExit(f"expected ALLOW, got {reply}")
        advance()  # the synthetic voice is one recording: move past the 1-day replay window

    def queued(self) -> dict[tuple[str, int], str]:
        """(household, event id) -> decision id of every event in the households' streams."""
        out: dict[tuple[str, int], str] = {}
        for f in self.households:
            for e in f.guard.watch_events(f.household_id, 0):
                out[(f.household_id, int(e["event_id"]))] = e.get("decision_id", "")
        return out

    def taken(self) -> dict[tuple[str, int], Received]:
        first: dict[tuple[str, int], Received] = {}
        for r in list(self.receiver.received):
            key = (r.event["household_id"], r.event_id)
            if 200 <= r.status < 300 and key not in first:
                first[key] = r
        return first

    def wait_all_taken(self, timeout_s: float = 120.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if set(self.queued()) <= set(self.taken()):
                return
            time.sleep(0.1)

    def report(self) -> dict[str, Any]:
        queued, taken = self.queued(), self.taken()
        received = list(self.receiver.received)
        decisions_with_event = set(queued.values())
        missing_events = [d for d in self.answered if d not in decisions_with_event]
        latencies = [
            taken[key].at - self.answered[decision]
            for key, decision in queued.items()
            if key in taken and decision in self.answered
        ]
        return {
            "households": len(self.households),
            "events_sent": len(queued),
            "deliveries_posted": len(received),
            "retried": sum(1 for r in received if r.status in {0, 429} or r.status >= 500),
            "dead_lettered": self.dead_lettered,
            "duplicates_received": sum(1 for r in received if 200 <= r.status < 300) - len(taken),
            "lost": len(set(queued) - set(taken)) + len(missing_events),
            "latency_ms": {"p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": pct(latencies, 100)},
        }


def in_process(
    folder: Path, households: int, per: int, policy: Callable[[Received], int] | None
) -> dict[str, Any]:
    receiver = Receiver(policy=policy)
    guard = start_guard(folder, **FAST)
    clock = guard.app.clock
    assert isinstance(clock, FrozenClock)
    client = GuardClient(f"127.0.0.1:{guard.port}", OPERATOR, timeout=30, backend_token=BACKEND)
    run = Run(receiver)
    try:
        for h in range(households):
            family = make_family(client, f"Bench {h}")
            uncapped(family)
            family.guard.set_webhook(family.household_id, receiver.url)
            run.households.append(family)
        n = 0
        for _ in range(per):
            for family in run.households:
                n += 1
                run.buy(family, n, lambda: clock.advance(DAY))
        if policy is not None:
            # Let retries run out or land, then count the dead letters and replay them to a receiver
            # that now takes everything.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                taken = set(run.taken())
                dead = {
                    (f.household_id, int(d["event"]["event_id"]))
                    for f in run.households
                    for d in f.guard.dead_letters(f.household_id).get("dead_letters", [])
                }
                if set(run.queued()) <= taken | dead:
                    break
                time.sleep(0.2)
            run.dead_lettered = len(dead)
            receiver.policy = lambda _r: 200
            for f in run.households:
                f.guard.replay_dead_letters(f.household_id)
        run.wait_all_taken()
        return run.report()
    finally:
        client.close()
        guard.stop(grace=0)
        receiver.close()


def with_sigkill(folder: Path, purchases: int) -> dict[str, Any]:
    receiver = Receiver(policy=lambda _r: (time.sleep(0.3), 200)[1])
    port = free_port()
    env = serve_env(folder, port) | {
        "PURCHASE_GUARD_REPLAY_WINDOW_DAYS": "1",
        "PURCHASE_GUARD_RATE_LIMITS_ENABLED": "0",
    }
    proc = serve_subprocess(env, log_path=folder / "serve-1.log")
    run = Run(receiver)
    killed_with_in_flight = 0
    try:
        wait_listening(port, proc)
        client = GuardClient(f"127.0.0.1:{port}", OPERATOR, timeout=30, backend_token=BACKEND)
        family = make_family(client, "Bench kill")
        uncapped(family)
        family.guard.set_webhook(family.household_id, receiver.url)
        run.households.append(family)
        stub = testing_pb2_grpc.TestControlStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

        moved = [0]

        def advance(days: int = 1) -> None:
            stub.AdvanceClock(
                testing_pb2.AdvanceClockRequest(by=Duration(seconds=int(days * DAY.total_seconds()))),
                metadata=(("authorization", f"Bearer {OPERATOR}"),),
                timeout=10,
            )
            moved[0] += days

        for n in range(purchases):
            if n == purchases // 2:
                killed_with_in_flight = len(run.queued()) - len(run.taken())
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                client.close()
                proc = serve_subprocess(env, log_path=folder / "serve-2.log")
                wait_listening(port, proc)
                client = GuardClient(f"127.0.0.1:{port}", OPERATOR, timeout=30, backend_token=BACKEND)
                family.guard = client.with_token(family.token)
                stub = testing_pb2_grpc.TestControlStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
                # The test clock's offset lived in the killed process: move the new one past every
                # day the first one reached, so the replay window holds no earlier recording.
                advance(moved[0] + 1)
            run.buy(family, n, advance)
        run.wait_all_taken(180)
        out = run.report()
        out["undelivered_at_kill"] = killed_with_in_flight
        client.close()
        return out
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
        receiver.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "events")
    parser.add_argument("--households", type=int, default=4)
    parser.add_argument("--per-household", type=int, default=50)
    parser.add_argument("--kill-purchases", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rng_lock = threading.Lock()
    doomed: set[tuple[str, int]] = set()

    def flaky(r: Received) -> int:
        key = (r.event["household_id"], r.event_id)
        with rng_lock:
            if key in doomed:
                return 410
            roll = rng.random()
        if roll < 0.05:
            doomed.add(key)
            return 410
        if roll < 0.30:
            return 503
        if roll < 0.40:
            return 429
        if roll < 0.45:
            return 0  # hang up
        return 200

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        base = Path(tmp)
        for name, policy in (("steady", None), ("failures", flaky)):
            folder = base / name
            folder.mkdir(mode=0o700)
            runs[name] = in_process(folder, args.households, args.per_household, policy)
            print(name, json.dumps(runs[name]), flush=True)
        folder = base / "sigkill"
        folder.mkdir(mode=0o700)
        runs["sigkill"] = with_sigkill(folder, args.kill_purchases)
        print("sigkill", json.dumps(runs["sigkill"]), flush=True)
    report = {
        "command": "python scripts/bench_events.py " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": FAST,
        "runs": runs,
        "totals": {
            key: sum(r[key] for r in runs.values())
            for key in ("events_sent", "retried", "dead_lettered", "lost")
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "delivery.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["totals"]))
    failed = report["totals"]["lost"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
