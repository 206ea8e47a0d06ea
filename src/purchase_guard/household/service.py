"""Household administration: households, members, voices, policy, PIN, history, approvals.

Authorisation happens here, not in the gRPC layer, so every entry point (gRPC, CLI,
replay) goes through the same check: a household token opens exactly one household,
the operator token opens all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from purchase_guard.audit.chain import ChainReport
from purchase_guard.audit.verify import verify_household_audit
from purchase_guard.challenge.pin import PinHasher, validate_pin
from purchase_guard.clock import Clock, IdSource
from purchase_guard.config import Settings
from purchase_guard.domain import (
    AudioInput,
    Challenge,
    ChallengeMethod,
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
from purchase_guard.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from purchase_guard.ids import validate_id
from purchase_guard.logs import get_logger
from purchase_guard.money import is_currency
from purchase_guard.policy.defaults import default_policy
from purchase_guard.policy.validate import validate_policy
from purchase_guard.store.protocol import Store
from purchase_guard.voice.audio import decode_audio
from purchase_guard.voice.quality import TakeReport, assess_enrollment
from purchase_guard.voice.verifier import VoiceVerifier

log = get_logger("purchase_guard.household")


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the operator, or the holder of one household's token."""

    household_id: str | None  # None for the operator

    @property
    def is_operator(self) -> bool:
        return self.household_id is None


class ApprovalRecorder(Protocol):
    """Records a parent's approval or rejection as a decision (implemented by the pipeline's Guard)."""

    def resolve_approval(
        self, household_id: str, challenge_id: str, parent: Member, approve: bool
    ) -> Challenge: ...


@dataclass(frozen=True, slots=True)
class EnrollmentReport:
    member: Member
    takes: tuple[TakeReport, ...]
    encoder: str


class HouseholdService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        verifier: VoiceVerifier,
        pins: PinHasher,
        clock: Clock,
        ids: IdSource,
        operator_token: str,
        approvals: ApprovalRecorder | None = None,
    ) -> None:
        self._approvals = approvals
        self._settings = settings
        self._store = store
        self._verifier = verifier
        self._pins = pins
        self._clock = clock
        self._ids = ids
        self._operator_hash = hash_token(operator_token) if operator_token else ""

    # ------------------------------------------------------------------ auth
    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated("missing credential: send metadata 'authorization: Bearer <token>'")
        digest = hash_token(token)
        if self._operator_hash and hmac.compare_digest(digest, self._operator_hash):
            return Principal(None)
        household_id = self._store.household_for_token_hash(digest)
        if household_id is None:
            raise Unauthenticated("unknown credential")
        return Principal(household_id)

    @staticmethod
    def authorize(principal: Principal, household_id: str) -> None:
        if principal.is_operator:
            return
        if principal.household_id != household_id:
            # Same message whether or not the other household exists: no probing for ids.
            raise PermissionDenied("this credential is not valid for that household")

    # ------------------------------------------------------------------ households
    def create_household(
        self, principal: Principal, name: str, time_zone: str, currency: str, retain_audio: bool
    ) -> tuple[Household, str]:
        if not principal.is_operator:
            raise PermissionDenied("only the operator credential can create households")
        if not name.strip() or len(name) > 100:
            raise InvalidArgument("name is required and at most 100 characters")
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidArgument(
                f"time_zone {time_zone!r} is not an IANA time zone (e.g. 'Europe/Paris')"
            ) from exc
        if not is_currency(currency):
            raise InvalidArgument(f"currency {currency!r} is not an ISO 4217 code (e.g. 'USD')")
        now = self._clock.now()
        household = Household(self._ids.new_id("hh"), name.strip(), time_zone, currency, retain_audio, now)
        token = "pgh_" + secrets.token_urlsafe(32)
        self._store.create_household(household, hash_token(token))
        self._store.put_policy(household.household_id, default_policy(), now)
        log.info("household_created", household_id=household.household_id)
        return household, token

    def get_household(self, principal: Principal, household_id: str) -> Household:
        self.authorize(principal, household_id)
        return self._store.get_household(validate_id(household_id, "household_id"))

    # ------------------------------------------------------------------ members
    def add_member(
        self, principal: Principal, household_id: str, name: str, role: Role, is_parent: bool
    ) -> Member:
        self.get_household(principal, household_id)
        if not name.strip() or len(name) > 100:
            raise InvalidArgument("display_name is required and at most 100 characters")
        if is_parent and role is not Role.ADULT:
            raise InvalidArgument("only an ADULT member can be a parent")
        member = Member(
            self._ids.new_id("mem"), household_id, name.strip(), role, is_parent, self._clock.now()
        )
        self._store.add_member(member)
        return member

    def list_members(self, principal: Principal, household_id: str) -> list[tuple[Member, Voiceprint | None]]:
        self.get_household(principal, household_id)
        prints = {vp.member_id: vp for vp in self._store.list_voiceprints(household_id)}
        return [(m, prints.get(m.member_id)) for m in self._store.list_members(household_id)]

    def remove_member(self, principal: Principal, household_id: str, member_id: str) -> None:
        self.get_household(principal, household_id)
        self._store.remove_member(household_id, validate_id(member_id, "member_id"))

    def enroll_voice(
        self, principal: Principal, household_id: str, member_id: str, takes: Sequence[AudioInput]
    ) -> EnrollmentReport:
        self.get_household(principal, household_id)
        member = self._store.get_member(household_id, validate_id(member_id, "member_id"))
        if len(takes) < 3:
            raise InvalidArgument(f"enrollment needs at least 3 utterances, got {len(takes)}")
        if len(takes) > self._settings.max_enroll_takes:
            raise InvalidArgument(f"enrollment accepts at most {self._settings.max_enroll_takes} utterances")
        pcms = []
        for i, take in enumerate(takes):
            try:
                pcms.append(
                    decode_audio(
                        encoded=take.encoded,
                        pcm16=take.pcm16,
                        sample_rate_hz=take.sample_rate_hz,
                        max_seconds=self._settings.max_audio_seconds,
                    )
                )
            except InvalidArgument as exc:
                raise type(exc)(f"utterances[{i}]: {exc}") from exc
        result = assess_enrollment(pcms, self._verifier.encoder)
        centroid = np.asarray(result.centroid, dtype=np.float32)
        accepted = sum(1 for t in result.takes if t.accepted)
        self._store.put_voiceprint(
            Voiceprint(
                member_id=member.member_id,
                household_id=household_id,
                encoder=self._verifier.encoder.name,
                embedding=tuple(float(x) for x in centroid),
                n_utterances=accepted,
                created_at=self._clock.now(),
            )
        )
        log.info("voice_enrolled", member_id=member.member_id, takes=len(takes), accepted=accepted)
        return EnrollmentReport(member, result.takes, self._verifier.encoder.name)

    # ------------------------------------------------------------------ policy and PIN
    def set_policy(self, principal: Principal, household_id: str, policy: Policy) -> Policy:
        self.get_household(principal, household_id)
        return self._store.put_policy(household_id, validate_policy(policy), self._clock.now())

    def get_policy(self, principal: Principal, household_id: str) -> Policy:
        self.get_household(principal, household_id)
        policy = self._store.get_policy(household_id)
        if policy is None:
            raise NotFound(f"household {household_id!r} has no policy")
        return policy

    def set_pin(self, principal: Principal, household_id: str, pin: str) -> None:
        self.get_household(principal, household_id)
        validate_pin(pin)
        old = self._store.get_pin(household_id)
        self._store.put_pin(
            PinState(
                household_id=household_id,
                pin_hash=self._pins.hash(pin),
                # Changing the PIN does not lift an active throttle: that would let whoever
                # triggered it reset the back-off by changing the PIN with a stolen token.
                lockouts=old.lockouts if old else 0,
                throttled_until=old.throttled_until if old else None,
                set_at=self._clock.now(),
            )
        )
        log.info("pin_set")

    # ------------------------------------------------------------------ history
    def list_decisions(self, principal: Principal, household_id: str, limit: int) -> list[Decision]:
        self.get_household(principal, household_id)
        if limit < 0:
            raise InvalidArgument("limit must not be negative")
        return self._store.list_decisions(household_id, min(limit or 50, 500))

    def list_notifications(self, principal: Principal, household_id: str) -> list[Notification]:
        self.get_household(principal, household_id)
        return self._store.list_notifications(household_id)

    def pending_approvals(self, principal: Principal, household_id: str) -> list[Challenge]:
        self.get_household(principal, household_id)
        now = self._clock.now()
        return [
            c
            for c in self._store.list_challenges(household_id, ChallengeStatus.PENDING)
            if c.method is ChallengeMethod.PARENT_APPROVAL and c.expires_at > now
        ]

    def resolve_approval(
        self, principal: Principal, household_id: str, challenge_id: str, parent_member_id: str, approve: bool
    ) -> Challenge:
        """Authorises the parent; the decision itself is made and recorded by the `ApprovalRecorder`
        (the pipeline), in the same transaction as the challenge's new state."""
        self.get_household(principal, household_id)
        parent = self._store.get_member(household_id, validate_id(parent_member_id, "parent_member_id"))
        if not parent.is_parent:
            raise PermissionDenied(f"member {parent.member_id!r} is not a parent of this household")
        if self._approvals is None:
            raise FailedPrecondition("approvals are not available on this server")
        return self._approvals.resolve_approval(household_id, challenge_id, parent, approve)

    def verify_audit(self, principal: Principal, household_id: str) -> ChainReport:
        # An erased household has no row any more, but its sealed chain and tombstone remain
        # and must still verify; a purged chain verifies from its anchor.
        self.authorize(principal, household_id)
        hid = validate_id(household_id, "household_id")
        if self._store.get_tombstone(hid) is None:
            self._store.get_household(hid)
        return verify_household_audit(self._store, hid)

    def now(self) -> datetime:
        return self._clock.now()
