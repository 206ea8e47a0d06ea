"""Faults injected by really stopping things: a PostgreSQL store we start and stop, a model that
fails to load or raises, a Redis we kill, a server killed with SIGKILL under load, and a
graceful SIGTERM with a call in flight. The guard must fail closed (never ALLOW), report
NOT_SERVING where it cannot decide, and recover on its own."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from support.rpc import BACKEND
from trust.trust_harness import (
    OPERATOR,
    ROOT,
    Redis,
    assemble_guard,
    create_household,
    evaluate_pb,
    free_port,
    make_app,
    operator_meta,
    real_server,
    require_binary,
    seed_voiceprint,
    serve_subprocess,
    stubs,
    wait_for,
    wait_listening,
    watch_health,
)

from purchase_guard._gen.purchaseguard.v1 import admin_pb2, common_pb2
from purchase_guard.api.gate import EVALUATE, MethodLimits
from purchase_guard.audit.startup import verify_all_chains
from purchase_guard.limits import RateLimit, RedisRateLimiter
from purchase_guard.store.sqlite import SqliteStore
from purchase_guard.voice.encoder import Embedding, Samples, SpeakerEncoder

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GUARD_ERROR = common_pb2.GUARD_ERROR


def _never_allow_or_fail_closed(s: Any, request: Any) -> str:
    """Evaluate once: 'deny-guard-error', 'unavailable' or 'decided'; an ALLOW fails the test outright."""
    try:
        resp = s.guard.Evaluate(request, timeout=30)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
        resp = None
    if resp is None:
        assert code is grpc.StatusCode.UNAVAILABLE, details
        return "unavailable"
    assert resp.outcome != common_pb2.ALLOW
    if any(r.code == GUARD_ERROR for r in resp.reasons):
        assert resp.outcome == common_pb2.DENY
        return "deny-guard-error"
    return "decided"


# ------------------------------------------------------------------ (a) store unavailable
class Postgres:
    """A PostgreSQL cluster of our own in a temp dir, on its own port (the shared 5432 is never touched)."""

    def __init__(self, base: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            require_binary("pg_ctl")
        self.bin = Path(bins[-1]).parent
        self.dir = base / "pgdata"
        self.sock = base / "pgsock"
        self.port = free_port()
        self.root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.root:
            # PostgreSQL refuses to run as root; the cluster belongs to the postgres user.
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.sock.mkdir()
        if self.root:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run("initdb", "-D", str(self.dir), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -l: the postmaster must not inherit our pipes, or waiting for pg_ctl would wait for it too.
        log = str(self.dir.parent / "postgres.log")
        self._run("pg_ctl", "-D", str(self.dir), "-l", log, "-o", opts, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "immediate", "-w", "stop")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=2"


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        require_binary("initdb")
    # Not under pytest's tmp tree: that is private to root, and the cluster runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="pg-trust-"))
    pg = Postgres(base)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped, or never started
            pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_store_down_fails_closed_reports_not_serving_and_recovers(
    postgres: Postgres, tmp_path: Path, trust_encoder: SpeakerEncoder
) -> None:
    """PostgreSQL stopped mid-run: Evaluate is UNAVAILABLE or DENY/GUARD_ERROR (never ALLOW), health
    turns NOT_SERVING; once PostgreSQL is back, health is SERVING and decisions are recorded again."""
    from purchase_guard.store.postgres import PostgresStore

    store = PostgresStore(postgres.dsn, pool_size=4, connect_timeout_s=2)
    app = make_app(tmp_path, trust_encoder, store=store)
    running = real_server(app)
    try:
        with stubs(f"127.0.0.1:{running.port}") as s:
            hid, _ = create_household(s)
            seed_voiceprint(store, hid, trust_encoder.name)
            assert _never_allow_or_fail_closed(s, evaluate_pb("before", hid)) == "decided"

            postgres.stop()
            outcomes = {_never_allow_or_fail_closed(s, evaluate_pb(f"down-{i}", hid)) for i in range(3)}
            assert outcomes <= {"unavailable", "deny-guard-error"}
            assert wait_for(lambda: s.health_status() == NOT_SERVING, 60)

            postgres.start()
            assert wait_for(lambda: s.health_status() == SERVING, 60)
            assert wait_for(
                lambda: _never_allow_or_fail_closed(s, evaluate_pb("after", hid)) == "decided", 60
            )
            decided = s.admin.ListDecisions(
                admin_pb2.ListDecisionsRequest(household_id=hid, limit=100),
                metadata=operator_meta(),
                timeout=30,
            )
            ids = {d.request_id for d in decided.decisions}
            assert {"before", "after"} <= ids
            assert s.admin.VerifyAudit(
                admin_pb2.VerifyAuditRequest(household_id=hid), metadata=operator_meta(), timeout=30
            ).ok
    finally:
        running.stop(grace=0)


# ------------------------------------------------------------------ (b) model faults
def test_corrupt_weights_stop_the_server_before_it_listens(tmp_path: Path) -> None:
    """Weights that cannot be loaded: `serve` exits non-zero naming the weights file, never listening."""
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a torch checkpoint")
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve_subprocess(
        {
            "PURCHASE_GUARD_LISTEN": f"127.0.0.1:{port}",
            "PURCHASE_GUARD_METRICS_PORT": "0",
            "PURCHASE_GUARD_SQLITE_PATH": str(tmp_path / "g.db"),
            "PURCHASE_GUARD_OPERATOR_TOKEN": OPERATOR,
            "PURCHASE_GUARD_BACKEND_TOKEN": BACKEND,
            "PURCHASE_GUARD_GE2E_WEIGHTS": str(bad),
        },
        log_path=log,
    )
    assert proc.wait(120) != 0
    assert "GE2E weights file" in log.read_text()
    with stubs(f"127.0.0.1:{port}") as s, pytest.raises(grpc.RpcError):
        s.health_status()


def test_missing_weights_path_is_a_configuration_error(tmp_path: Path) -> None:
    """A weights path with no file is refused at settings validation with the variable's name (exit 2)."""
    log = tmp_path / "serve.log"
    proc = serve_subprocess(
        {
            "PURCHASE_GUARD_METRICS_PORT": "0",
            "PURCHASE_GUARD_SQLITE_PATH": str(tmp_path / "g.db"),
            "PURCHASE_GUARD_GE2E_WEIGHTS": str(tmp_path / "absent.pt"),
        },
        log_path=log,
    )
    assert proc.wait(120) == 2
    assert "PURCHASE_GUARD_GE2E_WEIGHTS" in log.read_text()


class FlakyEncoder:
    """The real encoder, until `broken` is set: then every call raises, as a crashed model would."""

    def __init__(self, inner: SpeakerEncoder) -> None:
        self._inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.broken = False

    def embed(self, samples_16k: Samples) -> Embedding:
        if self.broken:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return self._inner.embed(samples_16k)

    def embed_batch(self, batch: list[Samples]) -> list[Embedding]:
        return [self.embed(x) for x in batch]


def test_encoder_errors_at_run_time_give_guard_error_never_allow(
    tmp_path: Path, trust_encoder: SpeakerEncoder
) -> None:
    """An encoder that raises while serving: DENY with GUARD_ERROR, recorded; fixed again, no GUARD_ERROR."""
    flaky = FlakyEncoder(trust_encoder)
    app = make_app(tmp_path, flaky)
    running = real_server(app)
    try:
        with stubs(f"127.0.0.1:{running.port}") as s:
            hid, _ = create_household(s)
            seed_voiceprint(app.store, hid, flaky.name)
            assert _never_allow_or_fail_closed(s, evaluate_pb("ok-1", hid)) == "decided"
            flaky.broken = True
            assert _never_allow_or_fail_closed(s, evaluate_pb("broken", hid)) == "deny-guard-error"
            flaky.broken = False
            assert _never_allow_or_fail_closed(s, evaluate_pb("ok-2", hid)) == "decided"
            decided = s.admin.ListDecisions(
                admin_pb2.ListDecisionsRequest(household_id=hid, limit=10),
                metadata=operator_meta(),
                timeout=30,
            )
            assert {d.request_id for d in decided.decisions} == {"ok-1", "broken", "ok-2"}
    finally:
        running.stop(grace=0)


# ------------------------------------------------------------------ (c) Redis gone
def test_redis_gone_fails_closed_and_recovers(tmp_path: Path, trust_encoder: SpeakerEncoder) -> None:
    """Our own redis-server backs the rate limiter; killed mid-run, Evaluate is UNAVAILABLE (nothing
    decided unmetered, no ALLOW); restarted on the same port, Evaluate is decided again."""
    require_binary("redis-server")
    redis_proc = Redis(tmp_path)
    redis_proc.start()
    limiter = RedisRateLimiter.from_url(redis_proc.url, prefix=f"pg-trust:{uuid.uuid4().hex}:", timeout_s=0.5)
    limits = {EVALUATE: MethodLimits(per_household=RateLimit("evaluate-household", 1000, 60.0))}
    app = make_app(tmp_path, trust_encoder)
    guard = assemble_guard(app, limiter=limiter, limits=limits)
    try:
        with stubs(guard.target) as s:
            hid, _ = create_household(s)
            assert _never_allow_or_fail_closed(s, evaluate_pb("before", hid)) == "decided"
            redis_proc.stop()
            assert _never_allow_or_fail_closed(s, evaluate_pb("down", hid)) == "unavailable"
            redis_proc.start()
            assert wait_for(
                lambda: _never_allow_or_fail_closed(s, evaluate_pb("after", hid)) == "decided", 30
            )
            decided = s.admin.ListDecisions(
                admin_pb2.ListDecisionsRequest(household_id=hid, limit=10),
                metadata=operator_meta(),
                timeout=30,
            )
            assert {d.request_id for d in decided.decisions} == {"before", "after"}
    finally:
        guard.stop()
        redis_proc.stop()


# ------------------------------------------------------------------ (d) SIGKILL under load
def _serve_env(tmp_path: Path, port: int) -> dict[str, str]:
    return {
        "PURCHASE_GUARD_LISTEN": f"127.0.0.1:{port}",
        "PURCHASE_GUARD_METRICS_PORT": "0",
        "PURCHASE_GUARD_SQLITE_PATH": str(tmp_path / "guard.db"),
        "PURCHASE_GUARD_OPERATOR_TOKEN": OPERATOR,
        "PURCHASE_GUARD_BACKEND_TOKEN": BACKEND,
        "PURCHASE_GUARD_GRACE_SECONDS": "10",
        "PURCHASE_GUARD_LOG_LEVEL": "warning",
    }


def test_sigkill_under_load_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    """Evaluate load from 4 clients; the server is killed with SIGKILL mid-load. After a restart on the same
    store, every decision a client received is in ListDecisions and the audit chain verifies at start."""
    port = free_port()
    proc = serve_subprocess(_serve_env(tmp_path, port), log_path=tmp_path / "serve-1.log")
    acknowledged: dict[str, str] = {}  # request id -> decision id, for every response received
    lock = threading.Lock()
    try:
        wait_listening(port, proc)
        with stubs(f"127.0.0.1:{port}") as s:
            hid, _ = create_household(s)

            def client(n: int) -> None:
                for i in range(200):
                    rid = f"c{n}-{i}"
                    try:
                        resp = s.guard.Evaluate(evaluate_pb(rid, hid, device_id=f"d{n}"), timeout=10)
                    except grpc.RpcError:
                        return  # the server is gone
                    with lock:
                        acknowledged[rid] = resp.decision_id

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(client, n) for n in range(4)]
                assert wait_for(lambda: len(acknowledged) >= 40, 120), "load never got going"
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                for f in futures:
                    f.result(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    # What a client received must be stored. Ids are read with plain SQL: decision bodies are sealed
    # with the household key, and the ids are all this check needs.
    stored = _stored_request_ids(tmp_path / "guard.db", hid)
    lost = {rid for rid, did in acknowledged.items() if stored.get(rid) != did}
    print(f"sigkill: {len(acknowledged)} acknowledged decisions, {len(lost)} lost")
    assert lost == set(), f"{len(lost)} acknowledged decisions lost"

    # The restarted server's first act (as the lead wires it) is verify_all_chains on its store.
    store = SqliteStore(tmp_path / "guard.db")
    try:
        report = verify_all_chains(store, [hid])
    finally:
        store.close()
    assert report.ok, report.broken
    assert report.entries >= len(acknowledged)

    # And the killed server's store opens again: a restarted server comes up SERVING on it.
    proc = serve_subprocess(_serve_env(tmp_path, port), log_path=tmp_path / "serve-2.log")
    try:
        wait_listening(port, proc)
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


def _stored_request_ids(db: Path, household_id: str) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT request_id, decision_id FROM decisions WHERE household_id = ? AND kind = 'evaluate'",
            (household_id,),
        ).fetchall()
    # The column holds "<caller>|<request id>": request ids are scoped to the caller that sent them.
    return {str(r).rpartition("|")[2]: str(d) for r, d in rows}


# ------------------------------------------------------------------ (e) SIGTERM with a call in flight
def test_sigterm_drains_health_then_finishes_in_flight_calls_then_exits(tmp_path: Path) -> None:
    """`serve` gets SIGTERM while an Evaluate is in its (slowed) speaker check: health turns NOT_SERVING,
    the in-flight call still gets its decision, and the process exits 0."""
    port = free_port()
    env = _serve_env(tmp_path, port) | {"PURCHASE_GUARD_TEST_SLOW_SECONDS": "3"}
    log = tmp_path / "serve.log"
    proc = serve_subprocess(env, wrapper=str(ROOT / "tests" / "trust" / "slow_serve.py"), log_path=log)
    try:
        wait_listening(port, proc)
        with stubs(f"127.0.0.1:{port}") as s:
            hid, _ = create_household(s)
            seen, watcher, channel = watch_health(f"127.0.0.1:{port}")
            assert wait_for(lambda: SERVING in seen, 30)
            result: dict[str, Any] = {}

            def in_flight() -> None:
                try:
                    result["response"] = s.guard.Evaluate(evaluate_pb("in-flight", hid), timeout=60)
                except grpc.RpcError as exc:
                    result["error"] = exc.code()

            caller = threading.Thread(target=in_flight)
            caller.start()
            assert wait_for(lambda: "SLOW_CHECK_STARTED" in log.read_text(), 60)
            proc.send_signal(signal.SIGTERM)
            assert wait_for(lambda: NOT_SERVING in seen, 30), seen
            caller.join(60)
            assert "error" not in result, result
            assert result["response"].decision_id
            assert proc.wait(60) == 0
            watcher.join(10)
            channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    decided = _stored_request_ids(tmp_path / "guard.db", hid)
    assert set(decided) == {"in-flight"}
    assert decided["in-flight"] == result["response"].decision_id
