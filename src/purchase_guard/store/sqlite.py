"""`SqliteStore`: the embedded default implementation of the Store protocol.

One connection, opened with `check_same_thread=False` and guarded by a lock, because the
gRPC server calls in from a thread pool and a sqlite3 connection must not interleave two
transactions. Several stores (processes) may open the same file: WAL mode lets readers run
beside the one writer, `BEGIN IMMEDIATE` takes the write lock before a transaction reads
anything it will base a write on, and `busy_timeout` makes a second writer wait rather than
fail.

Error mapping: sqlite errors from I/O, locking or a closed connection become
`errors.Unavailable`; constraint violations become `AlreadyExists` or `NotFound` with a
message that names only the id the caller passed.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

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
from purchase_guard.errors import AlreadyExists, GuardError, InvalidArgument, NotFound, Unavailable
from purchase_guard.store import codec
from purchase_guard.store.migrate import apply_sqlite
from purchase_guard.store.protocol import AuditEntry, SpendEntry, Store, StoredDecision

DEFAULT_BUSY_TIMEOUT_MS = 5000

Row = tuple[Any, ...]


def pack_embedding(values: tuple[float, ...]) -> bytes:
    """float32 little-endian, whatever the host byte order."""
    return struct.pack(f"<{len(values)}f", *values)


def unpack_embedding(blob: bytes, dim: int) -> tuple[float, ...]:
    if len(blob) != 4 * dim:
        raise GuardError("stored voiceprint has the wrong size for its dimension")
    return struct.unpack(f"<{dim}f", blob)


class SqliteStore:
    """Store on one SQLite file. See `store.protocol.Store` for the contract of each method."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        self._locks_guard = threading.Lock()
        self._household_locks: dict[str, threading.Lock] = {}
        self._closed = False
        try:
            self._conn = sqlite3.connect(
                self._path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,  # autocommit: every transaction here is explicit
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open the store at {self._path}: {exc}") from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
            apply_sqlite(self._conn)
        except sqlite3.Error as exc:
            self._conn.close()
            raise Unavailable(f"cannot initialise the store at {self._path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise
        if mode is None or str(mode[0]).lower() != "wal":
            self._conn.close()
            raise Unavailable(f"cannot switch the store at {self._path} to WAL mode")

    # --- plumbing -------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise Unavailable(f"store unavailable: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
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

    @staticmethod
    def _require_household(conn: sqlite3.Connection, household_id: str) -> None:
        if conn.execute("SELECT 1 FROM households WHERE id = ?", (household_id,)).fetchone() is None:
            raise NotFound(f"household {household_id!r} not found")

    # --- households and credentials -------------------------------------------------

    def create_household(self, household: Household, admin_token_hash: str) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO households"
                    " (id, name, time_zone, currency, retain_audio, admin_token_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        except sqlite3.IntegrityError as exc:
            # Either the id or the token hash is taken; say which without echoing the hash.
            raise AlreadyExists(
                f"household {household.household_id!r} or its admin token exists already"
            ) from exc

    def get_household(self, household_id: str) -> Household:
        with self._read() as conn:
            row = conn.execute(
                "SELECT id, name, time_zone, currency, retain_audio, created_at FROM households WHERE id = ?",
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
        with self._read() as conn:
            row = conn.execute(
                "SELECT id FROM households WHERE admin_token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else str(row[0])

    # --- members and voiceprints ----------------------------------------------------

    _MEMBER_COLUMNS = "member_id, household_id, display_name, role, is_parent, created_at"

    @staticmethod
    def _member(row: Row) -> Member:
        return Member(
            member_id=row[0],
            household_id=row[1],
            display_name=row[2],
            role=Role(row[3]),
            is_parent=bool(row[4]),
            created_at=codec.parse_ts(row[5]),
        )

    def add_member(self, member: Member) -> None:
        try:
            with self._write() as conn:
                self._require_household(conn, member.household_id)
                conn.execute(
                    f"INSERT INTO members ({self._MEMBER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
                    (
                        member.member_id,
                        member.household_id,
                        member.display_name,
                        member.role.value,
                        member.is_parent,
                        codec.format_ts(member.created_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"member {member.member_id!r} exists already") from exc

    def get_member(self, household_id: str, member_id: str) -> Member:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._MEMBER_COLUMNS} FROM members WHERE household_id = ? AND member_id = ?",  # noqa: S608
                (household_id, member_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"member {member_id!r} not found")
        return self._member(row)

    def list_members(self, household_id: str) -> list[Member]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self._MEMBER_COLUMNS} FROM members WHERE household_id = ?"  # noqa: S608
                " ORDER BY created_at, member_id",
                (household_id,),
            ).fetchall()
        return [self._member(r) for r in rows]

    def remove_member(self, household_id: str, member_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM voiceprints WHERE household_id = ? AND member_id = ?", (household_id, member_id)
            )
            gone = conn.execute(
                "DELETE FROM members WHERE household_id = ? AND member_id = ?", (household_id, member_id)
            )
            if gone.rowcount == 0:
                raise NotFound(f"member {member_id!r} not found")

    def put_voiceprint(self, voiceprint: Voiceprint) -> None:
        blob = pack_embedding(voiceprint.embedding)
        with self._write() as conn:
            found = conn.execute(
                "SELECT 1 FROM members WHERE household_id = ? AND member_id = ?",
                (voiceprint.household_id, voiceprint.member_id),
            ).fetchone()
            if found is None:
                raise NotFound(f"member {voiceprint.member_id!r} not found")
            conn.execute(
                "INSERT INTO voiceprints"
                " (member_id, household_id, encoder, embedding, dim, n_utterances, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
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

    def list_voiceprints(self, household_id: str) -> list[Voiceprint]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT member_id, household_id, encoder, embedding, dim, n_utterances, created_at"
                " FROM voiceprints WHERE household_id = ? ORDER BY member_id",
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
        with self._write() as conn:
            self._require_household(conn, household_id)
            row = conn.execute(
                "SELECT MAX(revision) FROM policies WHERE household_id = ?", (household_id,)
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
                "INSERT INTO policies (household_id, revision, body, created_at) VALUES (?, ?, ?, ?)",
                (household_id, revision, codec.policy_to_json(stored), codec.format_ts(at)),
            )
        return stored

    def get_policy(self, household_id: str) -> Policy | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT body FROM policies WHERE household_id = ? ORDER BY revision DESC LIMIT 1",
                (household_id,),
            ).fetchone()
        return None if row is None else codec.policy_from_json(row[0])

    def put_pin(self, state: PinState) -> None:
        with self._write() as conn:
            self._require_household(conn, state.household_id)
            conn.execute(
                "INSERT INTO pins (household_id, pin_hash, lockouts, throttled_until, set_at)"
                " VALUES (?, ?, ?, ?, ?)"
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
        with self._read() as conn:
            row = conn.execute(
                "SELECT household_id, pin_hash, lockouts, throttled_until, set_at FROM pins"
                " WHERE household_id = ?",
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
    def _stored_decision(
        conn: sqlite3.Connection, household_id: str, kind: str, request_id: str
    ) -> Row | None:
        row: Row | None = conn.execute(
            "SELECT body, request_digest FROM decisions"
            " WHERE household_id = ? AND kind = ? AND request_id = ?",
            (household_id, kind, request_id),
        ).fetchone()
        return row

    @contextmanager
    def household_lock(self, household_id: str) -> Iterator[None]:
        # One process owns a SQLite store (replicas use PostgreSQL), so a process-local lock
        # per household is enough; the dict only grows with households seen by this process.
        with self._locks_guard:
            lock = self._household_locks.setdefault(household_id, threading.Lock())
        with lock:
            yield

    def get_decision(self, household_id: str, kind: str, request_id: str) -> StoredDecision | None:
        with self._read() as conn:
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
            with self._write() as conn:
                # Under BEGIN IMMEDIATE nobody else can insert between this check and our insert.
                existing = self._stored_decision(conn, hid, decision.kind, decision.request_id)
                if existing is not None:
                    if existing[1] != request_digest:
                        raise AlreadyExists(
                            f"request id {decision.request_id!r} was used for another request"
                        )
                    return codec.decision_from_json(existing[0])
                self._require_household(conn, hid)
                head = conn.execute(
                    "SELECT seq, entry_hash FROM audit WHERE household_id = ? ORDER BY seq DESC LIMIT 1",
                    (hid,),
                ).fetchone()
                seq, prev_hash = (1, GENESIS) if head is None else (int(head[0]) + 1, str(head[1]))
                conn.execute(
                    "INSERT INTO decisions (decision_id, household_id, kind, request_id, request_digest,"
                    " outcome, seq, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
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
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"decision {decision.decision_id!r} exists already") from exc
        return decision

    @staticmethod
    def _upsert_challenge(conn: sqlite3.Connection, challenge: Challenge, seq: int) -> None:
        owner = conn.execute(
            "SELECT household_id FROM challenges WHERE challenge_id = ?", (challenge.challenge_id,)
        ).fetchone()
        if owner is not None and owner[0] != challenge.household_id:
            # Another household's challenge: report it as unknown, never as someone else's.
            raise NotFound(f"challenge {challenge.challenge_id!r} not found")
        passed_seq = seq if challenge.status is ChallengeStatus.PASSED else None
        conn.execute(
            "INSERT INTO challenges (challenge_id, household_id, decision_id, member_id, status,"
            " attempts_left, expires_at, created_at, passed_seq, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
        with self._read() as conn:
            rows = conn.execute(
                "SELECT body FROM decisions WHERE household_id = ? ORDER BY seq DESC LIMIT ?",
                (household_id, limit),
            ).fetchall()
        return [codec.decision_from_json(r[0]) for r in rows]

    def spend_since(self, household_id: str, member_id: str | None, since: datetime) -> int:
        """Spend with `at >= since` (inclusive)."""
        since_iso = codec.format_ts(since)
        with self._read() as conn:
            if member_id is None:
                row = conn.execute(
                    "SELECT COALESCE(SUM(amount_minor), 0) FROM spend WHERE household_id = ? AND at >= ?",
                    (household_id, since_iso),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                    " WHERE household_id = ? AND member_id = ? AND at >= ?",
                    (household_id, member_id, since_iso),
                ).fetchone()
        return int(row[0])

    def exempt_spend_since_last_challenge(self, household_id: str) -> int:
        """Exempt spend recorded after the household's last passed challenge, in commit order."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                " WHERE household_id = ? AND exempt = ? AND seq > COALESCE("
                "  (SELECT MAX(passed_seq) FROM challenges WHERE household_id = ?), 0)",
                (household_id, True, household_id),
            ).fetchone()
        return int(row[0])

    def audit_entries(self, household_id: str) -> list[AuditEntry]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT household_id, seq, decision_id, at, body, prev_hash, entry_hash FROM audit"
                " WHERE household_id = ? ORDER BY seq",
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
        with self._read() as conn:
            row = conn.execute(
                "SELECT body FROM challenges WHERE household_id = ? AND challenge_id = ?",
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
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE challenges SET status = ?, attempts_left = ?, decision_id = ?, member_id = ?,"
                " expires_at = ?, body = ?,"
                " passed_seq = CASE WHEN ? THEN COALESCE(passed_seq,"
                "  (SELECT COALESCE(MAX(seq), 0) FROM audit WHERE household_id = ?)) ELSE passed_seq END"
                " WHERE household_id = ? AND challenge_id = ? AND status = ?"
                " AND (attempts_left = ? + 1 OR (? AND attempts_left = ?))",
                (
                    challenge.status.value,
                    challenge.attempts_left,
                    challenge.decision_id,
                    challenge.member_id,
                    codec.format_ts(challenge.expires_at),
                    codec.challenge_to_json(challenge),
                    challenge.status is ChallengeStatus.PASSED,
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
                "SELECT 1 FROM challenges WHERE household_id = ? AND challenge_id = ?",
                (challenge.household_id, challenge.challenge_id),
            ).fetchone()
            if found is None:
                raise NotFound(f"challenge {challenge.challenge_id!r} not found")
            return False

    def list_challenges(self, household_id: str, status: ChallengeStatus | None = None) -> list[Challenge]:
        with self._read() as conn:
            if status is None:
                rows = conn.execute(
                    "SELECT body FROM challenges WHERE household_id = ? ORDER BY created_at, challenge_id",
                    (household_id,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT body FROM challenges WHERE household_id = ? AND status = ?"
                    " ORDER BY created_at, challenge_id",
                    (household_id, status.value),
                ).fetchall()
        return [codec.challenge_from_json(r[0]) for r in rows]

    # --- notifications --------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        try:
            with self._write() as conn:
                self._require_household(conn, notification.household_id)
                conn.execute(
                    "INSERT INTO notifications (notification_id, household_id, kind, message, challenge_id,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        notification.notification_id,
                        notification.household_id,
                        notification.kind,
                        notification.message,
                        notification.challenge_id,
                        codec.format_ts(notification.created_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"notification {notification.notification_id!r} exists already") from exc

    def list_notifications(self, household_id: str) -> list[Notification]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT notification_id, household_id, kind, message, challenge_id, created_at"
                " FROM notifications WHERE household_id = ? ORDER BY created_at, notification_id",
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
        with self._read() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _conforms(store: SqliteStore) -> Store:
    """Never called: makes mypy prove that SqliteStore implements the Store protocol exactly."""
    return store
