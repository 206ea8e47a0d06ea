"""Several server processes on one port (PURCHASE_GUARD_PROCESSES > 1).

`serve` with `processes > 1` runs this supervisor instead of a server: it fixes the port (a
listen port of 0 is resolved once, on a socket held with SO_REUSEPORT until every worker is
up), starts that many `python -m purchase_guard serve --worker I` processes with the same
settings, each binding the same address with gRPC's `grpc.so_reuseport` (the kernel spreads
incoming connections over them), and prints its own `listening on` line once all of them
have. Worker I serves metrics on METRICS_PORT + I.

Each worker is a whole server: its own encoder, store connection (pool), gRPC threads,
retention and delivery workers. Settings validation (config.Settings._validate_processes)
refuses the combinations that would leave decision state split between them.

The supervisor fails closed: a worker that does not start stops the others and the start
fails; a worker that exits while serving stops the others and the supervisor exits non-zero,
so the orchestrator restarts the whole group instead of leaving it serving with fewer
processes than configured. SIGTERM and SIGINT are passed on to every worker, which stops
gracefully (health NOT_SERVING, in-flight calls finish within the grace period).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from purchase_guard.config import ENV_PREFIX, Settings
from purchase_guard.logs import get_logger

log = get_logger("purchase_guard.processes")

START_TIMEOUT_S = 300.0  # N processes loading a model at once on a small machine
LISTENING = "purchase-guard listening on "


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")  # EOF


def reserve_port(listen: str) -> tuple[str, int, socket.socket | None]:
    """(host, port, holder): port 0 becomes a free port, bound with SO_REUSEPORT (not listening,
    so it takes no connections) until the workers have bound it too."""
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    if port != 0:
        return host, port, None
    bare = host.strip("[]")
    family, kind, proto, _, address = socket.getaddrinfo(bare, 0, type=socket.SOCK_STREAM)[0]
    holder = socket.socket(family, kind, proto)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(address)
    return host, int(holder.getsockname()[1]), holder


def worker_env(settings: Settings, host: str, port: int, index: int) -> dict[str, str]:
    env = dict(os.environ)
    env[ENV_PREFIX + "LISTEN"] = f"{host}:{port}"
    if settings.metrics_port:
        env[ENV_PREFIX + "METRICS_PORT"] = str(settings.metrics_port + index)
    return env


def _stop(workers: list[_Worker], grace_s: float) -> None:
    for w in workers:
        if w.process.poll() is None:
            w.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 10.0
    for w in workers:
        try:
            w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()
        if w.process.stdout is not None:
            w.process.stdout.close()


def _await_listening(worker: _Worker, deadline: float) -> str | None:
    """The worker's `listening on` line, or None when it exits or the deadline passes first."""
    while True:
        try:
            line = worker.lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if not line:
            return None
        if line.startswith(LISTENING):
            return line


def supervise(settings: Settings) -> int:
    """Runs `settings.processes` workers on one port until SIGTERM/SIGINT; the exit status."""
    host, port, holder = reserve_port(settings.listen)
    workers: list[_Worker] = []
    done = threading.Event()

    def _signal(signum: int, _frame: object) -> None:
        log.info("shutdown_requested", signal=signum)
        done.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    try:
        for i in range(settings.processes):
            process = subprocess.Popen(  # noqa: S603 - this interpreter and fixed arguments, no shell
                [sys.executable, "-m", "purchase_guard", "serve", "--worker", str(i)],
                env=worker_env(settings, host, port, i),
                stdout=subprocess.PIPE,
                text=True,
            )
            worker = _Worker(i, process)
            threading.Thread(target=worker.pump, name=f"worker-{i}-stdout", daemon=True).start()
            workers.append(worker)
        deadline = time.monotonic() + START_TIMEOUT_S
        first = ""
        for worker in workers:
            line = _await_listening(worker, deadline)
            if line is None:
                print(
                    f"purchase-guard: cannot start: worker {worker.index} did not start "
                    f"(exit status {worker.process.poll()})",
                    file=sys.stderr,
                )
                _stop(workers, 0.0)
                return 3
            first = first or line
    finally:
        if holder is not None:
            holder.close()
    details = first.split("(", 1)[1].rstrip().rstrip(")") if "(" in first else ""
    print(f"{LISTENING}{host}:{port} ({settings.processes} processes, {details})", flush=True)
    log.info("processes_started", processes=settings.processes, port=port)
    status = 0
    while not done.wait(0.5):
        gone = [w for w in workers if w.process.poll() is not None]
        if gone:
            log.error("worker_exited", worker=gone[0].index, status=gone[0].process.returncode)
            status = 1
            break
    _stop(workers, settings.grace_seconds)
    log.info("processes_stopped", status=status)
    return status
