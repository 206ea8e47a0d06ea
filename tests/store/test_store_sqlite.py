"""SQLite specifics: connection settings, migrations, storage formats and error mapping."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from purchase_guard.domain import Household, Member, Role, Voiceprint
from purchase_guard.errors import Unavailable
from purchase_guard.sealing import TEST_MASTER_KEY, KeyRing, MasterKeys, key_id_of
from purchase_guard.store import codec
from purchase_guard.store.migrate import Migration, apply_sqlite, load_migrations, split_statements
from purchase_guard.store.sqlite import SqliteKeyStore, SqliteStore

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "guard.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    with SqliteStore(db) as opened:
        yield opened


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def test_connection_uses_wal_foreign_keys_and_busy_timeout(store: SqliteStore, db: Path) -> None:
    """The store runs in WAL mode with foreign keys enforced and a busy timeout set."""
    assert _query(db, "PRAGMA journal_mode") == [("wal",)]
    conn = store._conn
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (5000,)


def test_migrations_apply_once(db: Path) -> None:
    """Opening the same file twice applies every shipped migration once, in order, and changes
    nothing the second time."""
    SqliteStore(db).close()
    first = _query(db, "SELECT version, name FROM schema_migrations")
    schema = _query(db, "SELECT sql FROM sqlite_master ORDER BY name")
    SqliteStore(db).close()
    assert first[:5] == [(1, "init"), (2, "privacy"), (3, "trust"), (4, "answers"), (5, "events")]
    assert first == [(m.version, m.name) for m in load_migrations()]
    assert _query(db, "SELECT version, name FROM schema_migrations") == first
    assert _query(db, "SELECT sql FROM sqlite_master ORDER BY name") == schema
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert apply_sqlite(conn) == []


def test_a_failing_migration_leaves_nothing(db: Path) -> None:
    """A migration that fails half-way is rolled back entirely and not recorded as applied."""
    broken = Migration(1, "broken", "CREATE TABLE t1 (a TEXT);\nCREATE TABLE t1 (b TEXT);\n")
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        with pytest.raises(sqlite3.OperationalError):
            apply_sqlite(conn, [broken])
        assert not conn.in_transaction
    names = {row[0] for row in _query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "t1" not in names
    assert _query(db, "SELECT COUNT(*) FROM schema_migrations") == [(0,)]


def test_shipped_migrations_are_found_as_package_data() -> None:
    """The numbered .sql files load from the installed package, in version order starting at 1."""
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert "CREATE TABLE households" in migrations[0].sql


def test_statement_splitting_respects_comments_strings_and_triggers() -> None:
    """Semicolons inside comments, strings and trigger bodies do not end a statement."""
    sql = (
        "-- header; with a semicolon\n"
        "CREATE TABLE a (x TEXT DEFAULT 'p;q');\n"
        "CREATE TRIGGER tr AFTER INSERT ON a BEGIN UPDATE a SET x = 'y'; END;\n"
        "-- trailing comment\n"
    )
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE b (x TEXT")


def test_household_tables_are_indexed_by_household(db: Path) -> None:
    """Every table holding household data has an index or key whose first column is household_id."""
    SqliteStore(db).close()
    tables = [
        r[0]
        for r in _query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")
        if r[0] not in {"households", "schema_migrations"}
    ]
    for table in tables:
        first_columns = set()
        for _, index_name, *_ in _query(db, f"PRAGMA index_list('{table}')"):
            info = _query(db, f"PRAGMA index_info('{index_name}')")
            first_columns.add(next(str(r[2]) for r in info if r[0] == 0))
        assert "household_id" in first_columns, table


def test_embedding_is_sealed_float32_little_endian(db: Path) -> None:
    """The embedding column holds the sealed bytes of dim float32 values, little-endian, bound to the
    member, encoder and dimension; the wrapped data key sits in data_keys of the same file."""
    ring = KeyRing(MasterKeys.of(TEST_MASTER_KEY), SqliteKeyStore(db))
    with SqliteStore(db, sealer=ring) as store:
        store.create_household(Household("hh_1", "H", "UTC", "EUR", False, T0), "tok")
        store.add_member(Member("mem_1", "hh_1", "Ada", Role.ADULT, True, T0))
        store.put_voiceprint(Voiceprint("mem_1", "hh_1", "ge2e-v1", (1.5, -2.0, 0.25), 3, T0))
    ((blob, dim),) = _query(db, "SELECT embedding, dim FROM voiceprints")
    assert dim == 3
    assert isinstance(blob, bytes)
    packed = struct.pack("<3f", 1.5, -2.0, 0.25)
    assert packed not in blob
    assert ring.open("hh_1", blob, codec.voiceprint_aad("mem_1", "ge2e-v1", 3)) == packed
    ((household, master_key_id),) = _query(db, "SELECT household_id, master_key_id FROM data_keys")
    assert (household, master_key_id) == ("hh_1", key_id_of(TEST_MASTER_KEY))


def test_timestamps_are_fixed_width_utc_text(store: SqliteStore, db: Path) -> None:
    """Timestamps are stored as fixed-width ISO-8601 UTC text with microseconds."""
    store.create_household(Household("hh_1", "H", "UTC", "EUR", False, T0), "tok")
    assert _query(db, "SELECT created_at FROM households") == [("2026-05-01T12:00:00.000000Z",)]


def test_opening_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    """A path that cannot be opened raises Unavailable, not a raw sqlite error."""
    with pytest.raises(Unavailable):
        SqliteStore(tmp_path / "missing" / "guard.db")


def test_opening_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    """A corrupt or foreign file raises Unavailable."""
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not a database" * 100)
    with pytest.raises(Unavailable):
        SqliteStore(bogus)


def test_io_errors_after_opening_are_unavailable(store: SqliteStore) -> None:
    """A sqlite error during a call surfaces as Unavailable (here: the connection was closed underneath)."""
    store._conn.close()
    with pytest.raises(Unavailable):
        store.get_household("hh_1")
    with pytest.raises(Unavailable):
        store.ping()


def test_locked_database_is_unavailable_after_the_busy_timeout(db: Path) -> None:
    """A writer blocked past busy_timeout by another connection's write lock gets Unavailable."""
    with (
        SqliteStore(db, busy_timeout_ms=50) as store,
        closing(sqlite3.connect(db, isolation_level=None)) as other,
    ):
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(Unavailable):
                store.create_household(Household("hh_1", "H", "UTC", "EUR", False, T0), "tok")
        finally:
            other.execute("ROLLBACK")
        store.create_household(Household("hh_1", "H", "UTC", "EUR", False, T0), "tok")
        assert store.get_household("hh_1").name == "H"


_HOLDER = """
import sys
from purchase_guard.store.sqlite import SqliteStore
store = SqliteStore(sys.argv[1], private=False)
with store.household_lock("hh_busy"):
    print("held", flush=True)
    sys.stdin.readline()
store.close()
print("released", flush=True)
"""


def test_household_lock_holds_across_processes(db: Path) -> None:
    """While another process holds a household's lock on the same file, this process waits for it
    and, past the lock timeout, gets Unavailable (fail closed, never a second holder); another
    household is not held up; once the other process lets go, the lock is taken at once."""
    import os
    import subprocess
    import sys
    import time

    import purchase_guard

    env = dict(os.environ, PYTHONPATH=str(Path(purchase_guard.__file__).resolve().parents[1]))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        mine = SqliteStore(db, private=False, lock_timeout_s=0.3)
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="another process"), mine.household_lock("hh_busy"):
                pass
            assert time.monotonic() - started >= 0.3
            with mine.household_lock("hh_other"):
                pass
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "released"
            with mine.household_lock("hh_busy"):
                pass
        finally:
            mine.close()
    finally:
        holder.kill()
        holder.wait(timeout=10)
