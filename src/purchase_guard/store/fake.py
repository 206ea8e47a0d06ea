"""`FakeStore`: an in-memory Store for unit tests, with the same contract as `SqliteStore`.

It passes the same contract suite (tests/store), so code tested against it behaves the same
on the real store: idempotent `record_decision`, the audit hash chain, compare-and-set on
challenges and household isolation. Nothing persists; one lock serialises every call.
Values are kept as the codec's JSON so a caller can never mutate stored state by accident
and timestamps normalise to UTC exactly as in SQLite.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

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
    Voiceprint,
)
from purchase_guard.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from purchase_guard.store import codec
from purchase_guard.store.protocol import AuditEntry, SpendEntry, Store, StoredDecision


@dataclass(slots=True)
class _Spend:
    member_id: str | None
    amount_minor: int
    seq: int
    at: str
    exempt: bool


@dataclass(slots=True)
class _Challenge:
    body: str
    passed_seq: int | None


def _f32(values: tuple[float, ...]) -> tuple[float, ...]:
    # The real store keeps float32; round the same way so tests see the same values.
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


def _utc(when: datetime) -> datetime:
    return codec.parse_ts(codec.format_ts(when))


class FakeStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks_guard = threading.Lock()
        self._household_locks: dict[str, threading.Lock] = {}
        self._closed = False
        self._households: dict[str, tuple[Household, str]] = {}
        self._members: dict[str, Member] = {}
        self._voiceprints: dict[str, Voiceprint] = {}
        self._policies: dict[str, list[str]] = {}
        self._pins: dict[str, PinState] = {}
        # (household, kind, request_id) -> (decision json, digest, seq)
        self._decisions: dict[tuple[str, str, str], tuple[str, str, int]] = {}
        self._decision_ids: set[str] = set()
        self._spend: dict[str, list[_Spend]] = {}
        self._audit: dict[str, list[AuditEntry]] = {}
        self._challenges: dict[str, tuple[str, _Challenge]] = {}
        self._notifications: dict[str, list[Notification]] = {}

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("store unavailable: closed")

    def _require_household(self, household_id: str) -> None:
        if household_id not in self._households:
            raise NotFound(f"household {household_id!r} not found")

    # --- households -----------------------------------------------------------------

    def create_household(self, household: Household, admin_token_hash: str) -> None:
        with self._lock:
            self._check_open()
            taken = any(h == admin_token_hash for _, h in self._households.values())
            if household.household_id in self._households or taken:
                raise AlreadyExists(f"household {household.household_id!r} or its admin token exists already")
            stored = replace(household, created_at=_utc(household.created_at))
            self._households[household.household_id] = (stored, admin_token_hash)

    def get_household(self, household_id: str) -> Household:
        with self._lock:
            self._check_open()
            if household_id not in self._households:
                raise NotFound(f"household {household_id!r} not found")
            return self._households[household_id][0]

    def household_for_token_hash(self, token_hash: str) -> str | None:
        with self._lock:
            self._check_open()
            for household, hashed in self._households.values():
                if hashed == token_hash:
                    return household.household_id
            return None

    # --- members --------------------------------------------------------------------

    def add_member(self, member: Member) -> None:
        with self._lock:
            self._check_open()
            self._require_household(member.household_id)
            if member.member_id in self._members:
                raise AlreadyExists(f"member {member.member_id!r} exists already")
            self._members[member.member_id] = replace(member, created_at=_utc(member.created_at))

    def _member(self, household_id: str, member_id: str) -> Member:
        member = self._members.get(member_id)
        if member is None or member.household_id != household_id:
            raise NotFound(f"member {member_id!r} not found")
        return member

    def get_member(self, household_id: str, member_id: str) -> Member:
        with self._lock:
            self._check_open()
            return self._member(household_id, member_id)

    def list_members(self, household_id: str) -> list[Member]:
        with self._lock:
            self._check_open()
            found = [m for m in self._members.values() if m.household_id == household_id]
            return sorted(found, key=lambda m: (m.created_at, m.member_id))

    def remove_member(self, household_id: str, member_id: str) -> None:
        with self._lock:
            self._check_open()
            self._member(household_id, member_id)
            del self._members[member_id]
            self._voiceprints.pop(member_id, None)

    def put_voiceprint(self, voiceprint: Voiceprint) -> None:
        with self._lock:
            self._check_open()
            self._member(voiceprint.household_id, voiceprint.member_id)
            self._voiceprints[voiceprint.member_id] = replace(
                voiceprint, embedding=_f32(voiceprint.embedding), created_at=_utc(voiceprint.created_at)
            )

    def list_voiceprints(self, household_id: str) -> list[Voiceprint]:
        with self._lock:
            self._check_open()
            found = [v for v in self._voiceprints.values() if v.household_id == household_id]
            return sorted(found, key=lambda v: v.member_id)

    # --- policy and PIN -------------------------------------------------------------

    def put_policy(self, household_id: str, policy: Policy, at: datetime) -> Policy:
        codec.format_ts(at)  # same validation as the real store: aware timestamps only
        with self._lock:
            self._check_open()
            self._require_household(household_id)
            revisions = self._policies.setdefault(household_id, [])
            stored = replace(policy, revision=len(revisions) + 1)
            revisions.append(codec.policy_to_json(stored))
            return stored

    def get_policy(self, household_id: str) -> Policy | None:
        with self._lock:
            self._check_open()
            revisions = self._policies.get(household_id)
            return codec.policy_from_json(revisions[-1]) if revisions else None

    def put_pin(self, state: PinState) -> None:
        with self._lock:
            self._check_open()
            self._require_household(state.household_id)
            self._pins[state.household_id] = replace(
                state,
                set_at=_utc(state.set_at),
                throttled_until=None if state.throttled_until is None else _utc(state.throttled_until),
            )

    def get_pin(self, household_id: str) -> PinState | None:
        with self._lock:
            self._check_open()
            return self._pins.get(household_id)

    # --- decisions, spend and audit -------------------------------------------------

    @contextmanager
    def household_lock(self, household_id: str) -> Iterator[None]:
        # One process owns a SQLite store (replicas use PostgreSQL), so a process-local lock
        # per household is enough; the dict only grows with households seen by this process.
        with self._locks_guard:
            lock = self._household_locks.setdefault(household_id, threading.Lock())
        with lock:
            yield

    def get_decision(self, household_id: str, kind: str, request_id: str) -> StoredDecision | None:
        with self._lock:
            self._check_open()
            found = self._decisions.get((household_id, kind, request_id))
            if found is None:
                return None
            return StoredDecision(codec.decision_from_json(found[0]), found[1])

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
        challenge_body = None if challenge is None else codec.challenge_to_json(challenge)
        at_iso = codec.format_ts(decision.decided_at)
        spend_at = None if spend is None else codec.format_ts(spend.at)
        with self._lock:
            self._check_open()
            key = (hid, decision.kind, decision.request_id)
            existing = self._decisions.get(key)
            if existing is not None:
                if existing[1] != request_digest:
                    raise AlreadyExists(f"request id {decision.request_id!r} was used for another request")
                return codec.decision_from_json(existing[0])
            self._require_household(hid)
            if decision.decision_id in self._decision_ids:
                raise AlreadyExists(f"decision {decision.decision_id!r} exists already")
            if challenge is not None:
                owner = self._challenges.get(challenge.challenge_id)
                if owner is not None and owner[0] != hid:
                    raise NotFound(f"challenge {challenge.challenge_id!r} not found")
            chain = self._audit.setdefault(hid, [])
            seq = len(chain) + 1
            prev = chain[-1].entry_hash if chain else GENESIS
            self._decisions[key] = (body, request_digest, seq)
            self._decision_ids.add(decision.decision_id)
            chain.append(
                AuditEntry(
                    household_id=hid,
                    seq=seq,
                    decision_id=decision.decision_id,
                    at=codec.parse_ts(at_iso),
                    body=audit_body,
                    prev_hash=prev,
                    entry_hash=entry_hash(hid, seq, decision.decision_id, at_iso, audit_body, prev),
                )
            )
            if spend is not None and spend_at is not None:
                self._spend.setdefault(hid, []).append(
                    _Spend(spend.member_id, spend.amount_minor, seq, spend_at, spend.exempt)
                )
            if challenge is not None and challenge_body is not None:
                old = self._challenges.get(challenge.challenge_id)
                passed = old[1].passed_seq if old is not None else None
                if passed is None and challenge.status is ChallengeStatus.PASSED:
                    passed = seq
                self._challenges[challenge.challenge_id] = (hid, _Challenge(challenge_body, passed))
            return decision

    def list_decisions(self, household_id: str, limit: int) -> list[Decision]:
        with self._lock:
            self._check_open()
            found = [
                (seq, body) for (h, _, _), (body, _, seq) in self._decisions.items() if h == household_id
            ]
            found.sort(reverse=True)
            return [codec.decision_from_json(body) for _, body in found[: max(limit, 0)]]

    def spend_since(self, household_id: str, member_id: str | None, since: datetime) -> int:
        since_iso = codec.format_ts(since)
        with self._lock:
            self._check_open()
            return sum(
                s.amount_minor
                for s in self._spend.get(household_id, [])
                if s.at >= since_iso and (member_id is None or s.member_id == member_id)
            )

    def exempt_spend_since_last_challenge(self, household_id: str) -> int:
        with self._lock:
            self._check_open()
            passed = [
                c.passed_seq
                for h, c in self._challenges.values()
                if h == household_id and c.passed_seq is not None
            ]
            last = max(passed, default=0)
            return sum(s.amount_minor for s in self._spend.get(household_id, []) if s.exempt and s.seq > last)

    def audit_entries(self, household_id: str) -> list[AuditEntry]:
        with self._lock:
            self._check_open()
            return list(self._audit.get(household_id, []))

    # Test hooks for the tamper-detection contract tests; the real store is tampered with SQL.
    def tamper_audit_body(self, household_id: str, seq: int, body: str) -> None:
        chain = self._audit[household_id]
        chain[seq - 1] = replace(chain[seq - 1], body=body)

    def tamper_delete_audit(self, household_id: str, seq: int) -> None:
        del self._audit[household_id][seq - 1]

    # --- challenges -----------------------------------------------------------------

    def get_challenge(self, household_id: str, challenge_id: str) -> Challenge:
        with self._lock:
            self._check_open()
            found = self._challenges.get(challenge_id)
            if found is None or found[0] != household_id:
                raise NotFound(f"challenge {challenge_id!r} not found")
            return codec.challenge_from_json(found[1].body)

    def update_challenge(self, challenge: Challenge, expected_status: ChallengeStatus) -> bool:
        body = codec.challenge_to_json(challenge)
        with self._lock:
            self._check_open()
            found = self._challenges.get(challenge.challenge_id)
            if found is None or found[0] != challenge.household_id:
                raise NotFound(f"challenge {challenge.challenge_id!r} not found")
            stored = codec.challenge_from_json(found[1].body)
            changes_status = challenge.status is not expected_status
            attempts_ok = stored.attempts_left == challenge.attempts_left + 1 or (
                changes_status and stored.attempts_left == challenge.attempts_left
            )
            if stored.status is not expected_status or not attempts_ok:
                return False
            passed = found[1].passed_seq
            if passed is None and challenge.status is ChallengeStatus.PASSED:
                passed = len(self._audit.get(challenge.household_id, []))
            self._challenges[challenge.challenge_id] = (found[0], _Challenge(body, passed))
            return True

    def list_challenges(self, household_id: str, status: ChallengeStatus | None = None) -> list[Challenge]:
        with self._lock:
            self._check_open()
            found = [
                codec.challenge_from_json(c.body) for h, c in self._challenges.values() if h == household_id
            ]
        found = [c for c in found if status is None or c.status is status]
        return sorted(found, key=lambda c: (c.created_at, c.challenge_id))

    # --- notifications --------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        with self._lock:
            self._check_open()
            self._require_household(notification.household_id)
            every = (n.notification_id for ns in self._notifications.values() for n in ns)
            if notification.notification_id in every:
                raise AlreadyExists(f"notification {notification.notification_id!r} exists already")
            self._notifications.setdefault(notification.household_id, []).append(
                replace(notification, created_at=_utc(notification.created_at))
            )

    def list_notifications(self, household_id: str) -> list[Notification]:
        with self._lock:
            self._check_open()
            found = list(self._notifications.get(household_id, []))
        return sorted(found, key=lambda n: (n.created_at, n.notification_id))

    # --- lifecycle ------------------------------------------------------------------

    def ping(self) -> None:
        with self._lock:
            self._check_open()

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _conforms(store: FakeStore) -> Store:
    """Never called: makes mypy prove that FakeStore implements the Store protocol exactly."""
    return store
