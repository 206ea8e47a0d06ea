"""`PostgresStore`: the `SqlStore` backend on PostgreSQL, for several guard replicas sharing one database.

Same schema and migrations as `SqliteStore` (`store/migrations/*.sql`, applied by
`migrate_pg.apply_postgres`) and the same SQL (`store/sql.py`); this module holds only what is
about connections, transactions and locks. A database written by one backend therefore reads
the same through the other (given the same master keys).

Connections come from a `psycopg_pool.ConnectionPool` in autocommit mode; every write is one
explicit transaction at READ COMMITTED. The decision write runs in pipeline mode
(`_batched_tx`): its reads go in one round trip and its writes with the COMMIT in one more;
Evaluate's opening reads go together in one (`_batched_reading`). What SQLite gets from its
single writer, this store gets from row and advisory locks, so that it holds across processes:

- `record_decision`, `put_policy` and `purge_household` lock the household row
  `FOR NO KEY UPDATE` first: one writer at a time appends to (or trims) a household's audit
  chain and numbers its seq, and a racing retry of the same request id waits and then sees
  the first one (idempotency). That lock mode does not conflict with the `FOR KEY SHARE`
  locks that foreign-key checks take, so other inserts for the household are not held up.
  `erase_household` locks the row `FOR UPDATE`, which waits for all of them.
- `update_challenge` is a single conditional UPDATE; PostgreSQL re-checks its WHERE against
  the latest row version when two answers race, which is the compare-and-set.
- `household_lock` takes a session-level `pg_advisory_lock` on a connection it keeps for the
  with-block; every pooled session has `lock_timeout` set, so no lock wait (advisory or row)
  hangs a worker: it ends in Unavailable. Store calls made by the same thread inside the
  block run on that connection, so the block needs one pooled connection, not two (a pool
  drained by lock holders that each wait for a second connection would deadlock). A
  per-process lock in front keeps waiting threads of one process from each holding a
  connection while they wait.

Sealing: personal values are sealed before a write transaction starts and opened after a read
has given its connection back, so no cryptography runs inside a transaction. With
`master_keys` the wrapped data keys live in this database's `data_keys` table
(`sql.SqlKeyStore`); its queries go through the same connection routing, so a data-key
lookup inside `household_lock` also uses the held connection instead of a second one.

Error mapping: connection failures, a closed store, pool exhaustion and lock timeouts become
`errors.Unavailable`; constraint violations become `AlreadyExists` or `NotFound` naming only
the id the caller passed. Messages never include the DSN.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from purchase_guard.errors import Unavailable
from purchase_guard.sealing import KeyRing, MasterKeys, Sealer, WrappedKeyStore, ephemeral_master_keys
from purchase_guard.store.migrate_pg import advisory_key, apply_postgres
from purchase_guard.store.protocol import Store
from purchase_guard.store.sql import SqlKeyStore, SqlStore

Conn = psycopg.Connection[tuple[Any, ...]]

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_LOCK_TIMEOUT_S = 10.0

# Errors that mean "the database cannot be used right now", as opposed to a bug or a constraint.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection lost or refused, lock timeout, deadlock, admin shutdown
    psycopg.InterfaceError,  # connection already closed
    PoolTimeout,
    PoolClosed,
)


class PostgresStore(SqlStore):
    """`SqlStore` on PostgreSQL.

    `dsn` is a libpq connection string or URL; its `search_path` (e.g. `options=-csearch_path=guard`)
    picks the schema. The constructor applies pending migrations and raises `Unavailable` when
    the database cannot be reached within `connect_timeout_s`.

    `sealer` and `master_keys` mean what they mean for `SqliteStore`: production passes
    `master_keys` (every replica the same ones) and the store seals with a `KeyRing` whose
    wrapped data keys live in this database; tests may pass any `sealer`. With neither, a
    per-process random master key is used, which other replicas cannot read: tests only.
    """

    # psycopg's placeholder, byte order for text (the order SQLite uses) whatever the database's
    # collation, and the row locks that order writes to one household across replicas.
    _PARAM = "%s"
    _BYTE_ORDER = ' COLLATE "C"'
    _ROW_LOCK = " FOR NO KEY UPDATE"
    _ROW_LOCK_EXCLUSIVE = " FOR UPDATE"
    _JOIN_IDS = "string_agg({}, ',')"
    _INTEGRITY_ERRORS = (psycopg.IntegrityError,)

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        sealer: Sealer | None = None,
        master_keys: MasterKeys | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if sealer is not None and master_keys is not None:
            raise ValueError("pass a sealer or master keys, not both")
        self._lock_timeout = f"{int(lock_timeout_s * 1000)}ms"
        self._local = threading.local()
        self._locks_guard = threading.Lock()
        self._household_locks: dict[str, threading.RLock] = {}
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            dsn,
            min_size=min(2, pool_size),
            max_size=pool_size,
            kwargs={"autocommit": True},
            configure=self._configure,
            open=False,
            timeout=connect_timeout_s,
            name="purchase-guard",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
            with self._pool.connection() as conn:
                apply_postgres(conn)
        except _UNAVAILABLE as exc:
            self._pool.close()
            raise Unavailable(f"cannot reach the PostgreSQL store: {_brief(exc)}") from exc
        except BaseException:
            self._pool.close()
            raise
        if sealer is None:
            keys = SqlKeyStore(self._conn, param=self._PARAM, byte_order=self._BYTE_ORDER)
            sealer = KeyRing(master_keys or ephemeral_master_keys(), keys)
        self._sealer = sealer
        self.seal_legacy_pins()

    # --- connections and transactions ------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[Conn]:
        """The connection this thread holds inside `household_lock`, else one from the pool."""
        held: Conn | None = getattr(self._local, "conn", None)
        if held is not None:
            try:
                yield held
            except _UNAVAILABLE as exc:
                raise Unavailable(f"store unavailable: {_brief(exc)}") from exc
            return
        try:
            with self._pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            self._recheck_pool()
            raise Unavailable(f"store unavailable: {_brief(exc)}") from exc

    def _reading(self) -> Any:
        return self._conn()

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        """One transaction at READ COMMITTED: committed on success, rolled back on any error."""
        with self._conn() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _batched_tx(self) -> Iterator[Conn]:
        """`_tx()` in pipeline mode: statements are queued and sent when a result is read or at
        the end, one network round trip for each such batch. The server runs them in the order
        they were queued; an error in any of them makes it skip the rest, is raised at the read
        (or the end) that sends it, and the transaction is rolled back.

        BEGIN and COMMIT are queued as statements: psycopg's `transaction()` in a pipeline syncs
        after BEGIN and again around COMMIT, which would cost three round trips more."""
        with self._conn() as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    yield conn
                    conn.execute("COMMIT")
            except BaseException:
                # Whatever failed (a check here, a statement, the COMMIT, the connection), the
                # transaction is not left open: rolled back if the session is still usable (a
                # broken one is discarded by the pool, which ends its transaction).
                with suppress(psycopg.Error):
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        conn.execute("ROLLBACK")
                raise

    @classmethod
    def _rowcount(cls, cursor: Any) -> int:
        conn = cursor.connection
        if conn.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
            # A queued write's row count is known once its batch has been sent and answered.
            with conn.pipeline() as pipeline:
                pipeline.sync()
        return int(cursor.rowcount)

    @contextmanager
    def _batched_reading(self) -> Iterator[Conn]:
        """Reads in pipeline mode: independent reads queued, then read back in one round trip."""
        with self._conn() as conn, conn.pipeline():
            yield conn

    @contextmanager
    def _snapshot(self) -> Iterator[Conn]:
        """A read-only REPEATABLE READ transaction: every query inside sees the same committed state."""
        with self._conn() as conn, conn.transaction():
            # Must be the transaction's first statement; it fixes the snapshot for the rest.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    @staticmethod
    def _is_foreign_key_violation(exc: Exception) -> bool:
        return isinstance(exc, psycopg.errors.ForeignKeyViolation)

    def _configure(self, conn: Conn) -> None:
        # Session-wide, so that taking a household lock is one round trip: no wait for any lock
        # (advisory or row) outlasts it; the waiter gets Unavailable instead of hanging a worker.
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (self._lock_timeout,))

    def _recheck_pool(self) -> None:
        # After the server restarted every idle pooled connection is dead; without this each of
        # them would fail one request before the pool replaced it.
        with suppress(Exception):  # the original error is the one worth reporting
            self._pool.check()

    # --- the household lock ---------------------------------------------------------

    @contextmanager
    def household_lock(self, household_id: str) -> Iterator[None]:
        """Serialises deciding for one household across every process on this database.

        Raises Unavailable when the lock is not granted within the lock timeout (a stuck holder
        in another replica), so a caller fails closed instead of waiting forever.
        """
        key = advisory_key("household", household_id)
        with self._locks_guard:
            # Only grows with the households this process has decided for, as in SqliteStore.
            local = self._household_locks.setdefault(household_id, threading.RLock())
        with local:
            held: Conn | None = getattr(self._local, "conn", None)
            if held is not None:
                # Nested (another household, or the same one again) on this thread: advisory
                # locks are re-entrant per session, so stack another hold on the same connection.
                with self._conn() as conn:
                    self._advisory_lock(conn, key)
                try:
                    yield
                finally:
                    if not self._advisory_unlock(held, key):
                        held.close()  # ending the session is what releases its locks for sure
                return
            try:
                conn = self._pool.getconn()
            except _UNAVAILABLE as exc:
                raise Unavailable(f"store unavailable: {_brief(exc)}") from exc
            try:
                try:
                    self._advisory_lock(conn, key)
                except _UNAVAILABLE as exc:
                    raise Unavailable(
                        f"household is busy or the store is unavailable: {_brief(exc)}"
                    ) from exc
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None
                    if not self._advisory_unlock(conn, key):
                        # A connection that may still hold the lock must never go back to the pool.
                        conn.close()
            finally:
                self._pool.putconn(conn)

    @staticmethod
    def _advisory_lock(conn: Conn, key: int) -> None:
        # Bounded by the session's lock_timeout (set in _configure), which covers advisory locks.
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))

    @staticmethod
    def _advisory_unlock(conn: Conn, key: int) -> bool:
        try:
            row = conn.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone()
        except psycopg.Error:
            return False
        return row is not None and bool(row[0])

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        # The key store (if this store made it) runs on this pool: closing the pool closes both.
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self


def _brief(exc: BaseException) -> str:
    """The first line of a driver error: libpq adds hints and context lines that say nothing new."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _conforms(store: PostgresStore, keys: SqlKeyStore) -> tuple[Store, WrappedKeyStore]:
    """Never called: makes mypy prove that PostgresStore implements the Store protocol exactly, and
    SqlKeyStore the WrappedKeyStore protocol."""
    return store, keys
