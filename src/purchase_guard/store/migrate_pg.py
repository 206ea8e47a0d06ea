"""The PostgreSQL runner for the shipped migrations: the same `.sql` files as SQLite, applied the same way.

Each migration runs in its own transaction together with its `schema_migrations` row, so a
failing migration leaves nothing behind. Several replicas may start at once against one
database: every migration transaction first takes a transaction-scoped advisory lock, so
exactly one of them applies a given file and the others see it recorded. Tables are created
in the first schema of the connection's `search_path`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import psycopg

from purchase_guard.serial import format_ts
from purchase_guard.store.migrate import (
    SCHEMA_MIGRATIONS_DDL,
    Migration,
    load_migrations,
    split_statements,
)


def advisory_key(namespace: str, name: str) -> int:
    """A stable signed 64-bit advisory-lock key (what `pg_advisory_lock(bigint)` takes)."""
    digest = hashlib.blake2b(f"purchase-guard/{namespace}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


MIGRATION_LOCK_KEY = advisory_key("migrate", "schema")
MIGRATION_LOCK_TIMEOUT = "300s"


def apply_postgres(conn: psycopg.Connection[Any], migrations: list[Migration] | None = None) -> list[int]:
    """Applies every migration not yet recorded; returns the versions it applied.

    `conn` must be in autocommit mode: transactions are explicit here, one per migration.
    """
    if not conn.autocommit:
        raise ValueError("apply_postgres needs an autocommit connection")
    pending = load_migrations() if migrations is None else migrations
    applied: list[int] = []
    for migration in pending:
        # split_statements only lexes SQL text (it needs no SQLite database), and the files are
        # written to be portable, so both runners execute exactly the same statements.
        statements = split_statements(migration.sql)
        with conn.transaction():
            # Another replica may be mid-migration: wait for it longer than the store's usual
            # lock timeout, but not forever (a stuck start should fail and be restarted).
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (MIGRATION_LOCK_TIMEOUT,))
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            # Inside the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL.
            conn.execute(SCHEMA_MIGRATIONS_DDL)
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
            ).fetchone()
            if done is not None:
                continue
            for statement in statements:
                conn.execute(statement.encode())  # bytes: the text is ours, not user input
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, format_ts(datetime.now(UTC))),
            )
        applied.append(migration.version)
    return applied
