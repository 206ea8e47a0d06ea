"""Several real guard processes (`python -m purchase_guard serve`) sharing one PostgreSQL schema.

Each replica is its own OS process with its own model, connection pool and gRPC port, as
behind a load balancer. The schema is fresh for the module and dropped afterwards. When
PostgreSQL is unreachable the tests skip, unless PURCHASE_GUARD_REQUIRE_SERVICES=1 (CI),
where they fail.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from purchase_guard.api.client import GuardClient

DEFAULT_POSTGRES_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
OPERATOR = "op-replicas-" + "r" * 32
BACKEND = "pgb_replicas-" + "b" * 32
REPLICAS = 2
START_TIMEOUT_S = 180.0  # two processes loading torch and the model on a busy 2-core CI machine


def _base_dsn() -> str:
    dsn = os.environ.get("PURCHASE_GUARD_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"PostgreSQL for tests is unreachable ({type(exc).__name__}: {first})"
        if os.environ.get("PURCHASE_GUARD_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (required: PURCHASE_GUARD_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return dsn


@pytest.fixture(scope="module")
def shared_dsn() -> Iterator[str]:
    """A DSN whose search_path is a fresh schema; the replicas create their tables in it."""
    base = _base_dsn()
    schema = f"guard_replicas_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield make_conninfo(base, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


@dataclass
class Replica:
    index: int
    process: subprocess.Popen[str]
    port: int
    client: GuardClient
    log: Path

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _child_env(index: int, dsn: str, workdir: Path) -> dict[str, str]:
    # Only this replica's settings: the server refuses PURCHASE_GUARD_* names it does not know,
    # and the test run's own variables (REQUIRE_DATA, the test DSN) are not server settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASE_GUARD_")}
    env.update(
        {
            "PURCHASE_GUARD_STORE": "postgres",
            "PURCHASE_GUARD_POSTGRES_DSN": dsn,
            "PURCHASE_GUARD_LISTEN": "127.0.0.1:0",
            "PURCHASE_GUARD_METRICS_PORT": "0",
            "PURCHASE_GUARD_OPERATOR_TOKEN": OPERATOR,
            "PURCHASE_GUARD_BACKEND_TOKEN": BACKEND,
            "PURCHASE_GUARD_OPERATOR_TOKEN_FILE": str(workdir / "operator-token"),
            # Per replica, so a build that ignored STORE=postgres could not pass by sharing a file.
            "PURCHASE_GUARD_SQLITE_PATH": str(workdir / f"unused-{index}.db"),
            "PURCHASE_GUARD_LOG_LEVEL": "warning",
        }
    )
    return env


def _start(index: int, dsn: str, workdir: Path) -> tuple[subprocess.Popen[str], Path]:
    log = workdir / f"replica-{index}.log"
    with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "purchase_guard", "serve"],
            env=_child_env(index, dsn, workdir),
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    return process, log


def _await_port(process: subprocess.Popen[str], log: Path) -> int:
    """The port from the server's 'listening on host:port' line (it binds port 0 itself)."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            tail = log.read_text()[-2000:]
            pytest.fail(f"replica did not start within {START_TIMEOUT_S:.0f} s; log: {tail}")
        if not line:
            pytest.fail(f"replica exited with {process.wait()}; log: {log.read_text()[-2000:]}")
        if line.startswith("purchase-guard listening on "):
            address = line.split()[3]
            return int(address.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def replicas(shared_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    """REPLICAS guard processes on the shared schema, started together (their migrations race)."""
    workdir = tmp_path_factory.mktemp("replicas")
    started = [_start(i, shared_dsn, workdir) for i in range(REPLICAS)]
    running: list[Replica] = []
    try:
        for i, (process, log) in enumerate(started):
            port = _await_port(process, log)
            running.append(
                Replica(
                    i,
                    process,
                    port,
                    GuardClient(f"127.0.0.1:{port}", OPERATOR, 60, backend_token=BACKEND),
                    log,
                )
            )
        yield running
    finally:
        for replica in running:
            replica.stop()
        for process, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
