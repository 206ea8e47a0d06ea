"""PURCHASE_GUARD_PROCESSES=2: two server processes on one port decide as one server.

`python -m purchase_guard serve` with two processes (real GE2E, real FSDD voices) on one SQLite
file, rate limits and the broadcast window in Redis. A client connection lands on one process
(the kernel's SO_REUSEPORT hashing); the test finds a connection to each through their metrics
endpoints (process i serves METRICS_PORT + i), then shows both decide, and that a rate limit
and a daily cap hold across them: neither process lets through what the other already spent.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.audio import fsdd_wav
from support.orders import codes, order

import purchase_guard
from purchase_guard.api.client import GuardClient

pytestmark = pytest.mark.data

OPERATOR = "op-processes-" + "p" * 32
BACKEND = "pgb_processes-" + "b" * 32
# A database of its own on the shared Redis: the window and limit keys of other suites (and
# other agents' runs) cannot meet this test's.
REDIS_URL = (
    os.environ.get("PURCHASE_GUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/9"
)
PER_DEVICE = 4
START_TIMEOUT_S = 300.0
# Takes of george saying 7305 that verify with a clear margin over the threshold.
GEORGE_TAKES = (10, 11, 12, 13, 16, 17, 18, 19, 20, 21)


def _free_port_pair() -> int:
    """A port p with p and p + 1 free (the two processes' metrics)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            p = int(a.getsockname()[1])
            if p >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", p + 1))
                except OSError:
                    continue
        return p
    raise RuntimeError("no two consecutive free ports")


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        message = f"Redis for tests is unreachable at {REDIS_URL} ({type(exc).__name__})"
        if os.environ.get("PURCHASE_GUARD_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (required: PURCHASE_GUARD_REQUIRE_SERVICES=1)")
        pytest.skip(message)


@dataclass
class Group:
    process: subprocess.Popen[str]
    port: int
    metrics_ports: tuple[int, int]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def decisions(self, worker: int) -> float:
        """Evaluate decisions taken so far by worker `worker` (its metrics endpoint)."""
        url = f"http://127.0.0.1:{self.metrics_ports[worker]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("purchase_guard_decisions_total{") and 'rpc="evaluate"' in line
        )


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    _redis_or_skip()
    workdir = tmp_path_factory.mktemp("processes")
    workdir.chmod(0o700)
    metrics = _free_port_pair()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASE_GUARD_")}
    # The server runs in another folder: the package under test by absolute path, not a relative
    # PYTHONPATH that would there resolve to nothing (and fall back to an installed copy).
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(purchase_guard.__file__).resolve().parents[1]), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.update(
        {
            "PURCHASE_GUARD_PROCESSES": "2",
            "PURCHASE_GUARD_STORE": "sqlite",
            "PURCHASE_GUARD_SQLITE_PATH": str(workdir / "guard.db"),
            "PURCHASE_GUARD_LISTEN": "127.0.0.1:0",
            "PURCHASE_GUARD_METRICS_PORT": str(metrics),
            "PURCHASE_GUARD_REDIS_URL": REDIS_URL,
            "PURCHASE_GUARD_BROADCAST_WINDOW": "redis",
            "PURCHASE_GUARD_RATE_LIMIT_BACKEND": "redis",
            "PURCHASE_GUARD_EVALUATE_PER_DEVICE_PER_MINUTE": str(PER_DEVICE),
            "PURCHASE_GUARD_OPERATOR_TOKEN": OPERATOR,
            "PURCHASE_GUARD_BACKEND_TOKEN": BACKEND,
            "PURCHASE_GUARD_OPERATOR_TOKEN_FILE": str(workdir / "operator-token"),
            "PURCHASE_GUARD_MASTER_KEY_FILE": str(workdir / "master-key"),
            "PURCHASE_GUARD_LOG_LEVEL": "warning",
        }
    )
    log = workdir / "server.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "purchase_guard", "serve"],
            env=env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(f"the processes did not start; log: {log.read_text()[-2000:]}")
            if not line:
                pytest.fail(f"the server exited with {process.wait()}; log: {log.read_text()[-2000:]}")
            if line.startswith("purchase-guard listening on "):
                assert "(2 processes," in line, line
                port = int(line.split()[3].rsplit(":", 1)[1])
                break
        yield Group(process, port, (metrics, metrics + 1))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def household(target: str, data: Path, name: str) -> tuple[GuardClient, str]:
    """A household with george (adult, parent) enrolled; the operator's client and its id."""
    operator = GuardClient(target, OPERATOR, 120, backend_token=BACKEND)
    created = operator.create_household(name, "UTC", "USD")
    hid = created["household"]["household_id"]
    parent = operator.with_token(created["admin_token"])
    george = parent.add_member(hid, "George", "ADULT", True)["member"]["member_id"]
    takes = [fsdd_wav(data, "george", d, t) for d, t in (("3817", 0), ("5092", 1), ("6641", 2))]
    assert parent.enroll(hid, george, takes)["member"]["voice_enrolled"]
    return operator, hid


def pinned_clients(group: Group, data: Path) -> list[GuardClient]:
    """One client connection to each process, found by sending an Evaluate on a new connection
    and seeing whose decision count went up."""
    operator, hid = household(group.target, data, "Probe")
    operator.close()
    found: dict[int, GuardClient] = {}
    for n in range(24):
        client = GuardClient(group.target, OPERATOR, 120, backend_token=BACKEND, own_connection=True)
        before = (group.decisions(0), group.decisions(1))
        client.evaluate(f"probe-{n}", hid, f"probe-{n}", order(100), fsdd_wav(data, "george", "2749", 10 + n))
        after = (group.decisions(0), group.decisions(1))
        worker = [i for i in (0, 1) if after[i] > before[i]]
        assert len(worker) == 1, (before, after)
        if worker[0] in found:
            client.close()
        else:
            found[worker[0]] = client
        if len(found) == 2:
            return [found[0], found[1]]
    pytest.fail(f"24 new connections all reached worker {next(iter(found))}: the port is not shared")


@pytest.fixture(scope="module")
def clients(group: Group, data_dir: Path) -> Iterator[list[GuardClient]]:
    pinned = pinned_clients(group, data_dir)
    yield pinned
    for c in pinned:
        c.close()


def test_both_processes_serve_and_a_device_limit_holds_across_them(
    group: Group, clients: list[GuardClient], data_dir: Path
) -> None:
    """Eight Evaluates from one device, alternating between the two processes: exactly
    PER_DEVICE are decided (by both processes) and the rest are RESOURCE_EXHAUSTED, as from one
    server; with limits counted per process each would have let PER_DEVICE through."""
    operator, hid = household(group.target, data_dir, "Limited")
    operator.close()
    before = (group.decisions(0), group.decisions(1))
    answered, refused = 0, []
    for i in range(2 * PER_DEVICE):
        audio = fsdd_wav(data_dir, "george", "5092", 20 + i)
        try:
            clients[i % 2].evaluate(f"limit-{i}", hid, "hall", order(100), audio)
            answered += 1
        except grpc.RpcError as exc:
            refused.append(exc.code())
    after = (group.decisions(0), group.decisions(1))
    assert answered == PER_DEVICE
    assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * PER_DEVICE
    assert after[0] - before[0] == PER_DEVICE // 2
    assert after[1] - before[1] == PER_DEVICE // 2


def test_daily_cap_holds_for_concurrent_orders_over_both_processes(
    group: Group, clients: list[GuardClient], data_dir: Path
) -> None:
    """Daily cap 100.00 and ten 20.00 orders by the enrolled adult sent at once, alternating
    between the processes on the one SQLite file: exactly five are allowed and the rest are held
    back by the cap (the household lock holds across processes), and the chain verifies."""
    operator, hid = household(group.target, data_dir, "Cap")
    policy = operator.get_policy(hid)["policy"]
    policy.pop("revision", None)
    policy["household_daily_cap_minor"] = "10000"
    operator.set_policy(hid, policy)
    barrier = threading.Barrier(10)
    answers: list[dict[str, Any] | BaseException | None] = [None] * 10

    def buy(i: int) -> None:
        audio = fsdd_wav(data_dir, "george", "7305", GEORGE_TAKES[i])
        barrier.wait()
        try:
            answers[i] = clients[i % 2].evaluate(f"buy-{i}", hid, f"kitchen-{i}", order(2000), audio)
        except BaseException as exc:
            answers[i] = exc

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    done = [a for a in answers if isinstance(a, dict)]
    assert len(done) == 10, answers
    allowed = [r for r in done if r["outcome"] == "ALLOW"]
    assert len(allowed) == 5, [(r["outcome"], sorted(codes(r))) for r in done]
    for r in done:
        assert "SPEAKER_VERIFIED" in codes(r), r  # the cap, not the voice, decided the rest
        if r["outcome"] != "ALLOW":
            assert "DAILY_LIMIT_REACHED" in codes(r), r
    assert operator.verify_audit(hid)["ok"]
    operator.close()
