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

Sealing: personal values are sealed with the household's data key before a write transaction
starts and opened after a read has released the connection, so no cryptography (and no
lookup of a data key) ever runs while the connection lock is held. `SqliteKeyStore` keeps the
wrapped data keys in the same file, on a connection of its own.
"""

from __future__ import annotations

import secrets
import sqlite3
import struct
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

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
from purchase_guard.errors import AlreadyExists, GuardError, InvalidArgument, NotFound, Unavailable
from purchase_guard.sealing import KeyRing, MasterKeys, Sealer, WrappedKeyStore
from purchase_guard.serial import format_ts, parse_ts
from purchase_guard.store import codec
from purchase_guard.store.migrate import apply_sqlite
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

DEFAULT_BUSY_TIMEOUT_MS = 5000


def pack_embedding(values: tuple[float, ...]) -> bytes:
    """float32 little-endian, whatever the host byte order."""
    return struct.pack(f"<{len(values)}f", *values)


def unpack_embedding(blob: bytes, dim: int) -> tuple[float, ...]:
    if len(blob) != 4 * dim:
        raise GuardError("stored voiceprint has the wrong size for its dimension")
    return struct.unpack(f"<{dim}f", blob)


def _connect(path: str, busy_timeout_ms: int) -> tuple[sqlite3.Connection, str]:
    """An autocommit connection in WAL mode with foreign keys on and migrations applied."""
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,  # autocommit: every transaction here is explicit
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise Unavailable(f"cannot open the store at {path}: {exc}") from exc
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


class SqliteKeyStore:
    """Wrapped data keys (table `data_keys`) in a SQLite store file; a `WrappedKeyStore`."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        self._conn, _ = _connect(self._path, busy_timeout_ms)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise Unavailable(f"key store unavailable: {exc}") from exc

    def get_wrapped_key(self, household_id: str) -> bytes | None:
        with self._locked() as conn:
            row = conn.execute(
                "SELECT wrapped FROM data_keys WHERE household_id = ?", (household_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def add_wrapped_key(self, household_id: str, wrapped: bytes, master_key_id: str) -> bytes:
        with self._locked() as conn:
            conn.execute(
                "INSERT INTO data_keys (household_id, wrapped, master_key_id, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (household_id) DO NOTHING",
                (household_id, wrapped, master_key_id, format_ts(datetime.now(UTC))),
            )
            row = conn.execute(
                "SELECT wrapped FROM data_keys WHERE household_id = ?", (household_id,)
            ).fetchone()
        if row is None:  # destroyed between our insert and read: a concurrent erasure won
            raise NotFound(f"household {household_id!r} not found")
        return bytes(row[0])

    def replace_wrapped_key(self, household_id: str, old: bytes, new: bytes, master_key_id: str) -> bool:
        with self._locked() as conn:
            cursor = conn.execute(
                "UPDATE data_keys SET wrapped = ?, master_key_id = ? WHERE household_id = ? AND wrapped = ?",
                (new, master_key_id, household_id, old),
            )
            return cursor.rowcount == 1

    def list_wrapped_keys(self) -> list[tuple[str, bytes]]:
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT household_id, wrapped FROM data_keys ORDER BY household_id"
            ).fetchall()
        return [(str(r[0]), bytes(r[1])) for r in rows]

    def delete_wrapped_key(self, household_id: str) -> None:
        with self._locked() as conn:
            conn.execute("DELETE FROM data_keys WHERE household_id = ?", (household_id,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_EPHEMERAL_LOCK = threading.Lock()
_EPHEMERAL_MASTER: list[MasterKeys] = []


def _ephemeral_master() -> MasterKeys:
    # One random master key per process, so stores opened without a sealer (older test
    # fixtures) can reopen their own file within the process. Nothing sealed with it is
    # readable after the process ends: losing data, never exposing it.
    with _EPHEMERAL_LOCK:
        if not _EPHEMERAL_MASTER:
            _EPHEMERAL_MASTER.append(MasterKeys.of(secrets.token_bytes(32)))
        return _EPHEMERAL_MASTER[0]


class SqliteStore(SharedQueries):
    """Store on one SQLite file. See `store.protocol.Store` for the contract of each method.

    `sealer` seals personal values (sealing.py). Production passes `master_keys` (from
    `sealing.resolve_master_keys`): the store then seals with a `KeyRing` whose wrapped
    data keys live in this file's `data_keys` table (`SqliteKeyStore`, closed with the store).
    Tests may pass any `sealer` instead. With neither, the store uses a per-process random master
    key with the wrapped keys in this file: fine for tests, unreadable after a restart (data is
    lost rather than exposed), so production wiring must always pass one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sealer: Sealer | None = None,
        master_keys: MasterKeys | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        if sealer is not None and master_keys is not None:
            raise ValueError("pass a sealer or master keys, not both")
        self._path = str(path)
        self._lock = threading.Lock()
        self._locks_guard = threading.Lock()
        self._household_locks: dict[str, threading.Lock] = {}
        self._closed = False
        self._conn, mode = _connect(self._path, busy_timeout_ms)
        if mode != "wal":
            self._conn.close()
            raise Unavailable(f"cannot switch the store at {self._path} to WAL mode")
        self._owned_keys: SqliteKeyStore | None = None
        if sealer is None:
            self._owned_keys = SqliteKeyStore(self._path, busy_timeout_ms=busy_timeout_ms)
            sealer = KeyRing(master_keys or _ephemeral_master(), self._owned_keys)
        self._sealer = sealer

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

    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._read()

    @staticmethod
    def _require_household(conn: sqlite3.Connection, household_id: str) -> None:
        if conn.execute("SELECT 1 FROM households WHERE id = ?", (household_id,)).fetchone() is None:
            raise NotFound(f"household {household_id!r} not found")

    # --- households and credentials -------------------------------------------------

    def create_household(self, household: Household, admin_token_hash: str) -> None:
        hid = household.household_id
        if self.get_tombstone(hid) is not None:
            # An erased id is never reused: its kept audit entries would join the new chain.
            raise AlreadyExists(f"household {hid!r} or its admin token exists already")
        name = self._seal(hid, household.name, codec.household_name_aad(hid))
        try:
            with self._write() as conn:
                if conn.execute(
                    "SELECT 1 FROM household_tombstones WHERE household_id = ?", (hid,)
                ).fetchone():
                    raise AlreadyExists(f"household {hid!r} or its admin token exists already")
                conn.execute(
                    "INSERT INTO households"
                    " (id, name, time_zone, currency, retain_audio, admin_token_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        household.household_id,
                        name,
                        household.time_zone,
                        household.currency,
                        household.retain_audio,
                        admin_token_hash,
                        format_ts(household.created_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            # Either the id or the token hash is taken; say which without echoing the hash.
            raise AlreadyExists(
                f"household {household.household_id!r} or its admin token exists already"
            ) from exc

    # --- members and voiceprints ----------------------------------------------------

    def add_member(self, member: Member) -> None:
        self._check_household(member.household_id)
        name = self._seal(member.household_id, member.display_name, codec.member_name_aad(member.member_id))
        try:
            with self._write() as conn:
                self._require_household(conn, member.household_id)
                conn.execute(
                    f"INSERT INTO members ({MEMBER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
                    (
                        member.member_id,
                        member.household_id,
                        name,
                        member.role.value,
                        member.is_parent,
                        format_ts(member.created_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"member {member.member_id!r} exists already") from exc

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

    def _member_exists(self, household_id: str, member_id: str) -> None:
        with self._read() as conn:
            found = conn.execute(
                "SELECT 1 FROM members WHERE household_id = ? AND member_id = ?", (household_id, member_id)
            ).fetchone()
        if found is None:
            raise NotFound(f"member {member_id!r} not found")

    def put_voiceprint(self, voiceprint: Voiceprint) -> None:
        self._member_exists(voiceprint.household_id, voiceprint.member_id)
        dim = len(voiceprint.embedding)
        blob = self._sealer.seal(
            voiceprint.household_id,
            pack_embedding(voiceprint.embedding),
            codec.voiceprint_aad(voiceprint.member_id, voiceprint.encoder, dim),
        )
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
                    dim,
                    voiceprint.n_utterances,
                    format_ts(voiceprint.created_at),
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
                (household_id, revision, codec.policy_to_json(stored), format_ts(at)),
            )
        return stored

    def put_pin(self, state: PinState) -> None:
        with self._write() as conn:
            self._require_household(conn, state.household_id)
            conn.execute(
                f"INSERT INTO pins ({PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?)"  # noqa: S608
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
    def _stored_decision(
        conn: sqlite3.Connection, household_id: str, kind: str, request_id: str
    ) -> Row | None:
        row: Row | None = conn.execute(
            "SELECT body, request_digest, decision_id FROM decisions"
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
            with self._write() as conn:
                # Under BEGIN IMMEDIATE nobody else can insert between this check and our insert.
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
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"decision {decision.decision_id!r} exists already") from exc
        if existing is not None:
            return self._decision(hid, existing[2], existing[0])
        return decision

    def _insert_decision(
        self,
        conn: sqlite3.Connection,
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
        self._require_household(conn, hid)
        last_seq, prev_hash = self._chain_head(conn, hid)
        seq = last_seq + 1
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
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
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
                    format_ts(spend.at),
                    spend.exempt,
                ),
            )
        if challenge is not None and challenge_body is not None:
            self._upsert_challenge(conn, challenge, challenge_body, seq)

    # --- challenges -----------------------------------------------------------------

    def update_challenge(self, challenge: Challenge, expected_status: ChallengeStatus) -> bool:
        """Compare-and-set; see the rule in `Store.update_challenge`.

        A challenge that becomes PASSED here is ordered after every decision recorded so far,
        so exempt spend recorded later counts towards the next threshold.
        """
        status_changes = challenge.status is not expected_status
        body = self._seal(
            challenge.household_id,
            codec.challenge_to_json(challenge),
            codec.challenge_aad(challenge.challenge_id),
        )
        with self._write() as conn:
            # The chain head falls back to the retention anchor when every entry was purged.
            cursor = conn.execute(
                "UPDATE challenges SET status = ?, attempts_left = ?, decision_id = ?, member_id = ?,"
                " expires_at = ?, body = ?,"
                " passed_seq = CASE WHEN ? THEN COALESCE(passed_seq,"
                "  (SELECT MAX(seq) FROM audit WHERE household_id = ?),"
                "  (SELECT seq FROM audit_anchors WHERE household_id = ?), 0) ELSE passed_seq END"
                " WHERE household_id = ? AND challenge_id = ? AND status = ?"
                " AND (attempts_left = ? + 1 OR (? AND attempts_left = ?))",
                (
                    challenge.status.value,
                    challenge.attempts_left,
                    challenge.decision_id,
                    challenge.member_id,
                    format_ts(challenge.expires_at),
                    body,
                    challenge.status is ChallengeStatus.PASSED,
                    challenge.household_id,
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

    # --- notifications --------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        self._check_household(notification.household_id)
        message = self._seal(
            notification.household_id,
            notification.message,
            codec.notification_aad(notification.notification_id),
        )
        try:
            with self._write() as conn:
                self._require_household(conn, notification.household_id)
                conn.execute(
                    f"INSERT INTO notifications ({NOTIFICATION_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        notification.notification_id,
                        notification.household_id,
                        notification.kind,
                        message,
                        notification.challenge_id,
                        format_ts(notification.created_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"notification {notification.notification_id!r} exists already") from exc

    # --- export -----------------------------------------------------------------------

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

    def household_records(self, household_id: str) -> HouseholdRecords:
        hid = (household_id,)
        with self._snapshot() as conn:
            household = conn.execute(
                f"SELECT {HOUSEHOLD_COLUMNS} FROM households WHERE id = ?",  # noqa: S608
                hid,
            ).fetchone()
            if household is None:
                raise NotFound(f"household {household_id!r} not found")
            members = conn.execute(
                f"SELECT {MEMBER_COLUMNS} FROM members WHERE household_id = ?"  # noqa: S608
                " ORDER BY created_at, member_id",
                hid,
            ).fetchall()
            # The embedding column is not even read: an export carries voiceprint metadata only.
            prints = conn.execute(
                "SELECT household_id, member_id, encoder, dim, n_utterances, created_at FROM voiceprints"
                " WHERE household_id = ? ORDER BY member_id",
                hid,
            ).fetchall()
            policies = conn.execute(
                "SELECT household_id, body, created_at FROM policies WHERE household_id = ?"
                " ORDER BY revision",
                hid,
            ).fetchall()
            pin = conn.execute(
                f"SELECT {PIN_COLUMNS} FROM pins WHERE household_id = ?",  # noqa: S608
                hid,
            ).fetchone()
            decisions = conn.execute(
                "SELECT decision_id, body FROM decisions WHERE household_id = ? ORDER BY seq", hid
            ).fetchall()
            spend = conn.execute(
                "SELECT household_id, member_id, amount_minor, decision_id, at, exempt FROM spend"
                " WHERE household_id = ? ORDER BY seq",
                hid,
            ).fetchall()
            challenges = conn.execute(
                "SELECT challenge_id, body FROM challenges WHERE household_id = ?"
                " ORDER BY created_at, challenge_id",
                hid,
            ).fetchall()
            notifications = conn.execute(
                f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE household_id = ?"  # noqa: S608
                " ORDER BY created_at, notification_id",
                hid,
            ).fetchall()
            audit = conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit WHERE household_id = ? ORDER BY seq",  # noqa: S608
                hid,
            ).fetchall()
            anchor = self._anchor(conn, household_id)
        # Opened after the snapshot ends: no cryptography while the connection is held.
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
        with self._write() as conn:
            row = self._tombstone_row(conn, household_id)
            if row is None:
                self._require_household(conn, household_id)
                (count,) = conn.execute(
                    "SELECT COUNT(*) FROM audit WHERE household_id = ?", (household_id,)
                ).fetchone()
                _, head = self._chain_head(conn, household_id)
                for table in self._ERASE_ORDER:
                    conn.execute(f"DELETE FROM {table} WHERE household_id = ?", (household_id,))  # noqa: S608
                conn.execute("DELETE FROM households WHERE id = ?", (household_id,))
                conn.execute(
                    "INSERT INTO household_tombstones (household_id, erased_at, audit_entries, audit_head)"
                    " VALUES (?, ?, ?, ?)",
                    (household_id, at_iso, int(count), head),
                )
                row = (household_id, at_iso, int(count), head)
                erased_now = True
        # After the commit: if destroying the key fails, the call fails and a retry (idempotent)
        # destroys it; the rows are gone either way.
        self._sealer.destroy(household_id)
        return tombstone_from_row(row), erased_now

    # --- retention --------------------------------------------------------------------

    def purge_household(self, household_id: str, cutoff: datetime) -> PurgeResult:
        before = format_ts(cutoff)
        hid = household_id
        with self._write() as conn:
            row = conn.execute(
                "SELECT MAX(passed_seq) FROM challenges WHERE household_id = ?", (hid,)
            ).fetchone()
            last_passed = 0 if row is None or row[0] is None else int(row[0])
            # Exempt spend after the last passed challenge still counts towards the low-value
            # exemption's cumulative limit, however old; it and its decision stay.
            spend = conn.execute(
                "DELETE FROM spend WHERE household_id = ? AND at < ? AND NOT (exempt AND seq > ?)",
                (hid, before, last_passed),
            ).rowcount
            decisions = conn.execute(
                "DELETE FROM decisions WHERE household_id = ? AND created_at < ?"
                " AND decision_id NOT IN (SELECT decision_id FROM spend WHERE household_id = ?)",
                (hid, before, hid),
            ).rowcount
            # The last passed challenge stays: it is where the exemption's count restarts.
            challenges = conn.execute(
                "DELETE FROM challenges WHERE household_id = ? AND expires_at < ?"
                " AND (passed_seq IS NULL OR passed_seq < ?)",
                (hid, before, last_passed),
            ).rowcount
            notifications = conn.execute(
                "DELETE FROM notifications WHERE household_id = ? AND created_at < ?", (hid, before)
            ).rowcount
            audit = self._purge_audit_prefix(conn, hid, before)
            anchor = self._anchor(conn, hid)
        return PurgeResult(hid, decisions, spend, audit, challenges, notifications, anchor)

    @staticmethod
    def _purge_audit_prefix(conn: sqlite3.Connection, household_id: str, before: str) -> int:
        """Deletes the longest prefix of the chain older than `before` and moves the anchor to its
        last entry. Only a prefix: an old entry after a newer one (clock skew) waits for the next run."""
        row = conn.execute(
            "SELECT MIN(seq) FROM audit WHERE household_id = ? AND at >= ?", (household_id, before)
        ).fetchone()
        if row is None or row[0] is None:
            row = conn.execute(
                "SELECT MAX(seq) FROM audit WHERE household_id = ?", (household_id,)
            ).fetchone()
            if row is None or row[0] is None:
                return 0
            last = int(row[0])
        else:
            last = int(row[0]) - 1
        tail = conn.execute(
            "SELECT seq, entry_hash, at FROM audit WHERE household_id = ? AND seq = ?", (household_id, last)
        ).fetchone()
        if tail is None:  # nothing older than the first kept entry is left
            return 0
        purged = conn.execute(
            "DELETE FROM audit WHERE household_id = ? AND seq <= ?", (household_id, last)
        ).rowcount
        conn.execute(
            "INSERT INTO audit_anchors (household_id, seq, entry_hash, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (household_id) DO UPDATE SET seq = excluded.seq,"
            " entry_hash = excluded.entry_hash, at = excluded.at",
            (household_id, int(tail[0]), str(tail[1]), str(tail[2])),
        )
        return int(purged)

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                if self._owned_keys is not None:
                    self._owned_keys.close()

    def __enter__(self) -> SqliteStore:
        return self


def _conforms(store: SqliteStore, keys: SqliteKeyStore) -> tuple[Store, PrivacyStore, WrappedKeyStore]:
    """Never called: makes mypy prove that SqliteStore implements the Store and PrivacyStore
    protocols exactly, and SqliteKeyStore the WrappedKeyStore protocol."""
    return store, store, keys
