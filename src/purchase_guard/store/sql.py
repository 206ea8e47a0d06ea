"""`SqlStore`: every query and write of the store, written once for SQLite and PostgreSQL.

The two databases run the same schema (`store/migrations/*.sql`), the same stored forms
(fixed-width ISO UTC text timestamps, JSON bodies from `codec`, values sealed with the same
associated data) and, here, the same SQL. What differs is a handful of hooks a backend sets:

- `_PARAM`: the driver's placeholder (`?` for sqlite3, `%s` for psycopg); queries are written
  with `?` and translated once.
- `_BYTE_ORDER`: appended to text columns in ORDER BY so both list in byte order (PostgreSQL's
  `COLLATE "C"`; SQLite already does).
- `_ROW_LOCK` / `_ROW_LOCK_EXCLUSIVE`: appended to the household-row read that starts a write
  which must be ordered with others of the same household (appending to the audit chain,
  numbering a policy revision, purging, erasing). PostgreSQL takes `FOR NO KEY UPDATE` /
  `FOR UPDATE`; SQLite needs nothing, since `BEGIN IMMEDIATE` already holds the one write lock.
- `_reading()`, `_tx()`, `_snapshot()`: how a backend reads, runs one write transaction
  (committed on success, rolled back on any error, driver failures raised as `Unavailable`),
  and runs a consistent read-only snapshot; `_batched_tx()` and `_batched_reading()`, the same
  with statements sent in batches (PostgreSQL's pipeline mode; SQLite runs them one by one).
- `_INTEGRITY_ERRORS` and `_is_foreign_key_violation`: how a backend reports a constraint.
- `household_lock` and `close`, which are about connections and processes, not SQL.

Sealing: personal values are sealed before a write transaction starts and opened after a read
has given its connection back, so no cryptography (and no data-key lookup) runs while a
connection or transaction is held. Every method that reads or writes household data filters
by the household id in the query itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from purchase_guard.audit.chain import GENESIS, AuditAnchor, AuditEntry, entry_hash
from purchase_guard.domain import (
    AdaptationSample,
    Challenge,
    ChallengeMethod,
    ChallengeStatus,
    Credential,
    Decision,
    Event,
    Household,
    Member,
    Notification,
    PinState,
    Policy,
    SpendSnapshot,
    Voiceprint,
)
from purchase_guard.errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from purchase_guard.sealing import KeyRing
from purchase_guard.serial import format_ts, parse_ts
from purchase_guard.store import codec
from purchase_guard.store.protocol import (
    AudioPrint,
    DeadLetter,
    DecidingFacts,
    Delivery,
    HouseholdRecords,
    OpeningReads,
    PolicyRevision,
    PurgeResult,
    SpendEntry,
    StoredAudioInfo,
    StoredDecision,
    Tombstone,
    VoiceprintInfo,
    VoiceprintUpdate,
    Webhook,
)
from purchase_guard.store.rows import (
    AUDIT_COLUMNS,
    CREDENTIAL_COLUMNS,
    HOUSEHOLD_COLUMNS,
    MEMBER_COLUMNS,
    NOTIFICATION_COLUMNS,
    PIN_COLUMNS,
    Row,
    SealedRows,
    audit_entry_from_row,
    credential_from_row,
    tombstone_from_row,
)


def _opt_ts(when: datetime | None) -> str | None:
    return None if when is None else format_ts(when)


# next_attempt_at of a delivery due at once: sorts before every real timestamp, so a new or replayed
# delivery is due whatever the decision clock says (deliveries run on wall time; the decision clock
# may be a test's frozen or shifted one).
_DUE_AT_ONCE = "0000-01-01T00:00:00.000000Z"
# Ids bound per IN (...) list: under SQLite's oldest limit of 999 host parameters.
_IN_CHUNK = 500


def request_key(caller_id: str, request_id: str) -> str:
    """What a decision's request id is unique by: the caller's own namespace, so one caller can
    neither collide with nor replay another's ids. '|' is not an id character (ids.py)."""
    return f"{caller_id}|{request_id}" if caller_id else request_id


# Children before parents, for the foreign keys; audit entries stay (sealed) after erasure.
_ERASE_ORDER = (
    "outbox",
    "event_counters",
    "webhooks",
    "credentials",
    "audio_prints",
    "issued_digits",
    "digit_templates",
    "adaptation_samples",
    "spend",
    "decisions",
    "voiceprints",
    "members",
    "policies",
    "pins",
    "challenges",
    "notifications",
)


class SqlStore(SealedRows):
    """The Store protocol over a SQL connection; a backend subclass supplies the hooks above.

    See `store.protocol` for the contract of each public method.
    """

    _PARAM: ClassVar[str] = "?"
    _BYTE_ORDER: ClassVar[str] = ""
    _ROW_LOCK: ClassVar[str] = ""
    _ROW_LOCK_EXCLUSIVE: ClassVar[str] = ""
    _INTEGRITY_ERRORS: ClassVar[tuple[type[Exception], ...]] = ()
    # Text values of a group joined with ',' (ids never hold one): SQLite's group_concat, or
    # PostgreSQL's string_agg.
    _JOIN_IDS: ClassVar[str] = "group_concat({}, ',')"

    # --- hooks ----------------------------------------------------------------------

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _batched_tx(self) -> AbstractContextManager[Any]:
        """`_tx()` whose statements the driver may send in batches: a statement's result is
        there when it is read, and reading one waits for every statement sent before it (the
        order the database runs them in is the order they are issued). A network backend
        sends what is queued only when a result is read or at COMMIT (PostgreSQL's pipeline
        mode), so a write that reads everything it needs first and then writes makes two
        round trips. In-process SQLite has nothing to batch: the plain transaction."""
        return self._tx()

    def _batched_reading(self) -> AbstractContextManager[Any]:
        """`_reading()` with the statements sent in batches as `_batched_tx` does; for reads
        that do not depend on each other."""
        return self._reading()

    @staticmethod
    def _is_foreign_key_violation(exc: Exception) -> bool:
        raise NotImplementedError

    # --- helpers --------------------------------------------------------------------

    @classmethod
    def _sql(cls, text: str) -> str:
        # No query here holds a literal "?", so every one is a placeholder.
        return text if cls._PARAM == "?" else text.replace("?", cls._PARAM)

    @classmethod
    def _run(cls, conn: Any, text: str, params: Iterable[object] = ()) -> Any:
        return conn.execute(cls._sql(text), tuple(params))

    @classmethod
    def _rowcount(cls, cursor: Any) -> int:
        """Rows a write changed; in a batching transaction this waits for its batch to be sent."""
        return int(cursor.rowcount)

    def _ordered(self, *columns: str) -> str:
        return ", ".join(column + self._BYTE_ORDER for column in columns)

    @classmethod
    def _household_row(
        cls, conn: Any, household_id: str, *, lock: bool = False, exclusive: bool = False
    ) -> bool:
        suffix = cls._ROW_LOCK_EXCLUSIVE if exclusive else cls._ROW_LOCK if lock else ""
        found = cls._run(conn, "SELECT 1 FROM households WHERE id = ?" + suffix, (household_id,)).fetchone()
        return found is not None

    @classmethod
    def _require_household(cls, conn: Any, household_id: str, *, lock: bool = False) -> None:
        if not cls._household_row(conn, household_id, lock=lock):
            raise NotFound(f"household {household_id!r} not found")

    @classmethod
    def _require_member(cls, conn: Any, household_id: str, member_id: str) -> None:
        found = cls._run(
            conn, "SELECT 1 FROM members WHERE household_id = ? AND member_id = ?", (household_id, member_id)
        ).fetchone()
        if found is None:
            raise NotFound(f"member {member_id!r} not found")

    @classmethod
    def _challenge_exists(cls, conn: Any, household_id: str, challenge_id: str) -> bool:
        found = cls._run(
            conn,
            "SELECT 1 FROM challenges WHERE household_id = ? AND challenge_id = ?",
            (household_id, challenge_id),
        ).fetchone()
        return found is not None

    def _check_household(self, household_id: str) -> None:
        """NotFound before sealing anything: sealing creates the household's data key, and a key
        must not be created for a household that does not exist. The write re-checks inside its
        transaction; this read only keeps stray keys from being made, so it is skipped when the
        household's key is in the key ring's cache (sealing then creates none): on the decision
        path, which has just read the household, that saves a round trip per decision."""
        if isinstance(self._sealer, KeyRing) and self._sealer.holds_key(household_id):
            return
        with self._reading() as conn:
            self._require_household(conn, household_id)

    # --- households -----------------------------------------------------------------

    def create_household(self, household: Household, admin_token_hash: str) -> None:
        hid = household.household_id
        taken = f"household {hid!r} or its admin token exists already"
        if self.get_tombstone(hid) is not None:
            # An erased id is never reused: its kept audit entries would join the new chain.
            raise AlreadyExists(taken)
        name = self._seal(hid, household.name, codec.household_name_aad(hid))
        try:
            with self._tx() as conn:
                if self._tombstone_row(conn, hid) is not None:
                    raise AlreadyExists(taken)
                self._run(
                    conn,
                    "INSERT INTO households"
                    " (id, name, time_zone, currency, retain_audio, admin_token_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        except self._INTEGRITY_ERRORS as exc:
            # Either the id or the token hash is taken; say which without echoing the hash.
            raise AlreadyExists(taken) from exc

    def get_household(self, household_id: str) -> Household:
        with self._reading() as conn:
            row = self._run(
                conn,
                f"SELECT {HOUSEHOLD_COLUMNS} FROM households WHERE id = ?",
                (household_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"household {household_id!r} not found")
        return self._household(row)

    def household_for_token_hash(self, token_hash: str) -> str | None:
        with self._reading() as conn:
            row = self._run(
                conn, "SELECT id FROM households WHERE admin_token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else str(row[0])

    # --- members and voiceprints ----------------------------------------------------

    def add_member(self, member: Member) -> None:
        hid = member.household_id
        self._check_household(hid)
        name = self._seal(hid, member.display_name, codec.member_name_aad(member.member_id))
        try:
            with self._tx() as conn:
                self._require_household(conn, hid)
                self._run(
                    conn,
                    f"INSERT INTO members ({MEMBER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        member.member_id,
                        hid,
                        name,
                        member.role.value,
                        member.is_parent,
                        format_ts(member.created_at),
                    ),
                )
        except self._INTEGRITY_ERRORS as exc:
            raise AlreadyExists(f"member {member.member_id!r} exists already") from exc

    def get_member(self, household_id: str, member_id: str) -> Member:
        with self._reading() as conn:
            row = self._run(
                conn,
                f"SELECT {MEMBER_COLUMNS} FROM members WHERE household_id = ? AND member_id = ?",
                (household_id, member_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"member {member_id!r} not found")
        return self._member(row)

    def _members_query(self, conn: Any, household_id: str) -> Any:
        return self._run(
            conn,
            f"SELECT {MEMBER_COLUMNS} FROM members WHERE household_id = ?"
            f" ORDER BY {self._ordered('created_at', 'member_id')}",
            (household_id,),
        )

    def list_members(self, household_id: str) -> list[Member]:
        with self._reading() as conn:
            rows = self._members_query(conn, household_id).fetchall()
        return [self._member(r) for r in rows]

    def remove_member(self, household_id: str, member_id: str) -> None:
        with self._tx() as conn:
            self._run(
                conn,
                "DELETE FROM adaptation_samples WHERE household_id = ? AND member_id = ?",
                (household_id, member_id),
            )
            self._run(
                conn,
                "DELETE FROM voiceprints WHERE household_id = ? AND member_id = ?",
                (household_id, member_id),
            )
            gone = self._run(
                conn,
                "DELETE FROM members WHERE household_id = ? AND member_id = ?",
                (household_id, member_id),
            )
            if gone.rowcount == 0:
                raise NotFound(f"member {member_id!r} not found")

    def put_voiceprint(self, voiceprint: Voiceprint) -> None:
        hid, mid = voiceprint.household_id, voiceprint.member_id
        with self._reading() as conn:
            self._require_member(conn, hid, mid)
        dim = len(voiceprint.embedding)
        blob = self._sealer.seal(
            hid,
            codec.pack_embedding(voiceprint.embedding),
            codec.voiceprint_aad(mid, voiceprint.encoder, dim),
        )
        try:
            with self._tx() as conn:
                self._require_member(conn, hid, mid)
                self._run(
                    conn,
                    "INSERT INTO voiceprints (member_id, household_id, encoder, embedding, dim,"
                    " n_utterances, created_at, expires_at, expiry_notified_at, child_like,"
                    " role_confirmed_by, adapted, n_adapted, adapted_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL, 0, NULL)"
                    " ON CONFLICT (member_id) DO UPDATE SET encoder = excluded.encoder,"
                    " embedding = excluded.embedding, dim = excluded.dim,"
                    " n_utterances = excluded.n_utterances, created_at = excluded.created_at,"
                    " expires_at = excluded.expires_at, expiry_notified_at = NULL,"
                    " child_like = excluded.child_like, role_confirmed_by = excluded.role_confirmed_by,"
                    # A new enrollment is a new print: what adapted the old one does not carry over.
                    " adapted = NULL, n_adapted = 0, adapted_at = NULL",
                    (
                        mid,
                        hid,
                        voiceprint.encoder,
                        blob,
                        dim,
                        voiceprint.n_utterances,
                        format_ts(voiceprint.created_at),
                        _opt_ts(voiceprint.expires_at),
                        voiceprint.child_like,
                        voiceprint.role_confirmed_by,
                    ),
                )
        except self._INTEGRITY_ERRORS as exc:
            if self._is_foreign_key_violation(exc):
                # The member was removed between the check and the insert.
                raise NotFound(f"member {mid!r} not found") from exc
            raise

    def _voiceprints_query(self, conn: Any, household_id: str) -> Any:
        return self._run(
            conn,
            "SELECT member_id, household_id, encoder, embedding, dim, n_utterances, created_at,"
            " expires_at, child_like, role_confirmed_by, adapted, n_adapted, adapted_at"
            " FROM voiceprints WHERE household_id = ?"
            f" ORDER BY {self._ordered('member_id')}",
            (household_id,),
        )

    def _voiceprint(self, r: Row) -> Voiceprint:
        return Voiceprint(
            member_id=r[0],
            household_id=r[1],
            encoder=r[2],
            embedding=codec.unpack_embedding(
                self._sealer.open(r[1], bytes(r[3]), codec.voiceprint_aad(r[0], r[2], int(r[4]))),
                int(r[4]),
            ),
            n_utterances=int(r[5]),
            created_at=parse_ts(r[6]),
            expires_at=None if r[7] is None else parse_ts(r[7]),
            child_like=bool(r[8]),
            role_confirmed_by=r[9],
            adapted=self._adapted(r[1], r[0], r[2], int(r[4]), r[10], int(r[11])),
            adapted_at=None if r[12] is None else parse_ts(r[12]),
        )

    def list_voiceprints(self, household_id: str) -> list[Voiceprint]:
        with self._reading() as conn:
            rows = self._voiceprints_query(conn, household_id).fetchall()
        return [self._voiceprint(r) for r in rows]

    def _adapted(
        self, household_id: str, member_id: str, encoder: str, dim: int, blob: Any, n: int
    ) -> tuple[tuple[float, ...], ...]:
        if blob is None or n == 0:
            return ()
        opened = self._sealer.open(household_id, bytes(blob), codec.adapted_aad(member_id, encoder, dim, n))
        return codec.unpack_rows(opened, dim, n)

    def reset_adaptation(self, household_id: str, member_id: str) -> int:
        with self._tx() as conn:
            self._require_member(conn, household_id, member_id)
            row = self._run(
                conn,
                "SELECT n_adapted FROM voiceprints WHERE household_id = ? AND member_id = ?",
                (household_id, member_id),
            ).fetchone()
            self._run(
                conn,
                "UPDATE voiceprints SET adapted = NULL, n_adapted = 0, adapted_at = NULL"
                " WHERE household_id = ? AND member_id = ?",
                (household_id, member_id),
            )
            self._run(
                conn,
                "DELETE FROM adaptation_samples WHERE household_id = ? AND member_id = ?",
                (household_id, member_id),
            )
            return 0 if row is None else int(row[0])

    def get_adaptation_sample(self, household_id: str, challenge_id: str) -> AdaptationSample | None:
        with self._reading() as conn:
            row = self._run(
                conn,
                "SELECT member_id, sample FROM adaptation_samples"
                " WHERE household_id = ? AND challenge_id = ?",
                (household_id, challenge_id),
            ).fetchone()
        if row is None:
            return None
        opened = self._sealer.open(
            household_id, bytes(row[1]), codec.adaptation_sample_aad(challenge_id, str(row[0]))
        )
        return codec.adaptation_sample_from_bytes(opened)

    def purge_adaptation_samples(self, now: datetime) -> int:
        with self._tx() as conn:
            gone = self._run(conn, "DELETE FROM adaptation_samples WHERE expires_at <= ?", (format_ts(now),))
            return int(gone.rowcount)

    @classmethod
    def _drop_sample_if_closed(cls, conn: Any, challenge: Challenge) -> None:
        # A sample lives only while its challenge can still pass.
        if challenge.status not in (ChallengeStatus.PENDING, ChallengeStatus.APPROVED):
            cls._run(
                conn,
                "DELETE FROM adaptation_samples WHERE household_id = ? AND challenge_id = ?",
                (challenge.household_id, challenge.challenge_id),
            )

    def confirm_voice_role(self, household_id: str, member_id: str, parent_member_id: str) -> bool:
        with self._tx() as conn:
            cursor = self._run(
                conn,
                "UPDATE voiceprints SET role_confirmed_by = ? WHERE household_id = ? AND member_id = ?",
                (parent_member_id, household_id, member_id),
            )
            return bool(cursor.rowcount == 1)

    # --- digit templates ------------------------------------------------------------

    def put_digit_templates(
        self,
        household_id: str,
        member_id: str,
        features: str,
        templates: bytes,
        at: datetime,
        expires_at: datetime | None,
    ) -> None:
        with self._reading() as conn:
            self._require_member(conn, household_id, member_id)
        sealed = self._sealer.seal(household_id, templates, codec.digit_templates_aad(member_id, features))
        try:
            with self._tx() as conn:
                self._require_member(conn, household_id, member_id)
                self._run(
                    conn,
                    "INSERT INTO digit_templates (member_id, household_id, features, templates, created_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (member_id) DO UPDATE SET features = excluded.features,"
                    " templates = excluded.templates, created_at = excluded.created_at,"
                    " expires_at = excluded.expires_at",
                    (member_id, household_id, features, sealed, format_ts(at), _opt_ts(expires_at)),
                )
        except self._INTEGRITY_ERRORS as exc:
            if self._is_foreign_key_violation(exc):
                raise NotFound(f"member {member_id!r} not found") from exc
            raise

    def digit_template_members(self, household_id: str) -> frozenset[str]:
        with self._reading() as conn:
            rows = self._run(
                conn, "SELECT member_id FROM digit_templates WHERE household_id = ?", (household_id,)
            ).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def get_digit_templates(self, household_id: str, member_id: str) -> tuple[str, bytes] | None:
        with self._reading() as conn:
            row = self._run(
                conn,
                "SELECT features, templates FROM digit_templates WHERE household_id = ? AND member_id = ?",
                (household_id, member_id),
            ).fetchone()
        if row is None:
            return None
        features = str(row[0])
        aad = codec.digit_templates_aad(member_id, features)
        return features, self._sealer.open(household_id, bytes(row[1]), aad)

    def voiceprints_expiring(self, before: datetime, notified: bool) -> list[tuple[str, str, datetime]]:
        """(household, member, expires_at) of voiceprints expiring before `before`; with
        `notified=False` only those whose parents were not yet reminded."""
        query = (
            "SELECT household_id, member_id, expires_at FROM voiceprints"
            " WHERE expires_at IS NOT NULL AND expires_at < ?"
        )
        if not notified:
            query += " AND expiry_notified_at IS NULL"
        with self._reading() as conn:
            rows = self._run(
                conn, query + f" ORDER BY {self._ordered('household_id', 'member_id')}", (format_ts(before),)
            ).fetchall()
        return [(str(r[0]), str(r[1]), parse_ts(r[2])) for r in rows]

    def mark_expiry_notified(self, household_id: str, member_id: str, notification: Notification) -> bool:
        """Records the reminder and its notification in one transaction; False if already reminded."""
        message = self._seal(
            household_id, notification.message, codec.notification_aad(notification.notification_id)
        )
        with self._tx() as conn:
            cursor = self._run(
                conn,
                "UPDATE voiceprints SET expiry_notified_at = ? WHERE household_id = ? AND member_id = ?"
                " AND expiry_notified_at IS NULL",
                (format_ts(notification.created_at), household_id, member_id),
            )
            if cursor.rowcount != 1:
                return False
            self._insert_notification(conn, notification, message)
            return True

    def delete_expired_voiceprints(self, now: datetime) -> list[tuple[str, str]]:
        """Deletes every voiceprint past its expiry; returns (household, member) of each."""
        at = format_ts(now)
        with self._tx() as conn:
            rows = self._run(
                conn,
                "SELECT household_id, member_id FROM voiceprints"
                " WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (at,),
            ).fetchall()
            self._run(conn, "DELETE FROM voiceprints WHERE expires_at IS NOT NULL AND expires_at <= ?", (at,))
            self._run(
                conn, "DELETE FROM digit_templates WHERE expires_at IS NOT NULL AND expires_at <= ?", (at,)
            )
        return [(str(r[0]), str(r[1])) for r in rows]

    def renew_voiceprint(self, household_id: str, member_id: str, expires_at: datetime) -> bool:
        with self._tx() as conn:
            cursor = self._run(
                conn,
                "UPDATE voiceprints SET expires_at = ?, expiry_notified_at = NULL"
                " WHERE household_id = ? AND member_id = ? AND expires_at IS NOT NULL",
                (format_ts(expires_at), household_id, member_id),
            )
            if cursor.rowcount != 1:
                return False
            # The digit templates are the same child's voice: they live exactly as long.
            self._run(
                conn,
                "UPDATE digit_templates SET expires_at = ? WHERE household_id = ? AND member_id = ?"
                " AND expires_at IS NOT NULL",
                (format_ts(expires_at), household_id, member_id),
            )
            return True

    # --- credentials ----------------------------------------------------------------

    def add_credential(self, credential: Credential, token_hash: str) -> None:
        try:
            with self._tx() as conn:
                if credential.household_id is not None:
                    self._require_household(conn, credential.household_id)
                self._run(
                    conn,
                    f"INSERT INTO credentials ({CREDENTIAL_COLUMNS}, token_hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        credential.credential_id,
                        credential.kind.value,
                        credential.household_id,
                        credential.member_id,
                        credential.device_id,
                        credential.label,
                        format_ts(credential.created_at),
                        _opt_ts(credential.revoked_at),
                        token_hash,
                    ),
                )
        except self._INTEGRITY_ERRORS as exc:
            raise AlreadyExists(f"credential {credential.credential_id!r} exists already") from exc

    def credential_for_token_hash(self, token_hash: str) -> Credential | None:
        """The live (not revoked) credential with this token hash."""
        with self._reading() as conn:
            row = self._run(
                conn,
                f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
        return None if row is None else credential_from_row(row)

    def list_credentials(self, household_id: str | None) -> list[Credential]:
        """A household's credentials (revoked ones too); None: the backend credentials."""
        where = "household_id = ?" if household_id is not None else "household_id IS NULL"
        params = (household_id,) if household_id is not None else ()
        with self._reading() as conn:
            rows = self._run(
                conn,
                f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE {where}"
                f" ORDER BY {self._ordered('created_at', 'credential_id')}",
                params,
            ).fetchall()
        return [credential_from_row(r) for r in rows]

    def revoke_credential(self, household_id: str | None, credential_id: str, at: datetime) -> Credential:
        """Revokes it (idempotent); NotFound unless it belongs to `household_id` (None: backend)."""
        where = "household_id = ?" if household_id is not None else "household_id IS NULL"
        scope = (household_id,) if household_id is not None else ()
        with self._tx() as conn:
            self._run(
                conn,
                "UPDATE credentials SET revoked_at = ?"
                f" WHERE credential_id = ? AND {where} AND revoked_at IS NULL",
                (format_ts(at), credential_id, *scope),
            )
            row = self._run(
                conn,
                f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE credential_id = ? AND {where}",
                (credential_id, *scope),
            ).fetchone()
        if row is None:
            raise NotFound(f"credential {credential_id!r} not found")
        return credential_from_row(row)

    # --- policy and PIN -------------------------------------------------------------

    def put_policy(self, household_id: str, policy: Policy, at: datetime) -> Policy:
        with self._tx() as conn:
            # The row lock makes two concurrent puts take revisions n+1 and n+2 instead of colliding.
            self._require_household(conn, household_id, lock=True)
            row = self._run(
                conn, "SELECT MAX(revision) FROM policies WHERE household_id = ?", (household_id,)
            ).fetchone()
            revision = (0 if row is None or row[0] is None else int(row[0])) + 1
            stored = replace(policy, revision=revision)
            self._run(
                conn,
                "INSERT INTO policies (household_id, revision, body, created_at) VALUES (?, ?, ?, ?)",
                (household_id, revision, codec.policy_to_json(stored), format_ts(at)),
            )
        return stored

    def get_policy(self, household_id: str, revision: int | None = None) -> Policy | None:
        with self._reading() as conn:
            if revision is None:
                row = self._run(
                    conn,
                    "SELECT body FROM policies WHERE household_id = ? ORDER BY revision DESC LIMIT 1",
                    (household_id,),
                ).fetchone()
            else:
                row = self._run(
                    conn,
                    "SELECT body FROM policies WHERE household_id = ? AND revision = ?",
                    (household_id, revision),
                ).fetchone()
        return None if row is None else codec.policy_from_json(row[0])

    def put_pin(self, state: PinState) -> None:
        self._check_household(state.household_id)
        sealed = self._seal(state.household_id, state.pin_hash, codec.pin_hash_aad(state.household_id))
        with self._tx() as conn:
            self._require_household(conn, state.household_id)
            self._upsert_pin(conn, state, sealed)

    @classmethod
    def _upsert_pin(cls, conn: Any, state: PinState, sealed_hash: str) -> None:
        cls._run(
            conn,
            f"INSERT INTO pins ({PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (household_id) DO UPDATE SET pin_hash = excluded.pin_hash,"
            " set_at = excluded.set_at, failures = excluded.failures, next_try_at = excluded.next_try_at,"
            " disabled_at = excluded.disabled_at, peppered = excluded.peppered",
            (
                state.household_id,
                sealed_hash,
                format_ts(state.set_at),
                state.failures,
                _opt_ts(state.next_try_at),
                _opt_ts(state.disabled_at),
                state.peppered,
            ),
        )

    @classmethod
    def _pin_budget_matches(cls, conn: Any, household_id: str, expected: PinState) -> bool:
        """The stored PIN is still the one (and the count) a decision was judged on."""
        row = cls._run(
            conn, "SELECT failures, set_at FROM pins WHERE household_id = ?", (household_id,)
        ).fetchone()
        return row is not None and int(row[0]) == expected.failures and row[1] == format_ts(expected.set_at)

    def digits_key(self, household_id: str) -> bytes:
        return self._sealer.derive(household_id, "issued-digits")

    def pin_pepper(self, household_id: str) -> bytes:
        """The household's PIN pepper (challenge/pin.py), derived from its data key."""
        return self._sealer.derive(household_id, "pin-pepper")

    def seal_legacy_pins(self) -> int:
        """Seals PIN hashes written before they were sealed (schema v2); returns how many. Run at
        open by each backend, so no copy of the database made afterwards holds a testable hash."""
        with self._reading() as conn:
            rows = self._run(conn, "SELECT household_id, pin_hash FROM pins").fetchall()
        legacy = [(str(r[0]), str(r[1])) for r in rows if not codec.is_sealed_text(str(r[1]))]
        for household_id, pin_hash in legacy:
            sealed = self._seal(household_id, pin_hash, codec.pin_hash_aad(household_id))
            with self._tx() as conn:
                self._run(
                    conn,
                    "UPDATE pins SET pin_hash = ? WHERE household_id = ? AND pin_hash = ?",
                    (sealed, household_id, pin_hash),
                )
        return len(legacy)

    def get_pin(self, household_id: str) -> PinState | None:
        with self._reading() as conn:
            row = self._run(
                conn,
                f"SELECT {PIN_COLUMNS} FROM pins WHERE household_id = ?",
                (household_id,),
            ).fetchone()
        return None if row is None else self._pin(row)

    # --- decisions, spend and audit -------------------------------------------------

    @classmethod
    def _stored_decision_query(cls, conn: Any, household_id: str, kind: str, request_id: str) -> Any:
        """The cursor of the stored-decision read (body, request digest, decision id), unread."""
        return cls._run(
            conn,
            "SELECT body, request_digest, decision_id FROM decisions"
            " WHERE household_id = ? AND kind = ? AND request_id = ?",
            (household_id, kind, request_id),
        )

    @classmethod
    def _stored_decision(cls, conn: Any, household_id: str, kind: str, request_id: str) -> Row | None:
        row: Row | None = cls._stored_decision_query(conn, household_id, kind, request_id).fetchone()
        return row

    def get_decision(
        self, household_id: str, kind: str, request_id: str, caller_id: str = ""
    ) -> StoredDecision | None:
        with self._reading() as conn:
            row = self._stored_decision(conn, household_id, kind, request_key(caller_id, request_id))
        return self._stored(household_id, row)

    def _stored(self, household_id: str, row: Row | None) -> StoredDecision | None:
        """The stored decision of a `_stored_decision_query` row (None for no row)."""
        if row is None:
            return None
        return StoredDecision(decision=self._decision(household_id, row[2], row[0]), request_digest=row[1])

    def opening_reads(
        self, household_id: str, kind: str, request_id: str, caller_id: str = ""
    ) -> OpeningReads:
        # Four independent reads asked together: one round trip on a batching backend.
        with self._batched_reading() as conn:
            asked = (
                self._run(conn, f"SELECT {HOUSEHOLD_COLUMNS} FROM households WHERE id = ?", (household_id,)),
                self._stored_decision_query(conn, household_id, kind, request_key(caller_id, request_id)),
                self._members_query(conn, household_id),
                self._voiceprints_query(conn, household_id),
            )
            household_row, stored_row = asked[0].fetchone(), asked[1].fetchone()
            member_rows, print_rows = asked[2].fetchall(), asked[3].fetchall()
        if household_row is None:
            raise NotFound(f"household {household_id!r} not found")
        household = self._household(household_row)
        stored = self._stored(household_id, stored_row)
        members: tuple[Member, ...] | None
        voiceprints: tuple[Voiceprint, ...] | None
        try:
            members = tuple(self._member(r) for r in member_rows)
            voiceprints = tuple(self._voiceprint(r) for r in print_rows)
        except Exception:
            # Opened where the caller reads them on their own, so this failure (say, a print that
            # does not open) is met where the caller handles it, as it would have been.
            members = voiceprints = None
        return OpeningReads(household, stored, members, voiceprints)

    # The head of a household's chain in one statement: its last audit entry, else (after
    # retention purged every entry) the anchor; no row for a new chain.
    _CHAIN_HEAD = (
        "SELECT seq, entry_hash FROM ("
        " SELECT seq, entry_hash, 0 AS pick FROM"
        "  (SELECT seq, entry_hash FROM audit WHERE household_id = ? ORDER BY seq DESC LIMIT 1) AS last"
        " UNION ALL"
        " SELECT seq, entry_hash, 1 AS pick FROM audit_anchors WHERE household_id = ?"
        ") AS head ORDER BY pick LIMIT 1"
    )

    @staticmethod
    def _head(row: Row | None) -> tuple[int, str]:
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    @classmethod
    def _chain_head(cls, conn: Any, household_id: str) -> tuple[int, str]:
        """(seq, entry hash) of the household's last audit entry; after retention purged every
        entry, the anchor; for a new chain (0, GENESIS)."""
        return cls._head(cls._run(conn, cls._CHAIN_HEAD, (household_id, household_id)).fetchone())

    def record_decision(
        self,
        decision: Decision,
        request_digest: str,
        audit_body: str,
        spend: SpendEntry | None = None,
        challenge: Challenge | None = None,
        *,
        expected_status: ChallengeStatus | None = None,
        notifications: tuple[Notification, ...] = (),
        pin_update: tuple[PinState, PinState] | None = None,
        audio_print: AudioPrint | None = None,
        issued_digits: str | None = None,
        events: tuple[Event, ...] = (),
        adaptation_sample: AdaptationSample | None = None,
        voiceprint_update: VoiceprintUpdate | None = None,
    ) -> Decision:
        hid = decision.household_id
        if adaptation_sample is not None and (
            adaptation_sample.household_id != hid
            or challenge is None
            or adaptation_sample.challenge_id != challenge.challenge_id
        ):
            raise InvalidArgument("the adaptation sample must belong to the challenge recorded with it")
        if voiceprint_update is not None and voiceprint_update.household_id != hid:
            raise InvalidArgument("the voiceprint update must belong to the decision's household")
        if any(e.household_id != hid for e in events):
            raise InvalidArgument("events must belong to the decision's household")
        if audio_print is not None and (
            audio_print.household_id != hid or audio_print.decision_id != decision.decision_id
        ):
            raise InvalidArgument("the audio print must belong to the decision it is recorded with")
        if pin_update is not None and (
            pin_update[0].household_id != hid or pin_update[1].household_id != hid
        ):
            raise InvalidArgument("the PIN update must belong to the decision's household")
        if spend is not None and (spend.household_id != hid or spend.decision_id != decision.decision_id):
            raise InvalidArgument("spend entry must belong to the decision it is recorded with")
        if challenge is not None and challenge.household_id != hid:
            raise InvalidArgument("challenge must belong to the decision's household")
        if expected_status is not None and challenge is None:
            raise InvalidArgument("expected_status needs the challenge it is compared on")
        if any(n.household_id != hid for n in notifications):
            raise InvalidArgument("notifications must belong to the decision's household")
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
        messages = [
            self._seal(hid, n.message, codec.notification_aad(n.notification_id)) for n in notifications
        ]
        sealed_pin = (
            None if pin_update is None else self._seal(hid, pin_update[1].pin_hash, codec.pin_hash_aad(hid))
        )
        sealed_print = (
            None
            if audio_print is None
            else self._sealer.seal(hid, audio_print.print, codec.audio_print_aad(audio_print.print_id))
        )
        event_bodies = self._seal_events(hid, events)
        sealed_sample = (
            None
            if adaptation_sample is None
            else self._sealer.seal(
                hid,
                codec.adaptation_sample_to_bytes(adaptation_sample),
                codec.adaptation_sample_aad(adaptation_sample.challenge_id, adaptation_sample.member_id),
            )
        )
        sealed_adapted = None
        if voiceprint_update is not None and voiceprint_update.adapted:
            u = voiceprint_update
            sealed_adapted = self._sealer.seal(
                hid,
                codec.pack_rows(u.adapted),
                codec.adapted_aad(u.member_id, u.encoder, len(u.adapted[0]), len(u.adapted)),
            )
        existing: Row | None = None
        key = request_key(decision.caller_id, decision.request_id)
        try:
            with self._batched_tx() as conn:
                # Everything the writes depend on is asked first, and only then read, so a batching
                # backend sends it as one round trip (and the writes with the COMMIT as one more).
                # The household row lock comes first and orders all appends to this household's
                # chain: the reads after it run under it, so a racing retry of the same request
                # id waits at the lock and then finds the first decision.
                locked = self._run(conn, "SELECT 1 FROM households WHERE id = ?" + self._ROW_LOCK, (hid,))
                stored = self._stored_decision_query(conn, hid, decision.kind, key)
                head = self._run(conn, self._CHAIN_HEAD, (hid, hid))
                queued = self._queued_dedups(conn, hid, events) if events else None
                if locked.fetchone() is None:
                    raise NotFound(f"household {hid!r} not found")
                existing = stored.fetchone()
                chain_head = self._head(head.fetchone())
                already = None if queued is None else {str(r[0]) for r in queued.fetchall()}
                if existing is not None:
                    if existing[1] != request_digest:
                        raise AlreadyExists(
                            f"request id {decision.request_id!r} was used for another request"
                        )
                else:
                    seq = self._append(conn, decision, request_digest, body, sealed_audit, chain_head)
                    if spend is not None:
                        self._insert_spend(conn, spend, seq)
                    if challenge is not None and challenge_body is not None:
                        if expected_status is None:
                            self._upsert_challenge(conn, challenge, challenge_body, seq)
                        elif not self._compare_and_set(conn, challenge, challenge_body, expected_status, seq):
                            # Rolls the whole decision back: it was judged on a state that is gone.
                            raise Aborted(
                                f"challenge {challenge.challenge_id!r} changed while it was answered"
                            )
                        self._drop_sample_if_closed(conn, challenge)
                    if adaptation_sample is not None and sealed_sample is not None and challenge is not None:
                        self._run(
                            conn,
                            "INSERT INTO adaptation_samples (challenge_id, household_id, member_id, sample,"
                            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                            (
                                adaptation_sample.challenge_id,
                                hid,
                                adaptation_sample.member_id,
                                sealed_sample,
                                format_ts(adaptation_sample.created_at),
                                format_ts(challenge.expires_at),
                            ),
                        )
                    if voiceprint_update is not None:
                        self._update_adapted(conn, voiceprint_update, sealed_adapted)
                    for n, message in zip(notifications, messages, strict=True):
                        self._insert_notification(conn, n, message)
                    if pin_update is not None and sealed_pin is not None:
                        # The budget a PIN answer was judged on must still stand: two answers that
                        # both saw "4 wrong so far" cannot both be checked as the fifth.
                        if not self._pin_budget_matches(conn, hid, pin_update[0]):
                            raise Aborted("the household PIN changed while an answer was checked")
                        self._upsert_pin(conn, pin_update[1], sealed_pin)
                    if audio_print is not None and sealed_print is not None:
                        self._run(
                            conn,
                            "INSERT INTO audio_prints (print_id, household_id, decision_id, kind, at, print)"
                            " VALUES (?, ?, ?, ?, ?, ?)",
                            (
                                audio_print.print_id,
                                hid,
                                audio_print.decision_id,
                                audio_print.kind,
                                format_ts(audio_print.at),
                                sealed_print,
                            ),
                        )
                    if events and already is not None:
                        self._queue_events(conn, hid, events, event_bodies, already=already)
                    if issued_digits is not None:
                        self._run(
                            conn,
                            "INSERT INTO issued_digits (household_id, digest, issued_at) VALUES (?, ?, ?)"
                            " ON CONFLICT (household_id, digest)"
                            " DO UPDATE SET issued_at = excluded.issued_at",
                            (hid, issued_digits, format_ts(decision.decided_at)),
                        )
        except self._INTEGRITY_ERRORS as exc:
            raise AlreadyExists(f"decision {decision.decision_id!r} exists already") from exc
        if existing is not None:
            return self._decision(hid, existing[2], existing[0])
        return decision

    @classmethod
    def _append(
        cls,
        conn: Any,
        decision: Decision,
        request_digest: str,
        body: str,
        audit_body: str,
        chain_head: tuple[int, str],
    ) -> int:
        """Stores the decision and appends its audit entry at `chain_head` (read in the same
        transaction, under the household row lock); returns its seq."""
        hid = decision.household_id
        at_iso = format_ts(decision.decided_at)
        last_seq, prev_hash = chain_head
        seq = last_seq + 1
        cls._run(
            conn,
            "INSERT INTO decisions (decision_id, household_id, kind, request_id, request_digest,"
            " outcome, seq, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                decision.decision_id,
                hid,
                decision.kind,
                request_key(decision.caller_id, decision.request_id),
                request_digest,
                decision.outcome.value,
                seq,
                body,
                at_iso,
            ),
        )
        # The hash covers the sealed text as stored, so the chain verifies without any key.
        cls._run(
            conn,
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        return seq

    @classmethod
    def _insert_spend(cls, conn: Any, spend: SpendEntry, seq: int) -> None:
        cls._run(
            conn,
            "INSERT INTO spend (decision_id, household_id, member_id, amount_minor, seq, at, exempt)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                spend.decision_id,
                spend.household_id,
                spend.member_id,
                spend.amount_minor,
                seq,
                format_ts(spend.at),
                spend.exempt,
            ),
        )

    @classmethod
    def _upsert_challenge(cls, conn: Any, challenge: Challenge, body: str, seq: int) -> None:
        owner = cls._run(
            conn, "SELECT household_id FROM challenges WHERE challenge_id = ?", (challenge.challenge_id,)
        ).fetchone()
        if owner is not None and owner[0] != challenge.household_id:
            # Another household's challenge: report it as unknown, never as someone else's.
            raise NotFound(f"challenge {challenge.challenge_id!r} not found")
        passed_seq = seq if challenge.status is ChallengeStatus.PASSED else None
        cls._run(
            conn,
            "INSERT INTO challenges (challenge_id, household_id, decision_id, member_id, status,"
            " attempts_left, expires_at, created_at, passed_seq, body, method)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
                format_ts(challenge.expires_at),
                format_ts(challenge.created_at),
                passed_seq,
                body,
                challenge.method.value,
            ),
        )

    def list_decisions(self, household_id: str, limit: int) -> list[Decision]:
        """Newest first (by commit order); `limit <= 0` returns nothing."""
        if limit <= 0:
            return []
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT decision_id, body FROM decisions WHERE household_id = ? ORDER BY seq DESC LIMIT ?",
                (household_id, limit),
            ).fetchall()
        return [self._decision(household_id, r[0], r[1]) for r in rows]

    def spend_since(self, household_id: str, member_id: str | None, since: datetime) -> int:
        """Spend with `at >= since` (inclusive)."""
        # Fixed-width timestamps with punctuation in the same places order the same under any
        # collation, so the comparison can use the (household_id, at) index as it is.
        since_iso = format_ts(since)
        with self._reading() as conn:
            if member_id is None:
                row = self._run(
                    conn,
                    "SELECT COALESCE(SUM(amount_minor), 0) FROM spend WHERE household_id = ? AND at >= ?",
                    (household_id, since_iso),
                ).fetchone()
            else:
                row = self._run(
                    conn,
                    "SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                    " WHERE household_id = ? AND member_id = ? AND at >= ?",
                    (household_id, member_id, since_iso),
                ).fetchone()
        return 0 if row is None else int(row[0])

    def exempt_spend_since_last_challenge(self, household_id: str) -> int:
        """Exempt spend recorded after the household's last passed challenge, in commit order."""
        with self._reading() as conn:
            return self._exempt_spend(conn, household_id)

    def _exempt_spend(self, conn: Any, household_id: str) -> int:
        row = self._run(
            conn,
            "SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
            " WHERE household_id = ? AND exempt = ? AND seq > COALESCE("
            "  (SELECT MAX(passed_seq) FROM challenges WHERE household_id = ?), 0)",
            (household_id, True, household_id),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def spend_snapshot(
        self, household_id: str, member_id: str | None, day_since: datetime, month_since: datetime
    ) -> SpendSnapshot:
        # One pass over the household's month of spend (the (household_id, at) index) gives all
        # four sums; a decision used to make five round trips for them.
        day, month = format_ts(day_since), format_ts(min(day_since, month_since))
        member = member_id or ""
        # The exempt sum since the last passed challenge rides along as a scalar subquery: one
        # statement, one round trip, for the whole snapshot.
        with self._reading() as conn:
            row = self._run(
                conn,
                "SELECT"
                " COALESCE(SUM(CASE WHEN member_id = ? AND at >= ? THEN amount_minor END), 0),"
                " COALESCE(SUM(CASE WHEN member_id = ? THEN amount_minor END), 0),"
                " COALESCE(SUM(CASE WHEN at >= ? THEN amount_minor END), 0),"
                " COALESCE(SUM(amount_minor), 0),"
                " (SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                "  WHERE household_id = ? AND exempt = ? AND seq > COALESCE("
                "   (SELECT MAX(passed_seq) FROM challenges WHERE household_id = ?), 0))"
                " FROM spend WHERE household_id = ? AND at >= ?",
                (member, day, member, day, household_id, True, household_id, household_id, month),
            ).fetchone()
        values = (0, 0, 0, 0, 0) if row is None else tuple(int(v) for v in row)
        sums, exempt = values[:4], values[4]
        return SpendSnapshot(
            member_daily_minor=sums[0] if member_id else 0,
            member_monthly_minor=sums[1] if member_id else 0,
            household_daily_minor=sums[2],
            household_monthly_minor=sums[3],
            exempt_since_last_challenge_minor=exempt,
        )

    # The month's spend sums of `spend_snapshot`, as a derived table of one row.
    _SPEND_SUMS = (
        "SELECT"
        " COALESCE(SUM(CASE WHEN member_id = ? AND at >= ? THEN amount_minor END), 0) AS member_day,"
        " COALESCE(SUM(CASE WHEN member_id = ? THEN amount_minor END), 0) AS member_month,"
        " COALESCE(SUM(CASE WHEN at >= ? THEN amount_minor END), 0) AS household_day,"
        " COALESCE(SUM(amount_minor), 0) AS household_month"
        " FROM spend WHERE household_id = ? AND at >= ?"
    )

    def deciding_facts(
        self, household_id: str, member_id: str | None, day_since: datetime, month_since: datetime
    ) -> DecidingFacts:
        # One statement for four reads a decision used to make one by one: the spend sums (one
        # row, always), the PIN row joined to it when there is one, and the policy body, the
        # exempt sum and the templated members as scalar subqueries.
        day, month = format_ts(day_since), format_ts(min(day_since, month_since))
        member = member_id or ""
        pin_columns = ", ".join(f"p.{c.strip()}" for c in PIN_COLUMNS.split(","))
        with self._reading() as conn:
            row = self._run(
                conn,
                "SELECT s.member_day, s.member_month, s.household_day, s.household_month,"
                " (SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                "  WHERE household_id = ? AND exempt = ? AND seq > COALESCE("
                "   (SELECT MAX(passed_seq) FROM challenges WHERE household_id = ?), 0)),"
                " (SELECT body FROM policies WHERE household_id = ? ORDER BY revision DESC LIMIT 1),"
                f" (SELECT {self._JOIN_IDS.format('member_id')} FROM digit_templates WHERE household_id = ?),"
                f" {pin_columns}"
                f" FROM ({self._SPEND_SUMS}) AS s LEFT JOIN pins p ON p.household_id = ?",
                (
                    household_id,
                    True,
                    household_id,
                    household_id,
                    household_id,
                    member,
                    day,
                    member,
                    day,
                    household_id,
                    month,
                    household_id,
                ),
            ).fetchone()
        sums = tuple(int(v) for v in row[:5])
        spend = SpendSnapshot(
            member_daily_minor=sums[0] if member_id else 0,
            member_monthly_minor=sums[1] if member_id else 0,
            household_daily_minor=sums[2],
            household_monthly_minor=sums[3],
            exempt_since_last_challenge_minor=sums[4],
        )
        policy = None if row[5] is None else codec.policy_from_json(row[5])
        templated = frozenset(m for m in str(row[6] or "").split(",") if m)
        pin = None if row[7] is None else self._pin(tuple(row[7:]))
        return DecidingFacts(policy=policy, spend=spend, pin=pin, digit_template_members=templated)

    def audit_entries(self, household_id: str) -> list[AuditEntry]:
        with self._reading() as conn:
            rows = self._run(
                conn,
                f"SELECT {AUDIT_COLUMNS} FROM audit WHERE household_id = ? ORDER BY seq",
                (household_id,),
            ).fetchall()
        return [audit_entry_from_row(r) for r in rows]

    # --- challenges -----------------------------------------------------------------

    def get_challenge(self, household_id: str, challenge_id: str) -> Challenge:
        with self._reading() as conn:
            row = self._run(
                conn,
                "SELECT body FROM challenges WHERE household_id = ? AND challenge_id = ?",
                (household_id, challenge_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"challenge {challenge_id!r} not found")
        return self._challenge(household_id, challenge_id, row[0])

    def update_challenge(self, challenge: Challenge, expected_status: ChallengeStatus) -> bool:
        """Compare-and-set; see the rule in `DecisionLog.update_challenge`.

        A challenge that becomes PASSED here is ordered after every decision recorded so far,
        so exempt spend recorded later counts towards the next threshold.
        """
        hid, cid = challenge.household_id, challenge.challenge_id
        with self._reading() as conn:
            # Before sealing: an unknown challenge (or household) must not get a data key made.
            if not self._challenge_exists(conn, hid, cid):
                raise NotFound(f"challenge {cid!r} not found")
        body = self._seal(hid, codec.challenge_to_json(challenge), codec.challenge_aad(cid))
        with self._tx() as conn:
            if challenge.status is ChallengeStatus.PASSED:
                # Taken only to read a final MAX(seq): no decision of the household is mid-append.
                self._household_row(conn, hid, lock=True)
            if self._compare_and_set(conn, challenge, body, expected_status, None):
                self._drop_sample_if_closed(conn, challenge)
                return True
            if not self._challenge_exists(conn, hid, cid):
                raise NotFound(f"challenge {cid!r} not found")
            return False

    @classmethod
    def _update_adapted(cls, conn: Any, u: VoiceprintUpdate, sealed: bytes | None) -> None:
        """Writes the adapted set only onto the print it was decided on (same enrollment, same
        number of adapted rows); else Aborted, and the decision is judged again."""
        cursor = cls._run(
            conn,
            "UPDATE voiceprints SET adapted = ?, n_adapted = ?, adapted_at = ?"
            " WHERE household_id = ? AND member_id = ? AND encoder = ? AND created_at = ? AND n_adapted = ?",
            (
                sealed,
                len(u.adapted),
                format_ts(u.at),
                u.household_id,
                u.member_id,
                u.encoder,
                format_ts(u.enrolled_at),
                u.expected_adapted,
            ),
        )
        if cls._rowcount(cursor) != 1:
            raise Aborted("the voiceprint changed while the decision was made")

    @classmethod
    def _compare_and_set(
        cls, conn: Any, challenge: Challenge, body: str, expected_status: ChallengeStatus, seq: int | None
    ) -> bool:
        """The conditional UPDATE behind `update_challenge`: writes only if the stored status is still
        `expected_status` and the attempts rule holds. A challenge that passes records `seq` (the
        decision it passes with) or, without one, the chain head (falling back to the retention
        anchor when every entry was purged)."""
        status_changes = challenge.status is not expected_status
        passes = challenge.status is ChallengeStatus.PASSED
        hid = challenge.household_id
        cursor = cls._run(
            conn,
            "UPDATE challenges SET status = ?, attempts_left = ?, decision_id = ?, member_id = ?,"
            " expires_at = ?, body = ?,"
            " passed_seq = CASE WHEN ? THEN COALESCE(passed_seq, ?,"
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
                passes,
                seq,
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
        return cls._rowcount(cursor) == 1

    def list_challenges(self, household_id: str, status: ChallengeStatus | None = None) -> list[Challenge]:
        where, params = ("household_id = ?", [household_id])
        if status is not None:
            where, params = ("household_id = ? AND status = ?", [household_id, status.value])
        with self._reading() as conn:
            rows = self._run(
                conn,
                f"SELECT challenge_id, body FROM challenges WHERE {where}"
                f" ORDER BY {self._ordered('created_at', 'challenge_id')}",
                params,
            ).fetchall()
        return [self._challenge(household_id, r[0], r[1]) for r in rows]

    def unknown_voice_approvals_since(self, household_id: str, since: datetime) -> int:
        with self._reading() as conn:
            row = self._run(
                conn,
                "SELECT COUNT(*) FROM challenges WHERE household_id = ? AND method = ?"
                " AND member_id IS NULL AND created_at >= ?",
                (household_id, ChallengeMethod.PARENT_APPROVAL.value, format_ts(since)),
            ).fetchone()
        return 0 if row is None else int(row[0])

    # --- audio prints and issued digits ----------------------------------------------

    def recent_audio_prints(self, household_id: str, since: datetime) -> list[AudioPrint]:
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT print_id, decision_id, kind, at, print FROM audio_prints"
                " WHERE household_id = ? AND at >= ? ORDER BY at, print_id",
                (household_id, format_ts(since)),
            ).fetchall()
        return [
            AudioPrint(
                str(r[0]),
                household_id,
                str(r[1]),
                str(r[2]),
                parse_ts(r[3]),
                self._sealer.open(household_id, bytes(r[4]), codec.audio_print_aad(str(r[0]))),
            )
            for r in rows
        ]

    def recent_audio_print_refs(self, household_id: str, since: datetime) -> list[tuple[str, str, str]]:
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT print_id, decision_id, kind FROM audio_prints"
                " WHERE household_id = ? AND at >= ? ORDER BY at, print_id",
                (household_id, format_ts(since)),
            ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def audio_print_blobs(self, household_id: str, print_ids: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        with self._reading() as conn:
            for lo in range(0, len(print_ids), _IN_CHUNK):
                chunk = list(print_ids[lo : lo + _IN_CHUNK])
                marks = ", ".join("?" * len(chunk))
                rows = self._run(
                    conn,
                    "SELECT print_id, print FROM audio_prints"
                    f" WHERE household_id = ? AND print_id IN ({marks})",
                    (household_id, *chunk),
                ).fetchall()
                for r in rows:
                    pid = str(r[0])
                    out[pid] = self._sealer.open(household_id, bytes(r[1]), codec.audio_print_aad(pid))
        return out

    def recently_issued_digits(self, household_id: str, since: datetime) -> frozenset[str]:
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT digest FROM issued_digits WHERE household_id = ? AND issued_at >= ?",
                (household_id, format_ts(since)),
            ).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def purge_audio_prints(self, prints_before: datetime, digits_before: datetime) -> tuple[int, int]:
        with self._tx() as conn:
            prints = self._run(conn, "DELETE FROM audio_prints WHERE at < ?", (format_ts(prints_before),))
            digits = self._run(
                conn, "DELETE FROM issued_digits WHERE issued_at < ?", (format_ts(digits_before),)
            )
            return int(prints.rowcount), int(digits.rowcount)

    # --- notifications --------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        hid = notification.household_id
        self._check_household(hid)
        message = self._seal(hid, notification.message, codec.notification_aad(notification.notification_id))
        try:
            with self._tx() as conn:
                self._require_household(conn, hid)
                self._insert_notification(conn, notification, message)
        except self._INTEGRITY_ERRORS as exc:
            raise AlreadyExists(f"notification {notification.notification_id!r} exists already") from exc

    @classmethod
    def _insert_notification(cls, conn: Any, notification: Notification, sealed_message: str) -> None:
        cls._run(
            conn,
            f"INSERT INTO notifications ({NOTIFICATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                notification.notification_id,
                notification.household_id,
                notification.kind,
                sealed_message,
                notification.challenge_id,
                format_ts(notification.created_at),
            ),
        )

    def list_notifications(self, household_id: str) -> list[Notification]:
        with self._reading() as conn:
            rows = self._run(
                conn,
                f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE household_id = ?"
                f" ORDER BY {self._ordered('created_at', 'notification_id')}",
                (household_id,),
            ).fetchall()
        return [self._notification(r) for r in rows]

    # --- events: the outbox, webhooks and deliveries ------------------------------------

    def _seal_events(self, household_id: str, events: tuple[Event, ...]) -> list[str]:
        return [self._seal(household_id, codec.event_to_json(e), codec.event_aad(e.dedup)) for e in events]

    @classmethod
    def _queued_dedups(cls, conn: Any, household_id: str, events: tuple[Event, ...]) -> Any:
        """The cursor (unread) of which of the events' facts the household has queued already."""
        marks = ", ".join("?" for _ in events)
        return cls._run(
            conn,
            f"SELECT dedup FROM outbox WHERE household_id = ? AND dedup IN ({marks})",
            (household_id, *(e.dedup for e in events)),
        )

    @classmethod
    def _queue_events(
        cls,
        conn: Any,
        household_id: str,
        events: tuple[Event, ...],
        bodies: list[str],
        *,
        already: set[str] | None = None,
    ) -> list[int] | None:
        """Inserts the events inside the caller's transaction (which holds the household row lock,
        so ids are handed out in commit order); returns the ids given, 0 for a repeated fact.

        Three statements whatever the number of events: the facts already queued, one counter
        step for all the new ones, and one insert of them all, whose ids are counted back from
        the stepped counter and whose state (delivery pending or none) asks the webhook table,
        in the same statement. With `already` (the facts already queued, read by the caller in
        this transaction) the first is skipped and nothing is read back: None is returned, and
        a batching backend sends both writes with the next statement that is read (or COMMIT)."""
        seen = already
        if seen is None:
            seen = {str(r[0]) for r in cls._queued_dedups(conn, household_id, events).fetchall()}
        else:
            seen = set(seen)
        new: list[tuple[Event, str]] = []
        for event, body in zip(events, bodies, strict=True):
            if event.dedup not in seen:
                seen.add(event.dedup)  # the same fact twice in one batch is queued once
                new.append((event, body))
        if not new:
            return None if already is not None else [0] * len(events)
        step = (
            "INSERT INTO event_counters (household_id, last_id) VALUES (?, ?)"
            " ON CONFLICT (household_id) DO UPDATE SET last_id = event_counters.last_id + excluded.last_id"
        )
        first = 0
        if already is None:
            row = cls._run(conn, step + " RETURNING last_id", (household_id, len(new))).fetchone()
            first = int(row[0]) - len(new) + 1
        else:
            cls._run(conn, step, (household_id, len(new)))
        hooked = "EXISTS (SELECT 1 FROM webhooks WHERE household_id = ?)"
        # The k-th of n new events gets the stepped counter's value minus (n - 1 - k): read in
        # the statement itself, so the insert needs no round trip for the counter's answer.
        counter = "(SELECT last_id FROM event_counters WHERE household_id = ?)"
        values = ", ".join(f"(?, {counter} - ?, ?, ?, ?, ?)" for _ in new)
        params: list[object] = []
        for k, (event, body) in enumerate(new):
            params += [
                household_id,
                household_id,
                len(new) - 1 - k,
                event.kind.value,
                event.dedup,
                body,
                format_ts(event.occurred_at),
            ]
        cls._run(
            conn,
            "INSERT INTO outbox (household_id, event_id, kind, dedup, body, created_at, state,"
            " attempts, next_attempt_at)"
            f" SELECT v.*, CASE WHEN {hooked} THEN 'pending' ELSE 'none' END, 0,"
            f" CASE WHEN {hooked} THEN ? END"
            f" FROM (VALUES {values}) AS v",
            (household_id, household_id, _DUE_AT_ONCE, *params),
        )
        if already is not None:
            return None
        ids = {event.dedup: first + k for k, (event, _) in enumerate(new)}
        given: list[int] = []
        placed: set[str] = set()
        for event in events:
            if event.dedup in ids and event.dedup not in placed:
                placed.add(event.dedup)
                given.append(ids[event.dedup])
            else:
                given.append(0)
        return given

    def add_events(self, household_id: str, events: tuple[Event, ...]) -> tuple[Event, ...]:
        if any(e.household_id != household_id for e in events):
            raise InvalidArgument("events must belong to the household they are queued for")
        if not events:
            return ()
        self._check_household(household_id)
        bodies = self._seal_events(household_id, events)
        with self._tx() as conn:
            self._require_household(conn, household_id, lock=True)
            ids = self._queue_events(conn, household_id, events, bodies)
        assert ids is not None  # None only when the caller passes what is queued already
        return tuple(replace(e, event_id=i) for e, i in zip(events, ids, strict=True) if i)

    def events_after(self, household_id: str, after_event_id: int, limit: int) -> list[Event]:
        if limit <= 0:
            return []
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT event_id, dedup, body FROM outbox WHERE household_id = ? AND event_id > ?"
                " ORDER BY event_id LIMIT ?",
                (household_id, after_event_id, limit),
            ).fetchall()
        return [self._event(household_id, int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def _event(self, household_id: str, event_id: int, dedup: str, body: str) -> Event:
        text = self._open(household_id, body, codec.event_aad(dedup))
        return codec.event_from_json(household_id, event_id, text)

    def set_webhook(self, webhook: Webhook) -> None:
        hid = webhook.household_id
        self._check_household(hid)
        secret = self._seal(hid, webhook.secret, codec.webhook_secret_aad(hid))
        with self._tx() as conn:
            self._require_household(conn, hid, lock=True)
            self._run(
                conn,
                "INSERT INTO webhooks (household_id, url, secret, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (household_id) DO UPDATE SET url = excluded.url, secret = excluded.secret,"
                " created_at = excluded.created_at",
                (hid, webhook.url, secret, format_ts(webhook.created_at)),
            )

    def get_webhook(self, household_id: str) -> Webhook | None:
        with self._reading() as conn:
            row = self._run(
                conn, "SELECT url, secret, created_at FROM webhooks WHERE household_id = ?", (household_id,)
            ).fetchone()
        if row is None:
            return None
        secret = self._open(household_id, str(row[1]), codec.webhook_secret_aad(household_id))
        return Webhook(household_id, str(row[0]), parse_ts(row[2]), secret)

    def remove_webhook(self, household_id: str) -> bool:
        with self._tx() as conn:
            gone = self._run(conn, "DELETE FROM webhooks WHERE household_id = ?", (household_id,)).rowcount
            self._run(
                conn,
                "UPDATE outbox SET state = 'none', claimed_until = NULL"
                " WHERE household_id = ? AND state = 'pending'",
                (household_id,),
            )
        return bool(gone)

    def claim_deliveries(self, now: datetime, claimed_until: datetime, limit: int) -> list[Delivery]:
        now_iso, until_iso = format_ts(now), format_ts(claimed_until)
        claimed: list[Row] = []
        with self._tx() as conn:
            rows = self._run(
                conn,
                "SELECT o.household_id, o.event_id, o.dedup, o.body, o.attempts, w.url, w.secret,"
                " w.created_at, o.claimed_until FROM outbox o"
                " LEFT JOIN webhooks w ON w.household_id = o.household_id"
                " WHERE o.state = 'pending' AND o.next_attempt_at <= ?"
                " AND (o.claimed_until IS NULL OR o.claimed_until <= ?)"
                " ORDER BY o.next_attempt_at, o.household_id, o.event_id LIMIT ?",
                (now_iso, now_iso, limit),
            ).fetchall()
            for r in rows:
                if r[5] is None:  # the endpoint went away: stream only
                    self._run(
                        conn,
                        "UPDATE outbox SET state = 'none' WHERE household_id = ? AND event_id = ?"
                        " AND state = 'pending'",
                        (r[0], r[1]),
                    )
                    continue
                # Compare-and-set on the claim it was read with: of two workers (replicas) that
                # read the same row, one wins.
                won = self._run(
                    conn,
                    "UPDATE outbox SET claimed_until = ? WHERE household_id = ? AND event_id = ?"
                    " AND state = 'pending' AND (claimed_until IS NULL OR claimed_until <= ?)",
                    (until_iso, r[0], r[1], now_iso),
                ).rowcount
                if won == 1:
                    claimed.append(r)
        out: list[Delivery] = []
        for r in claimed:
            hid = str(r[0])
            event = self._event(hid, int(r[1]), str(r[2]), str(r[3]))
            secret = self._open(hid, str(r[6]), codec.webhook_secret_aad(hid))
            out.append(
                Delivery(event, int(r[4]), Webhook(hid, str(r[5]), parse_ts(r[7]), secret), claimed_until)
            )
        return out

    def _finish(
        self,
        household_id: str,
        event_id: int,
        state: str,
        *,
        attempts: int,
        status: int,
        error: str,
        next_at: datetime | None,
        finished_at: datetime | None,
    ) -> None:
        with self._tx() as conn:
            self._run(
                conn,
                "UPDATE outbox SET state = ?, attempts = ?, last_status = ?, last_error = ?,"
                " next_attempt_at = ?, finished_at = ?, claimed_until = NULL"
                " WHERE household_id = ? AND event_id = ? AND state = 'pending'",
                (
                    state,
                    attempts,
                    status,
                    error[:500],
                    _opt_ts(next_at),
                    _opt_ts(finished_at),
                    household_id,
                    event_id,
                ),
            )

    def delivery_done(
        self, household_id: str, event_id: int, *, attempts: int, status: int, at: datetime
    ) -> None:
        self._finish(
            household_id,
            event_id,
            "delivered",
            attempts=attempts,
            status=status,
            error="",
            next_at=None,
            finished_at=at,
        )

    def delivery_retry(
        self, household_id: str, event_id: int, *, attempts: int, status: int, error: str, at: datetime
    ) -> None:
        self._finish(
            household_id,
            event_id,
            "pending",
            attempts=attempts,
            status=status,
            error=error,
            next_at=at,
            finished_at=None,
        )

    def delivery_dead(
        self, household_id: str, event_id: int, *, attempts: int, status: int, error: str, at: datetime
    ) -> None:
        self._finish(
            household_id,
            event_id,
            "dead",
            attempts=attempts,
            status=status,
            error=error,
            next_at=None,
            finished_at=at,
        )

    def list_dead_letters(self, household_id: str, limit: int = 500) -> list[DeadLetter]:
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT event_id, dedup, body, attempts, last_status, last_error, finished_at FROM outbox"
                " WHERE household_id = ? AND state = 'dead' ORDER BY event_id LIMIT ?",
                (household_id, limit),
            ).fetchall()
        return [
            DeadLetter(
                self._event(household_id, int(r[0]), str(r[1]), str(r[2])),
                int(r[3]),
                int(r[4] or 0),
                str(r[5] or ""),
                parse_ts(r[6]),
            )
            for r in rows
        ]

    def replay_dead_letters(self, household_id: str, event_ids: tuple[int, ...]) -> int:
        where = "household_id = ? AND state = 'dead'"
        params: list[object] = [_DUE_AT_ONCE, household_id]
        if event_ids:
            where += " AND event_id IN (" + ", ".join("?" for _ in event_ids) + ")"
            params.extend(event_ids)
        with self._tx() as conn:
            if (
                self._run(conn, "SELECT 1 FROM webhooks WHERE household_id = ?", (household_id,)).fetchone()
                is None
            ):
                return 0  # nowhere to deliver to: they stay dead letters
            done = self._run(
                conn,
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                f" claimed_until = NULL, finished_at = NULL WHERE {where}",
                params,
            ).rowcount
        return int(done)

    def expired_approvals(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT c.household_id, c.challenge_id FROM challenges c"
                " WHERE c.status = 'PENDING' AND c.method = 'PARENT_APPROVAL' AND c.expires_at <= ?"
                " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.household_id = c.household_id"
                "  AND o.dedup = 'approval_expired:' || c.challenge_id)"
                " ORDER BY c.expires_at LIMIT ?",
                (format_ts(now), limit),
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    # --- export ---------------------------------------------------------------------

    def household_records(self, household_id: str) -> HouseholdRecords:
        hid = (household_id,)
        with self._snapshot() as conn:
            household = self._run(
                conn,
                f"SELECT {HOUSEHOLD_COLUMNS} FROM households WHERE id = ?",
                hid,
            ).fetchone()
            if household is None:
                raise NotFound(f"household {household_id!r} not found")

            def rows(query: str) -> list[Row]:
                return list(self._run(conn, query, hid).fetchall())

            members = rows(
                f"SELECT {MEMBER_COLUMNS} FROM members WHERE household_id = ?"
                f" ORDER BY {self._ordered('created_at', 'member_id')}"
            )
            # The embedding column is not even read: an export carries voiceprint metadata only.
            prints = rows(
                "SELECT household_id, member_id, encoder, dim, n_utterances, created_at, n_adapted,"
                " adapted_at FROM voiceprints"
                f" WHERE household_id = ? ORDER BY {self._ordered('member_id')}"
            )
            policies = rows(
                "SELECT household_id, body, created_at FROM policies WHERE household_id = ? ORDER BY revision"
            )
            pin = self._run(conn, f"SELECT {PIN_COLUMNS} FROM pins WHERE household_id = ?", hid).fetchone()
            decisions = rows("SELECT decision_id, body FROM decisions WHERE household_id = ? ORDER BY seq")
            spend = rows(
                "SELECT household_id, member_id, amount_minor, decision_id, at, exempt FROM spend"
                " WHERE household_id = ? ORDER BY seq"
            )
            challenges = rows(
                "SELECT challenge_id, body FROM challenges WHERE household_id = ?"
                f" ORDER BY {self._ordered('created_at', 'challenge_id')}"
            )
            notifications = rows(
                f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE household_id = ?"
                f" ORDER BY {self._ordered('created_at', 'notification_id')}"
            )
            audit = rows(f"SELECT {AUDIT_COLUMNS} FROM audit WHERE household_id = ? ORDER BY seq")
            anchor = self._anchor(conn, household_id)
            events = rows("SELECT event_id, dedup, body FROM outbox WHERE household_id = ? ORDER BY event_id")
            hook = self._run(
                conn, "SELECT url, created_at FROM webhooks WHERE household_id = ?", hid
            ).fetchone()
            # Neither the templates nor the prints are read: an export says what is kept, not its bytes.
            templates = rows(
                "SELECT member_id, features, created_at, expires_at FROM digit_templates"
                f" WHERE household_id = ? ORDER BY {self._ordered('member_id')}"
            )
            samples = rows(
                "SELECT challenge_id, member_id, created_at, expires_at FROM adaptation_samples"
                f" WHERE household_id = ? ORDER BY created_at, {self._ordered('challenge_id')}"
            )
            heard = rows(
                "SELECT print_id, decision_id, kind, at FROM audio_prints WHERE household_id = ?"
                f" ORDER BY at, {self._ordered('print_id')}"
            )
        # Opened after the snapshot ends: no cryptography while a transaction is open.
        return HouseholdRecords(
            household=self._household(household),
            members=tuple(self._member(r) for r in members),
            voiceprints=tuple(
                VoiceprintInfo(
                    r[0],
                    r[1],
                    r[2],
                    int(r[3]),
                    int(r[4]),
                    parse_ts(r[5]),
                    int(r[6]),
                    None if r[7] is None else parse_ts(r[7]),
                )
                for r in prints
            ),
            policies=tuple(
                PolicyRevision(r[0], codec.policy_from_json(r[1]), parse_ts(r[2])) for r in policies
            ),
            pin=None if pin is None else self._pin(pin),
            decisions=tuple(self._decision(household_id, r[0], r[1]) for r in decisions),
            spend=tuple(SpendEntry(r[0], r[1], int(r[2]), r[3], parse_ts(r[4]), bool(r[5])) for r in spend),
            challenges=tuple(self._challenge(household_id, r[0], r[1]) for r in challenges),
            notifications=tuple(self._notification(r) for r in notifications),
            audit=tuple(self._audit_record(audit_entry_from_row(r)) for r in audit),
            audit_anchor=anchor,
            events=tuple(self._event(household_id, int(r[0]), str(r[1]), str(r[2])) for r in events),
            webhook=None if hook is None else Webhook(household_id, str(hook[0]), parse_ts(hook[1])),
            derived_audio=(
                *(
                    StoredAudioInfo(
                        household_id,
                        "digit_templates",
                        str(r[0]),
                        str(r[1]),
                        "",
                        parse_ts(r[2]),
                        None if r[3] is None else parse_ts(r[3]),
                    )
                    for r in templates
                ),
                *(
                    StoredAudioInfo(household_id, "audio_print", None, str(r[1]), str(r[2]), parse_ts(r[3]))
                    for r in heard
                ),
                *(
                    StoredAudioInfo(
                        household_id,
                        "adaptation_sample",
                        str(r[1]),
                        str(r[0]),
                        "",
                        parse_ts(r[2]),
                        parse_ts(r[3]),
                    )
                    for r in samples
                ),
            ),
        )

    # --- erasure --------------------------------------------------------------------

    @classmethod
    def _tombstone_row(cls, conn: Any, household_id: str) -> Row | None:
        row: Row | None = cls._run(
            conn,
            "SELECT household_id, erased_at, audit_entries, audit_head FROM household_tombstones"
            " WHERE household_id = ?",
            (household_id,),
        ).fetchone()
        return row

    def get_tombstone(self, household_id: str) -> Tombstone | None:
        with self._reading() as conn:
            row = self._tombstone_row(conn, household_id)
        return None if row is None else tombstone_from_row(row)

    def erase_household(self, household_id: str, at: datetime) -> tuple[Tombstone, bool]:
        at_iso = format_ts(at)
        erased_now = False
        with self._tx() as conn:
            # The exclusive row lock waits for every writer holding the row (decisions, policies,
            # foreign-key checks of inserts); a concurrent erasure of the same household is found
            # by the tombstone read after the wait, which sees what committed meanwhile.
            live = self._household_row(conn, household_id, exclusive=True)
            row = self._tombstone_row(conn, household_id)
            if row is None:
                if not live:
                    raise NotFound(f"household {household_id!r} not found")
                count_row = self._run(
                    conn, "SELECT COUNT(*) FROM audit WHERE household_id = ?", (household_id,)
                ).fetchone()
                count = 0 if count_row is None else int(count_row[0])
                _, head = self._chain_head(conn, household_id)
                for table in _ERASE_ORDER:
                    self._run(conn, f"DELETE FROM {table} WHERE household_id = ?", (household_id,))
                self._run(conn, "DELETE FROM households WHERE id = ?", (household_id,))
                self._run(
                    conn,
                    "INSERT INTO household_tombstones (household_id, erased_at, audit_entries, audit_head)"
                    " VALUES (?, ?, ?, ?)",
                    (household_id, at_iso, count, head),
                )
                row = (household_id, at_iso, count, head)
                erased_now = True
        # After the commit: if destroying the key fails, the call fails and a retry (idempotent)
        # destroys it; the rows are gone either way.
        self._sealer.destroy(household_id)
        return tombstone_from_row(row), erased_now

    # --- retention and chains ------------------------------------------------------

    @classmethod
    def _anchor(cls, conn: Any, household_id: str) -> AuditAnchor | None:
        row = cls._run(
            conn,
            "SELECT household_id, seq, entry_hash, at FROM audit_anchors WHERE household_id = ?",
            (household_id,),
        ).fetchone()
        return None if row is None else AuditAnchor(row[0], int(row[1]), row[2], parse_ts(row[3]))

    def audit_anchor(self, household_id: str) -> AuditAnchor | None:
        with self._reading() as conn:
            return self._anchor(conn, household_id)

    def list_household_ids(self) -> list[str]:
        """Every household with data or a chain: live ones and erased ones whose sealed audit
        entries are kept (audit/startup.py verifies all their chains at start)."""
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT id FROM (SELECT id FROM households UNION SELECT household_id FROM audit"
                " UNION SELECT household_id FROM household_tombstones) AS ids"
                f" ORDER BY {self._ordered('id')}",
            ).fetchall()
        return [str(r[0]) for r in rows]

    def retention_candidates(self, cutoff: datetime) -> list[str]:
        before = format_ts(cutoff)
        with self._reading() as conn:
            rows = self._run(
                conn,
                "SELECT household_id FROM (SELECT household_id FROM audit WHERE at < ?"
                " UNION SELECT household_id FROM decisions WHERE created_at < ?"
                " UNION SELECT household_id FROM notifications WHERE created_at < ?) AS old"
                f" ORDER BY {self._ordered('household_id')}",
                (before, before, before),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def purge_household(self, household_id: str, cutoff: datetime) -> PurgeResult:
        before = format_ts(cutoff)
        hid = household_id
        with self._tx() as conn:
            # Orders the purge with appends to the chain (record_decision takes the same lock), so
            # the anchor never moves under a decision that is reading the chain head. An erased
            # household has no row and no appends: nothing to lock.
            self._household_row(conn, hid, lock=True)
            row = self._run(
                conn, "SELECT MAX(passed_seq) FROM challenges WHERE household_id = ?", (hid,)
            ).fetchone()
            last_passed = 0 if row is None or row[0] is None else int(row[0])
            # Exempt spend after the last passed challenge still counts towards the low-value
            # exemption's cumulative limit, however old; it and its decision stay.
            spend = self._run(
                conn,
                "DELETE FROM spend WHERE household_id = ? AND at < ? AND NOT (exempt AND seq > ?)",
                (hid, before, last_passed),
            ).rowcount
            decisions = self._run(
                conn,
                "DELETE FROM decisions WHERE household_id = ? AND created_at < ?"
                " AND decision_id NOT IN (SELECT decision_id FROM spend WHERE household_id = ?)",
                (hid, before, hid),
            ).rowcount
            # The last passed challenge stays: it is where the exemption's count restarts.
            challenges = self._run(
                conn,
                "DELETE FROM challenges WHERE household_id = ? AND expires_at < ?"
                " AND (passed_seq IS NULL OR passed_seq < ?)",
                (hid, before, last_passed),
            ).rowcount
            # Events past retention go too, unless a delivery is still pending (at least once).
            self._run(
                conn,
                "DELETE FROM outbox WHERE household_id = ? AND created_at < ? AND state <> 'pending'",
                (hid, before),
            )
            notifications = self._run(
                conn, "DELETE FROM notifications WHERE household_id = ? AND created_at < ?", (hid, before)
            ).rowcount
            audit = self._purge_audit_prefix(conn, hid, before)
            anchor = self._anchor(conn, hid)
        return PurgeResult(hid, decisions, spend, audit, challenges, notifications, anchor)

    @classmethod
    def _purge_audit_prefix(cls, conn: Any, household_id: str, before: str) -> int:
        """Deletes the longest prefix of the chain older than `before` and moves the anchor to its
        last entry. Only a prefix: an old entry after a newer one (clock skew) waits for the next run."""
        row = cls._run(
            conn, "SELECT MIN(seq) FROM audit WHERE household_id = ? AND at >= ?", (household_id, before)
        ).fetchone()
        if row is None or row[0] is None:
            row = cls._run(
                conn, "SELECT MAX(seq) FROM audit WHERE household_id = ?", (household_id,)
            ).fetchone()
            if row is None or row[0] is None:
                return 0
            last = int(row[0])
        else:
            last = int(row[0]) - 1
        tail = cls._run(
            conn,
            "SELECT seq, entry_hash, at FROM audit WHERE household_id = ? AND seq = ?",
            (household_id, last),
        ).fetchone()
        if tail is None:  # nothing older than the first kept entry is left
            return 0
        purged = cls._run(
            conn, "DELETE FROM audit WHERE household_id = ? AND seq <= ?", (household_id, last)
        ).rowcount
        cls._run(
            conn,
            "INSERT INTO audit_anchors (household_id, seq, entry_hash, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (household_id) DO UPDATE SET seq = excluded.seq,"
            " entry_hash = excluded.entry_hash, at = excluded.at",
            (household_id, int(tail[0]), str(tail[1]), str(tail[2])),
        )
        return int(purged)

    # --- lifecycle ------------------------------------------------------------------

    def ping(self) -> None:
        with self._reading() as conn:
            conn.execute("SELECT 1").fetchone()


class SqlKeyStore:
    """Wrapped data keys (table `data_keys`) in a store's database; a `sealing.WrappedKeyStore`.

    `connection` yields a connection in autocommit mode: SQLite passes one of its own (so a data
    key can be looked up while the store's connection is busy), PostgreSQL its routing, so a
    lookup inside `household_lock` uses the connection the lock holds instead of a second one.
    """

    def __init__(self, connection: Any, *, param: str = "?", byte_order: str = "") -> None:
        self._connection = connection
        self._param = param
        self._byte_order = byte_order

    def _run(self, conn: Any, text: str, params: tuple[object, ...] = ()) -> Any:
        return conn.execute(text if self._param == "?" else text.replace("?", self._param), params)

    def get_wrapped_key(self, household_id: str) -> bytes | None:
        with self._connection() as conn:
            row = self._run(
                conn, "SELECT wrapped FROM data_keys WHERE household_id = ?", (household_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def add_wrapped_key(self, household_id: str, wrapped: bytes, master_key_id: str) -> bytes:
        with self._connection() as conn:
            self._run(
                conn,
                "INSERT INTO data_keys (household_id, wrapped, master_key_id, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (household_id) DO NOTHING",
                (household_id, wrapped, master_key_id, format_ts(datetime.now(UTC))),
            )
            # Whoever inserted first wins; everyone then seals with that one key.
            row = self._run(
                conn, "SELECT wrapped FROM data_keys WHERE household_id = ?", (household_id,)
            ).fetchone()
        if row is None:  # destroyed between our insert and read: a concurrent erasure won
            raise NotFound(f"household {household_id!r} not found")
        return bytes(row[0])

    def replace_wrapped_key(self, household_id: str, old: bytes, new: bytes, master_key_id: str) -> bool:
        with self._connection() as conn:
            cursor = self._run(
                conn,
                "UPDATE data_keys SET wrapped = ?, master_key_id = ? WHERE household_id = ? AND wrapped = ?",
                (new, master_key_id, household_id, old),
            )
            return bool(cursor.rowcount == 1)

    def list_wrapped_keys(self) -> list[tuple[str, bytes]]:
        with self._connection() as conn:
            rows = self._run(
                conn, f"SELECT household_id, wrapped FROM data_keys ORDER BY household_id{self._byte_order}"
            ).fetchall()
        return [(str(r[0]), bytes(r[1])) for r in rows]

    def delete_wrapped_key(self, household_id: str) -> None:
        with self._connection() as conn:
            self._run(conn, "DELETE FROM data_keys WHERE household_id = ?", (household_id,))
