"""The store protocols: what the guard persists, cut into the roles its callers use.

    Households      households and their credentials        (household service, every lookup)
    Members         members and voiceprints                   (household service, the pipeline)
    Credentials     parents', devices' and backends' credentials (authentication)
    HouseholdRules  policy revisions and the PIN              (household service, the pipeline)
    DecisionLog     the household lock, decisions with their audit entries, spend, challenges,
                    notifications and the events they cause   (the pipeline, approvals)
    Outbox          events for parents, webhook endpoints, deliveries and dead letters
                                                              (events/, the household service)
    Records         export, erasure, retention, and the chain reads of `audit.verify.AuditSource`
                                                              (privacy, start-up verification)
    Store           all of them, plus ping and close          (the composition root)

Every method that reads or writes household data takes the household id and filters by
it in the query itself, so one household's rows can never come back for another.
Implementations: `SqlStore` (store/sql.py) on SQLite (`SqliteStore`, the embedded default)
and PostgreSQL (`PostgresStore`, for replicas).

Personal values are sealed at rest with the household's data key (a `sealing.Sealer`
given to the store's constructor): household and member names, voiceprint embeddings,
decision, challenge and audit bodies, notification messages. Methods take and return them
in clear; `AuditEntry.body` is the exception: it is the body *as stored* (sealed), because
that is what the hash chain covers, so the chain verifies without any key.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from purchase_guard.audit.chain import AuditAnchor, AuditEntry
from purchase_guard.domain import (
    AdaptationSample,
    Challenge,
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


@dataclass(frozen=True, slots=True)
class SpendEntry:
    household_id: str
    member_id: str | None
    amount_minor: int
    decision_id: str
    at: datetime
    exempt: bool  # counted against the low-value exemption's cumulative threshold


@dataclass(frozen=True, slots=True)
class AudioPrint:
    """A household's earlier audio as a fingerprint (never the audio), for spotting replays."""

    print_id: str
    household_id: str
    decision_id: str
    kind: str  # "evaluate" | "confirm"
    at: datetime
    print: bytes = field(repr=False)  # broadcast.fingerprint.Fingerprint.to_bytes()


@dataclass(frozen=True, slots=True)
class StoredDecision:
    decision: Decision
    request_digest: str


@dataclass(frozen=True, slots=True)
class DecidingFacts:
    """What Evaluate reads of a household under its lock, besides the audio prints, in one read:
    the current policy, the spend snapshot, the PIN (None: none set) and the members with digit
    templates stored."""

    policy: Policy | None
    spend: SpendSnapshot
    pin: PinState | None
    digit_template_members: frozenset[str]


@dataclass(frozen=True, slots=True)
class OpeningReads:
    """What Evaluate reads of a household before any check, in one read: the household, the
    decision already recorded for this request (a retry; None: none), and the members and
    voiceprints the speaker check compares with. `members` and `voiceprints` are None when they
    could not be opened: the caller then reads them with `list_members` / `list_voiceprints`
    where it handles a failure of those reads."""

    household: Household
    stored: StoredDecision | None
    members: tuple[Member, ...] | None
    voiceprints: tuple[Voiceprint, ...] | None


@dataclass(frozen=True, slots=True)
class PolicyRevision:
    household_id: str
    policy: Policy  # carries its revision number
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredAudioInfo:
    """Metadata of what the guard keeps derived from a member's or a request's audio, without it:
    digit templates (`what` = "digit_templates", `ref` the feature version) and audio prints for
    the replay check (`what` = "audio_print", `ref` the decision it was heard in)."""

    household_id: str
    what: str
    member_id: str | None
    ref: str
    kind: str
    created_at: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VoiceprintInfo:
    """A voiceprint's metadata: everything but the embedding."""

    household_id: str
    member_id: str
    encoder: str
    dim: int
    n_utterances: int
    created_at: datetime
    n_adapted: int = 0  # embeddings of confirmed purchases added since (voice/adaptation.py)
    adapted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VoiceprintUpdate:
    """A member's new adapted set (voice/adaptation.py), written with the decision that made it
    and only onto the print it was decided on: same enrollment (`enrolled_at`, `encoder`) and
    still `expected_adapted` adapted rows, else the decision is Aborted and judged again."""

    household_id: str
    member_id: str
    encoder: str
    enrolled_at: datetime
    expected_adapted: int
    adapted: tuple[tuple[float, ...], ...] = field(repr=False)
    at: datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An audit entry as stored (what the chain hashes) with its body opened."""

    entry: AuditEntry
    body: str  # the masked decision record, canonical JSON
    sealed: bool  # False only for entries written before sealing existed


@dataclass(frozen=True, slots=True)
class HouseholdRecords:
    """Everything stored for one household, read in one transaction by household-scoped queries."""

    household: Household
    members: tuple[Member, ...]
    voiceprints: tuple[VoiceprintInfo, ...]
    policies: tuple[PolicyRevision, ...]
    pin: PinState | None
    decisions: tuple[Decision, ...]  # in commit order
    spend: tuple[SpendEntry, ...]
    challenges: tuple[Challenge, ...]
    notifications: tuple[Notification, ...]
    audit: tuple[AuditRecord, ...]
    audit_anchor: AuditAnchor | None
    events: tuple[Event, ...] = ()
    webhook: Webhook | None = None  # the export shows its URL and date, never the secret
    derived_audio: tuple[StoredAudioInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is left to show that a household was erased (no personal data)."""

    household_id: str
    erased_at: datetime
    audit_entries: int  # sealed entries kept so the chain stays verifiable; unreadable now
    audit_head: str  # entry hash of the chain's last entry at erasure (GENESIS if none)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    household_id: str
    decisions: int
    spend: int
    audit_entries: int
    challenges: int
    notifications: int
    anchor: AuditAnchor | None  # the household's anchor after the purge


@dataclass(frozen=True, slots=True)
class Webhook:
    """A household's webhook endpoint; `secret` signs every delivery (never shown after it is set)."""

    household_id: str
    url: str
    created_at: datetime
    secret: str = field(repr=False, default="")


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event claimed for delivery: post it to `webhook` before `claimed_until`, then report."""

    event: Event
    attempts: int  # deliveries tried before this one
    webhook: Webhook
    claimed_until: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event its receiver refused (or that every retry failed to deliver)."""

    event: Event
    attempts: int
    last_status: int  # the receiver's HTTP status; 0 when it never answered
    last_error: str
    dead_at: datetime


class Households(Protocol):
    def create_household(self, household: Household, admin_token_hash: str) -> None: ...

    def get_household(self, household_id: str) -> Household:
        """Raises NotFound."""
        ...

    def household_for_token_hash(self, token_hash: str) -> str | None: ...

    def get_tombstone(self, household_id: str) -> Tombstone | None: ...


class Members(Protocol):
    def add_member(self, member: Member) -> None: ...

    def get_member(self, household_id: str, member_id: str) -> Member:
        """Raises NotFound."""
        ...

    def list_members(self, household_id: str) -> list[Member]: ...

    def remove_member(self, household_id: str, member_id: str) -> None:
        """Removes the member and their voiceprint. Raises NotFound."""
        ...

    def put_voiceprint(self, voiceprint: Voiceprint) -> None:
        """Replaces any earlier voiceprint of that member."""
        ...

    def list_voiceprints(self, household_id: str) -> list[Voiceprint]: ...

    def renew_voiceprint(self, household_id: str, member_id: str, expires_at: datetime) -> bool:
        """Moves an expiring voiceprint's expiry (and re-arms its reminder); False if it has none."""
        ...

    def confirm_voice_role(self, household_id: str, member_id: str, parent_member_id: str) -> bool:
        """A parent confirms that a child-like voiceprint's member really has their role."""
        ...

    def reset_adaptation(self, household_id: str, member_id: str) -> int:
        """Drops the member's adapted embeddings (and pending samples): the print is its enrollment
        again. Returns how many adapted embeddings were dropped. Raises NotFound."""
        ...

    def get_adaptation_sample(self, household_id: str, challenge_id: str) -> AdaptationSample | None:
        """The sample kept with an open challenge (None when there is none, or it closed)."""
        ...

    def put_digit_templates(
        self,
        household_id: str,
        member_id: str,
        features: str,
        templates: bytes,
        at: datetime,
        expires_at: datetime | None,
    ) -> None:
        """Replaces the member's digit templates (sealed at rest). Raises NotFound."""
        ...

    def digit_template_members(self, household_id: str) -> frozenset[str]:
        """Members with digit templates stored (nothing is opened to answer)."""
        ...

    def get_digit_templates(self, household_id: str, member_id: str) -> tuple[str, bytes] | None:
        """(features version, DigitTemplates bytes) of one member's templates, or None."""
        ...


class Credentials(Protocol):
    def add_credential(self, credential: Credential, token_hash: str) -> None: ...

    def credential_for_token_hash(self, token_hash: str) -> Credential | None:
        """The live (not revoked) credential with this token hash."""
        ...

    def list_credentials(self, household_id: str | None) -> list[Credential]:
        """A household's credentials, revoked ones too; None lists the backend credentials."""
        ...

    def revoke_credential(self, household_id: str | None, credential_id: str, at: datetime) -> Credential:
        """Idempotent; NotFound unless the credential belongs to `household_id` (None: backend)."""
        ...


class HouseholdRules(Protocol):
    def put_policy(self, household_id: str, policy: Policy, at: datetime) -> Policy:
        """Stores the policy as the next revision and returns it with that revision."""
        ...

    def get_policy(self, household_id: str, revision: int | None = None) -> Policy | None:
        """The current policy, or the given revision of it (revisions are never purged)."""
        ...

    def put_pin(self, state: PinState) -> None: ...

    def get_pin(self, household_id: str) -> PinState | None: ...

    def pin_pepper(self, household_id: str) -> bytes:
        """The key the household's PIN hash is peppered with; never stored in the database."""
        ...


class DecisionLog(Protocol):
    def household_lock(self, household_id: str) -> AbstractContextManager[None]:
        """Serialise deciding for one household: reading spend, deciding and recording happen
        inside it, so two concurrent orders cannot both pass a cap. Held for milliseconds (no
        model inference inside). Must work across every process that shares the store."""
        ...

    def get_decision(
        self, household_id: str, kind: str, request_id: str, caller_id: str = ""
    ) -> StoredDecision | None:
        """The decision recorded for this caller's request id (ids are per caller)."""
        ...

    def opening_reads(
        self, household_id: str, kind: str, request_id: str, caller_id: str = ""
    ) -> OpeningReads:
        """`get_household`, `get_decision`, `list_members` and `list_voiceprints` of one household
        in one read (one round trip), with the same answers. Raises NotFound."""
        ...

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
        """Atomically: store the decision, append its audit entry to the household's chain,
        add the spend entry, write the challenge, add the notifications and queue the `events`
        in the outbox (so a crash after the commit loses no event, and a rolled-back decision
        announces nothing). The challenge is
        inserted or replaced, or with `expected_status` compare-and-set as `update_challenge`
        does (the whole write is rolled back and Aborted raised when it lost). `pin_update` is
        (the PIN as the answer was judged on, the PIN as it must be stored next): it is written
        only if the stored guess count is still the judged one (else Aborted). `audio_print` is
        the request's audio as a fingerprint and `issued_digits` the digest of random digits the
        new challenge asks for; both are kept with the decision. Request ids are
        unique per `decision.caller_id`. If a decision with the same
        (household, kind, request_id) exists already, nothing is written and the stored
        one is returned (idempotent retries under concurrency); if that stored decision has
        a different request_digest, AlreadyExists is raised instead (request id reused).
        `adaptation_sample` is kept with the (new) `challenge` while it is open; a challenge written
        closed drops its sample. `voiceprint_update` is a print's new adapted set (Aborted, and
        nothing written, when the print is no longer the one it was decided on).
        Raises NotFound for an unknown household."""
        ...

    def list_decisions(self, household_id: str, limit: int) -> list[Decision]: ...

    def spend_since(self, household_id: str, member_id: str | None, since: datetime) -> int:
        """Sum of committed spend since `since`; for one member, or the household if None."""
        ...

    def exempt_spend_since_last_challenge(self, household_id: str) -> int:
        """Sum of low-value-exempt spend after the last passed challenge."""
        ...

    def spend_snapshot(
        self, household_id: str, member_id: str | None, day_since: datetime, month_since: datetime
    ) -> SpendSnapshot:
        """Everything a decision reads of spend, in one read (two statements): the member's and
        the household's spend since `day_since` and `month_since` (the member's 0 when None), and
        the exempt spend since the last passed challenge. Same sums as `spend_since` and
        `exempt_spend_since_last_challenge`."""
        ...

    def deciding_facts(
        self, household_id: str, member_id: str | None, day_since: datetime, month_since: datetime
    ) -> DecidingFacts:
        """`get_policy`, `spend_snapshot`, `get_pin` and `digit_template_members` of one household
        in one statement (one round trip), with the same answers."""
        ...

    def get_challenge(self, household_id: str, challenge_id: str) -> Challenge:
        """Raises NotFound."""
        ...

    def update_challenge(self, challenge: Challenge, expected_status: ChallengeStatus) -> bool:
        """Compare-and-set on status and attempts: writes only if the stored status is still
        `expected_status`; returns whether it wrote. Guards against two concurrent answers.

        Attempts rule (no lost decrements): every write consumes at most one attempt, so the
        stored attempts_left must be `challenge.attempts_left + 1` (this write uses one
        attempt) or, only when the write changes the status, `challenge.attempts_left` (a
        transition that uses none). A write that keeps the status must therefore decrement
        attempts_left by exactly one. Raises NotFound if the challenge is not in its household."""
        ...

    def list_challenges(
        self, household_id: str, status: ChallengeStatus | None = None
    ) -> list[Challenge]: ...

    def unknown_voice_approvals_since(self, household_id: str, since: datetime) -> int:
        """How many PARENT_APPROVAL challenges without a member (asked in a voice nobody was
        recognised as) the household was given at or after `since`, whatever became of them."""
        ...

    def recent_audio_prints(self, household_id: str, since: datetime) -> list[AudioPrint]:
        """The household's audio prints at or after `since`, oldest first."""
        ...

    def recent_audio_print_refs(self, household_id: str, since: datetime) -> list[tuple[str, str, str]]:
        """(print_id, decision_id, kind) of the household's audio prints at or after `since`,
        oldest first: what `recent_audio_prints` lists, without opening the prints."""
        ...

    def audio_print_blobs(self, household_id: str, print_ids: Sequence[str]) -> dict[str, bytes]:
        """The opened print bytes of those of `print_ids` that are the household's, by id."""
        ...

    def recently_issued_digits(self, household_id: str, since: datetime) -> frozenset[str]:
        """Digests of the random digits the household was asked to repeat since `since`."""
        ...

    def digits_key(self, household_id: str) -> bytes:
        """The key issued-digit digests are made with; derived from the household's data key."""
        ...

    def add_notification(self, notification: Notification) -> None: ...

    def list_notifications(self, household_id: str) -> list[Notification]: ...


class Outbox(Protocol):
    """Events for parents, queued in the same transaction as what caused them (`record_decision`'s
    `events`), read back by WatchEvents and delivered to the household's webhook by a worker."""

    def add_events(self, household_id: str, events: tuple[Event, ...]) -> tuple[Event, ...]:
        """Queues events on their own (a state change that has no decision, e.g. an approval
        request's expiry), in one transaction; ones whose `dedup` is queued already are skipped.
        Returns those queued, with their ids."""
        ...

    def events_after(self, household_id: str, after_event_id: int, limit: int) -> list[Event]:
        """The household's events with an id above `after_event_id`, oldest first."""
        ...

    def set_webhook(self, webhook: Webhook) -> None:
        """Sets (or replaces) the household's endpoint. Raises NotFound for an unknown household."""
        ...

    def get_webhook(self, household_id: str) -> Webhook | None: ...

    def remove_webhook(self, household_id: str) -> bool:
        """Removes the endpoint; its pending deliveries stop (their events stay in the stream)."""
        ...

    def claim_deliveries(self, now: datetime, claimed_until: datetime, limit: int) -> list[Delivery]:
        """Claims up to `limit` due pending deliveries (every household's) until `claimed_until`. A
        claim left by a worker that died is claimable again once it has run out (at least once)."""
        ...

    def delivery_done(
        self, household_id: str, event_id: int, *, attempts: int, status: int, at: datetime
    ) -> None:
        """The receiver took it (2xx)."""
        ...

    def delivery_retry(
        self, household_id: str, event_id: int, *, attempts: int, status: int, error: str, at: datetime
    ) -> None:
        """Try again at `at` (timeout, connection failure, 5xx, 429)."""
        ...

    def delivery_dead(
        self, household_id: str, event_id: int, *, attempts: int, status: int, error: str, at: datetime
    ) -> None:
        """Refused (4xx other than 429) or out of retries: to the dead letters."""
        ...

    def list_dead_letters(self, household_id: str, limit: int = 500) -> list[DeadLetter]:
        """Oldest first."""
        ...

    def replay_dead_letters(self, household_id: str, event_ids: tuple[int, ...]) -> int:
        """Makes dead letters (all, or those named) due again with fresh attempts; returns how many."""
        ...

    def expired_approvals(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(household, challenge) of pending parent approvals past expiry not yet announced."""
        ...


class Records(Protocol):
    """Export, erasure and retention (privacy/), and what chain verification reads (audit/)."""

    def household_records(self, household_id: str) -> HouseholdRecords:
        """Every record of the household, by queries that filter on it, in one read
        transaction (a consistent snapshot). Raises NotFound (also for an erased household)."""
        ...

    def erase_household(self, household_id: str, at: datetime) -> tuple[Tombstone, bool]:
        """Deletes every row of the household except its sealed audit entries, writes a
        tombstone, then destroys the household's data key. Returns the tombstone and whether
        this call erased (False: it was erased already, and the key is destroyed again).
        Raises NotFound for a household that neither exists nor was erased."""
        ...

    def get_tombstone(self, household_id: str) -> Tombstone | None: ...

    def audit_entries(self, household_id: str) -> list[AuditEntry]: ...

    def audit_anchor(self, household_id: str) -> AuditAnchor | None: ...

    def list_household_ids(self) -> list[str]:
        """Every household with data or a chain: live ones and erased ones with kept entries."""
        ...

    def retention_candidates(self, cutoff: datetime) -> list[str]:
        """Ids of households (erased ones included) with decisions, audit entries or
        notifications older than `cutoff`."""
        ...

    def voiceprints_expiring(self, before: datetime, notified: bool) -> list[tuple[str, str, datetime]]:
        """(household, member, expires_at) of voiceprints expiring before `before`; with
        `notified=False` only those whose parents were not reminded yet."""
        ...

    def mark_expiry_notified(self, household_id: str, member_id: str, notification: Notification) -> bool:
        """Records the expiry reminder with its notification in one transaction; False if sent."""
        ...

    def delete_expired_voiceprints(self, now: datetime) -> list[tuple[str, str]]:
        """Deletes every voiceprint (and digit templates) past expiry; returns (household, member)."""
        ...

    def purge_adaptation_samples(self, now: datetime) -> int:
        """Deletes adaptation samples whose challenge has expired; returns how many."""
        ...

    def purge_audio_prints(self, prints_before: datetime, digits_before: datetime) -> tuple[int, int]:
        """Deletes audio prints older than `prints_before` and issued-digit digests older than
        `digits_before` (each kept only as long as its check looks back); returns both counts."""
        ...

    def purge_household(self, household_id: str, cutoff: datetime) -> PurgeResult:
        """In one transaction: deletes the household's decisions, spend, notifications and
        closed challenges older than `cutoff`, and the longest prefix of its audit chain older
        than `cutoff`, moving the anchor to the last purged entry. Keeps what a limit still
        needs: spend (and its decisions) after the last passed challenge that counts towards
        the low-value exemption, and that challenge itself."""
        ...


class DecidingStore(Households, Members, HouseholdRules, DecisionLog, Protocol):
    """What the decision pipeline reads and writes."""


class Store(Households, Members, Credentials, HouseholdRules, DecisionLog, Outbox, Records, Protocol):
    def ping(self) -> None:
        """Raises Unavailable when the store cannot be reached."""
        ...

    def close(self) -> None: ...
