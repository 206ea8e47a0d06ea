"""Turning stored rows back into domain values: what the SQLite and PostgreSQL stores share.

Both stores keep the same columns in the same order and seal the same values the same way
(`codec`), so reading a row back is the same code; only the SQL around it differs. A store
mixes this in and sets `_sealer`.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any

from purchase_guard.audit.chain import AuditEntry
from purchase_guard.domain import (
    Challenge,
    Credential,
    CredentialKind,
    Decision,
    Household,
    Member,
    Notification,
    PinState,
    Role,
)
from purchase_guard.sealing import Sealer
from purchase_guard.serial import parse_ts
from purchase_guard.store import codec
from purchase_guard.store.protocol import AuditRecord, Tombstone

Row = tuple[Any, ...]

# Column lists in the order the decoders below read them.
HOUSEHOLD_COLUMNS = "id, name, time_zone, currency, retain_audio, created_at"
MEMBER_COLUMNS = "member_id, household_id, display_name, role, is_parent, created_at"
NOTIFICATION_COLUMNS = "notification_id, household_id, kind, message, challenge_id, created_at"
AUDIT_COLUMNS = "household_id, seq, decision_id, at, body, prev_hash, entry_hash"
PIN_COLUMNS = "household_id, pin_hash, set_at, failures, next_try_at, disabled_at, peppered"
CREDENTIAL_COLUMNS = "credential_id, kind, household_id, member_id, device_id, label, created_at, revoked_at"


def _opt_ts(value: str | None) -> datetime | None:
    return None if value is None else parse_ts(value)


def credential_from_row(row: Row) -> Credential:
    return Credential(
        credential_id=row[0],
        kind=CredentialKind(row[1]),
        household_id=row[2],
        member_id=row[3],
        device_id=row[4],
        label=row[5],
        created_at=parse_ts(row[6]),
        revoked_at=_opt_ts(row[7]),
    )


def audit_entry_from_row(r: Row) -> AuditEntry:
    return AuditEntry(
        household_id=r[0],
        seq=int(r[1]),
        decision_id=r[2],
        at=parse_ts(r[3]),
        body=r[4],
        prev_hash=r[5],
        entry_hash=r[6],
    )


def tombstone_from_row(row: Row) -> Tombstone:
    return Tombstone(row[0], parse_ts(row[1]), int(row[2]), str(row[3]))


class SealedRows:
    """Row decoders and sealing helpers over `self._sealer`; `close()` comes from the store."""

    _sealer: Sealer

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    def close(self) -> None:
        raise NotImplementedError

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _seal(self, household_id: str, text: str, aad: bytes) -> str:
        return codec.seal_text(self._sealer, household_id, text, aad)

    def _open(self, household_id: str, stored: str, aad: bytes) -> str:
        return codec.open_text(self._sealer, household_id, stored, aad)

    def _pin(self, row: Row) -> PinState:
        # The hash is sealed with the household's key: a copy of the database alone cannot test PINs.
        return PinState(
            household_id=row[0],
            pin_hash=self._open(row[0], row[1], codec.pin_hash_aad(row[0])),
            set_at=parse_ts(row[2]),
            failures=int(row[3]),
            next_try_at=_opt_ts(row[4]),
            disabled_at=_opt_ts(row[5]),
            peppered=bool(row[6]),
        )

    def _household(self, row: Row) -> Household:
        return Household(
            household_id=row[0],
            name=self._open(row[0], row[1], codec.household_name_aad(row[0])),
            time_zone=row[2],
            currency=row[3],
            retain_audio=bool(row[4]),
            created_at=parse_ts(row[5]),
        )

    def _member(self, row: Row) -> Member:
        return Member(
            member_id=row[0],
            household_id=row[1],
            display_name=self._open(row[1], row[2], codec.member_name_aad(row[0])),
            role=Role(row[3]),
            is_parent=bool(row[4]),
            created_at=parse_ts(row[5]),
        )

    def _decision(self, household_id: str, decision_id: str, stored: str) -> Decision:
        return codec.decision_from_json(self._open(household_id, stored, codec.decision_aad(decision_id)))

    def _challenge(self, household_id: str, challenge_id: str, stored: str) -> Challenge:
        return codec.challenge_from_json(self._open(household_id, stored, codec.challenge_aad(challenge_id)))

    def _notification(self, r: Row) -> Notification:
        return Notification(
            notification_id=r[0],
            household_id=r[1],
            kind=r[2],
            message=self._open(r[1], r[3], codec.notification_aad(r[0])),
            challenge_id=r[4],
            created_at=parse_ts(r[5]),
        )

    def _audit_record(self, entry: AuditEntry) -> AuditRecord:
        if not codec.is_sealed_text(entry.body):
            return AuditRecord(entry, entry.body, sealed=False)  # written before sealing existed
        body = self._open(entry.household_id, entry.body, codec.audit_aad(entry.decision_id))
        return AuditRecord(entry, body, sealed=True)
