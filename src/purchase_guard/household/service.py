"""Household administration: households, members, voices, policy, PIN, history, approvals.

Authorisation happens here, not in the gRPC layer, so every entry point (gRPC, CLI,
replay) goes through the same check: a household token opens exactly one household,
the operator token opens all.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit
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
    Credential,
    CredentialKind,
    Decision,
    Event,
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
from purchase_guard.events.signing import new_secret
from purchase_guard.events.stream import follow
from purchase_guard.household.principals import ADMINS, OPERATOR, Principal, PrincipalKind
from purchase_guard.ids import validate_id
from purchase_guard.logs import get_logger
from purchase_guard.money import is_currency
from purchase_guard.policy.defaults import default_policy
from purchase_guard.policy.validate import validate_policy
from purchase_guard.store.protocol import DeadLetter, Store, Webhook
from purchase_guard.voice.audio import Pcm, decode_audio
from purchase_guard.voice.digits import ENROLLMENT_PROMPTS, TemplateDigitChecker
from purchase_guard.voice.encoder import Embedding
from purchase_guard.voice.quality import TakeReport, assess_enrollment, check_take
from purchase_guard.voice.verifier import VoiceVerifier

log = get_logger("purchase_guard.household")

DEFAULT_CHILD_POINT = 0.5


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


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
    voiceprint: Voiceprint
    warnings: tuple[str, ...] = ()  # for the parent: e.g. an ADULT whose takes sound like a child


@dataclass(frozen=True, slots=True)
class DigitEnrollmentReport:
    member: Member
    digits_covered: str  # which digits the templates hold (0-9 once guided enrollment is done)
    takes: int


@dataclass(frozen=True, slots=True)
class TakeCheck:
    """Live feedback on one enrollment take (nothing is stored)."""

    usable: bool
    problem: str
    speech_seconds: float
    snr_db: float
    clipped_fraction: float
    says_prompt: bool  # digit takes only


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
        backend_token: str = "",
        digits: TemplateDigitChecker | None = None,
    ) -> None:
        self._approvals = approvals
        self._digits = digits
        self._backend_hash = hash_token(backend_token) if backend_token else ""
        self._settings = settings
        self._store = store
        self._verifier = verifier
        self._pins = pins
        self._clock = clock
        self._ids = ids
        self._operator_hash = hash_token(operator_token) if operator_token else ""

    # ------------------------------------------------------------------ auth
    def authenticate(self, token: str | None, client_certificate: str | None = None) -> Principal:
        """The principal a bearer token stands for; without one, a verified mTLS client
        certificate (its subject, given by the transport) is a backend. Unauthenticated otherwise."""
        if not token:
            if client_certificate:
                return Principal(PrincipalKind.BACKEND, f"mtls:{client_certificate}")
            raise Unauthenticated("missing credential: send metadata 'authorization: Bearer <token>'")
        digest = hash_token(token)
        if self._operator_hash and hmac.compare_digest(digest, self._operator_hash):
            return OPERATOR
        if self._backend_hash and hmac.compare_digest(digest, self._backend_hash):
            return Principal(PrincipalKind.BACKEND, "backend")
        household_id = self._store.household_for_token_hash(digest)
        if household_id is not None:
            return Principal(PrincipalKind.HOUSEHOLD, f"household:{household_id}", household_id)
        credential = self._store.credential_for_token_hash(digest)
        if credential is None:
            raise Unauthenticated("unknown or revoked credential")
        kind = {
            CredentialKind.PARENT: PrincipalKind.PARENT,
            CredentialKind.DEVICE: PrincipalKind.DEVICE,
            CredentialKind.BACKEND: PrincipalKind.BACKEND,
        }[credential.kind]
        return Principal(
            kind,
            f"{credential.kind.value}:{credential.credential_id}",
            credential.household_id,
            credential.member_id,
            credential.device_id,
        )

    @staticmethod
    def authorize(principal: Principal, household_id: str) -> None:
        if principal.kind not in ADMINS:
            raise PermissionDenied("this credential is for deciding purchases, not for administration")
        if not principal.may_name(household_id):
            # Same message whether or not the other household exists: no probing for ids.
            raise PermissionDenied("this credential is not valid for that household")

    # ------------------------------------------------------------------ credentials
    def issue_credential(
        self,
        principal: Principal,
        household_id: str,
        kind: CredentialKind,
        member_id: str,
        device_id: str,
        label: str,
    ) -> tuple[Credential, str]:
        """A new credential and its token (shown once; only its hash is kept).

        Parent credentials: by the operator or the household token (setup), or by that parent for
        themselves (a new phone). Device credentials: by anyone who administers the household.
        Backend credentials (no household): by the operator only.
        """
        label = label.strip()
        if len(label) > 100:
            raise InvalidArgument("label is at most 100 characters", field="label")
        hid: str | None = None
        member: str | None = None
        device: str | None = None
        if kind is CredentialKind.BACKEND:
            if not principal.is_operator:
                raise PermissionDenied("only the operator can issue backend credentials")
            if household_id or member_id or device_id:
                raise InvalidArgument("a backend credential serves every household: leave household_id empty")
            prefix = "pgb_"
        else:
            self.get_household(principal, household_id)
            hid = household_id
            if kind is CredentialKind.PARENT:
                parent = self._store.get_member(household_id, validate_id(member_id, "member_id"))
                if not parent.is_parent:
                    raise InvalidArgument(f"member {member_id!r} is not a parent of this household")
                if principal.kind is PrincipalKind.PARENT and principal.member_id != parent.member_id:
                    raise PermissionDenied("a parent can issue a parent credential only for themselves")
                member, prefix = parent.member_id, "pgp_"
            else:
                device, prefix = validate_id(device_id, "device_id"), "pgd_"
        credential = Credential(
            credential_id=self._ids.new_id("crd"),
            kind=kind,
            household_id=hid,
            member_id=member,
            device_id=device,
            label=label or kind.value,
            created_at=self._clock.now(),
        )
        token = prefix + secrets.token_urlsafe(32)
        self._store.add_credential(credential, hash_token(token))
        log.info("credential_issued", credential_id=credential.credential_id, kind=kind.value)
        return credential, token

    def list_credentials(self, principal: Principal, household_id: str) -> list[Credential]:
        if not household_id:
            if not principal.is_operator:
                raise PermissionDenied("only the operator can list backend credentials")
            return self._store.list_credentials(None)
        self.get_household(principal, household_id)
        return self._store.list_credentials(household_id)

    def revoke_credential(self, principal: Principal, household_id: str, credential_id: str) -> Credential:
        if not household_id:
            if not principal.is_operator:
                raise PermissionDenied("only the operator can revoke backend credentials")
            scope: str | None = None
        else:
            self.get_household(principal, household_id)
            scope = household_id
        revoked = self._store.revoke_credential(
            scope, validate_id(credential_id, "credential_id"), self._clock.now()
        )
        log.info("credential_revoked", credential_id=revoked.credential_id)
        return revoked

    # ------------------------------------------------------------------ households
    def create_household(
        self, principal: Principal, name: str, time_zone: str, currency: str, retain_audio: bool
    ) -> tuple[Household, str]:
        if not principal.is_operator:
            raise PermissionDenied("only the operator credential can create households")
        if not name.strip() or len(name) > 100:
            raise InvalidArgument("name is required and at most 100 characters", field="name")
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidArgument(
                f"time_zone {time_zone!r} is not an IANA time zone (e.g. 'Europe/Paris')"
            ) from exc
        if not is_currency(currency):
            raise InvalidArgument(
                f"currency {currency!r} is not an ISO 4217 code (e.g. 'USD')", field="currency"
            )
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
            raise InvalidArgument("display_name is required and at most 100 characters", field="display_name")
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

    def digit_enrolled(self, principal: Principal, household_id: str) -> frozenset[str]:
        """Members with digit templates (who can answer spoken challenges)."""
        self.get_household(principal, household_id)
        return self._store.digit_template_members(household_id)

    def remove_member(self, principal: Principal, household_id: str, member_id: str) -> None:
        self.get_household(principal, household_id)
        self._store.remove_member(household_id, validate_id(member_id, "member_id"))

    def _decode_takes(self, takes: Sequence[AudioInput], field: str) -> list[Pcm]:
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
                raise type(exc)(f"{field}[{i}]: {exc}") from exc
        return pcms

    def enroll_voice(
        self, principal: Principal, household_id: str, member_id: str, takes: Sequence[AudioInput]
    ) -> EnrollmentReport:
        self.get_household(principal, household_id)
        member = self._store.get_member(household_id, validate_id(member_id, "member_id"))
        if len(takes) < 3:
            raise InvalidArgument(f"enrollment needs at least 3 utterances, got {len(takes)}")
        if len(takes) > self._settings.max_enroll_takes:
            raise InvalidArgument(f"enrollment accepts at most {self._settings.max_enroll_takes} utterances")
        pcms = self._decode_takes(takes, "utterances")
        result = assess_enrollment(pcms, self._verifier.encoder, vad=self._verifier.vad)
        child_like = self._enrolled_child_like(member, result.templates)
        centroid = np.asarray(result.centroid, dtype=np.float32)
        accepted = sum(1 for t in result.takes if t.accepted)
        now = self._clock.now()
        voiceprint = Voiceprint(
            member_id=member.member_id,
            household_id=household_id,
            encoder=self._verifier.encoder.name,
            embedding=tuple(float(x) for x in centroid),
            n_utterances=accepted,
            created_at=now,
            # COPPA: a child's voiceprint is kept for a bounded time unless a parent renews it.
            expires_at=now + self._settings.child_voiceprint_retention if member.role is Role.CHILD else None,
            child_like=child_like,
        )
        self._store.put_voiceprint(voiceprint)
        warnings: tuple[str, ...] = ()
        if child_like:
            warning = (
                f"{member.display_name} is enrolled as {member.role.value.lower()}, but the recordings sound "
                "like a child's voice. Until a parent confirms the role with their own credential "
                "(ConfirmVoiceRole), purchases in this voice need a parent's approval."
            )
            warnings = (warning,)
            self._store.add_notification(
                Notification(
                    self._ids.new_id("ntf"), household_id, "child_like_enrollment", warning, None, now
                )
            )
            log.warning("child_like_enrollment", member_id=member.member_id, role=member.role.value)
        log.info("voice_enrolled", member_id=member.member_id, takes=len(takes), accepted=accepted)
        return EnrollmentReport(member, result.takes, self._verifier.encoder.name, voiceprint, warnings)

    def _enrolled_child_like(self, member: Member, embeddings: Sequence[Embedding]) -> bool:
        """Whether an ADULT or TEEN's accepted takes sound like a child's on average (the mean of
        several takes is steadier than one utterance, so the challenge operating point is used)."""
        detector = self._verifier.child_detector
        if member.role in (Role.CHILD, Role.GUEST) or detector is None or not embeddings:
            return False
        point = getattr(detector, "operating_points", {}).get("challenge", DEFAULT_CHILD_POINT)
        scores = [detector.likelihood(e) for e in embeddings]
        return bool(np.mean(scores) >= point)

    def enroll_digits(
        self,
        principal: Principal,
        household_id: str,
        member_id: str,
        takes: Sequence[tuple[AudioInput, str]],
    ) -> DigitEnrollmentReport:
        """Guided digit enrollment: the member reads the prompts (`voice.digits.ENROLLMENT_PROMPTS`);
        the takes become the member's digit templates (frame features, never audio), which spoken
        answers are then checked against. Raises EnrollmentRejected naming each take that does not
        say its prompt."""
        self.get_household(principal, household_id)
        member = self._store.get_member(household_id, validate_id(member_id, "member_id"))
        if self._digits is None:
            raise FailedPrecondition("digit enrollment is not available on this server")
        if not 1 <= len(takes) <= 2 * len(ENROLLMENT_PROMPTS):
            raise InvalidArgument(f"digit enrollment takes 1-{2 * len(ENROLLMENT_PROMPTS)} takes")
        for i, (_, digits) in enumerate(takes):
            if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 10:
                raise InvalidArgument(
                    f"takes[{i}].digits must be the 1-10 digits the take was prompted with",
                    field=f"takes[{i}].digits",
                )
        pcms = self._decode_takes([a for a, _ in takes], "takes")
        templates = self._digits.build_templates(list(zip(pcms, (d for _, d in takes), strict=True)))
        # The takes' speaker embeddings too: a spoken PIN is then also scored against the member
        # saying digits (voice/digit_print.py). Only embeddings are kept, sealed with the templates.
        templates = templates.with_speaker_takes(
            self._verifier.encoder.name, [[float(x) for x in self._verifier.embed_pcm(p)] for p in pcms]
        )
        now = self._clock.now()
        expires = now + self._settings.child_voiceprint_retention if member.role is Role.CHILD else None
        self._store.put_digit_templates(
            household_id, member.member_id, templates.features, templates.to_bytes(), now, expires
        )
        log.info("digits_enrolled", member_id=member.member_id, takes=len(takes))
        return DigitEnrollmentReport(member, templates.digits_covered, len(takes))

    def check_enrollment_take(
        self, principal: Principal, household_id: str, member_id: str, take: AudioInput, digits: str
    ) -> TakeCheck:
        """Is this one take usable, and if not why, while the person is still recording? A voice
        take gets EnrollVoice's signal checks; a digit take (`digits` prompted) also whether it is
        heard to say them. Nothing about the take is kept."""
        self.get_household(principal, household_id)
        self._store.get_member(household_id, validate_id(member_id, "member_id"))
        if digits and (not digits.isascii() or not digits.isdigit() or len(digits) > 8):
            raise InvalidArgument("digits must be the 1-8 digits the take was prompted with", field="digits")
        if digits and self._digits is None:
            raise FailedPrecondition("digit enrollment is not available on this server")
        try:
            pcm = decode_audio(
                encoded=take.encoded,
                pcm16=take.pcm16,
                sample_rate_hz=take.sample_rate_hz,
                max_seconds=self._settings.max_audio_seconds,
            )
        except InvalidArgument as exc:
            raise InvalidArgument(f"audio: {exc}", field="audio") from exc
        # Digit takes are single short strings: EnrollDigits asks no minimum beyond the digits.
        report = check_take(pcm, vad=self._verifier.vad, min_speech_s=0.0 if digits else 1.0)
        problem = report.problem
        says = False
        if digits and not problem and self._digits is not None:
            problem = self._digits.check_take(pcm, digits)
            says = not problem
        return TakeCheck(
            not problem, problem, report.speech_seconds, report.snr_db, report.clipped_fraction, says
        )

    def confirm_voice_role(self, principal: Principal, household_id: str, member_id: str) -> None:
        """A parent, with their own credential, confirms that a member whose enrolled voice sounds
        like a child's really has the role they were added with."""
        self.get_household(principal, household_id)
        if principal.kind is not PrincipalKind.PARENT or principal.member_id is None:
            raise PermissionDenied("confirming a member's role needs a parent's own credential")
        member = self._store.get_member(household_id, validate_id(member_id, "member_id"))
        if not self._store.confirm_voice_role(household_id, member.member_id, principal.member_id):
            raise FailedPrecondition("this member has no enrolled voice to confirm")
        log.info("voice_role_confirmed", member_id=member.member_id, by=principal.member_id)

    def renew_voiceprint(self, principal: Principal, household_id: str, member_id: str) -> datetime:
        """A parent keeps a child's voiceprint for another retention period; returns the new expiry."""
        self.get_household(principal, household_id)
        member = self._store.get_member(household_id, validate_id(member_id, "member_id"))
        if member.role is not Role.CHILD:
            raise FailedPrecondition("only a child's voiceprint expires; there is nothing to renew")
        expires = self._clock.now() + self._settings.child_voiceprint_retention
        if not self._store.renew_voiceprint(household_id, member.member_id, expires):
            raise FailedPrecondition(
                "this child has no voiceprint to renew (it expired or was never enrolled)"
            )
        log.info("voiceprint_renewed", member_id=member.member_id)
        return expires

    def reset_voice_adaptation(self, principal: Principal, household_id: str, member_id: str) -> int:
        """Drops what confirmed purchases added to the member's voiceprint (voice/adaptation.py);
        returns how many adapted embeddings went. Only makes recognition stricter, so any credential
        of the household may do it."""
        self.get_household(principal, household_id)
        member = self._store.get_member(household_id, validate_id(member_id, "member_id"))
        dropped = self._store.reset_adaptation(household_id, member.member_id)
        log.info("voice_adaptation_reset", member_id=member.member_id, dropped=dropped)
        return dropped

    @property
    def encoder_name(self) -> str:
        """The encoder voices are scored with now; prints by another one need re-enrollment."""
        return self._verifier.encoder.name

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
        # A new PIN starts a new guess budget: wrong guesses at the old one say nothing about it,
        # and a PIN disabled after too many failures comes back only this way (a parent sets it).
        self._store.put_pin(
            PinState(
                household_id=household_id,
                pin_hash=self._pins.hash(pin, self._store.pin_pepper(household_id)),
                set_at=self._clock.now(),
            )
        )
        log.info("pin_set")

    # ------------------------------------------------------------------ history
    def list_decisions(self, principal: Principal, household_id: str, limit: int) -> list[Decision]:
        self.get_household(principal, household_id)
        if limit < 0:
            raise InvalidArgument("limit must not be negative", field="limit")
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
        """Acts as the parent whose credential the call carries, never as a claimed id; the decision
        itself is made and recorded by the `ApprovalRecorder` (the pipeline), in the same transaction
        as the challenge's new state."""
        self.get_household(principal, household_id)
        if principal.kind is not PrincipalKind.PARENT or principal.member_id is None:
            raise PermissionDenied(
                "approving or rejecting needs a parent's own credential (IssueCredential with kind PARENT)"
            )
        if parent_member_id and parent_member_id != principal.member_id:
            raise PermissionDenied("a parent credential approves as its own parent, not as another member")
        parent = self._store.get_member(household_id, principal.member_id)
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

    # ------------------------------------------------------------------ events
    def watch_events(
        self,
        principal: Principal,
        household_id: str,
        after_event_id: int,
        keep_open: bool,
        active: Callable[[], bool],
    ) -> Iterator[Event]:
        """The household's events after the cursor (then new ones, with `keep_open`)."""
        self.get_household(principal, household_id)
        if after_event_id < 0:
            raise InvalidArgument("after_event_id must not be negative", field="after_event_id")
        return follow(
            self._store,
            household_id,
            after_event_id,
            keep_open=keep_open,
            active=active,
            poll_s=self._settings.events_poll_seconds,
            max_s=self._settings.events_stream_max_seconds,
        )

    def set_webhook(self, principal: Principal, household_id: str, url: str) -> tuple[Webhook, str]:
        """Sets the endpoint; returns it and its new signing secret (shown once)."""
        self.get_household(principal, household_id)
        checked = webhook_url(url)
        secret = new_secret()
        webhook = Webhook(household_id, checked, self._clock.now(), secret)
        self._store.set_webhook(webhook)
        log.info("webhook_set", household_id=household_id)
        return webhook, secret

    def get_webhook(self, principal: Principal, household_id: str) -> Webhook:
        self.get_household(principal, household_id)
        webhook = self._store.get_webhook(household_id)
        if webhook is None:
            raise NotFound("this household has no webhook")
        return webhook

    def remove_webhook(self, principal: Principal, household_id: str) -> None:
        self.get_household(principal, household_id)
        if not self._store.remove_webhook(household_id):
            raise NotFound("this household has no webhook")
        log.info("webhook_removed", household_id=household_id)

    def dead_letters(self, principal: Principal, household_id: str) -> list[DeadLetter]:
        self.get_household(principal, household_id)
        return self._store.list_dead_letters(household_id)

    def replay_dead_letters(self, principal: Principal, household_id: str, event_ids: Sequence[int]) -> int:
        self.get_household(principal, household_id)
        if self._store.get_webhook(household_id) is None:
            raise FailedPrecondition("this household has no webhook to deliver to: set one first")
        replayed = self._store.replay_dead_letters(household_id, tuple(event_ids))
        log.info("dead_letters_replayed", household_id=household_id, replayed=replayed)
        return replayed


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_url(url: str) -> str:
    """The URL if a webhook may be sent to it: https, or http to a loopback host only (a receiver
    on the same machine); no credentials in it, at most 2000 characters."""
    text = url.strip()
    if not text or len(text) > 2000:
        raise InvalidArgument("url is required and at most 2000 characters", field="url")
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidArgument("url is not a valid URL", field="url") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidArgument("url must be an https:// URL with a host", field="url")
    if parts.scheme == "http" and not _loopback(host):
        raise InvalidArgument(
            "url must use https: events would cross the network unencrypted (http is accepted only "
            "for a loopback receiver)",
            field="url",
        )
    if parts.username or parts.password:
        raise InvalidArgument(
            "url must not carry credentials; the signature authenticates deliveries", field="url"
        )
    return text
