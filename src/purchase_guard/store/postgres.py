"""`PostgresStore`: the Store protocol on PostgreSQL, for several guard replicas sharing one database.

Same schema and migrations as `SqliteStore` (`store/migrations/*.sql`, applied by
`migrate_pg.apply_postgres`), same stored forms (fixed-width ISO UTC text timestamps, JSON
bodies from `store/codec.py`, sealed values with the same codec helpers and associated data)
and the same semantics; the docstrings of `SqliteStore`, `store.protocol.Store` and
`store.protocol.PrivacyStore` apply unchanged. A database written by one backend therefore
reads the same through the other (given the same master keys).

Connections come from a `psycopg_pool.ConnectionPool` in autocommit mode; every write is one
explicit transaction at READ COMMITTED. What SQLite gets from its single writer, this store
gets from row and advisory locks, so that it holds across processes:

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
(`PostgresKeyStore`); its queries go through the same connection routing, so a data-key
lookup inside `household_lock` also uses the held connection instead of a second one.

Error mapping: connection failures, a closed store, pool exhaustion and lock timeouts become
`errors.Unavailable`; constraint violations become `AlreadyExists` or `NotFound` naming only
the id the caller passed. Messages never include the DSN.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from purchase_guard.audit.chain import entry_hash
from purchase_guard.domain import (
    Challenge,
    ChallengeStatus,
    Decision,
    Household,
    Member,
    Notification,
    PinState,
    Policy,
    Voiceprint,
)
from purchase_guard.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from purchase_guard.sealing import KeyRing, MasterKeys, Sealer, WrappedKeyStore
from purchase_guard.serial import format_ts, parse_ts
from purchase_guard.store import codec
from purchase_guard.store.migrate_pg import advisory_key, apply_postgres
from purchase_guard.store.protocol import (
    HouseholdRecords,
    PolicyRevision,
    PrivacyStore,
    PurgeResult,
    SpendEntry,
    Store,
    Tombstone,
    VoiceprintInfo,
)
from purchase_guard.store.rows import (
    AUDIT_COLUMNS,
    HOUSEHOLD_COLUMNS,
    MEMBER_COLUMNS,
    NOTIFICATION_COLUMNS,
    PIN_COLUMNS,
    Row,
    audit_entry_from_row,
    pin_from_row,
    tombstone_from_row,
)
from purchase_guard.store.shared_sql import SharedQueries
from purchase_guard.store.sqlite import pack_embedding, unpack_embedding

Conn = psycopg.Connection[tuple[Any, ...]]
ConnectionSource = Callable[[], AbstractContextManager[Conn]]

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_LOCK_TIMEOUT_S = 10.0

# Errors that mean "the database cannot be used right now", as opposed to a bug or a constraint.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection lost or refused, lock timeout, deadlock, admin shutdown
    psycopg.InterfaceError,  # connection already closed
    PoolTimeout,
    PoolClosed,
)


class PostgresKeyStore:
    """Wrapped data keys (table `data_keys`) in the store's database; a `WrappedKeyStore`.

    `connection` yields a connection in autocommit mode (the store passes its own routing, so
    the pool and the connection held by `household_lock` are shared with the data queries).
    """

    def __init__(self, connection: ConnectionSource) -> None:
        self._connection = connection

    def get_wrapped_key(self, household_id: str) -> bytes | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT wrapped FROM data_keys WHERE household_id = %s", (household_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def add_wrapped_key(self, household_id: str, wrapped: bytes, master_key_id: str) -> bytes:
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO data_keys (household_id, wrapped, master_key_id, created_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (household_id) DO NOTHING",
                (household_id, wrapped, master_key_id, format_ts(datetime.now(UTC))),
            )
            # Whoever inserted first wins; everyone then seals with that one key.
            row = conn.execute(
                "SELECT wrapped FROM data_keys WHERE household_id = %s", (household_id,)
            ).fetchone()
        if row is None:  # destroyed between our insert and read: a concurrent erasure won
            raise NotFound(f"household {household_id!r} not found")
        return bytes(row[0])

    def replace_wrapped_key(self, household_id: str, old: bytes, new: bytes, master_key_id: str) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                "UPDATE data_keys SET wrapped = %s, master_key_id = %s"
                " WHERE household_id = %s AND wrapped = %s",
                (new, master_key_id, household_id, old),
            )
            return cursor.rowcount == 1

    def list_wrapped_keys(self) -> list[tuple[str, bytes]]:
        with self._connection() as conn:
            rows = conn.execute(
                'SELECT household_id, wrapped FROM data_keys ORDER BY household_id COLLATE "C"'
            ).fetchall()
        return [(str(r[0]), bytes(r[1])) for r in rows]

    def delete_wrapped_key(self, household_id: str) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM data_keys WHERE household_id = %s", (household_id,))


_EPHEMERAL_LOCK = threading.Lock()
_EPHEMERAL_MASTER: list[MasterKeys] = []


def _ephemeral_master() -> MasterKeys:
    # As in SqliteStore: one random master key per process for stores opened without keys
    # (tests, benchmarks). Other processes and later runs cannot unwrap what it wrapped, so data
    # is lost rather than exposed; production always passes master_keys.
    with _EPHEMERAL_LOCK:
        if not _EPHEMERAL_MASTER:
            _EPHEMERAL_MASTER.append(MasterKeys.of(secrets.token_bytes(32)))
        return _EPHEMERAL_MASTER[0]


class PostgresStore(SharedQueries):
    """Store on PostgreSQL. See `store.protocol.PrivacyStore` for the contract of each method.

    `dsn` is a libpq connection string or URL; its `search_path` (e.g. `options=-csearch_path=guard`)
    picks the schema. The constructor applies pending migrations and raises `Unavailable` when
    the database cannot be reached within `connect_timeout_s`.

    `sealer` and `master_keys` mean what they mean for `SqliteStore`: production passes
    `master_keys` (every replica the same ones) and the store seals with a `KeyRing` whose
    wrapped data keys live in this database; tests may pass any `sealer`. With neither, a
    per-process random master key is used, which other replicas cannot read: tests only.
    """

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
            sealer = KeyRing(master_keys or _ephemeral_master(), PostgresKeyStore(self._conn))
        self._sealer = sealer

    # --- plumbing -------------------------------------------------------------------

    # For the queries in shared_sql: psycopg's placeholder, and byte order for text (the
    # order SQLite uses), whatever the database's collation is.
    _PARAM = "%s"
    _BYTE_ORDER = ' COLLATE "C"'

    def _reading(self) -> AbstractContextManager[Conn]:
        return self._conn()

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

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        """One transaction: committed on success, rolled back on any error."""
        with self._conn() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _snapshot(self) -> Iterator[Conn]:
        """A read-only REPEATABLE READ transaction: every query inside sees the same committed state."""
        with self._conn() as conn, conn.transaction():
            # Must be the transaction's first statement; it fixes the snapshot for the rest.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def _configure(self, conn: Conn) -> None:
        # Session-wide, so that taking a household lock is one round trip: no wait for any lock
        # (advisory or row) outlasts it; the waiter gets Unavailable instead of hanging a worker.
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (self._lock_timeout,))

    def _recheck_pool(self) -> None:
        # After the server restarted every idle pooled connection is dead; without this each of
        # them would fail one request before the pool replaced it.
        with suppress(Exception):  # the original error is the one worth reporting
            self._pool.check()

    @staticmethod
    def _require_household(conn: Conn, household_id: str, *, lock: bool = False) -> None:
        query = (
            "SELECT 1 FROM households WHERE id = %s FOR NO KEY UPDATE"
            if lock
            else "SELECT 1 FROM households WHERE id = %s"
        )
        if conn.execute(query, (household_id,)).fetchone() is None:
            raise NotFound(f"household {household_id!r} not found")

    # --- households and credentials -------------------------------------------------

    def create_household(self, household: Household, admin_token_hash: str) -> None:
        hid = household.household_id
        if self.get_tombstone(hid) is not None:
            # An erased id is never reused: its kept audit entries would join the new chain.
            raise AlreadyExists(f"household {hid!r} or its admin token exists already")
        name = self._seal(hid, household.name, codec.household_name_aad(hid))
        try:
            with self._tx() as conn:
                if conn.execute(
                    "SELECT 1 FROM household_tombstones WHERE household_id = %s", (hid,)
                ).fetchone():
                    raise AlreadyExists(f"household {hid!r} or its admin token exists already")
                conn.execute(
                    "INSERT INTO households"
                    " (id, name, time_zone, currency, retain_audio, admin_token_hash, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        hid,
                        name,
                        household.time_zone,
                        household.currency,
                        household.retain_audio,
                        admin_token_hash,
                        format_ts(household.created_at),
                    ),
                )
        except psycopg.IntegrityError as exc:
            # Either the id or the token hash is taken; say which without echoing the hash.
            raise AlreadyExists(f"household {hid!r} or its admin token exists already") from exc

    # --- members and voiceprints ----------------------------------------------------

    def add_member(self, member: Member) -> None:
        self._check_household(member.household_id)
        name = self._seal(member.household_id, member.display_name, codec.member_name_aad(member.member_id))
        try:
            with self._tx() as conn:
                self._require_household(conn, member.household_id)
                conn.execute(
                    f"INSERT INTO members ({MEMBER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",  # noqa: S608
                    (
                        member.member_id,
                        member.household_id,
                        name,
                        member.role.value,
                        member.is_parent,
                        format_ts(member.created_at),
                    ),
                )
        except psycopg.IntegrityError as exc:
            raise AlreadyExists(f"member {member.member_id!r} exists already") from exc

    def remove_member(self, household_id: str, member_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "DELETE FROM voiceprints WHERE household_id = %s AND member_id = %s",
                (household_id, member_id),
            )
            gone = conn.execute(
                "DELETE FROM members WHERE household_id = %s AND member_id = %s", (household_id, member_id)
            )
            if gone.rowcount == 0:
                raise NotFound(f"member {member_id!r} not found")

    @staticmethod
    def _require_member(conn: Conn, household_id: str, member_id: str) -> None:
        found = conn.execute(
            "SELECT 1 FROM members WHERE household_id = %s AND member_id = %s", (household_id, member_id)
        ).fetchone()
        if found is None:
            raise NotFound(f"member {member_id!r} not found")

    def put_voiceprint(self, voiceprint: Voiceprint) -> None:
        with self._conn() as conn:
            self._require_member(conn, voiceprint.household_id, voiceprint.member_id)
        dim = len(voiceprint.embedding)
        blob = self._sealer.seal(
            voiceprint.household_id,
            pack_embedding(voiceprint.embedding),
            codec.voiceprint_aad(voiceprint.member_id, voiceprint.encoder, dim),
        )
        try:
            with self._tx() as conn:
                self._require_member(conn, voiceprint.household_id, voiceprint.member_id)
                conn.execute(
                    "INSERT INTO voiceprints"
                    " (member_id, household_id, encoder, embedding, dim, n_utterances, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (member_id) DO UPDATE SET encoder = excluded.encoder,"
                    " embedding = excluded.embedding, dim = excluded.dim,"
                    " n_utterances = excluded.n_utterances, created_at = excluded.created_at",
                    (
                        voiceprint.member_id,
                        voiceprint.household_id,
                        voiceprint.encoder,
                        blob,
                        dim,
                        voiceprint.n_utterances,
                        format_ts(voiceprint.created_at),
                    ),
                )
        except psycopg.errors.ForeignKeyViolation as exc:
            # The member was removed between the check and the insert.
            raise NotFound(f"member {voiceprint.member_id!r} not found") from exc

    def list_voiceprints(self, household_id: str) -> list[Voiceprint]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT member_id, household_id, encoder, embedding, dim, n_utterances, created_at"
                ' FROM voiceprints WHERE household_id = %s ORDER BY member_id COLLATE "C"',
                (household_id,),
            ).fetchall()
        return [
            Voiceprint(
                member_id=r[0],
                household_id=r[1],
                encoder=r[2],
                embedding=unpack_embedding(
                    self._sealer.open(r[1], bytes(r[3]), codec.voiceprint_aad(r[0], r[2], int(r[4]))),
                    int(r[4]),
                ),
                n_utterances=int(r[5]),
                created_at=parse_ts(r[6]),
            )
            for r in rows
        ]

    # --- policy and PIN -------------------------------------------------------------

    def put_policy(self, household_id: str, policy: Policy, at: datetime) -> Policy:
        with self._tx() as conn:
            # The row lock makes two concurrent puts take revisions n+1 and n+2 instead of colliding.
            self._require_household(conn, household_id, lock=True)
            row = conn.execute(
                "SELECT MAX(revision) FROM policies WHERE household_id = %s", (household_id,)
            ).fetchone()
            revision = (0 if row is None or row[0] is None else int(row[0])) + 1
            stored = Policy(
                rules=policy.rules,
                household_daily_cap_minor=policy.household_daily_cap_minor,
                household_monthly_cap_minor=policy.household_monthly_cap_minor,
                blocked_categories=policy.blocked_categories,
                quiet_hours=policy.quiet_hours,
                low_value_exemption=policy.low_value_exemption,
                revision=revision,
            )
            conn.execute(
                "INSERT INTO policies (household_id, revision, body, created_at) VALUES (%s, %s, %s, %s)",
                (household_id, revision, codec.policy_to_json(stored), format_ts(at)),
            )
        return stored

    def put_pin(self, state: PinState) -> None:
        with self._tx() as conn:
            self._require_household(conn, state.household_id)
            conn.execute(
                f"INSERT INTO pins ({PIN_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"  # noqa: S608
                " ON CONFLICT (household_id) DO UPDATE SET pin_hash = excluded.pin_hash,"
                " lockouts = excluded.lockouts, throttled_until = excluded.throttled_until,"
                " set_at = excluded.set_at",
                (
                    state.household_id,
                    state.pin_hash,
                    state.lockouts,
                    None if state.throttled_until is None else format_ts(state.throttled_until),
                    format_ts(state.set_at),
                ),
            )

    # --- decisions, spend and audit -------------------------------------------------

    @staticmethod
    def _stored_decision(conn: Conn, household_id: str, kind: str, request_id: str) -> Row | None:
        row: Row | None = conn.execute(
            "SELECT body, request_digest, decision_id FROM decisions"
            " WHERE household_id = %s AND kind = %s AND request_id = %s",
            (household_id, kind, request_id),
        ).fetchone()
        return row

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

    def record_decision(
        self,
        decision: Decision,
        request_digest: str,
        audit_body: str,
        spend: SpendEntry | None = None,
        challenge: Challenge | None = None,
    ) -> Decision:
        hid = decision.household_id
        if spend is not None and (spend.household_id != hid or spend.decision_id != decision.decision_id):
            raise InvalidArgument("spend entry must belong to the decision it is recorded with")
        if challenge is not None and challenge.household_id != hid:
            raise InvalidArgument("challenge must belong to the decision's household")
        format_ts(decision.decided_at)  # rejects a naive time before anything is sealed
        self._check_household(hid)
        body = self._seal(hid, codec.decision_to_json(decision), codec.decision_aad(decision.decision_id))
        sealed_audit = self._seal(hid, audit_body, codec.audit_aad(decision.decision_id))
        challenge_body = (
            None
            if challenge is None
            else self._seal(
                hid, codec.challenge_to_json(challenge), codec.challenge_aad(challenge.challenge_id)
            )
        )
        existing: Row | None = None
        try:
            with self._tx() as conn:
                # The household row lock orders all appends to this household's chain; a racing
                # retry waits here and then finds the first decision below (READ COMMITTED reads
                # what committed before each statement).
                self._require_household(conn, hid, lock=True)
                existing = self._stored_decision(conn, hid, decision.kind, decision.request_id)
                if existing is not None:
                    if existing[1] != request_digest:
                        raise AlreadyExists(
                            f"request id {decision.request_id!r} was used for another request"
                        )
                else:
                    self._insert_decision(
                        conn, decision, request_digest, body, sealed_audit, spend, challenge, challenge_body
                    )
        except psycopg.IntegrityError as exc:
            raise AlreadyExists(f"decision {decision.decision_id!r} exists already") from exc
        if existing is not None:
            return self._decision(hid, existing[2], existing[0])
        return decision

    def _insert_decision(
        self,
        conn: Conn,
        decision: Decision,
        request_digest: str,
        body: str,
        audit_body: str,
        spend: SpendEntry | None,
        challenge: Challenge | None,
        challenge_body: str | None,
    ) -> None:
        hid = decision.household_id
        at_iso = format_ts(decision.decided_at)
        last_seq, prev_hash = self._chain_head(conn, hid)
        seq = last_seq + 1
        conn.execute(
            "INSERT INTO decisions (decision_id, household_id, kind, request_id, request_digest,"
            " outcome, seq, body, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                decision.decision_id,
                hid,
                decision.kind,
                decision.request_id,
                request_digest,
                decision.outcome.value,
                seq,
                body,
                at_iso,
            ),
        )
        # The hash covers the sealed text as stored, so the chain verifies without any key.
        conn.execute(
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
            (
                hid,
                seq,
                decision.decision_id,
                at_iso,
                audit_body,
                prev_hash,
                entry_hash(hid, seq, decision.decision_id, at_iso, audit_body, prev_hash),
            ),
        )
        if spend is not None:
            conn.execute(
                "INSERT INTO spend"
                " (decision_id, household_id, member_id, amount_minor, seq, at, exempt)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    spend.decision_id,
                    hid,
                    spend.member_id,
                    spend.amount_minor,
                    seq,
                    format_ts(spend.at),
                    spend.exempt,
                ),
            )
        if challenge is not None and challenge_body is not None:
            self._upsert_challenge(conn, challenge, challenge_body, seq)

    # --- challenges -----------------------------------------------------------------

    @staticmethod
    def _challenge_exists(conn: Conn, household_id: str, challenge_id: str) -> bool:
        found = conn.execute(
            "SELECT 1 FROM challenges WHERE household_id = %s AND challenge_id = %s",
            (household_id, challenge_id),
        ).fetchone()
        return found is not None

    def update_challenge(self, challenge: Challenge, expected_status: ChallengeStatus) -> bool:
        """Compare-and-set; see the rule in `Store.update_challenge`.

        A challenge that becomes PASSED here is ordered after every decision recorded so far,
        so exempt spend recorded later counts towards the next threshold.
        """
        hid = challenge.household_id
        with self._conn() as conn:
            # Before sealing: an unknown challenge (or household) must not get a data key made.
            if not self._challenge_exists(conn, hid, challenge.challenge_id):
                raise NotFound(f"challenge {challenge.challenge_id!r} not found")
        status_changes = challenge.status is not expected_status
        passes = challenge.status is ChallengeStatus.PASSED
        body = self._seal(
            hid, codec.challenge_to_json(challenge), codec.challenge_aad(challenge.challenge_id)
        )
        with self._tx() as conn:
            if passes:
                # Taken only to read a final MAX(seq): no decision of the household is mid-append.
                conn.execute("SELECT 1 FROM households WHERE id = %s FOR NO KEY UPDATE", (hid,))
            # The chain head falls back to the retention anchor when every entry was purged.
            cursor = conn.execute(
                "UPDATE challenges SET status = %s, attempts_left = %s, decision_id = %s, member_id = %s,"
                " expires_at = %s, body = %s,"
                " passed_seq = CASE WHEN %s THEN COALESCE(passed_seq,"
                "  (SELECT MAX(seq) FROM audit WHERE household_id = %s),"
                "  (SELECT seq FROM audit_anchors WHERE household_id = %s), 0) ELSE passed_seq END"
                " WHERE household_id = %s AND challenge_id = %s AND status = %s"
                " AND (attempts_left = %s + 1 OR (%s AND attempts_left = %s))",
                (
                    challenge.status.value,
                    challenge.attempts_left,
                    challenge.decision_id,
                    challenge.member_id,
                    format_ts(challenge.expires_at),
                    body,
                    passes,
                    hid,
                    hid,
                    hid,
                    challenge.challenge_id,
                    expected_status.value,
                    challenge.attempts_left,
                    status_changes,
                    challenge.attempts_left,
                ),
            )
            if cursor.rowcount == 1:
                return True
            if not self._challenge_exists(conn, hid, challenge.challenge_id):
                raise NotFound(f"challenge {challenge.challenge_id!r} not found")
            return False

    # --- notifications --------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        self._check_household(notification.household_id)
        message = self._seal(
            notification.household_id,
            notification.message,
            codec.notification_aad(notification.notification_id),
        )
        try:
            with self._tx() as conn:
                self._require_household(conn, notification.household_id)
                conn.execute(
                    f"INSERT INTO notifications ({NOTIFICATION_COLUMNS})"  # noqa: S608
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        notification.notification_id,
                        notification.household_id,
                        notification.kind,
                        message,
                        notification.challenge_id,
                        format_ts(notification.created_at),
                    ),
                )
        except psycopg.IntegrityError as exc:
            raise AlreadyExists(f"notification {notification.notification_id!r} exists already") from exc

    # --- export -----------------------------------------------------------------------

    def household_records(self, household_id: str) -> HouseholdRecords:
        hid = (household_id,)
        with self._snapshot() as conn:
            household = conn.execute(
                f"SELECT {HOUSEHOLD_COLUMNS} FROM households WHERE id = %s",  # noqa: S608
                hid,
            ).fetchone()
            if household is None:
                raise NotFound(f"household {household_id!r} not found")
            members = conn.execute(
                f"SELECT {MEMBER_COLUMNS} FROM members WHERE household_id = %s"  # noqa: S608
                ' ORDER BY created_at COLLATE "C", member_id COLLATE "C"',
                hid,
            ).fetchall()
            # The embedding column is not even read: an export carries voiceprint metadata only.
            prints = conn.execute(
                "SELECT household_id, member_id, encoder, dim, n_utterances, created_at FROM voiceprints"
                ' WHERE household_id = %s ORDER BY member_id COLLATE "C"',
                hid,
            ).fetchall()
            policies = conn.execute(
                "SELECT household_id, body, created_at FROM policies WHERE household_id = %s"
                " ORDER BY revision",
                hid,
            ).fetchall()
            pin = conn.execute(
                f"SELECT {PIN_COLUMNS} FROM pins WHERE household_id = %s",  # noqa: S608
                hid,
            ).fetchone()
            decisions = conn.execute(
                "SELECT decision_id, body FROM decisions WHERE household_id = %s ORDER BY seq", hid
            ).fetchall()
            spend = conn.execute(
                "SELECT household_id, member_id, amount_minor, decision_id, at, exempt FROM spend"
                " WHERE household_id = %s ORDER BY seq",
                hid,
            ).fetchall()
            challenges = conn.execute(
                "SELECT challenge_id, body FROM challenges WHERE household_id = %s"
                ' ORDER BY created_at COLLATE "C", challenge_id COLLATE "C"',
                hid,
            ).fetchall()
            notifications = conn.execute(
                f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE household_id = %s"  # noqa: S608
                ' ORDER BY created_at COLLATE "C", notification_id COLLATE "C"',
                hid,
            ).fetchall()
            audit = conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit WHERE household_id = %s ORDER BY seq",  # noqa: S608
                hid,
            ).fetchall()
            anchor = self._anchor(conn, household_id)
        # Opened after the snapshot ends: no cryptography while a transaction is open.
        return HouseholdRecords(
            household=self._household(household),
            members=tuple(self._member(r) for r in members),
            voiceprints=tuple(
                VoiceprintInfo(r[0], r[1], r[2], int(r[3]), int(r[4]), parse_ts(r[5])) for r in prints
            ),
            policies=tuple(
                PolicyRevision(r[0], codec.policy_from_json(r[1]), parse_ts(r[2])) for r in policies
            ),
            pin=None if pin is None else pin_from_row(pin),
            decisions=tuple(self._decision(household_id, r[0], r[1]) for r in decisions),
            spend=tuple(
                SpendEntry(r[0], r[1], int(r[2]), r[3], parse_ts(r[4]), bool(r[5])) for r in spend
            ),
            challenges=tuple(self._challenge(household_id, r[0], r[1]) for r in challenges),
            notifications=tuple(self._notification(r) for r in notifications),
            audit=tuple(self._audit_record(audit_entry_from_row(r)) for r in audit),
            audit_anchor=anchor,
        )

    # --- erasure ----------------------------------------------------------------------

    _ERASE_ORDER = (
        # Children before parents, for the foreign keys; audit entries stay (sealed).
        "spend",
        "decisions",
        "voiceprints",
        "members",
        "policies",
        "pins",
        "challenges",
        "notifications",
    )

    def erase_household(self, household_id: str, at: datetime) -> tuple[Tombstone, bool]:
        at_iso = format_ts(at)
        erased_now = False
        with self._tx() as conn:
            # FOR UPDATE waits for every writer holding the row (decisions, policies, foreign-key
            # checks of inserts); a concurrent erasure of the same household is found by the
            # tombstone read after the wait, which sees what committed meanwhile.
            live = conn.execute(
                "SELECT 1 FROM households WHERE id = %s FOR UPDATE", (household_id,)
            ).fetchone()
            row = self._tombstone_row(conn, household_id)
            if row is None:
                if live is None:
                    raise NotFound(f"household {household_id!r} not found")
                count_row = conn.execute(
                    "SELECT COUNT(*) FROM audit WHERE household_id = %s", (household_id,)
                ).fetchone()
                count = 0 if count_row is None else int(count_row[0])
                _, head = self._chain_head(conn, household_id)
                for table in self._ERASE_ORDER:
                    conn.execute(
                        f"DELETE FROM {table} WHERE household_id = %s".encode(),  # noqa: S608 - fixed names
                        (household_id,),
                    )
                conn.execute("DELETE FROM households WHERE id = %s", (household_id,))
                conn.execute(
                    "INSERT INTO household_tombstones (household_id, erased_at, audit_entries, audit_head)"
                    " VALUES (%s, %s, %s, %s)",
                    (household_id, at_iso, count, head),
                )
                row = (household_id, at_iso, count, head)
                erased_now = True
        # After the commit: if destroying the key fails, the call fails and a retry (idempotent)
        # destroys it; the rows are gone either way.
        self._sealer.destroy(household_id)
        return tombstone_from_row(row), erased_now

    # --- retention --------------------------------------------------------------------

    def purge_household(self, household_id: str, cutoff: datetime) -> PurgeResult:
        before = format_ts(cutoff)
        hid = household_id
        with self._tx() as conn:
            # Orders the purge with appends to the chain (record_decision takes the same lock), so
            # the anchor never moves under a decision that is reading the chain head. An erased
            # household has no row and no appends: nothing to lock.
            conn.execute("SELECT 1 FROM households WHERE id = %s FOR NO KEY UPDATE", (hid,))
            row = conn.execute(
                "SELECT MAX(passed_seq) FROM challenges WHERE household_id = %s", (hid,)
            ).fetchone()
            last_passed = 0 if row is None or row[0] is None else int(row[0])
            # Exempt spend after the last passed challenge still counts towards the low-value
            # exemption's cumulative limit, however old; it and its decision stay.
            spend = conn.execute(
                "DELETE FROM spend WHERE household_id = %s AND at < %s AND NOT (exempt AND seq > %s)",
                (hid, before, last_passed),
            ).rowcount
            decisions = conn.execute(
                "DELETE FROM decisions WHERE household_id = %s AND created_at < %s"
                " AND decision_id NOT IN (SELECT decision_id FROM spend WHERE household_id = %s)",
                (hid, before, hid),
            ).rowcount
            # The last passed challenge stays: it is where the exemption's count restarts.
            challenges = conn.execute(
                "DELETE FROM challenges WHERE household_id = %s AND expires_at < %s"
                " AND (passed_seq IS NULL OR passed_seq < %s)",
                (hid, before, last_passed),
            ).rowcount
            notifications = conn.execute(
                "DELETE FROM notifications WHERE household_id = %s AND created_at < %s", (hid, before)
            ).rowcount
            audit = self._purge_audit_prefix(conn, hid, before)
            anchor = self._anchor(conn, hid)
        return PurgeResult(hid, decisions, spend, audit, challenges, notifications, anchor)

    @staticmethod
    def _purge_audit_prefix(conn: Conn, household_id: str, before: str) -> int:
        """Deletes the longest prefix of the chain older than `before` and moves the anchor to its
        last entry. Only a prefix: an old entry after a newer one (clock skew) waits for the next run."""
        row = conn.execute(
            "SELECT MIN(seq) FROM audit WHERE household_id = %s AND at >= %s", (household_id, before)
        ).fetchone()
        if row is None or row[0] is None:
            row = conn.execute(
                "SELECT MAX(seq) FROM audit WHERE household_id = %s", (household_id,)
            ).fetchone()
            if row is None or row[0] is None:
                return 0
            last = int(row[0])
        else:
            last = int(row[0]) - 1
        tail = conn.execute(
            "SELECT seq, entry_hash, at FROM audit WHERE household_id = %s AND seq = %s",
            (household_id, last),
        ).fetchone()
        if tail is None:  # nothing older than the first kept entry is left
            return 0
        purged = conn.execute(
            "DELETE FROM audit WHERE household_id = %s AND seq <= %s", (household_id, last)
        ).rowcount
        conn.execute(
            "INSERT INTO audit_anchors (household_id, seq, entry_hash, at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (household_id) DO UPDATE SET seq = excluded.seq,"
            " entry_hash = excluded.entry_hash, at = excluded.at",
            (household_id, int(tail[0]), str(tail[1]), str(tail[2])),
        )
        return int(purged)

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


def _conforms(store: PostgresStore, keys: PostgresKeyStore) -> tuple[Store, PrivacyStore, WrappedKeyStore]:
    """Never called: makes mypy prove that PostgresStore implements the Store and PrivacyStore
    protocols exactly, and PostgresKeyStore the WrappedKeyStore protocol."""
    return store, store, keys
