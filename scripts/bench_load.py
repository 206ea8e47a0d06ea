"""Load benchmark: Evaluate under concurrency against a real server process, per store backend.

    python scripts/bench_load.py --out reports/bench [--quick] [--stores sqlite,postgres]
        [--postgres-dsn "host=127.0.0.1 dbname=test user=postgres"]

For each store (SQLite file, PostgreSQL schema made for the run and dropped after) it starts
`python -m purchase_guard serve` as its own process (real GE2E encoder) and measures:

1. Evaluate over gRPC with a 3 s utterance at concurrency 1, 8, 32, 64: p50/p95/p99 latency
   and throughput. The load comes from grpc.aio clients in separate processes (one process
   for concurrency 1, two otherwise), all released at the same instant; each request has a
   fresh request_id and goes to one of 16 households in turn (made through the admin API:
   created, member added, voice enrolled from three FSDD takes, caps removed from the policy).
2. The no-audio part of the decision alone (validation, idempotency lookup, household lock,
   policy and spend reads, verdict, decision + audit + spend write), in this process: the real
   `Guard` on its own handle of the same database (its own 16 households, written through
   the Store API, since a store seals household data with its own keys), with the speaker
   verifier replaced by a stub that returns a precomputed verified result, fed 0.25 s of PCM
   (so decoding is negligible).
   Same concurrency levels, with threads. This is what the store and policy add to a decision.
3. Baseline in the same run: the bare encoder (decode + VAD trim + GE2E embed) on the same
   audio, in a process of its own built from the server's settings by the server's factory
   (app.build_encoder: same runtime, intra-op threads and request batching; `BareEncoders`),
   interleaved call by call with sequential Evaluate calls so both see the same machine
   conditions; the service overhead at concurrency 1 is reported as a ratio and checked
   against the target p50 <= 1.15 x encoder p50 + 2 ms. (It used to run in this process, beside
   the load generator and with torch's own defaults, and could come out slower than the
   Evaluate containing it.) Throughput against the bare encoder on all cores is
   scripts/bench_cores.py's subject; batched against one-at-a-time inference bench_batching.py's.
4. Memory: the server's RSS after start and warm-up (model loaded), and its peak (VmHWM) after
   the load.
5. Growth: households seeded directly into the tables (bulk insert, each with a member,
   voiceprint, policy and one past decision with audit and spend entries) up to 1k and 100k
   (10k with --quick); Evaluate at concurrency 1 over gRPC and the no-audio part at
   concurrency 1 and 8 are measured at each size.

Writes reports/bench/load.json and load.md. A full run takes about 10-15 minutes on 2 cores;
--quick about 3.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import multiprocessing as mp
import os
import platform
import queue
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile as sf

from purchase_guard.serial import format_ts

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from script_paths import default_data_dir

from purchase_guard._gen.purchaseguard.v1 import common_pb2, guard_pb2
from purchase_guard.sealing import MasterKeys

BENCH_MASTER_KEY = os.urandom(32)
BENCH_MASTER_KEY_B64 = base64.b64encode(BENCH_MASTER_KEY).decode()
OPERATOR = "bench-load-" + "o" * 30
BACKEND = "pgb_bench-load-" + "b" * 30
BACKEND_META = (("authorization", f"Bearer {BACKEND}"),)
LEVELS = (1, 8, 32, 64)
BENCH_HOUSEHOLDS = 16
AMOUNT_MINOR = 100
DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
EVALUATE = "/purchaseguard.v1.PurchaseGuard/Evaluate"


# --------------------------------------------------------------------------- figures


def summary(latencies_s: Sequence[float], wall_s: float | None = None) -> dict[str, float]:
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000
    out = {
        "n": float(len(ms)),
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p95_ms": float(np.percentile(ms, 95)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "mean_ms": float(ms.mean()) if len(ms) else float("nan"),
    }
    if wall_s is not None:
        out["throughput_rps"] = len(ms) / wall_s if wall_s > 0 else float("nan")
    return out


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


# --------------------------------------------------------------------------- audio


def three_seconds(data: Path, speaker: str) -> bytes:
    """3.0 s of one FSDD speaker as 8 kHz WAV (the same utterance bench_evaluate.py uses)."""
    from support.audio import fsdd_join

    parts: list[np.ndarray[Any, Any]] = []
    k = 0
    while sum(len(p) for p in parts) < 3 * 8000:
        samples, _ = fsdd_join(data, speaker, "2749", 30 + k)
        parts.append(samples)
        k += 1
    audio = np.concatenate(parts)[: 3 * 8000]
    buf = io.BytesIO()
    sf.write(buf, audio, 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# Distinct utterances the load cycles through (x 16 households before any audio repeats).
LOAD_UTTERANCES = 300


def utterances(data: Path, speaker: str, n: int) -> list[bytes]:
    """`n` 3.0 s utterances of one FSDD speaker (8 kHz WAV), digits joined with short gaps: the
    load's requests must be new audio, or from a household's second request on the replay
    check refuses them (REPLAYED_AUDIO) and the load measures the DENY of a replay. The
    speaker's 500 recordings are dealt from a shuffled deck, so an utterance shares no
    recording with the 60 or so before it (the replay check also finds a recording spliced
    into new audio); past that the deck is dealt again and some requests are refused as
    replays, which the outcomes show."""
    from support.audio import DIGIT_GAP_S

    rng = np.random.default_rng(20261202)
    files = sorted((data / "fsdd" / "recordings").glob(f"*_{speaker}_*.flac"))
    deck: list[Path] = []
    out: list[bytes] = []
    gap = np.zeros(int(DIGIT_GAP_S * 8000), dtype=np.float32)
    for _ in range(n):
        parts: list[np.ndarray[Any, Any]] = []
        while sum(len(p) for p in parts) < 3 * 8000:
            if not deck:
                deck = [files[i] for i in rng.permutation(len(files))]
            samples, _ = sf.read(deck.pop(), dtype="float32")
            parts += [samples, gap]
        buf = io.BytesIO()
        sf.write(buf, np.concatenate(parts)[: 3 * 8000], 8000, format="WAV", subtype="PCM_16")
        out.append(buf.getvalue())
    return out


# --------------------------------------------------------------------------- load generator


class Requests:
    """The load's Evaluate requests as bytes: an utterance part (device, order, audio) and a
    household part, concatenated (protobuf merges concatenated messages). Request n goes to
    household n mod H with utterance (n div H) mod U, so no household hears the same utterance
    twice until H x U requests have gone out; `start` moves past each call's requests, so a
    later call (a round, a level) sends new ones too."""

    def __init__(self, household_ids: Sequence[str], audio: Sequence[bytes]) -> None:
        self.utterances = [_request_bytes("", a) for a in audio]
        self.households = [
            guard_pb2.EvaluateRequest(household_id=h).SerializeToString() for h in household_ids
        ]
        self.start = 0

    def __getitem__(self, n: int) -> bytes:
        h, u = n % len(self.households), (n // len(self.households)) % len(self.utterances)
        return self.utterances[u] + self.households[h]

    @property
    def distinct(self) -> int:
        return len(self.households) * len(self.utterances)


def _request_bytes(household_id: str, audio: bytes) -> bytes:
    item = common_pb2.LineItem(
        sku="sku-1",
        title="Batteries",
        category="household",
        quantity=1,
        unit_price=common_pb2.Money(minor_units=AMOUNT_MINOR, currency="USD"),
    )
    order = common_pb2.Order(
        items=[item], total=common_pb2.Money(minor_units=AMOUNT_MINOR, currency="USD"), merchant="bench"
    )
    request = guard_pb2.EvaluateRequest(
        household_id=household_id, device_id="bench", order=order, audio=common_pb2.Audio(encoded=audio)
    )
    return request.SerializeToString()


async def _drive(
    target: str,
    requests: Requests,
    tasks: int,
    start_at: float,
    warmup_s: float,
    measure_s: float,
    tag: str,
    lane: tuple[int, int],
) -> dict[str, Any]:
    # One connection per task (as from many devices), so a server of several processes sharing
    # the port (PURCHASE_GUARD_PROCESSES) gets its connections spread over them by the kernel.
    options = [("grpc.max_send_message_length", 16 * 1024 * 1024), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(tasks)]
    try:
        return await _drive_on(channels, requests, tasks, start_at, warmup_s, measure_s, tag, lane)
    finally:
        for channel in channels:
            await channel.close()


async def _drive_on(
    channels: list[Any],
    requests: Requests,
    tasks: int,
    start_at: float,
    warmup_s: float,
    measure_s: float,
    tag: str,
    lane: tuple[int, int],
) -> dict[str, Any]:
    # Requests go out as bytes: a serialised base request plus a request_id field appended
    # (protobuf merges concatenated messages), so the client spends no time building protos.
    calls = [
        channel.unary_unary(
            EVALUATE, request_serializer=None, response_deserializer=guard_pb2.EvaluateResponse.FromString
        )
        for channel in channels
    ]
    for channel in channels:
        await channel.channel_ready()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    measure_from, measure_to = t0 + warmup_s, t0 + warmup_s + measure_s
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    counter = 0

    async def one_task(k: int) -> None:
        nonlocal counter
        while True:
            started = time.perf_counter()
            if started >= measure_to:
                return
            counter += 1
            rid = guard_pb2.EvaluateRequest(request_id=f"{tag}-{k}-{counter}").SerializeToString()
            # This client process's requests interleave with the others' (lane: index, count).
            base = requests[requests.start + (counter - 1) * lane[1] + lane[0]]
            try:
                response = await calls[k](base + rid, timeout=120, metadata=BACKEND_META)
                ok = common_pb2.Outcome.Name(response.outcome)
            except grpc.aio.AioRpcError as exc:
                ok = ""
                if started >= measure_from:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            if started >= measure_from and ok:
                latencies.append(time.perf_counter() - started)
                outcomes[ok] = outcomes.get(ok, 0) + 1

    await asyncio.gather(*(one_task(k) for k in range(tasks)))
    return {
        "latencies": latencies,
        "outcomes": outcomes,
        "errors": errors,
        "wall": measure_s,
        "sent": counter,
    }


def _worker(
    target: str,
    requests: Requests,
    tasks: int,
    start_at: float,
    warmup_s: float,
    measure_s: float,
    tag: str,
    lane: tuple[int, int],
    out: Any,
) -> None:
    out.put(asyncio.run(_drive(target, requests, tasks, start_at, warmup_s, measure_s, tag, lane)))


def grpc_level(
    target: str, requests: Requests, concurrency: int, warmup_s: float, measure_s: float
) -> dict[str, Any]:
    """One concurrency level, driven by one or two client processes released at the same instant."""
    ctx = mp.get_context("spawn")  # never fork a process that has gRPC and torch threads
    procs_n = 1 if concurrency == 1 else 2
    out = ctx.Queue()
    start_at = time.time() + 4.0  # spawned interpreters need a moment to import grpc
    shares = [concurrency // procs_n + (1 if i < concurrency % procs_n else 0) for i in range(procs_n)]
    tag = uuid.uuid4().hex[:8]
    procs = [
        ctx.Process(
            target=_worker,
            args=(target, requests, n, start_at, warmup_s, measure_s, f"{tag}{i}", (i, procs_n), out),
        )
        for i, n in enumerate(shares)
    ]
    for p in procs:
        p.start()
    parts: list[dict[str, Any]] = []
    deadline = time.time() + warmup_s + measure_s + 300
    while len(parts) < len(procs):
        try:
            parts.append(out.get(timeout=1.0))
        except queue.Empty:
            crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if crashed or time.time() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"load generator failed (exit codes {crashed})") from None
    for p in procs:
        p.join(timeout=30)
    latencies = [x for part in parts for x in part["latencies"]]
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for part in parts:
        for k, v in part["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
        for k, v in part["errors"].items():
            errors[k] = errors.get(k, 0) + v
    sent = sum(part["sent"] for part in parts)
    # Up to procs_n * max(sent per process) request numbers were used: move past all of them.
    requests.start += procs_n * max(part["sent"] for part in parts)
    result: dict[str, Any] = summary(latencies, measure_s)
    result.update(
        concurrency=concurrency,
        client_processes=procs_n,
        outcomes=outcomes,
        errors=errors,
        sent=sent,
        # Requests sent past the distinct (household, utterance) pairs repeat earlier audio.
        repeated_audio=max(0, requests.start - requests.distinct),
    )
    return result


# --------------------------------------------------------------------------- server process


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def server_env(store_env: dict[str, str], workdir: Path) -> dict[str, str]:
    """The server's environment: this checkout's package (by absolute path: the server runs in
    `workdir`, where a relative PYTHONPATH would fall back to an installed copy) and its settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASE_GUARD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(
        {
            "PURCHASE_GUARD_LISTEN": "127.0.0.1:0",
            "PURCHASE_GUARD_METRICS_PORT": "0",
            "PURCHASE_GUARD_OPERATOR_TOKEN": OPERATOR,
            "PURCHASE_GUARD_BACKEND_TOKEN": BACKEND,
            "PURCHASE_GUARD_OPERATOR_TOKEN_FILE": str(workdir / "op"),
            "PURCHASE_GUARD_LOG_LEVEL": "warning",
            # Measures deciding under load, not the per-device abuse limits a real device would hit.
            "PURCHASE_GUARD_RATE_LIMITS_ENABLED": "0",
            # One master key for the server and for the rows this script seeds directly.
            "PURCHASE_GUARD_MASTER_KEY": BENCH_MASTER_KEY_B64,
            **store_env,
        }
    )
    return env


def settings_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PURCHASE_GUARD_")}


def start_server(store_env: dict[str, str], workdir: Path) -> Server:
    env = server_env(store_env, workdir)
    with (workdir / "server.log").open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "purchase_guard", "serve"],
            env=env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    while True:
        line = lines.get(timeout=300)
        if not line:
            raise RuntimeError(f"server exited with {process.wait()}; see {workdir / 'server.log'}")
        if line.startswith("purchase-guard listening on "):
            return Server(process, int(line.split()[3].rsplit(":", 1)[1]))


# --------------------------------------------------------------------------- seeding


@dataclass(frozen=True)
class Seeded:
    household_ids: list[str]
    member_ids: list[str]


def bench_policy() -> Any:
    from purchase_guard.domain import Policy, PurchaseMode, Role, RoleRule

    # No caps: tens of thousands of 1.00 orders must all take the same ALLOW path.
    return Policy(rules=(RoleRule(Role.ADULT, PurchaseMode.ALLOWED),))


def seed_via_api(target: str, data: Path) -> list[str]:
    """The households the server's load goes to, made the way a parent would, over gRPC."""
    from support.audio import fsdd_wav

    from purchase_guard.api.client import GuardClient

    takes = [fsdd_wav(data, "jackson", d, t) for d, t in (("3817", 0), ("5092", 1), ("6641", 2))]
    client = GuardClient(target, OPERATOR, timeout=120, backend_token=BACKEND)
    hids = []
    try:
        for i in range(BENCH_HOUSEHOLDS):
            created = client.create_household(f"Bench {i}", "UTC", "USD")
            hid = created["household"]["household_id"]
            parent = client.with_token(created["admin_token"])
            member = parent.add_member(hid, "Jackson", "ADULT", True)["member"]["member_id"]
            parent.enroll(hid, member, takes)
            policy = parent.get_policy(hid)["policy"]
            policy.pop("revision", None)
            for rule in policy["rules"]:
                # No caps or order maximum: every 1.00 order must take the same ALLOW path.
                for cap in ("max_order_minor", "daily_cap_minor", "monthly_cap_minor"):
                    rule.pop(cap, None)
            parent.set_policy(hid, policy)
            hids.append(hid)
    finally:
        client.close()
    return hids


def seed_bench_households(store: Any, encoder_name: str, centroid: tuple[float, ...]) -> Seeded:
    """Households for the in-process no-audio part, through the Store API (what enrollment writes)."""
    from purchase_guard.domain import Household, Member, Role, Voiceprint

    now = datetime.now(UTC)
    hids, mids = [], []
    for i in range(BENCH_HOUSEHOLDS):
        hid, mid = f"hh_bench_{i:03d}_{uuid.uuid4().hex[:8]}", f"mem_bench_{i:03d}_{uuid.uuid4().hex[:8]}"
        store.create_household(Household(hid, f"Bench {i}", "UTC", "USD", False, now), f"bench-token-{hid}")
        store.add_member(Member(mid, hid, "Jackson", Role.ADULT, True, now))
        store.put_voiceprint(Voiceprint(mid, hid, encoder_name, centroid, 3, now))
        store.put_policy(hid, bench_policy(), now)
        hids.append(hid)
        mids.append(mid)
    return Seeded(hids, mids)


def _filler_rows(
    start: int, count: int, encoder_name: str, centroid: tuple[float, ...]
) -> Iterator[dict[str, tuple[Any, ...]]]:
    from purchase_guard.audit.chain import GENESIS, entry_hash
    from purchase_guard.domain import Decision, Money, Outcome, Reason, ReasonCode, Role, SpeakerResult
    from purchase_guard.store import codec
    from purchase_guard.store.codec import pack_embedding

    now = datetime.now(UTC)
    ts = format_ts(now)
    blob = pack_embedding(centroid)
    policy = codec.policy_to_json(bench_policy())
    for i in range(start, start + count):
        hid, mid, did = f"hh_fill_{i:07d}", f"mem_fill_{i:07d}", f"dec_fill_{i:07d}"
        decision = Decision(
            decision_id=did,
            household_id=hid,
            kind="evaluate",
            request_id=f"req_fill_{i}",
            device_id="kitchen",
            outcome=Outcome.ALLOW,
            reasons=(Reason(ReasonCode.POLICY_ALLOWED, "Allowed by the household policy."),),
            speaker=SpeakerResult(mid, Role.ADULT, 0.86, 0.78, True, -1.0, encoder_name),
            policy_revision=1,
            total=Money(AMOUNT_MINOR, "USD"),
            decided_at=now,
            member_id=mid,
        )
        body = codec.decision_to_json(decision)
        yield {
            "households": (hid, f"Filler {i}", "UTC", "USD", False, f"fill-token-{i}", ts),
            "members": (mid, hid, "Filler", "adult", True, ts),
            "voiceprints": (mid, hid, encoder_name, blob, len(centroid), 3, ts),
            "policies": (hid, 1, policy, ts),
            "decisions": (did, hid, "evaluate", f"req_fill_{i}", "digest", "ALLOW", 1, body, ts),
            "audit": (hid, 1, did, ts, body, GENESIS, entry_hash(hid, 1, did, ts, body, GENESIS)),
            "spend": (did, hid, mid, AMOUNT_MINOR, 1, ts, False),
        }


COLUMNS = {
    "households": "id, name, time_zone, currency, retain_audio, admin_token_hash, created_at",
    "members": "member_id, household_id, display_name, role, is_parent, created_at",
    "voiceprints": "member_id, household_id, encoder, embedding, dim, n_utterances, created_at",
    "policies": "household_id, revision, body, created_at",
    "decisions": (
        "decision_id, household_id, kind, request_id, request_digest, outcome, seq, body, created_at"
    ),
    "audit": "household_id, seq, decision_id, at, body, prev_hash, entry_hash",
    "spend": "decision_id, household_id, member_id, amount_minor, seq, at, exempt",
}


def bulk_seed(
    backend: str, where: str, start: int, count: int, encoder_name: str, centroid: tuple[float, ...]
) -> float:
    """Inserts `count` filler households with their rows straight into the tables; returns seconds."""
    t0 = time.perf_counter()
    batch = 5000
    if backend == "sqlite":
        conn = sqlite3.connect(where, isolation_level=None, timeout=60)
        try:
            for off in range(0, count, batch):
                rows = list(_filler_rows(start + off, min(batch, count - off), encoder_name, centroid))
                conn.execute("BEGIN IMMEDIATE")
                for table, cols in COLUMNS.items():
                    marks = ", ".join("?" * len(cols.split(",")))
                    conn.executemany(
                        f"INSERT INTO {table} ({cols}) VALUES ({marks})", [r[table] for r in rows]
                    )
                conn.execute("COMMIT")
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(where) as conn:
            for off in range(0, count, batch):
                rows = list(_filler_rows(start + off, min(batch, count - off), encoder_name, centroid))
                with conn.cursor() as cur:
                    for table, cols in COLUMNS.items():
                        with cur.copy(f"COPY {table} ({cols}) FROM STDIN".encode()) as copy:
                            for r in rows:
                                copy.write_row(r[table])
                conn.commit()
            conn.execute("ANALYZE")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- no-audio part


@dataclass(frozen=True)
class NamedEncoder:
    name: str  # the pipeline only reads the encoder's name (to match enrolled voiceprints)


class StubVerifier:
    """Answers every utterance with a precomputed verified adult: takes the model out of the timing."""

    def __init__(self, encoder_name: str) -> None:
        self.encoder = NamedEncoder(encoder_name)

    def verify(self, pcm: Any, voiceprints: Sequence[Any], roles: Any) -> Any:
        from purchase_guard.domain import Role, SpeakerResult

        # The household's enrolled member, as a real verification of their voice would return.
        return SpeakerResult(voiceprints[0].member_id, Role.ADULT, 0.86, 0.78, True, -1.0, self.encoder.name)


def no_audio_guard(store: Any, encoder_name: str, digits: Any = None, **setting: Any) -> Any:
    """A Guard with the stub verifier and no broadcast check; `setting` overrides Settings fields."""
    from purchase_guard.challenge.pin import PinHasher
    from purchase_guard.clock import RandomIds, SystemClock
    from purchase_guard.config import Settings
    from purchase_guard.pipeline.guard import Guard
    from purchase_guard.pipeline.ports import NoBroadcastDefence

    settings = Settings(metrics_port=0, operator_token=OPERATOR, **setting).validated()
    return Guard(
        settings,
        store,
        StubVerifier(encoder_name),
        NoBroadcastDefence(),
        PinHasher(),
        SystemClock(),
        RandomIds(),
        digits=digits,
    )


def no_audio_level(
    guard: Any, household_ids: list[str], pcm16: bytes, concurrency: int, n: int
) -> dict[str, Any]:
    from purchase_guard.domain import AudioInput, LineItem, Money, Order
    from purchase_guard.pipeline.guard import EvaluateInput

    item = LineItem("sku-1", "Batteries", "household", 1, Money(AMOUNT_MINOR, "USD"))
    order = Order((item,), Money(AMOUNT_MINOR, "USD"), "bench")
    audio = AudioInput(pcm16=pcm16, sample_rate_hz=8000)
    tag = uuid.uuid4().hex[:8]
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def one(i: int) -> float:
        req = EvaluateInput(f"na-{tag}-{i}", household_ids[i % len(household_ids)], "bench", order, audio)
        t0 = time.perf_counter()
        decision = guard.evaluate(req)
        took = time.perf_counter() - t0
        with lock:
            outcomes[decision.outcome.value] = outcomes.get(decision.outcome.value, 0) + 1
        return took

    for i in range(min(20, n)):  # warm-up: prepared statements, pool connections, caches
        one(-1 - i)
    outcomes.clear()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    result: dict[str, Any] = summary(latencies, wall)
    result.update(concurrency=concurrency, outcomes=outcomes)
    return result


# --------------------------------------------------------------------------- bare encoder


def bare_encoder_call(encoder: Any, audio: bytes) -> float:
    """Seconds for what the model part of a decision costs alone: decode, VAD trim, GE2E embed."""
    from purchase_guard.voice.audio import decode_audio
    from purchase_guard.voice.vad import trim_silence

    t0 = time.perf_counter()
    encoder.embed(trim_silence(decode_audio(encoded=audio)).samples)
    return time.perf_counter() - t0


def _bare_load(
    encoder: Any, audio: bytes, threads: int, start_at: float, warmup_s: float, measure_s: float
) -> dict[str, Any]:
    """`threads` callers of the encoder, closed loop, as the server's worker threads call it."""
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    measure_from, measure_to = t0 + warmup_s, t0 + warmup_s + measure_s
    latencies: list[float] = []
    lock = threading.Lock()

    def loop() -> None:
        while True:
            started = time.perf_counter()
            if started >= measure_to:
                return
            took = bare_encoder_call(encoder, audio)
            if started >= measure_from:
                with lock:
                    latencies.append(took)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"latencies": latencies, "wall": measure_s}


def _bare_main(settings: dict[str, str], audio: bytes, conn: Any) -> None:
    """The bare encoder in a process of its own, built from the server's settings by the server's
    own factory (app.build_encoder: runtime, intra-op threads, request batching), so it runs the
    encoder exactly as one server process does, without gRPC, the store or the checks."""
    from purchase_guard.app import build_encoder
    from purchase_guard.blas import single_threaded_blas
    from purchase_guard.config import load_settings

    single_threaded_blas()  # as a server process does at start (cli._serve)
    loaded = load_settings(settings)
    encoder = build_encoder(loaded)
    for _ in range(5):  # warm-up: first calls allocate
        bare_encoder_call(encoder, audio)
    conn.send(("ready", loaded.workers))
    while True:
        msg = conn.recv()
        if msg[0] == "one":
            conn.send(bare_encoder_call(encoder, audio))
        elif msg[0] == "load":
            conn.send(_bare_load(encoder, audio, *msg[1:]))
        else:
            break
    close = getattr(encoder, "close", None)
    if callable(close):
        close()


class BareEncoders:
    """`processes` bare-encoder processes (`_bare_main`) on the server's settings."""

    def __init__(self, settings: dict[str, str], audio: bytes, processes: int = 1) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that has gRPC and torch threads
        self._conns = []
        self._procs = []
        for _ in range(processes):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_bare_main, args=(settings, audio, theirs), daemon=True)
            proc.start()
            self._conns.append(mine)
            self._procs.append(proc)
        self.workers = 1
        for conn in self._conns:
            if not conn.poll(300):
                self.close()
                raise RuntimeError("the bare encoder process did not start")
            self.workers = int(conn.recv()[1])

    def one(self) -> float:
        """Seconds for one decode + VAD trim + embed in the first process."""
        self._conns[0].send(("one",))
        return float(self._conns[0].recv())

    def load(self, concurrency: int, warmup_s: float, measure_s: float) -> dict[str, Any]:
        """`concurrency` callers spread over the processes, each process running at most as many
        as a server process has worker threads (the rest of a server's callers queue for them)."""
        per = min(self.workers, max(1, -(-concurrency // len(self._conns))))
        start_at = time.time() + 1.0
        for conn in self._conns:
            conn.send(("load", per, start_at, warmup_s, measure_s))
        parts = [conn.recv() for conn in self._conns]
        result: dict[str, Any] = summary([x for p in parts for x in p["latencies"]], measure_s)
        result.update(concurrency=concurrency, processes=len(self._conns), threads_per_process=per)
        return result

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("stop",))
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def overhead_series(target: str, requests: Requests, bare_encoder: BareEncoders, n: int) -> dict[str, Any]:
    """Evaluate (one at a time, over gRPC) and the bare encoder (in its own process, built like the
    server's), interleaved call by call, so both series see the same machine conditions; the ratio
    does not depend on how busy the machine is."""
    service, bare = [], []
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            EVALUATE, request_serializer=None, response_deserializer=guard_pb2.EvaluateResponse.FromString
        )
        tag = uuid.uuid4().hex[:8]
        for i in range(n):
            rid = guard_pb2.EvaluateRequest(request_id=f"ov-{tag}-{i}").SerializeToString()
            t0 = time.perf_counter()
            call(requests[requests.start + i] + rid, timeout=120, metadata=BACKEND_META)
            service.append(time.perf_counter() - t0)
            bare.append(bare_encoder.one())
    requests.start += n
    svc, enc = summary(service), summary(bare)
    target_ms = 1.15 * enc["p50_ms"] + 2.0
    return {
        "n": n,
        "evaluate": svc,
        "bare_encoder": enc,
        "ratio_p50": svc["p50_ms"] / enc["p50_ms"],
        "target_p50_ms": target_ms,
        "meets_target": svc["p50_ms"] <= target_ms,
    }


# --------------------------------------------------------------------------- per store


@contextmanager
def store_target(
    backend: str, workdir: Path, base_dsn: str
) -> Iterator[tuple[dict[str, str], str, Callable[[], Any]]]:
    """(server env, seeding location, store factory) for one backend; PostgreSQL gets a fresh schema."""
    if backend == "sqlite":
        path = str(workdir / "bench.db")

        def open_sqlite() -> Any:
            from purchase_guard.store.sqlite import SqliteStore

            return SqliteStore(path, master_keys=MasterKeys.of(BENCH_MASTER_KEY))

        yield {"PURCHASE_GUARD_STORE": "sqlite", "PURCHASE_GUARD_SQLITE_PATH": path}, path, open_sqlite
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    schema = f"guard_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    dsn = make_conninfo(base_dsn, options=f"-c search_path={schema}")

    def open_pg() -> Any:
        from purchase_guard.store.postgres import PostgresStore

        return PostgresStore(dsn, pool_size=20, master_keys=MasterKeys.of(BENCH_MASTER_KEY))

    try:
        yield {"PURCHASE_GUARD_STORE": "postgres", "PURCHASE_GUARD_POSTGRES_DSN": dsn}, dsn, open_pg
    finally:
        with psycopg.connect(base_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def run_store(
    backend: str, args: argparse.Namespace, audio: bytes, encoder: Any, centroid: tuple[float, ...]
) -> dict[str, Any]:
    quick = args.quick
    warmup_s, measure_s = (2.0, 5.0) if quick else (3.0, 15.0)
    enc_n = 30 if quick else 100
    na_n = 150 if quick else 600
    sizes = (1_000, 10_000) if quick else (1_000, 100_000)
    pcm16 = sf.read(io.BytesIO(audio), dtype="int16")[0][:2000].tobytes()  # 0.25 s at 8 kHz
    load_audio = utterances(args_data(args), "jackson", LOAD_UTTERANCES)
    out: dict[str, Any] = {"store": backend}
    with (
        tempfile.TemporaryDirectory() as tmp,
        store_target(backend, Path(tmp), args.postgres_dsn) as (env, where, open_store),
    ):
        workdir = Path(tmp)
        store = open_store()  # applies migrations before the server starts
        guard_store = store
        seeded = seed_bench_households(store, encoder.name, centroid)
        print(f"[{backend}] starting server", flush=True)
        server = start_server(env, workdir)
        bare = BareEncoders(settings_env(server_env(env, workdir)), audio)
        try:
            print(f"[{backend}] enrolling {BENCH_HOUSEHOLDS} households over gRPC", flush=True)
            bases = Requests(seed_via_api(server.target, args_data(args)), load_audio)
            # Warm-up outside any measurement: first torch calls allocate, pools fill.
            grpc_level(server.target, bases, 2, 1.0, 2.0)
            out["rss_after_start_kib"] = rss_kib(server.process.pid)

            print(f"[{backend}] service overhead against the bare encoder", flush=True)
            out["overhead_c1"] = overhead_series(server.target, bases, bare, enc_n)
            levels = []
            for c in LEVELS:
                print(f"[{backend}] Evaluate over gRPC, concurrency {c}", flush=True)
                levels.append(grpc_level(server.target, bases, c, warmup_s, measure_s))
            out["evaluate"] = levels
            out["rss_after_load_kib"] = rss_kib(server.process.pid)

            guard = no_audio_guard(guard_store, encoder.name)
            na = []
            for c in LEVELS:
                print(f"[{backend}] no-audio part, concurrency {c}", flush=True)
                na.append(no_audio_level(guard, seeded.household_ids, pcm16, c, na_n))
            out["no_audio"] = na

            growth = []
            seeded_so_far = 0
            for size in sizes:
                print(f"[{backend}] seeding to {size} households", flush=True)
                took = bulk_seed(backend, where, seeded_so_far, size - seeded_so_far, encoder.name, centroid)
                seeded_so_far = size
                growth.append(
                    {
                        "households": size + BENCH_HOUSEHOLDS,
                        "seed_seconds": took,
                        "evaluate_c1": grpc_level(server.target, bases, 1, warmup_s, measure_s / 2),
                        "no_audio_c1": no_audio_level(guard, seeded.household_ids, pcm16, 1, na_n // 2),
                        "no_audio_c8": no_audio_level(guard, seeded.household_ids, pcm16, 8, na_n // 2),
                    }
                )
            out["growth"] = growth
        finally:
            bare.close()
            server.stop()
            store.close()
    return out


def args_data(args: argparse.Namespace) -> Path:
    return Path(args.data)


# --------------------------------------------------------------------------- report


def pair(figures: dict[str, float], fmt: str = ".1f") -> str:
    return f"{figures['p50_ms']:{fmt}} / {figures['p95_ms']:{fmt}}"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}; "
        f"utterance {result['utterance_seconds']:.1f} s; {'quick' if result['quick'] else 'full'} run.",
        "",
        "### Evaluate over gRPC (3 s utterance, real GE2E, server in its own process)",
        "",
        "| store | concurrency | p50 ms | p95 ms | p99 ms | throughput req/s | n | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["stores"]:
        for lv in s["evaluate"]:
            lines.append(
                f"| {s['store']} | {lv['concurrency']} | {lv['p50_ms']:.1f} | {lv['p95_ms']:.1f} | "
                f"{lv['p99_ms']:.1f} | {lv['throughput_rps']:.1f} | {int(lv['n'])} | "
                f"{sum(lv['errors'].values())} |"
            )
    lines += [
        "",
        "### No-audio part of the decision (policy, store, audit; verifier stubbed, in-process)",
        "",
        "| store | concurrency | p50 ms | p95 ms | p99 ms | throughput dec/s | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result["stores"]:
        for lv in s["no_audio"]:
            lines.append(
                f"| {s['store']} | {lv['concurrency']} | {lv['p50_ms']:.2f} | {lv['p95_ms']:.2f} | "
                f"{lv['p99_ms']:.2f} | {lv['throughput_rps']:.0f} | {int(lv['n'])} |"
            )
    lines += [
        "",
        "### Baseline: bare encoder on the same audio, interleaved with Evaluate at concurrency 1",
        "",
        "| store | n | Evaluate p50 / p95 ms | bare encoder p50 / p95 ms | ratio at p50 "
        "| target (1.15x + 2 ms) | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result["stores"]:
        o = s["overhead_c1"]
        e, v = o["bare_encoder"], o["evaluate"]
        lines.append(
            f"| {s['store']} | {o['n']} | {pair(v)} | {pair(e)} | "
            f"{o['ratio_p50']:.2f}x | {o['target_p50_ms']:.1f} ms | {'yes' if o['meets_target'] else 'no'} |"
        )
    lines += [
        "",
        "### Memory per replica (server process, model loaded)",
        "",
        "| store | RSS after start MiB | RSS after load MiB | peak (VmHWM) MiB |",
        "|---|---|---|---|",
    ]
    for s in result["stores"]:
        lines.append(
            f"| {s['store']} | {s['rss_after_start_kib']['VmRSS'] / 1024:.0f} | "
            f"{s['rss_after_load_kib']['VmRSS'] / 1024:.0f} | {s['rss_after_load_kib']['VmHWM'] / 1024:.0f} |"
        )
    lines += [
        "",
        "### Growth with households in the store",
        "",
        "| store | households | seed s | Evaluate c=1 p50 / p95 ms "
        "| no-audio c=1 p50 / p95 ms | no-audio c=8 p50 / p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["stores"]:
        base_na1, base_na8 = s["no_audio"][0], s["no_audio"][1]
        lines.append(
            f"| {s['store']} | {BENCH_HOUSEHOLDS} | - | {pair(s['evaluate'][0])} | "
            f"{pair(base_na1, '.2f')} | {pair(base_na8, '.2f')} |"
        )
        for g in s["growth"]:
            lines.append(
                f"| {s['store']} | {g['households']} | {g['seed_seconds']:.0f} | "
                f"{g['evaluate_c1']['p50_ms']:.1f} / {g['evaluate_c1']['p95_ms']:.1f} | "
                f"{g['no_audio_c1']['p50_ms']:.2f} / {g['no_audio_c1']['p95_ms']:.2f} | "
                f"{g['no_audio_c8']['p50_ms']:.2f} / {g['no_audio_c8']['p95_ms']:.2f} |"
            )
    lines += ["", f"Total run time {result['run_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/bench")
    ap.add_argument("--quick", action="store_true", help="shorter levels, growth to 10k households")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--postgres-dsn", default=os.environ.get("PURCHASE_GUARD_TEST_POSTGRES_DSN", DEFAULT_DSN))
    ap.add_argument("--data", default=str(default_data_dir()))
    args = ap.parse_args()
    started = time.perf_counter()
    data = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from support.audio import fsdd_wav

    from purchase_guard.voice.audio import decode_audio
    from purchase_guard.voice.ge2e import Ge2eEncoder
    from purchase_guard.voice.quality import assess_enrollment

    encoder = Ge2eEncoder()
    audio = three_seconds(data, "jackson")
    takes = [
        decode_audio(encoded=fsdd_wav(data, "jackson", d, t))
        for d, t in (("3817", 0), ("5092", 1), ("6641", 2))
    ]
    centroid = tuple(
        float(x) for x in np.asarray(assess_enrollment(takes, encoder).centroid, dtype=np.float32)
    )
    for _ in range(5):  # warm-up: first torch calls allocate
        bare_encoder_call(encoder, audio)

    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "utterance_seconds": decode_audio(encoded=audio).duration_s,
        "quick": args.quick,
        "stores": [run_store(b, args, audio, encoder, centroid) for b in args.stores.split(",") if b],
    }
    result["run_seconds"] = time.perf_counter() - started
    (out / "load.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (out / "load.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
