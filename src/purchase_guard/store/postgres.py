"""`PostgresStore`: the Store protocol on PostgreSQL, for several guard replicas sharing one database.

Same schema and migrations as `SqliteStore` (`store/migrations/*.sql`, applied by
`migrate_pg.apply_postgres`), same stored forms (fixed-width ISO UTC text timestamps, JSON
bodies from `store/codec.py`, float32 little-endian embeddings) and the same semantics; the
docstrings of `SqliteStore` and `store.protocol.Store` apply unchanged.

Connections come from a `psycopg_pool.ConnectionPool` in autocommit mode; every write is one
explicit transaction at READ COMMITTED. What SQLite gets from its single writer, this store
gets from row and advisory locks, so that it holds across processes:

- `record_decision` (and `put_policy`) lock the household row `FOR NO KEY UPDATE` first: one
  writer at a time appends to a household's audit chain and numbers its seq, and a racing
  retry of the same request id waits and then sees the first one (idempotency). That lock
  mode does not conflict with the `FOR KEY SHARE` locks that foreign-key checks take, so
  other inserts for the household are not held up.
- `update_challenge` is a single conditional UPDATE; PostgreSQL re-checks its WHERE against
  the latest row version when two answers race, which is the compare-and-set.
- `household_lock` takes a session-level `pg_advisory_lock` on a connection it keeps for the
  with-block; every pooled session has `lock_timeout` set, so no lock wait (advisory or row)
  hangs a worker: it ends in Unavailable. Store calls made by the same thread inside the
  block run on that connection, so the block needs one pooled connection, not two (a pool
  drained by lock holders that each wait for a second connection would deadlock). A
  per-process lock in front keeps waiting threads of one process from each holding a
  connection while they wait.

Error mapping: connection failures, a closed store, pool exhaustion and lock timeouts become
`errors.Unavailable`; constraint violations become `AlreadyExists` or `NotFound` naming only
the id the caller passed. Messages never include the DSN.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from purchase_guard.audit.chain import GENESIS, entry_hash
from purchase_guard.domain import (
    Challenge,
    ChallengeStatus,
    Decision,
    Household,
    Member,
    Notification,
    PinState,
    Policy,
    Role,
    Voiceprint,
)
from purchase_guard.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from purchase_guard.store import codec
from purchase_guard.store.migrate_pg import advisory_key, apply_postgres
from purchase_guard.store.protocol import AuditEntry, SpendEntry, Store, StoredDecision
from purchase_guard.store.sqlite import pack_embedding, unpack_embedding

Conn = psycopg.Connection[tuple[Any, ...]]
Row = tuple[Any, ...]

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_LOCK_TIMEOUT_S = 10.0

# Errors that mean "the database cannot be used right now", as opposed to a bug or a constraint.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection lost or refused, lock timeout, deadlock, admin shutdown
    psycopg.InterfaceError,  # connection already closed
    PoolTimeout,
    PoolClosed,
)

_MEMBER_COLUMNS = "member_id, household_id, display_name, role, is_parent, created_at"


def _member(row: Row) -> Member:
    return Member(
        member_id=row[0],
        household_id=row[1],
        display_name=row[2],
        role=Role(row[3]),
        is_parent=bool(row[4]),
        created_at=codec.parse_ts(row[5]),
    )


class PostgresStore:
    """Store on PostgreSQL. See `store.protocol.Store` for the contract of each method.

    `dsn` is a libpq connection string or URL; its `search_path` (e.g. `options=-csearch_path=guard`)
    picks the schema. The constructor applies pending migrations and raises `Unavailable` when
    the database cannot be reached within `connect_timeout_s`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
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

    # --- plumbing -------------------------------------------------------------------

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
        try:
            with self._tx() as conn:
                conn.execute(
                    "INSERT INTO households"
                    " (id, name, time_zone, currency, retain_audio, admin_token_hash, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        household.household_id,
                        household.name,
                        household.time_zone,
                        household.currency,
                        household.retain_audio,
                        admin_token_hash,
                        codec.format_ts(household.created_at),
                    ),
                )
        except psycopg.IntegrityError as exc:
            # Either the id or the token hash is taken; say which without echoing the hash.
            raise AlreadyExists(
                f"household {household.household_id!r} or its admin token exists already"
            ) from exc

    def get_household(self, household_id: str) -> Household:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT id, name, time_zone, currency, retain_audio, created_at"
                " FROM households WHERE id = %s",
                (household_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"household {household_id!r} not found")
        return Household(
            household_id=row[0],
            name=row[1],
            time_zone=row[2],
            currency=row[3],
            retain_audio=bool(row[4]),
            created_at=codec.parse_ts(row[5]),
        )

    def household_for_token_hash(self, token_hash: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT id FROM households WHERE admin_token_hash = %s", (token_hash,)
            ).fetchone()
        return None if row is None else str(row[0])

    # --- members and voiceprints ----------------------------------------------------

    def add_member(self, member: Member) -> None:
        try:
            with self._tx() as conn:
                self._require_household(conn, member.household_id)
                conn.execute(
                    "INSERT INTO members (member_id, household_id, display_name, role, is_parent, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        member.member_id,
                        member.household_id,
                        member.display_name,
                        member.role.value,
                        member.is_parent,
                        codec.format_ts(member.created_at),
                    ),
                )
        except psycopg.IntegrityError as exc:
            raise AlreadyExists(f"member {member.member_id!r} exists already") from exc

    def get_member(self, household_id: str, member_id: str) -> Member:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT member_id, household_id, display_name, role, is_parent, created_at"
                " FROM members WHERE household_id = %s AND member_id = %s",
                (household_id, member_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"member {member_id!r} not found")
        return _member(row)

    def list_members(self, household_id: str) -> list[Member]:
        with self._conn() as conn:
            # COLLATE "C": the same byte order SQLite uses, whatever the database's collation is.
            rows = conn.execute(
                "SELECT member_id, household_id, display_name, role, is_parent, created_at"
                " FROM members WHERE household_id = %s"
                ' ORDER BY created_at COLLATE "C", member_id COLLATE "C"',
                (household_id,),
            ).fetchall()
        return [_member(r) for r in rows]

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

    def put_voiceprint(self, voiceprint: Voiceprint) -> None:
        blob = pack_embedding(voiceprint.embedding)
        try:
            with self._tx() as conn:
                found = conn.execute(
                    "SELECT 1 FROM members WHERE household_id = %s AND member_id = %s",
                    (voiceprint.household_id, voiceprint.member_id),
                ).fetchone()
                if found is None:
                    raise NotFound(f"member {voiceprint.member_id!r} not found")
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
                        len(voiceprint.embedding),
                        voiceprint.n_utterances,
                        codec.format_ts(voiceprint.created_at),
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
                embedding=unpack_embedding(bytes(r[3]), int(r[4])),
                n_utterances=int(r[5]),
                created_at=codec.parse_ts(r[6]),
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
                (household_id, revision, codec.policy_to_json(stored), codec.format_ts(at)),
            )
        return stored

    def get_policy(self, household_id: str) -> Policy | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT body FROM policies WHERE household_id = %s ORDER BY revision DESC LIMIT 1",
                (household_id,),
            ).fetchone()
        return None if row is None else codec.policy_from_json(row[0])

    def put_pin(self, state: PinState) -> None:
        with self._tx() as conn:
            self._require_household(conn, state.household_id)
            conn.execute(
                "INSERT INTO pins (household_id, pin_hash, lockouts, throttled_until, set_at)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (household_id) DO UPDATE SET pin_hash = excluded.pin_hash,"
                " lockouts = excluded.lockouts, throttled_until = excluded.throttled_until,"
                " set_at = excluded.set_at",
                (
                    state.household_id,
                    state.pin_hash,
                    state.lockouts,
                    None if state.throttled_until is None else codec.format_ts(state.throttled_until),
                    codec.format_ts(state.set_at),
                ),
            )

    def get_pin(self, household_id: str) -> PinState | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT household_id, pin_hash, lockouts, throttled_until, set_at FROM pins"
                " WHERE household_id = %s",
                (household_id,),
            ).fetchone()
        if row is None:
            return None
        return PinState(
            household_id=row[0],
            pin_hash=row[1],
            lockouts=int(row[2]),
            throttled_until=None if row[3] is None else codec.parse_ts(row[3]),
            set_at=codec.parse_ts(row[4]),
        )

    # --- decisions, spend and audit -------------------------------------------------

    @staticmethod
    def _stored_decision(conn: Conn, household_id: str, kind: str, request_id: str) -> Row | None:
        row: Row | None = conn.execute(
            "SELECT body, request_digest FROM decisions"
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

    def get_decision(self, household_id: str, kind: str, request_id: str) -> StoredDecision | None:
        with self._conn() as conn:
            row = self._stored_decision(conn, household_id, kind, request_id)
        if row is None:
            return None
        return StoredDecision(decision=codec.decision_from_json(row[0]), request_digest=row[1])

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
        body = codec.decision_to_json(decision)
        at_iso = codec.format_ts(decision.decided_at)
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
                    return codec.decision_from_json(existing[0])
                head = conn.execute(
                    "SELECT seq, entry_hash FROM audit WHERE household_id = %s ORDER BY seq DESC LIMIT 1",
                    (hid,),
                ).fetchone()
                seq, prev_hash = (1, GENESIS) if head is None else (int(head[0]) + 1, str(head[1]))
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
                conn.execute(
                    "INSERT INTO audit (household_id, seq, decision_id, at, body, prev_hash, entry_hash)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
                            codec.format_ts(spend.at),
                            spend.exempt,
                        ),
                    )
                if challenge is not None:
                    self._upsert_challenge(conn, challenge, seq)
        except psycopg.IntegrityError as exc:
            raise AlreadyExists(f"decision {decision.decision_id!r} exists already") from exc
        return decision

    @staticmethod
    def _upsert_challenge(conn: Conn, challenge: Challenge, seq: int) -> None:
        owner = conn.execute(
            "SELECT household_id FROM challenges WHERE challenge_id = %s", (challenge.challenge_id,)
        ).fetchone()
        if owner is not None and owner[0] != challenge.household_id:
            # Another household's challenge: report it as unknown, never as someone else's.
            raise NotFound(f"challenge {challenge.challenge_id!r} not found")
        passed_seq = seq if challenge.status is ChallengeStatus.PASSED else None
        conn.execute(
            "INSERT INTO challenges (challenge_id, household_id, decision_id, member_id, status,"
            " attempts_left, expires_at, created_at, passed_seq, body)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (challenge_id) DO UPDATE SET decision_id = excluded.decision_id,"
            " member_id = excluded.member_id, status = excluded.status,"
            " attempts_left = excluded.attempts_left, expires_at = excluded.expires_at,"
            " created_at = excluded.created_at,"
            " passed_seq = COALESCE(challenges.passed_seq, excluded.passed_seq), body = excluded.body"
            " WHERE challenges.household_id = excluded.household_id",
            (
                challenge.challenge_id,
                challenge.household_id,
                challenge.decision_id,
                challenge.member_id,
                challenge.status.value,
                challenge.attempts_left,
                codec.format_ts(challenge.expires_at),
                codec.format_ts(challenge.created_at),
                passed_seq,
                codec.challenge_to_json(challenge),
            ),
        )

    def list_decisions(self, household_id: str, limit: int) -> list[Decision]:
        """Newest first (by commit order); `limit <= 0` returns nothing."""
        if limit <= 0:
            return []
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT body FROM decisions WHERE household_id = %s ORDER BY seq DESC LIMIT %s",
                (household_id, limit),
            ).fetchall()
        return [codec.decision_from_json(r[0]) for r in rows]

    def spend_since(self, household_id: str, member_id: str | None, since: datetime) -> int:
        """Spend with `at >= since` (inclusive)."""
        # Fixed-width timestamps with punctuation in the same places order the same under any
        # collation, so the comparison can use the (household_id, at) index as it is.
        since_iso = codec.format_ts(since)
        with self._conn() as conn:
            if member_id is None:
                row = conn.execute(
                    "SELECT COALESCE(SUM(amount_minor), 0) FROM spend WHERE household_id = %s AND at >= %s",
                    (household_id, since_iso),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                    " WHERE household_id = %s AND member_id = %s AND at >= %s",
                    (household_id, member_id, since_iso),
                ).fetchone()
        return 0 if row is None else int(row[0])

    def exempt_spend_since_last_challenge(self, household_id: str) -> int:
        """Exempt spend recorded after the household's last passed challenge, in commit order."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                " WHERE household_id = %s AND exempt AND seq > COALESCE("
                "  (SELECT MAX(passed_seq) FROM challenges WHERE household_id = %s), 0)",
                (household_id, household_id),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def audit_entries(self, household_id: str) -> list[AuditEntry]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT household_id, seq, decision_id, at, body, prev_hash, entry_hash FROM audit"
                " WHERE household_id = %s ORDER BY seq",
                (household_id,),
            ).fetchall()
        return [
            AuditEntry(
                household_id=r[0],
                seq=int(r[1]),
                decision_id=r[2],
                at=codec.parse_ts(r[3]),
                body=r[4],
                prev_hash=r[5],
                entry_hash=r[6],
            )
            for r in rows
        ]

    # --- challenges -----------------------------------------------------------------

    def get_challenge(self, household_id: str, challenge_id: str) -> Challenge:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT body FROM challenges WHERE household_id = %s AND challenge_id = %s",
                (household_id, challenge_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"challenge {challenge_id!r} not found")
        return codec.challenge_from_json(row[0])

    def update_challenge(self, challenge: Challenge, expected_status: ChallengeStatus) -> bool:
        """Compare-and-set; see the rule in `Store.update_challenge`.

        A challenge that becomes PASSED here is ordered after every decision recorded so far,
        so exempt spend recorded later counts towards the next threshold.
        """
        status_changes = challenge.status is not expected_status
        passes = challenge.status is ChallengeStatus.PASSED
        with self._tx() as conn:
            if passes:
                # Taken only to read a final MAX(seq): no decision of the household is mid-append.
                conn.execute(
                    "SELECT 1 FROM households WHERE id = %s FOR NO KEY UPDATE", (challenge.household_id,)
                )
            cursor = conn.execute(
                "UPDATE challenges SET status = %s, attempts_left = %s, decision_id = %s, member_id = %s,"
                " expires_at = %s, body = %s,"
                " passed_seq = CASE WHEN %s THEN COALESCE(passed_seq,"
                "  (SELECT COALESCE(MAX(seq), 0) FROM audit WHERE household_id = %s)) ELSE passed_seq END"
                " WHERE household_id = %s AND challenge_id = %s AND status = %s"
                " AND (attempts_left = %s + 1 OR (%s AND attempts_left = %s))",
                (
                    challenge.status.value,
                    challenge.attempts_left,
                    challenge.decision_id,
                    challenge.member_id,
                    codec.format_ts(challenge.expires_at),
                    codec.challenge_to_json(challenge),
                    passes,
                    challenge.household_id,
                    challenge.household_id,
                    challenge.challenge_id,
                    expected_status.value,
                    challenge.attempts_left,
                    status_changes,
                    challenge.attempts_left,
                ),
            )
            if cursor.rowcount == 1:
                return True
            found = conn.execute(
                "SELECT 1 FROM challenges WHERE household_id = %s AND challenge_id = %s",
                (challenge.household_id, challenge.challenge_id),
            ).fetchone()
            if found is None:
                raise NotFound(f"challenge {challenge.challenge_id!r} not found")
            return False

    def list_challenges(self, household_id: str, status: ChallengeStatus | None = None) -> list[Challenge]:
        with self._conn() as conn:
            if status is None:
                rows = conn.execute(
                    "SELECT body FROM challenges WHERE household_id = %s"
                    ' ORDER BY created_at COLLATE "C", challenge_id COLLATE "C"',
                    (household_id,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT body FROM challenges WHERE household_id = %s AND status = %s"
                    ' ORDER BY created_at COLLATE "C", challenge_id COLLATE "C"',
                    (household_id, status.value),
                ).fetchall()
        return [codec.challenge_from_json(r[0]) for r in rows]

    # --- notifications --------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        try:
            with self._tx() as conn:
                self._require_household(conn, notification.household_id)
                conn.execute(
                    "INSERT INTO notifications (notification_id, household_id, kind, message, challenge_id,"
                    " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        notification.notification_id,
                        notification.household_id,
                        notification.kind,
                        notification.message,
                        notification.challenge_id,
                        codec.format_ts(notification.created_at),
                    ),
                )
        except psycopg.IntegrityError as exc:
            raise AlreadyExists(f"notification {notification.notification_id!r} exists already") from exc

    def list_notifications(self, household_id: str) -> list[Notification]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT notification_id, household_id, kind, message, challenge_id, created_at"
                " FROM notifications WHERE household_id = %s"
                ' ORDER BY created_at COLLATE "C", notification_id COLLATE "C"',
                (household_id,),
            ).fetchall()
        return [
            Notification(
                notification_id=r[0],
                household_id=r[1],
                kind=r[2],
                message=r[3],
                challenge_id=r[4],
                created_at=codec.parse_ts(r[5]),
            )
            for r in rows
        ]

    # --- lifecycle ------------------------------------------------------------------

    def ping(self) -> None:
        with self._conn() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _brief(exc: BaseException) -> str:
    """The first line of a driver error: libpq adds hints and context lines that say nothing new."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _conforms(store: PostgresStore) -> Store:
    """Never called: makes mypy prove that PostgresStore implements the Store protocol exactly."""
    return store
