"""Queries the SQLite and PostgreSQL stores run word for word alike.

They are written once with `?` placeholders; a store sets `_PARAM` to its driver's style
(`%s` for psycopg), `_BYTE_ORDER` to what makes its text sort by bytes (PostgreSQL's
`COLLATE "C"`; SQLite already does), and `_reading()` to how it reads (SQLite: a shared read
connection; PostgreSQL: one from the pool). Writes, whose transactions and locking differ,
stay in each store.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ClassVar

from purchase_guard.audit.chain import GENESIS, AuditAnchor, AuditEntry
from purchase_guard.domain import (
    Challenge,
    ChallengeStatus,
    Decision,
    Household,
    Member,
    Notification,
    PinState,
    Policy,
)
from purchase_guard.errors import NotFound
from purchase_guard.serial import format_ts, parse_ts
from purchase_guard.store import codec
from purchase_guard.store.protocol import StoredDecision, Tombstone
from purchase_guard.store.rows import (
    AUDIT_COLUMNS,
    HOUSEHOLD_COLUMNS,
    MEMBER_COLUMNS,
    NOTIFICATION_COLUMNS,
    PIN_COLUMNS,
    Row,
    SealedRows,
    audit_entry_from_row,
    pin_from_row,
    tombstone_from_row,
)


class SharedQueries(SealedRows):
    """The shared reads and row-level helpers; `conn` is the store's own connection type."""

    _PARAM: ClassVar[str] = "?"
    # Appended to each text column in ORDER BY, so that every store lists in the same order.
    _BYTE_ORDER: ClassVar[str] = ""

    @classmethod
    def _sql(cls, text: str) -> str:
        # No query here holds a literal "?", so every one is a placeholder.
        return text if cls._PARAM == "?" else text.replace("?", cls._PARAM)

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    @staticmethod
    def _require_household(conn: Any, household_id: str) -> None:
        raise NotImplementedError

    @staticmethod
    def _stored_decision(conn: Any, household_id: str, kind: str, request_id: str) -> Row | None:
        raise NotImplementedError

    def _check_household(self, household_id: str) -> None:
        """NotFound before sealing anything: sealing creates the household's data key, and a key
        must not be created for a household that does not exist. The write re-checks inside its
        transaction; this read only keeps stray keys from being made."""
        with self._reading() as conn:
            self._require_household(conn, household_id)

    def _ordered(self, *columns: str) -> str:
        return ", ".join(column + self._BYTE_ORDER for column in columns)

    def get_household(self, household_id: str) -> Household:
        with self._reading() as conn:
            row = conn.execute(
                self._sql(f"SELECT {HOUSEHOLD_COLUMNS} FROM households WHERE id = ?"),  # noqa: S608
                (household_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"household {household_id!r} not found")
        return self._household(row)

    def household_for_token_hash(self, token_hash: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute(
                self._sql("SELECT id FROM households WHERE admin_token_hash = ?"), (token_hash,)
            ).fetchone()
        return None if row is None else str(row[0])

    def get_member(self, household_id: str, member_id: str) -> Member:
        with self._reading() as conn:
            row = conn.execute(
                self._sql(f"SELECT {MEMBER_COLUMNS} FROM members WHERE household_id = ? AND member_id = ?"),  # noqa: S608
                (household_id, member_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"member {member_id!r} not found")
        return self._member(row)

    def list_members(self, household_id: str) -> list[Member]:
        with self._reading() as conn:
            rows = conn.execute(
                self._sql(
                    f"SELECT {MEMBER_COLUMNS} FROM members WHERE household_id = ?"  # noqa: S608
                    f" ORDER BY {self._ordered('created_at', 'member_id')}"
                ),
                (household_id,),
            ).fetchall()
        return [self._member(r) for r in rows]

    def get_policy(self, household_id: str) -> Policy | None:
        with self._reading() as conn:
            row = conn.execute(
                self._sql("SELECT body FROM policies WHERE household_id = ? ORDER BY revision DESC LIMIT 1"),
                (household_id,),
            ).fetchone()
        return None if row is None else codec.policy_from_json(row[0])

    def get_pin(self, household_id: str) -> PinState | None:
        with self._reading() as conn:
            row = conn.execute(
                self._sql(f"SELECT {PIN_COLUMNS} FROM pins WHERE household_id = ?"),  # noqa: S608
                (household_id,),
            ).fetchone()
        return None if row is None else pin_from_row(row)

    def get_decision(self, household_id: str, kind: str, request_id: str) -> StoredDecision | None:
        with self._reading() as conn:
            row = self._stored_decision(conn, household_id, kind, request_id)
        if row is None:
            return None
        return StoredDecision(decision=self._decision(household_id, row[2], row[0]), request_digest=row[1])

    @classmethod
    def _chain_head(cls, conn: Any, household_id: str) -> tuple[int, str]:
        """(seq, entry hash) of the household's last audit entry; after retention purged every
        entry, the anchor; for a new chain (0, GENESIS)."""
        head = conn.execute(
            cls._sql("SELECT seq, entry_hash FROM audit WHERE household_id = ? ORDER BY seq DESC LIMIT 1"),
            (household_id,),
        ).fetchone()
        if head is None:
            head = conn.execute(
                cls._sql("SELECT seq, entry_hash FROM audit_anchors WHERE household_id = ?"), (household_id,)
            ).fetchone()
        return (0, GENESIS) if head is None else (int(head[0]), str(head[1]))

    @classmethod
    def _upsert_challenge(cls, conn: Any, challenge: Challenge, body: str, seq: int) -> None:
        owner = conn.execute(
            cls._sql("SELECT household_id FROM challenges WHERE challenge_id = ?"), (challenge.challenge_id,)
        ).fetchone()
        if owner is not None and owner[0] != challenge.household_id:
            # Another household's challenge: report it as unknown, never as someone else's.
            raise NotFound(f"challenge {challenge.challenge_id!r} not found")
        passed_seq = seq if challenge.status is ChallengeStatus.PASSED else None
        conn.execute(
            cls._sql(
                "INSERT INTO challenges (challenge_id, household_id, decision_id, member_id, status,"
                " attempts_left, expires_at, created_at, passed_seq, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (challenge_id) DO UPDATE SET decision_id = excluded.decision_id,"
                " member_id = excluded.member_id, status = excluded.status,"
                " attempts_left = excluded.attempts_left, expires_at = excluded.expires_at,"
                " created_at = excluded.created_at,"
                " passed_seq = COALESCE(challenges.passed_seq, excluded.passed_seq), body = excluded.body"
                " WHERE challenges.household_id = excluded.household_id"
            ),
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
            ),
        )

    def list_decisions(self, household_id: str, limit: int) -> list[Decision]:
        """Newest first (by commit order); `limit <= 0` returns nothing."""
        if limit <= 0:
            return []
        with self._reading() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT decision_id, body FROM decisions WHERE household_id = ? ORDER BY seq DESC LIMIT ?"
                ),
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
                row = conn.execute(
                    self._sql(
                        "SELECT COALESCE(SUM(amount_minor), 0) FROM spend WHERE household_id = ? AND at >= ?"
                    ),
                    (household_id, since_iso),
                ).fetchone()
            else:
                row = conn.execute(
                    self._sql(
                        "SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                        " WHERE household_id = ? AND member_id = ? AND at >= ?"
                    ),
                    (household_id, member_id, since_iso),
                ).fetchone()
        return 0 if row is None else int(row[0])

    def exempt_spend_since_last_challenge(self, household_id: str) -> int:
        """Exempt spend recorded after the household's last passed challenge, in commit order."""
        with self._reading() as conn:
            row = conn.execute(
                self._sql(
                    "SELECT COALESCE(SUM(amount_minor), 0) FROM spend"
                    " WHERE household_id = ? AND exempt = ? AND seq > COALESCE("
                    "  (SELECT MAX(passed_seq) FROM challenges WHERE household_id = ?), 0)"
                ),
                (household_id, True, household_id),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def audit_entries(self, household_id: str) -> list[AuditEntry]:
        with self._reading() as conn:
            rows = conn.execute(
                self._sql(f"SELECT {AUDIT_COLUMNS} FROM audit WHERE household_id = ? ORDER BY seq"),  # noqa: S608
                (household_id,),
            ).fetchall()
        return [audit_entry_from_row(r) for r in rows]

    def get_challenge(self, household_id: str, challenge_id: str) -> Challenge:
        with self._reading() as conn:
            row = conn.execute(
                self._sql("SELECT body FROM challenges WHERE household_id = ? AND challenge_id = ?"),
                (household_id, challenge_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"challenge {challenge_id!r} not found")
        return self._challenge(household_id, challenge_id, row[0])

    def list_challenges(self, household_id: str, status: ChallengeStatus | None = None) -> list[Challenge]:
        order = f" ORDER BY {self._ordered('created_at', 'challenge_id')}"
        with self._reading() as conn:
            if status is None:
                rows = conn.execute(
                    self._sql("SELECT challenge_id, body FROM challenges WHERE household_id = ?" + order),  # noqa: S608
                    (household_id,),
                ).fetchall()
            else:
                rows = conn.execute(
                    self._sql(
                        "SELECT challenge_id, body FROM challenges WHERE household_id = ? AND status = ?"  # noqa: S608
                        + order
                    ),
                    (household_id, status.value),
                ).fetchall()
        return [self._challenge(household_id, r[0], r[1]) for r in rows]

    def list_notifications(self, household_id: str) -> list[Notification]:
        with self._reading() as conn:
            rows = conn.execute(
                self._sql(
                    f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE household_id = ?"  # noqa: S608
                    f" ORDER BY {self._ordered('created_at', 'notification_id')}"
                ),
                (household_id,),
            ).fetchall()
        return [self._notification(r) for r in rows]

    @classmethod
    def _tombstone_row(cls, conn: Any, household_id: str) -> Row | None:
        row: Row | None = conn.execute(
            cls._sql(
                "SELECT household_id, erased_at, audit_entries, audit_head FROM household_tombstones"
                " WHERE household_id = ?"
            ),
            (household_id,),
        ).fetchone()
        return row

    @classmethod
    def _anchor(cls, conn: Any, household_id: str) -> AuditAnchor | None:
        row = conn.execute(
            cls._sql("SELECT household_id, seq, entry_hash, at FROM audit_anchors WHERE household_id = ?"),
            (household_id,),
        ).fetchone()
        return None if row is None else AuditAnchor(row[0], int(row[1]), row[2], parse_ts(row[3]))

    def get_tombstone(self, household_id: str) -> Tombstone | None:
        with self._reading() as conn:
            row = self._tombstone_row(conn, household_id)
        return None if row is None else tombstone_from_row(row)

    def list_household_ids(self) -> list[str]:
        """Every household with data or a chain: live ones and erased ones whose sealed audit
        entries are kept (audit/startup.py verifies all their chains at start)."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT id FROM (SELECT id FROM households UNION SELECT household_id FROM audit"  # noqa: S608
                " UNION SELECT household_id FROM household_tombstones) AS ids"
                f" ORDER BY {self._ordered('id')}"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def retention_candidates(self, cutoff: datetime) -> list[str]:
        before = format_ts(cutoff)
        with self._reading() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT household_id FROM (SELECT household_id FROM audit WHERE at < ?"  # noqa: S608
                    " UNION SELECT household_id FROM decisions WHERE created_at < ?"
                    " UNION SELECT household_id FROM notifications WHERE created_at < ?) AS old"
                    f" ORDER BY {self._ordered('household_id')}"
                ),
                (before, before, before),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def audit_anchor(self, household_id: str) -> AuditAnchor | None:
        with self._reading() as conn:
            return self._anchor(conn, household_id)

    def ping(self) -> None:
        with self._reading() as conn:
            conn.execute("SELECT 1").fetchone()
