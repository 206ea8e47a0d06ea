"""`SqliteStore`: the embedded default backend of `SqlStore`.

One connection, opened with `check_same_thread=False` and guarded by a lock, because the
gRPC server calls in from a thread pool and a sqlite3 connection must not interleave two
transactions. Several stores (processes) may open the same file: WAL mode lets readers run
beside the one writer, `BEGIN IMMEDIATE` takes the write lock before a transaction reads
anything it will base a write on (so no row locks are needed), and `busy_timeout` makes a
second writer wait rather than fail.

`household_lock` holds across those processes too (PURCHASE_GUARD_PROCESSES > 1 on one file): a
POSIX record lock on one byte of a `<store>-locks` file beside the database, the byte chosen by
a hash of the household id, behind a per-process lock for the same byte (POSIX record locks
belong to a process, not a thread, so the threads of one process are kept apart by the
in-process lock). The kernel drops a dead process's record locks, so a killed server never
leaves a household locked; a wait longer than the lock timeout ends in Unavailable. Two
households that share a byte only wait for each other.

Error mapping: sqlite errors from I/O, locking or a closed connection become
`errors.Unavailable`; constraint violations are left to `SqlStore`, which maps them.

At rest: the database file (and its WAL and shared-memory files) are created readable by the
owner only, in a folder only the owner can enter; a file or folder found more open is refused
at start (`check_private`), so a copy of household data is never left readable by others.
`SqliteKeyStore` keeps the wrapped data keys in the same file, on a connection of its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from purchase_guard.errors import Unavailable
from purchase_guard.sealing import KeyRing, MasterKeys, Sealer, WrappedKeyStore, ephemeral_master_keys
from purchase_guard.store.migrate import apply_sqlite
from purchase_guard.store.protocol import Store
from purchase_guard.store.sql import SqlKeyStore, SqlStore

DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_LOCK_TIMEOUT_S = 10.0
# Bytes of the lock file households are spread over: a shared byte only costs a needless wait.
LOCK_SLOTS = 1 << 16


def lock_slot(household_id: str) -> int:
    """The byte of the lock file that stands for this household (the same in every process)."""
    digest = hashlib.blake2b(household_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % LOCK_SLOTS


class _SlotLock:
    """One byte of the lock file: a re-entrant in-process lock, and the record lock taken while
    the first (outermost) holder of this process holds it."""

    __slots__ = ("depth", "local")

    def __init__(self) -> None:
        self.local = threading.RLock()
        self.depth = 0


def _connect(path: str, busy_timeout_ms: int, *, private: bool = True) -> tuple[sqlite3.Connection, str]:
    """An autocommit connection in WAL mode with foreign keys on and migrations applied.

    With `private`, the file is created 0600 (and refused if it, or its folder, is more open),
    and SQLite's WAL and shared-memory files are created under a 0077 umask.
    """
    if private and path != ":memory:":
        prepare_private_path(Path(path))
    old_umask = os.umask(0o077)
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,  # autocommit: every transaction here is explicit
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise Unavailable(f"cannot open the store at {path}: {exc}") from exc
    finally:
        os.umask(old_umask)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        apply_sqlite(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise Unavailable(f"cannot initialise the store at {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn, "" if mode is None else str(mode[0]).lower()


class SqliteKeyStore(SqlKeyStore):
    """Wrapped data keys in a SQLite store file, on a connection (and lock) of its own."""

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, private: bool = True
    ) -> None:
        self._lock = threading.Lock()
        self._conn, _ = _connect(str(path), busy_timeout_ms, private=private)
        super().__init__(self._locked)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise Unavailable(f"key store unavailable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def check_private(path: Path) -> None:
    """Refuse a store file, or the folder holding it, that others may read or enter.

    Raises Unavailable naming the path and its mode: a server must not start (and go on writing
    voiceprints and decisions) into a file a copy of which any local user could take.
    """
    for target, allowed in ((path.parent, 0o700), (path, 0o600)):
        if not target.exists():
            continue
        mode = stat.S_IMODE(target.stat().st_mode)
        if mode & ~allowed:
            raise Unavailable(
                f"{target} has mode {mode:04o}; the store needs {allowed:04o} at most "
                f"(chmod {allowed:o} {target})"
            )


def prepare_private_path(path: Path) -> None:
    """Create the store's file 0600 before SQLite opens it; refuse it or its folder when more open.

    The folder itself is made (0700) by whoever picks the path (the composition root); a missing
    folder is left for SQLite to report as a store that cannot be opened.
    """
    check_private(path)
    if path.parent.is_dir() and not path.exists():
        # os.open with O_CREAT | O_EXCL and the mode, so no moment exists with a wider mode.
        with suppress(FileExistsError):  # another process created it first
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    check_private(path)


class SqliteStore(SqlStore):
    """`SqlStore` on one SQLite file.

    `sealer` seals personal values (sealing.py). Production passes `master_keys` (from
    `sealing.resolve_master_keys`): the store then seals with a `KeyRing` whose wrapped data keys
    live in this file's `data_keys` table (`SqliteKeyStore`, closed with the store). Tests may
    pass any `sealer` instead. With neither, the store uses a per-process random master key with
    the wrapped keys in this file: fine for tests, unreadable after a restart (data is lost
    rather than exposed), so production wiring must always pass one.
    """

    _INTEGRITY_ERRORS = (sqlite3.IntegrityError,)

    def __init__(
        self,
        path: str | Path,
        *,
        sealer: Sealer | None = None,
        master_keys: MasterKeys | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        private: bool = True,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        if sealer is not None and master_keys is not None:
            raise ValueError("pass a sealer or master keys, not both")
        self._path = str(path)
        self._lock = threading.Lock()
        self._locks_guard = threading.Lock()
        self._slots: dict[int, _SlotLock] = {}
        self._lock_timeout_s = lock_timeout_s
        self._closed = False
        self._conn, mode = _connect(self._path, busy_timeout_ms, private=private)
        self._lock_fd: int | None = None
        if self._path != ":memory:":
            old_umask = os.umask(0o077)
            try:
                self._lock_fd = os.open(self._path + "-locks", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                self._conn.close()
                raise Unavailable(f"cannot open the store's lock file beside {self._path}: {exc}") from exc
            finally:
                os.umask(old_umask)
        if mode != "wal" and self._path != ":memory:":
            self._conn.close()
            raise Unavailable(f"cannot switch the store at {self._path} to WAL mode")
        self._owned_keys: SqliteKeyStore | None = None
        if sealer is None:
            self._owned_keys = SqliteKeyStore(self._path, busy_timeout_ms=busy_timeout_ms, private=private)
            sealer = KeyRing(master_keys or ephemeral_master_keys(), self._owned_keys)
        self._sealer = sealer
        self.seal_legacy_pins()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise Unavailable(f"store unavailable: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction: committed on success, rolled back on any error."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise Unavailable(f"store unavailable: {exc}") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth reporting
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    raise Unavailable(f"store unavailable: {exc}") from exc
                raise

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: in WAL mode every query inside sees the same committed state."""
        with self._lock:
            try:
                self._conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise Unavailable(f"store unavailable: {exc}") from exc
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise Unavailable(f"store unavailable: {exc}") from exc
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")  # nothing was written; ends the snapshot

    @staticmethod
    def _is_foreign_key_violation(exc: Exception) -> bool:
        return "FOREIGN KEY" in str(exc)

    @contextmanager
    def household_lock(self, household_id: str) -> Iterator[None]:
        """Serialises deciding for one household across the threads and processes on this file.

        Raises Unavailable when another process holds the household for longer than the lock
        timeout, so a caller fails closed instead of waiting forever.
        """
        slot_no = lock_slot(household_id)
        with self._locks_guard:
            # At most LOCK_SLOTS entries, however many households are seen.
            slot = self._slots.setdefault(slot_no, _SlotLock())
        with slot.local:
            if slot.depth == 0 and self._lock_fd is not None:
                self._record_lock(slot_no)
            slot.depth += 1
            try:
                yield
            finally:
                slot.depth -= 1
                if slot.depth == 0 and self._lock_fd is not None:
                    fcntl.lockf(self._lock_fd, fcntl.LOCK_UN, 1, slot_no, os.SEEK_SET)

    def _record_lock(self, slot_no: int) -> None:
        assert self._lock_fd is not None
        deadline = time.monotonic() + self._lock_timeout_s
        pause = 0.0005
        while True:
            try:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot_no, os.SEEK_SET)
            except (BlockingIOError, PermissionError):
                # Held by another process (EAGAIN or EACCES, depending on the system).
                if time.monotonic() >= deadline:
                    raise Unavailable("household is busy in another process (lock timeout)") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.01)
            except OSError as exc:
                raise Unavailable(f"store lock unavailable: {exc}") from exc
            else:
                return

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                if self._owned_keys is not None:
                    self._owned_keys.close()
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # also drops any record lock this process held
                    self._lock_fd = None

    def __enter__(self) -> SqliteStore:
        return self


def _conforms(store: SqliteStore, keys: SqliteKeyStore) -> tuple[Store, WrappedKeyStore]:
    """Never called: makes mypy prove that SqliteStore implements the Store protocol exactly, and
    SqliteKeyStore the WrappedKeyStore protocol."""
    return store, keys
