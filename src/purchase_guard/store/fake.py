"""`FakeStore`: an in-memory Store for unit tests, with the same contract as `SqliteStore`.

It passes the same contract suite (tests/store), so code tested against it behaves the same
on the real store: idempotent `record_decision`, the audit hash chain, compare-and-set on
challenges and household isolation. Nothing persists; one lock serialises every call.
Values are kept as the codec's JSON so a caller can never mutate stored state by accident
and timestamps normalise to UTC exactly as in SQLite. Personal values are sealed exactly as
the real stores seal them (a real `KeyRing`, in memory), so erasure really makes what is
left unreadable here too.
"""

from __future__ import annotations

import secrets
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

from purchase_guard.audit.chain import GENESIS, AuditAnchor, AuditEntry, entry_hash
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
from purchase_guard.sealing import KeyRing, Sealer
from purchase_guard.serial import format_ts, parse_ts
from purchase_guard.store import codec
from purchase_guard.store.protocol import (
    AuditRecord,
    HouseholdRecords,
    PolicyRevision,
    PrivacyStore,
    PurgeResult,
    SpendEntry,
    Store,
    StoredDecision,
    Tombstone,
    VoiceprintInfo,
)


@dataclass(slots=True)
class _Spend:
    decision_id: str
    member_id: str | None
    amount_minor: int
    seq: int
    at: str
    exempt: bool


@dataclass(slots=True)
class _Challenge:
    body: str  # sealed
    passed_seq: int | None
    status: ChallengeStatus
    created_at: str
    expires_at: str


@dataclass(slots=True)
class _Voiceprint:
    info: VoiceprintInfo
    sealed: bytes


@dataclass(slots=True)
class _Decision:
    decision_id: str
    body: str  # sealed
    digest: str
    seq: int
    at: str


def _f32(values: tuple[float, ...]) -> tuple[float, ...]:
    # The real store keeps float32; round the same way so tests see the same values.
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


def _utc(when: datetime) -> datetime:
    return parse_ts(format_ts(when))


class FakeStore:
    def __init__(self, *, sealer: Sealer | None = None) -> None:
        # Without a sealer: a real key ring on a random master key; nothing outlives the object.
        self._sealer: Sealer = sealer or KeyRing.in_memory(secrets.token_bytes(32))
        self._lock = threading.Lock()
        self._locks_guard = threading.Lock()
        self._household_locks: dict[str, threading.Lock] = {}
        self._closed = False
        # Households and members are kept with their names sealed, opened on every read.
        self._households: dict[str, tuple[Household, str]] = {}
        self._members: dict[str, Member] = {}
        self._voiceprints: dict[str, _Voiceprint] = {}
        self._policies: dict[str, list[tuple[str, str]]] = {}  # (policy json, created_at)
        self._pins: dict[str, PinState] = {}
        self._decisions: dict[tuple[str, str, str], _Decision] = {}  # by (household, kind, request_id)
        self._decision_ids: set[str] = set()
        self._spend: dict[str, list[_Spend]] = {}
        self._audit: dict[str, list[AuditEntry]] = {}
        self._challenges: dict[str, tuple[str, _Challenge]] = {}
        self._notifications: dict[str, list[Notification]] = {}  # messages sealed
        self._tombstones: dict[str, Tombstone] = {}
        self._anchors: dict[str, AuditAnchor] = {}

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    def _seal(self, household_id: str, text: str, aad: bytes) -> str:
        return codec.seal_text(self._sealer, household_id, text, aad)

    def _open(self, household_id: str, stored: str, aad: bytes) -> str:
        return codec.open_text(self._sealer, household_id, stored, aad)

    def _exists(self, household_id: str) -> None:
        # Checked before sealing: sealing creates a data key, never wanted for an unknown household.
        with self._lock:
            self._check_open()
            self._require_household(household_id)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("store unavailable: closed")

    def _require_household(self, household_id: str) -> None:
        if household_id not in self._households:
            raise NotFound(f"household {household_id!r} not found")

    # --- households -----------------------------------------------------------------

    def create_household(self, household: Household, admin_token_hash: str) -> None:
        hid = household.household_id
        name = self._seal(hid, household.name, codec.household_name_aad(hid))
        with self._lock:
            self._check_open()
            taken = any(h == admin_token_hash for _, h in self._households.values())
            if hid in self._households or hid in self._tombstones or taken:
                raise AlreadyExists(f"household {hid!r} or its admin token exists already")
            stored = replace(household, name=name, created_at=_utc(household.created_at))
            self._households[hid] = (stored, admin_token_hash)

    def get_household(self, household_id: str) -> Household:
        with self._lock:
            self._check_open()
            if household_id not in self._households:
                raise NotFound(f"household {household_id!r} not found")
            stored = self._households[household_id][0]
        return self._opened_household(stored)

    def _opened_household(self, stored: Household) -> Household:
        hid = stored.household_id
        return replace(stored, name=self._open(hid, stored.name, codec.household_name_aad(hid)))

    def household_for_token_hash(self, token_hash: str) -> str | None:
        with self._lock:
            self._check_open()
            for household, hashed in self._households.values():
                if hashed == token_hash:
                    return household.household_id
            return None

    # --- members --------------------------------------------------------------------

    def add_member(self, member: Member) -> None:
        self._exists(member.household_id)
        name = self._seal(member.household_id, member.display_name, codec.member_name_aad(member.member_id))
        with self._lock:
            self._check_open()
            self._require_household(member.household_id)
            if member.member_id in self._members:
                raise AlreadyExists(f"member {member.member_id!r} exists already")
            self._members[member.member_id] = replace(
                member, display_name=name, created_at=_utc(member.created_at)
            )

    def _member(self, household_id: str, member_id: str) -> Member:
        member = self._members.get(member_id)
        if member is None or member.household_id != household_id:
            raise NotFound(f"member {member_id!r} not found")
        return member

    def _opened_member(self, stored: Member) -> Member:
        name = self._open(stored.household_id, stored.display_name, codec.member_name_aad(stored.member_id))
        return replace(stored, display_name=name)

    def get_member(self, household_id: str, member_id: str) -> Member:
        with self._lock:
            self._check_open()
            stored = self._member(household_id, member_id)
        return self._opened_member(stored)

    def list_members(self, household_id: str) -> list[Member]:
        with self._lock:
            self._check_open()
            found = [m for m in self._members.values() if m.household_id == household_id]
        return [self._opened_member(m) for m in sorted(found, key=lambda m: (m.created_at, m.member_id))]

    def remove_member(self, household_id: str, member_id: str) -> None:
        with self._lock:
            self._check_open()
            self._member(household_id, member_id)
            del self._members[member_id]
            self._voiceprints.pop(member_id, None)

    def put_voiceprint(self, voiceprint: Voiceprint) -> None:
        hid, mid = voiceprint.household_id, voiceprint.member_id
        with self._lock:
            self._check_open()
            self._member(hid, mid)
        dim = len(voiceprint.embedding)
        packed = struct.pack(f"<{dim}f", *voiceprint.embedding)
        sealed = self._sealer.seal(hid, packed, codec.voiceprint_aad(mid, voiceprint.encoder, dim))
        info = VoiceprintInfo(
            hid, mid, voiceprint.encoder, dim, voiceprint.n_utterances, _utc(voiceprint.created_at)
        )
        with self._lock:
            self._check_open()
            self._member(hid, mid)
            self._voiceprints[mid] = _Voiceprint(info, sealed)

    def list_voiceprints(self, household_id: str) -> list[Voiceprint]:
        with self._lock:
            self._check_open()
            found = [v for v in self._voiceprints.values() if v.info.household_id == household_id]
        found.sort(key=lambda v: v.info.member_id)
        prints = []
        for v in found:
            i = v.info
            packed = self._sealer.open(
                household_id, v.sealed, codec.voiceprint_aad(i.member_id, i.encoder, i.dim)
            )
            prints.append(
                Voiceprint(
                    i.member_id,
                    i.household_id,
                    i.encoder,
                    struct.unpack(f"<{i.dim}f", packed),
                    i.n_utterances,
                    i.created_at,
                )
            )
        return prints

    # --- policy and PIN -------------------------------------------------------------

    def put_policy(self, household_id: str, policy: Policy, at: datetime) -> Policy:
        format_ts(at)  # same validation as the real store: aware timestamps only
        with self._lock:
            self._check_open()
            self._require_household(household_id)
            revisions = self._policies.setdefault(household_id, [])
            stored = replace(policy, revision=len(revisions) + 1)
            revisions.append((codec.policy_to_json(stored), format_ts(at)))
            return stored

    def get_policy(self, household_id: str) -> Policy | None:
        with self._lock:
            self._check_open()
            revisions = self._policies.get(household_id)
            return codec.policy_from_json(revisions[-1][0]) if revisions else None

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
        return StoredDecision(self._decision(household_id, found), found.digest)

    def _decision(self, household_id: str, stored: _Decision) -> Decision:
        body = self._open(household_id, stored.body, codec.decision_aad(stored.decision_id))
        return codec.decision_from_json(body)

    def _challenge(self, household_id: str, challenge_id: str, stored: _Challenge) -> Challenge:
        body = self._open(household_id, stored.body, codec.challenge_aad(challenge_id))
        return codec.challenge_from_json(body)

    def _head(self, household_id: str) -> tuple[int, str]:
        chain = self._audit.get(household_id)
        if chain:
            return chain[-1].seq, chain[-1].entry_hash
        anchor = self._anchors.get(household_id)
        return (0, GENESIS) if anchor is None else (anchor.seq, anchor.entry_hash)

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
        at_iso = format_ts(decision.decided_at)
        spend_at = None if spend is None else format_ts(spend.at)
        self._exists(hid)
        body = self._seal(hid, codec.decision_to_json(decision), codec.decision_aad(decision.decision_id))
        sealed_audit = self._seal(hid, audit_body, codec.audit_aad(decision.decision_id))
        challenge_body = (
            None
            if challenge is None
            else self._seal(
                hid, codec.challenge_to_json(challenge), codec.challenge_aad(challenge.challenge_id)
            )
        )
        with self._lock:
            self._check_open()
            key = (hid, decision.kind, decision.request_id)
            existing = self._decisions.get(key)
            if existing is None:
                self._insert(
                    decision,
                    request_digest,
                    body,
                    sealed_audit,
                    at_iso,
                    spend,
                    spend_at,
                    challenge,
                    challenge_body,
                )
                return decision
            if existing.digest != request_digest:
                raise AlreadyExists(f"request id {decision.request_id!r} was used for another request")
        return self._decision(hid, existing)

    def _insert(
        self,
        decision: Decision,
        request_digest: str,
        body: str,
        audit_body: str,
        at_iso: str,
        spend: SpendEntry | None,
        spend_at: str | None,
        challenge: Challenge | None,
        challenge_body: str | None,
    ) -> None:
        hid = decision.household_id
        key = (hid, decision.kind, decision.request_id)
        self._require_household(hid)
        if decision.decision_id in self._decision_ids:
            raise AlreadyExists(f"decision {decision.decision_id!r} exists already")
        if challenge is not None:
            owner = self._challenges.get(challenge.challenge_id)
            if owner is not None and owner[0] != hid:
                raise NotFound(f"challenge {challenge.challenge_id!r} not found")
        last, prev = self._head(hid)
        seq = last + 1
        chain = self._audit.setdefault(hid, [])
        self._decisions[key] = _Decision(decision.decision_id, body, request_digest, seq, at_iso)
        self._decision_ids.add(decision.decision_id)
        chain.append(
            AuditEntry(
                household_id=hid,
                seq=seq,
                decision_id=decision.decision_id,
                at=parse_ts(at_iso),
                body=audit_body,
                prev_hash=prev,
                entry_hash=entry_hash(hid, seq, decision.decision_id, at_iso, audit_body, prev),
            )
        )
        if spend is not None and spend_at is not None:
            self._spend.setdefault(hid, []).append(
                _Spend(decision.decision_id, spend.member_id, spend.amount_minor, seq, spend_at, spend.exempt)
            )
        if challenge is not None and challenge_body is not None:
            old = self._challenges.get(challenge.challenge_id)
            passed = old[1].passed_seq if old is not None else None
            if passed is None and challenge.status is ChallengeStatus.PASSED:
                passed = seq
            self._challenges[challenge.challenge_id] = (
                hid,
                self._stored_challenge(challenge, challenge_body, passed),
            )

    @staticmethod
    def _stored_challenge(challenge: Challenge, body: str, passed: int | None) -> _Challenge:
        return _Challenge(
            body,
            passed,
            challenge.status,
            format_ts(challenge.created_at),
            format_ts(challenge.expires_at),
        )

    def list_decisions(self, household_id: str, limit: int) -> list[Decision]:
        with self._lock:
            self._check_open()
            found = [d for (h, _, _), d in self._decisions.items() if h == household_id]
        found.sort(key=lambda d: d.seq, reverse=True)
        return [self._decision(household_id, d) for d in found[: max(limit, 0)]]

    def spend_since(self, household_id: str, member_id: str | None, since: datetime) -> int:
        since_iso = format_ts(since)
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
        return self._challenge(household_id, challenge_id, found[1])

    def update_challenge(self, challenge: Challenge, expected_status: ChallengeStatus) -> bool:
        hid = challenge.household_id
        body = self._seal(
            hid, codec.challenge_to_json(challenge), codec.challenge_aad(challenge.challenge_id)
        )
        with self._lock:
            self._check_open()
            found = self._challenges.get(challenge.challenge_id)
            if found is None or found[0] != hid:
                raise NotFound(f"challenge {challenge.challenge_id!r} not found")
            # The stored status and attempts are compared from the stored row itself.
            stored = found[1]
            stored_attempts = self._challenge(hid, challenge.challenge_id, stored).attempts_left
            changes_status = challenge.status is not expected_status
            attempts_ok = stored_attempts == challenge.attempts_left + 1 or (
                changes_status and stored_attempts == challenge.attempts_left
            )
            if stored.status is not expected_status or not attempts_ok:
                return False
            passed = found[1].passed_seq
            if passed is None and challenge.status is ChallengeStatus.PASSED:
                passed = self._head(hid)[0]
            self._challenges[challenge.challenge_id] = (
                found[0],
                self._stored_challenge(challenge, body, passed),
            )
            return True

    def list_challenges(self, household_id: str, status: ChallengeStatus | None = None) -> list[Challenge]:
        with self._lock:
            self._check_open()
            rows = [(cid, c) for cid, (h, c) in self._challenges.items() if h == household_id]
        found = [self._challenge(household_id, cid, c) for cid, c in rows]
        found = [c for c in found if status is None or c.status is status]
        return sorted(found, key=lambda c: (c.created_at, c.challenge_id))

    # --- notifications --------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        self._exists(notification.household_id)
        message = self._seal(
            notification.household_id,
            notification.message,
            codec.notification_aad(notification.notification_id),
        )
        with self._lock:
            self._check_open()
            self._require_household(notification.household_id)
            every = (n.notification_id for ns in self._notifications.values() for n in ns)
            if notification.notification_id in every:
                raise AlreadyExists(f"notification {notification.notification_id!r} exists already")
            self._notifications.setdefault(notification.household_id, []).append(
                replace(notification, message=message, created_at=_utc(notification.created_at))
            )

    def list_notifications(self, household_id: str) -> list[Notification]:
        with self._lock:
            self._check_open()
            found = list(self._notifications.get(household_id, []))
        found.sort(key=lambda n: (n.created_at, n.notification_id))
        return [self._opened_notification(n) for n in found]

    def _opened_notification(self, n: Notification) -> Notification:
        aad = codec.notification_aad(n.notification_id)
        return replace(n, message=self._open(n.household_id, n.message, aad))

    # --- export, erasure, retention (PrivacyStore) ------------------------------------

    def household_records(self, household_id: str) -> HouseholdRecords:
        hid = household_id
        with self._lock:  # one lock: every list below is the same moment's state
            self._check_open()
            if hid not in self._households:
                raise NotFound(f"household {hid!r} not found")
            household = self._households[hid][0]
            members = sorted(
                (m for m in self._members.values() if m.household_id == hid),
                key=lambda m: (m.created_at, m.member_id),
            )
            prints = sorted(
                (v.info for v in self._voiceprints.values() if v.info.household_id == hid),
                key=lambda i: i.member_id,
            )
            policies = list(self._policies.get(hid, []))
            pin = self._pins.get(hid)
            decisions = sorted(
                (d for (h, _, _), d in self._decisions.items() if h == hid), key=lambda d: d.seq
            )
            spend = list(self._spend.get(hid, []))
            challenges = sorted(
                ((cid, c) for cid, (h, c) in self._challenges.items() if h == hid),
                key=lambda item: (item[1].created_at, item[0]),
            )
            notifications = sorted(
                self._notifications.get(hid, []), key=lambda n: (n.created_at, n.notification_id)
            )
            audit = list(self._audit.get(hid, []))
            anchor = self._anchors.get(hid)
        return HouseholdRecords(
            household=self._opened_household(household),
            members=tuple(self._opened_member(m) for m in members),
            voiceprints=tuple(prints),
            policies=tuple(
                PolicyRevision(hid, codec.policy_from_json(body), parse_ts(at)) for body, at in policies
            ),
            pin=pin,
            decisions=tuple(self._decision(hid, d) for d in decisions),
            spend=tuple(
                SpendEntry(hid, s.member_id, s.amount_minor, s.decision_id, parse_ts(s.at), s.exempt)
                for s in spend
            ),
            challenges=tuple(self._challenge(hid, cid, c) for cid, c in challenges),
            notifications=tuple(self._opened_notification(n) for n in notifications),
            audit=tuple(self._audit_record(e) for e in audit),
            audit_anchor=anchor,
        )

    def _audit_record(self, entry: AuditEntry) -> AuditRecord:
        if not codec.is_sealed_text(entry.body):
            return AuditRecord(entry, entry.body, sealed=False)
        body = self._open(entry.household_id, entry.body, codec.audit_aad(entry.decision_id))
        return AuditRecord(entry, body, sealed=True)

    def erase_household(self, household_id: str, at: datetime) -> tuple[Tombstone, bool]:
        hid = household_id
        erased_now = False
        with self._lock:
            self._check_open()
            tombstone = self._tombstones.get(hid)
            if tombstone is None:
                self._require_household(hid)
                tombstone = Tombstone(hid, _utc(at), len(self._audit.get(hid, [])), self._head(hid)[1])
                del self._households[hid]
                for mid in [m.member_id for m in self._members.values() if m.household_id == hid]:
                    del self._members[mid]
                    self._voiceprints.pop(mid, None)
                self._policies.pop(hid, None)
                self._pins.pop(hid, None)
                for key in [k for k in self._decisions if k[0] == hid]:
                    self._decision_ids.discard(self._decisions.pop(key).decision_id)
                self._spend.pop(hid, None)
                for cid in [cid for cid, (h, _) in self._challenges.items() if h == hid]:
                    del self._challenges[cid]
                self._notifications.pop(hid, None)
                self._tombstones[hid] = tombstone
                erased_now = True
        self._sealer.destroy(hid)
        return tombstone, erased_now

    def get_tombstone(self, household_id: str) -> Tombstone | None:
        with self._lock:
            self._check_open()
            return self._tombstones.get(household_id)

    def list_household_ids(self) -> list[str]:
        """Live households and erased ones with a tombstone or kept audit entries."""
        with self._lock:
            self._check_open()
            return sorted(
                set(self._households) | set(self._tombstones) | {h for h, c in self._audit.items() if c}
            )

    def audit_anchor(self, household_id: str) -> AuditAnchor | None:
        with self._lock:
            self._check_open()
            return self._anchors.get(household_id)

    def retention_candidates(self, cutoff: datetime) -> list[str]:
        before = format_ts(cutoff)
        with self._lock:
            self._check_open()
            found = {
                h for h, chain in self._audit.items() if any(format_ts(e.at) < before for e in chain)
            }
            found |= {h for (h, _, _), d in self._decisions.items() if d.at < before}
            found |= {
                h
                for h, ns in self._notifications.items()
                if any(format_ts(n.created_at) < before for n in ns)
            }
        return sorted(found)

    def purge_household(self, household_id: str, cutoff: datetime) -> PurgeResult:
        hid = household_id
        before = format_ts(cutoff)
        with self._lock:
            self._check_open()
            passed = [
                c.passed_seq for h, c in self._challenges.values() if h == hid and c.passed_seq is not None
            ]
            last_passed = max(passed, default=0)
            old_spend = self._spend.get(hid, [])
            kept_spend = [
                s for s in old_spend if not (s.at < before and not (s.exempt and s.seq > last_passed))
            ]
            self._spend[hid] = kept_spend
            spent_ids = {s.decision_id for s in kept_spend}
            gone = [
                k
                for k, d in self._decisions.items()
                if k[0] == hid and d.at < before and d.decision_id not in spent_ids
            ]
            for key in gone:
                self._decision_ids.discard(self._decisions.pop(key).decision_id)
            old_challenges = [
                cid
                for cid, (h, c) in self._challenges.items()
                if h == hid and c.expires_at < before and (c.passed_seq is None or c.passed_seq < last_passed)
            ]
            for cid in old_challenges:
                del self._challenges[cid]
            notes = self._notifications.get(hid, [])
            kept_notes = [n for n in notes if format_ts(n.created_at) >= before]
            self._notifications[hid] = kept_notes
            chain = self._audit.get(hid, [])
            prefix = 0
            while prefix < len(chain) and format_ts(chain[prefix].at) < before:
                prefix += 1
            if prefix:
                tail = chain[prefix - 1]
                self._anchors[hid] = AuditAnchor(hid, tail.seq, tail.entry_hash, tail.at)
                self._audit[hid] = chain[prefix:]
            return PurgeResult(
                hid,
                len(gone),
                len(old_spend) - len(kept_spend),
                prefix,
                len(old_challenges),
                len(notes) - len(kept_notes),
                self._anchors.get(hid),
            )

    # --- lifecycle ------------------------------------------------------------------

    def ping(self) -> None:
        with self._lock:
            self._check_open()

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _conforms(store: FakeStore) -> tuple[Store, PrivacyStore]:
    """Never called: makes mypy prove that FakeStore implements the Store and PrivacyStore protocols."""
    return store, store
