"""The store contract fixtures: every test in tests/store that takes `backend` or `store` runs
once per backend. To add a backend, add a `Backend` subclass and its name to `BACKENDS`; the
contract suite then runs against it unchanged.

The PostgreSQL backend needs a server (PURCHASE_GUARD_TEST_POSTGRES_DSN, default the local
one on 127.0.0.1:5432, database `test`). Each test gets a fresh schema, dropped afterwards.
When the server is unreachable its tests skip, unless PURCHASE_GUARD_REQUIRE_SERVICES=1 (CI),
where they fail.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from purchase_guard.domain import (
    Challenge,
    ChallengeInfo,
    ChallengeMethod,
    ChallengeStatus,
    Decision,
    Household,
    LineItem,
    Member,
    Money,
    Notification,
    Order,
    Outcome,
    Reason,
    ReasonCode,
    Role,
    SpeakerResult,
)
from purchase_guard.sealing import TEST_MASTER_KEY, MasterKeys
from purchase_guard.store.postgres import PostgresStore
from purchase_guard.store.protocol import SpendEntry, Store
from purchase_guard.store.sqlite import SqliteStore

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Backend:
    name = ""
    persistent = False  # data survives close() and a fresh open()
    shared = False  # open() gives an independent handle (connection) on the same data

    def __init__(self) -> None:
        self._opened: list[Store] = []

    def _new(self) -> Store:
        raise NotImplementedError

    def open(self) -> Store:
        store = self._new()
        self._opened.append(store)
        return store

    def tamper_audit_body(self, store: Store, household_id: str, seq: int, body: str) -> None:
        raise NotImplementedError

    def tamper_delete_audit(self, store: Store, household_id: str, seq: int) -> None:
        raise NotImplementedError

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


class SqliteBackend(Backend):
    name = "sqlite"
    persistent = True
    shared = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _new(self) -> Store:
        return SqliteStore(self.path, master_keys=MasterKeys.of(TEST_MASTER_KEY))

    def _raw(self, sql: str, params: tuple[object, ...]) -> None:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()

    def tamper_audit_body(self, store: Store, household_id: str, seq: int, body: str) -> None:
        self._raw("UPDATE audit SET body = ? WHERE household_id = ? AND seq = ?", (body, household_id, seq))

    def tamper_delete_audit(self, store: Store, household_id: str, seq: int) -> None:
        self._raw("DELETE FROM audit WHERE household_id = ? AND seq = ?", (household_id, seq))

    def raw_pin_hash(self, household_id: str) -> str:
        conn = sqlite3.connect(self.path)
        try:
            row = conn.execute("SELECT pin_hash FROM pins WHERE household_id = ?", (household_id,)).fetchone()
        finally:
            conn.close()
        return str(row[0])


DEFAULT_POSTGRES_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@functools.cache
def _postgres_problem(dsn: str) -> str | None:
    """Why the test server cannot be used, or None; asked once per session."""
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


def postgres_base_dsn() -> str:
    """The test server's DSN; skips when it is unreachable, fails instead under REQUIRE_SERVICES=1."""
    dsn = os.environ.get("PURCHASE_GUARD_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    problem = _postgres_problem(dsn)
    if problem is not None:
        message = f"PostgreSQL for tests is unreachable ({problem}); set PURCHASE_GUARD_TEST_POSTGRES_DSN"
        if os.environ.get("PURCHASE_GUARD_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (required: PURCHASE_GUARD_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return dsn


class PostgresBackend(Backend):
    name = "postgres"
    persistent = True
    shared = True  # every open() is its own connection pool, as another process would have

    def __init__(self, base_dsn: str) -> None:
        super().__init__()
        self.base_dsn = base_dsn
        self.schema = f"guard_test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(base_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}".encode())
        self.dsn = make_conninfo(
            base_dsn, options=f"-c search_path={self.schema}", application_name=self.schema
        )

    def _new(self) -> Store:
        # A small pool: a test opens a few stores, and the server's connection limit is shared.
        return PostgresStore(self.dsn, pool_size=3, master_keys=MasterKeys.of(TEST_MASTER_KEY))

    def raw(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Runs SQL in the test schema behind the stores' backs."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description is not None else []

    def tamper_audit_body(self, store: Store, household_id: str, seq: int, body: str) -> None:
        self.raw("UPDATE audit SET body = %s WHERE household_id = %s AND seq = %s", (body, household_id, seq))

    def tamper_delete_audit(self, store: Store, household_id: str, seq: int) -> None:
        self.raw("DELETE FROM audit WHERE household_id = %s AND seq = %s", (household_id, seq))

    def raw_pin_hash(self, household_id: str) -> str:
        return str(self.raw("SELECT pin_hash FROM pins WHERE household_id = %s", (household_id,))[0][0])

    def close_all(self) -> None:
        super().close_all()
        with psycopg.connect(self.base_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE".encode())


BACKENDS = ["sqlite", "postgres"]


def open_backend(name: str, tmp_path: Path) -> Backend:
    if name == "sqlite":
        return SqliteBackend(tmp_path / "guard.db")
    if name == "postgres":
        return PostgresBackend(postgres_base_dsn())
    raise ValueError(f"unknown backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    chosen = open_backend(request.param, tmp_path)
    yield chosen
    chosen.close_all()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


class Make:
    """Builders for domain values with sensible defaults; every call gives fresh ids."""

    def __init__(self) -> None:
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n:04d}"

    def household(self, store: Store, household_id: str | None = None, name: str = "Home") -> Household:
        hid = household_id or self._id("hh")
        household = Household(hid, name, "Europe/Berlin", "EUR", retain_audio=False, created_at=T0)
        store.create_household(household, admin_token_hash=f"hash-of-{hid}")
        return household

    def member(self, store: Store, household_id: str, name: str = "Ada", role: Role = Role.ADULT) -> Member:
        member = Member(
            self._id("mem"), household_id, name, role, is_parent=role is Role.ADULT, created_at=T0
        )
        store.add_member(member)
        return member

    def order(self, amount: int = 1999) -> Order:
        item = LineItem("sku-1", "Batteries", "household", 1, Money(amount, "EUR"))
        return Order((item,), Money(amount, "EUR"), "shop")

    def decision(
        self,
        household_id: str,
        *,
        request_id: str | None = None,
        kind: str = "evaluate",
        outcome: Outcome = Outcome.ALLOW,
        at: datetime = T0,
        amount: int = 1999,
        member_id: str | None = None,
        challenge: ChallengeInfo | None = None,
    ) -> Decision:
        speaker = SpeakerResult(member_id, Role.ADULT, 0.81, 0.7, True, 0.05, "ge2e-v1")
        return Decision(
            decision_id=self._id("dec"),
            household_id=household_id,
            kind=kind,
            request_id=request_id or self._id("req"),
            device_id="dev-1",
            outcome=outcome,
            reasons=(Reason(ReasonCode.POLICY_ALLOWED, "allowed", (("rule", "ADULT"),)),),
            speaker=speaker,
            policy_revision=1,
            total=Money(amount, "EUR"),
            decided_at=at,
            challenge=challenge,
            member_id=member_id,
        )

    def spend(self, decision: Decision, *, exempt: bool = False, at: datetime | None = None) -> SpendEntry:
        return SpendEntry(
            household_id=decision.household_id,
            member_id=decision.member_id,
            amount_minor=decision.total.minor_units,
            decision_id=decision.decision_id,
            at=at or decision.decided_at,
            exempt=exempt,
        )

    def challenge(
        self,
        household_id: str,
        decision_id: str,
        *,
        status: ChallengeStatus = ChallengeStatus.PENDING,
        attempts: int = 3,
        at: datetime = T0,
    ) -> Challenge:
        return Challenge(
            challenge_id=self._id("chl"),
            household_id=household_id,
            decision_id=decision_id,
            method=ChallengeMethod.RANDOM_DIGITS,
            order_digest="digest-1",
            order=self.order(),
            member_id=None,
            status=status,
            attempts_left=attempts,
            expires_at=at + timedelta(minutes=5),
            created_at=at,
            expected_digits_hash="salted-hash",
            digits_to_repeat="4821",
        )

    def notification(
        self, household_id: str, at: datetime = T0, challenge_id: str | None = None
    ) -> Notification:
        return Notification(self._id("ntf"), household_id, "approval_needed", "Approve?", challenge_id, at)


@pytest.fixture
def make() -> Make:
    return Make()


@pytest.fixture
def pg_backend() -> Iterator[PostgresBackend]:
    """The PostgreSQL backend alone, for tests of what only it does (cross-process locking)."""
    chosen = PostgresBackend(postgres_base_dsn())
    yield chosen
    chosen.close_all()
