"""SQLite WAL checkpoints: off the COMMIT path on the store's own thread, inline as a fallback."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from purchase_guard.store.sqlite import SQLITE_AUTOCHECKPOINT_PAGES, SqliteStore

PAGE = 4096
ROWS = 1500  # a page each: more than SQLite's 1,000-page autocheckpoint


def _fill(store: SqliteStore, rows: int = ROWS) -> None:
    """Commits `rows` page-sized rows through the store's own write transactions, 50 a COMMIT."""
    with store._tx() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
    for _ in range(0, rows, 50):
        with store._tx() as conn:
            conn.executemany(
                "INSERT INTO filler (b) VALUES (?)", [(os.urandom(PAGE - 100),) for _ in range(50)]
            )


def _wal_pages(db: Path) -> int:
    wal = Path(str(db) + "-wal")
    return wal.stat().st_size // PAGE if wal.exists() else 0


def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_commits_never_checkpoint_when_the_thread_does(tmp_path: Path) -> None:
    """With the checkpoint thread on (here it never gets to run), the store's connection has
    SQLite's autocheckpoint off, so no COMMIT copies pages: the WAL grows past 1,000 pages. The
    inline baseline on another file stays near 1,000, since a COMMIT checkpoints there."""
    served = tmp_path / "served.db"
    inline = tmp_path / "inline.db"
    with SqliteStore(served, checkpoint_interval_s=3600) as store:
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        _fill(store)
        assert _wal_pages(served) > ROWS
    with SqliteStore(inline, checkpoint_interval_s=None) as store:
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (SQLITE_AUTOCHECKPOINT_PAGES,)
        _fill(store)
        assert _wal_pages(inline) < SQLITE_AUTOCHECKPOINT_PAGES + 100


def test_the_thread_moves_committed_pages_into_the_database(tmp_path: Path) -> None:
    """The checkpoint thread copies what the COMMITs left in the WAL into the database file on
    its own: soon after the writes every page is moved, and the rows are all there."""
    db = tmp_path / "guard.db"
    with SqliteStore(db, checkpoint_interval_s=0.05) as store:
        _fill(store)
        checkpointer = store._checkpointer
        assert checkpointer is not None
        assert _eventually(lambda: checkpointer.pages_moved >= ROWS)
        busy, in_wal, moved = checkpointer.checkpoint()
        assert busy == 0
        assert moved == in_wal  # nothing left to copy
        assert store._conn.execute("SELECT count(*) FROM filler").fetchone() == (ROWS,)
    # The database file itself holds the rows (not only the WAL).
    assert db.stat().st_size >= ROWS * PAGE


def test_a_failing_checkpoint_thread_hands_checkpoints_back_to_the_commits(tmp_path: Path) -> None:
    """If a checkpoint raises (here its connection is gone), the failure is logged and the store's
    connection turns SQLite's own checkpoints back on: the WAL never grows unchecked, and the
    store keeps serving."""
    db = tmp_path / "guard.db"
    with capture_logs() as logs, SqliteStore(db, checkpoint_interval_s=0.05) as store:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        with checkpointer._run_lock:
            checkpointer._conn.close()
        inline = (SQLITE_AUTOCHECKPOINT_PAGES,)
        assert _eventually(lambda: store._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == inline)
        assert _eventually(lambda: not checkpointer._thread.is_alive())
        _fill(store)
        assert _wal_pages(db) < SQLITE_AUTOCHECKPOINT_PAGES + 100
    failed = [e for e in logs if e["event"] == "sqlite_checkpoint_failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    assert failed[0]["fallback"] == "inline checkpoints"


def test_close_stops_the_thread_and_its_connection(tmp_path: Path) -> None:
    """Closing the store stops the checkpoint thread and closes its connection."""
    store = SqliteStore(tmp_path / "guard.db", checkpoint_interval_s=0.05)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    assert checkpointer._thread.is_alive()
    store.close()
    assert not checkpointer._thread.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):
        checkpointer._conn.execute("SELECT 1")
    assert checkpointer.checkpoint() == (0, 0, 0)  # a late call after close does nothing


@pytest.mark.parametrize("interval", [0, -1.0])
def test_a_non_positive_interval_is_refused(tmp_path: Path, interval: float) -> None:
    """A checkpoint interval must be positive (None means SQLite's inline checkpoints)."""
    with pytest.raises(ValueError, match="checkpoint_interval_s"):
        SqliteStore(tmp_path / "guard.db", checkpoint_interval_s=interval)
    assert not (tmp_path / "guard.db").exists()
