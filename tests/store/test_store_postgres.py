"""PostgreSQL specifics: migrations under concurrent starts, locking across connection pools (as
separate replicas have), storage formats, and the mapping of connection failures to Unavailable.

Each `pg_backend.open()` is its own connection pool, so two handles behave like two processes.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from purchase_guard.audit.chain import verify_chain
from purchase_guard.domain import Outcome, Voiceprint
from purchase_guard.errors import Unavailable
from purchase_guard.sealing import TEST_MASTER_KEY, MasterKeys, key_id_of
from purchase_guard.store import codec
from purchase_guard.store.migrate import Migration, load_migrations
from purchase_guard.store.migrate_pg import advisory_key, apply_postgres
from purchase_guard.store.postgres import PostgresStore
from purchase_guard.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Make, PostgresBackend

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _threads(*calls: Callable[[], object]) -> list[object]:
    """Runs the callables at once (released by a barrier); returns results or the exceptions raised."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int, fn: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _waiting_for_advisory_lock(backend: PostgresBackend, key: int) -> int:
    """How many sessions of this test's schema are queued for the advisory lock `key`."""
    # A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    rows = backend.raw(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid::bigint = %s"
        " AND l.objid::bigint = %s AND a.application_name = %s",
        (unsigned >> 32, unsigned & 0xFFFF_FFFF, backend.schema),
    )
    return int(rows[0][0])  # type: ignore[call-overload]


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    event = threading.Event()
    for _ in range(600):
        if predicate():
            return
        event.wait(0.05)
    pytest.fail(f"never happened: {what}")


# --- migrations ----------------------------------------------------------------------------


def test_migrations_apply_once_even_when_replicas_start_together(pg_backend: PostgresBackend) -> None:
    """Four stores opened at once on an empty schema all start, and each migration is applied once."""
    results = _threads(*[pg_backend.open for _ in range(4)])
    assert all(isinstance(r, PostgresStore) for r in results), results
    shipped = [(m.version, m.name) for m in load_migrations()]
    assert pg_backend.raw("SELECT version, name FROM schema_migrations ORDER BY version") == shipped
    with psycopg.connect(pg_backend.dsn, autocommit=True) as conn:
        assert apply_postgres(conn) == []


def test_a_failing_migration_leaves_nothing(pg_backend: PostgresBackend) -> None:
    """A migration that fails half-way is rolled back entirely and not recorded as applied."""
    pg_backend.open()
    broken = Migration(9999, "broken", "CREATE TABLE half_done (x INTEGER);\nSELECT * FROM no_such_table;")
    undefined = psycopg.errors.UndefinedTable
    with psycopg.connect(pg_backend.dsn, autocommit=True) as conn, pytest.raises(undefined):
        apply_postgres(conn, [broken])
    shipped = [(m.version,) for m in load_migrations()]
    assert pg_backend.raw("SELECT version FROM schema_migrations ORDER BY version") == shipped
    assert pg_backend.raw("SELECT to_regclass('half_done') IS NULL") == [(True,)]


# --- storage formats -----------------------------------------------------------------------


def test_stored_forms_match_sqlite(pg_backend: PostgresBackend, make: Make) -> None:
    """Timestamps are fixed-width UTC text; the embedding column holds the sealed bytes of float32
    little-endian values bound to member, encoder and dimension, and the wrapped data key sits in
    data_keys of the same database, as in SQLite."""
    store = pg_backend.open()
    assert isinstance(store, PostgresStore)
    hid = make.household(store).household_id
    member = make.member(store, hid)
    store.put_voiceprint(Voiceprint(member.member_id, hid, "ge2e-v1", (1.0, -2.0), 3, T0))
    assert pg_backend.raw("SELECT created_at FROM households") == [("2026-05-01T12:00:00.000000Z",)]
    ((blob, dim),) = pg_backend.raw("SELECT embedding, dim FROM voiceprints")
    assert dim == 2
    assert isinstance(blob, bytes)
    packed = b"\x00\x00\x80\x3f\x00\x00\x00\xc0"
    assert packed not in blob
    assert store.sealer.open(hid, blob, codec.voiceprint_aad(member.member_id, "ge2e-v1", 2)) == packed
    rows = pg_backend.raw("SELECT household_id, master_key_id FROM data_keys")
    assert rows == [(hid, key_id_of(TEST_MASTER_KEY))]


def test_sealed_values_read_back_through_sqlite(
    pg_backend: PostgresBackend, make: Make, tmp_path: Path
) -> None:
    """Both stores seal with the same helpers and associated data: a household's rows and wrapped
    key copied from PostgreSQL into a SQLite file open there with the same master key."""
    store = pg_backend.open()
    hid = make.household(store, name="Shared Home").household_id
    member = make.member(store, hid, name="Ada")
    store.put_voiceprint(Voiceprint(member.member_id, hid, "ge2e-v1", (0.5, 0.25), 2, T0))
    SqliteStore(tmp_path / "copy.db").close()  # creates the schema, nothing else
    tables = {
        "data_keys": "household_id, wrapped, master_key_id, created_at",
        "households": "id, name, time_zone, currency, retain_audio, admin_token_hash, created_at",
        "members": "member_id, household_id, display_name, role, is_parent, created_at",
        "voiceprints": "member_id, household_id, encoder, embedding, dim, n_utterances, created_at",
    }
    with closing(sqlite3.connect(tmp_path / "copy.db")) as conn, conn:
        for table, columns in tables.items():
            rows = pg_backend.raw(f"SELECT {columns} FROM {table}")
            marks = ", ".join("?" for _ in columns.split(","))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
    with SqliteStore(tmp_path / "copy.db", master_keys=MasterKeys.of(TEST_MASTER_KEY)) as copy:
        assert copy.get_household(hid).name == "Shared Home"
        assert [m.display_name for m in copy.list_members(hid)] == ["Ada"]
        assert [v.embedding for v in copy.list_voiceprints(hid)] == [(0.5, 0.25)]


# --- locking across replicas ---------------------------------------------------------------


def test_household_lock_excludes_another_pool_until_released(pg_backend: PostgresBackend, make: Make) -> None:
    """While one store holds a household's lock, another store's attempt queues in PostgreSQL and
    enters only after the first releases it; other households are not blocked."""
    first, second = pg_backend.open(), pg_backend.open()
    hid = make.household(first).household_id
    entered = threading.Event()
    release = threading.Event()

    def contender() -> None:
        with second.household_lock(hid):
            entered.set()

    with first.household_lock(hid):
        thread = threading.Thread(target=contender)
        thread.start()
        _wait_until(
            lambda: _waiting_for_advisory_lock(pg_backend, advisory_key("household", hid)) == 1,
            "second store queued for the lock",
        )
        assert not entered.is_set()
        with second.household_lock("hh_other"):
            release.set()  # a different household's lock is free meanwhile
    thread.join(timeout=30)
    assert release.is_set()
    assert entered.is_set()


def test_lock_wait_past_the_timeout_is_unavailable(pg_backend: PostgresBackend, make: Make) -> None:
    """A household lock not granted within the lock timeout raises Unavailable rather than waiting forever."""
    holder = pg_backend.open()
    impatient = PostgresStore(pg_backend.dsn, pool_size=2, lock_timeout_s=0.2)
    try:
        hid = make.household(holder).household_id
        with holder.household_lock(hid), pytest.raises(Unavailable):  # noqa: SIM117 - nesting is the point
            with impatient.household_lock(hid):
                pytest.fail("entered a lock another store holds")
        with impatient.household_lock(hid):  # free again once the holder left
            impatient.ping()
    finally:
        impatient.close()


def test_calls_inside_the_lock_use_the_locked_connection(pg_backend: PostgresBackend, make: Make) -> None:
    """With a pool of one connection, reading and recording inside household_lock still works: the
    block needs no second connection (a pool drained by lock holders would otherwise deadlock)."""
    store = PostgresStore(pg_backend.dsn, pool_size=1, connect_timeout_s=2)
    try:
        hid = make.household(store).household_id
        with store.household_lock(hid):
            assert store.spend_since(hid, None, T0) == 0
            d = make.decision(hid)
            store.record_decision(d, "dg", "{}", spend=make.spend(d))
            with store.household_lock("hh_nested"):
                assert store.get_policy(hid) is None
        assert store.spend_since(hid, None, T0) == d.total.minor_units
    finally:
        store.close()


def test_cap_holds_for_deciders_in_different_pools(pg_backend: PostgresBackend, make: Make) -> None:
    """Ten concurrent 20.00 orders through two stores, each reading spend and recording under the
    household lock as the pipeline does, against a 100.00 cap: exactly five are allowed."""
    stores = [pg_backend.open(), pg_backend.open()]
    hid = make.household(stores[0]).household_id
    cap, amount = 10_000, 2_000

    def order(i: int) -> Outcome:
        store = stores[i % 2]
        with store.household_lock(hid):
            spent = store.spend_since(hid, None, T0)
            outcome = Outcome.ALLOW if spent + amount <= cap else Outcome.DENY
            d = make.decision(hid, amount=amount, outcome=outcome)
            store.record_decision(d, "dg", "{}", spend=make.spend(d) if outcome is Outcome.ALLOW else None)
            return outcome

    results = _threads(*[lambda i=i: order(i) for i in range(10)])
    assert results.count(Outcome.ALLOW) == 5, results
    assert results.count(Outcome.DENY) == 5, results
    assert stores[1].spend_since(hid, None, T0) == cap
    assert verify_chain(stores[1].audit_entries(hid)).ok


def test_concurrent_appends_keep_one_unbroken_chain(pg_backend: PostgresBackend, make: Make) -> None:
    """Twelve decisions recorded at once through three stores, without any outer lock, give seq 1..12
    in one verified chain: the household row lock orders the appends."""
    stores = [pg_backend.open() for _ in range(3)]
    hid = make.household(stores[0]).household_id
    decisions = [make.decision(hid) for _ in range(12)]
    results = _threads(
        *[lambda i=i: stores[i % 3].record_decision(decisions[i], "dg", "{}") for i in range(12)]
    )
    assert results == decisions
    entries = stores[0].audit_entries(hid)
    assert [e.seq for e in entries] == list(range(1, 13))
    assert verify_chain(entries).ok


# --- failures ------------------------------------------------------------------------------


def test_unreachable_server_is_unavailable() -> None:
    """Opening a store on a port where nothing listens raises Unavailable, without the DSN's password."""
    dsn = "host=127.0.0.1 port=1 dbname=x user=u password=hunter2 connect_timeout=1"
    with pytest.raises(Unavailable) as caught:
        PostgresStore(dsn, connect_timeout_s=1)
    assert "hunter2" not in str(caught.value)


def test_killed_connections_become_unavailable_then_recover(pg_backend: PostgresBackend, make: Make) -> None:
    """When the server drops every connection of a store, calls fail only with Unavailable, and the
    store serves again once the pool has reconnected."""
    store = pg_backend.open()
    hid = make.household(store).household_id
    killed = pg_backend.raw(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = %s AND pid <> pg_backend_pid()",
        (pg_backend.schema,),
    )
    assert killed
    assert all(ok for (ok,) in killed)
    outcomes: list[str] = []
    for _ in range(5):
        try:
            store.get_household(hid)
            outcomes.append("ok")
        except Unavailable:
            outcomes.append("unavailable")
    assert set(outcomes) <= {"ok", "unavailable"}
    assert outcomes[-1] == "ok", outcomes


def test_a_dropped_lock_holder_frees_the_lock(pg_backend: PostgresBackend, make: Make) -> None:
    """If the session holding a household lock dies (replica crash), the lock is released for others."""
    first, second = pg_backend.open(), pg_backend.open()
    hid = make.household(first).household_id
    with first.household_lock(hid):
        pg_backend.raw(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid IN (SELECT pid FROM pg_stat_activity WHERE application_name = %s)",
            (pg_backend.schema,),
        )
        with pytest.raises(Unavailable):
            first.get_policy(hid)  # runs on the locked connection, which is now dead
    with second.household_lock(hid):
        assert second.get_policy(hid) is None
    first.ping()  # the dead connection did not go back into the pool
