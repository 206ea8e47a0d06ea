"""Schema migrations: numbered `.sql` files shipped in `store/migrations/`, each applied once.

A migration file is named `NNNN_description.sql`. Applied versions are recorded in
`schema_migrations`; each file runs in its own transaction together with its bookkeeping
row, so a failing migration leaves nothing behind. Loading is backend-neutral
(`load_migrations`); `apply_sqlite` is the SQLite runner. A PostgreSQL runner can apply
the same files the same way.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from purchase_guard.serial import format_ts

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT NOT NULL PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " applied_at TEXT NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The shipped migrations in version order; raises on a misnamed file or a duplicate version."""
    found: dict[int, Migration] = {}
    folder = resources.files("purchase_guard.store").joinpath("migrations")
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_description.sql")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations with version {version}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def split_statements(sql: str) -> list[str]:
    """Splits a migration file into single statements.

    Needed because `executescript` commits any open transaction before it runs, which would
    break the one-transaction-per-file rule. `sqlite3.complete_statement` decides where a
    statement ends, so semicolons inside strings or trigger bodies do not split it.
    """
    statements: list[str] = []
    buffer = ""
    pieces = sql.split(";")
    for index, piece in enumerate(pieces):
        buffer += piece if index == len(pieces) - 1 else piece + ";"
        if sqlite3.complete_statement(buffer):
            if not _only_comments(buffer.rstrip(";")):
                statements.append(buffer.strip())
            buffer = ""
    if not _only_comments(buffer):
        raise ValueError("migration ends with an incomplete statement")
    return statements


def apply_sqlite(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Applies every migration not yet recorded; returns the versions it applied.

    `conn` must be in autocommit mode (`isolation_level=None`): transactions are explicit here.
    Safe against another process migrating the same file at the same time: the applied check
    runs inside the write transaction.
    """
    pending = load_migrations() if migrations is None else migrations
    conn.execute(SCHEMA_MIGRATIONS_DDL)
    applied: list[int] = []
    for migration in pending:
        statements = split_statements(migration.sql)
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if done is not None:
                conn.execute("ROLLBACK")
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, format_ts(datetime.now(UTC))),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied
