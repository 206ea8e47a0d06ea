"""Domain values shared by every package: frozen dataclasses and enums, no I/O.

These are the values the pure core (policy engine, verdict rule, challenge rules) takes
and returns. The gRPC layer converts protobuf messages to and from them; nothing below
`api/` sees a protobuf.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime


class Role(enum.Enum):
    ADULT = "ADULT"
    TEEN = "TEEN"
    CHILD = "CHILD"
    GUEST = "GUEST"


class Outcome(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    CHALLENGE = "CHALLENGE"


class ReasonCode(enum.Enum):
    """Machine-readable reasons; names match the proto enum one to one."""

    SPEAKER_VERIFIED = "SPEAKER_VERIFIED"
    SPEAKER_UNKNOWN = "SPEAKER_UNKNOWN"
    SPEAKER_CHILD = "SPEAKER_CHILD"
    ROLE_NOT_ALLOWED = "ROLE_NOT_ALLOWED"
    AMOUNT_OVER_LIMIT = "AMOUNT_OVER_LIMIT"
    DAILY_LIMIT_REACHED = "DAILY_LIMIT_REACHED"
    MONTHLY_LIMIT_REACHED = "MONTHLY_LIMIT_REACHED"
    CATEGORY_BLOCKED = "CATEGORY_BLOCKED"
    QUIET_HOURS = "QUIET_HOURS"
    AUDIO_UNUSABLE = "AUDIO_UNUSABLE"
    PIN_INCORRECT = "PIN_INCORRECT"
    CHALLENGE_EXPIRED = "CHALLENGE_EXPIRED"
    CHALLENGE_LOCKED = "CHALLENGE_LOCKED"
    ORDER_MISMATCH = "ORDER_MISMATCH"
    APPROVAL_REJECTED = "APPROVAL_REJECTED"
    GUARD_ERROR = "GUARD_ERROR"
    CHALLENGE_REQUIRED = "CHALLENGE_REQUIRED"
    LOW_VALUE_EXEMPT = "LOW_VALUE_EXEMPT"
    POLICY_ALLOWED = "POLICY_ALLOWED"
    CHALLENGE_PASSED = "CHALLENGE_PASSED"
    APPROVAL_GRANTED = "APPROVAL_GRANTED"
    CHALLENGE_CLOSED = "CHALLENGE_CLOSED"
    SPEAKER_MISMATCH = "SPEAKER_MISMATCH"
    PIN_THROTTLED = "PIN_THROTTLED"
    CHALLENGE_UNAVAILABLE = "CHALLENGE_UNAVAILABLE"
    CHILD_VOICE = "CHILD_VOICE"
    KNOWN_BROADCAST = "KNOWN_BROADCAST"
    BROADCAST_MATCH = "BROADCAST_MATCH"
    DIGITS_NOT_HEARD = "DIGITS_NOT_HEARD"
    TRANSCRIPT_MISMATCH = "TRANSCRIPT_MISMATCH"
    REPLAYED_AUDIO = "REPLAYED_AUDIO"
    UNKNOWN_VOICE_LIMITED = "UNKNOWN_VOICE_LIMITED"
    VOICEPRINT_ADAPTED = "VOICEPRINT_ADAPTED"
    SUSPECTED_BROADCAST = "SUSPECTED_BROADCAST"


class Effect(enum.Enum):
    """What a finding does to the decision (Cedar's forbid / permit, plus a step-up and errors).

    FORBID     decides DENY, whatever else fired (a forbid always wins)
    CHALLENGE  asks for a step-up: never ALLOW while it stands
    PERMIT     grounds for ALLOW; without one (and with nothing against it) there is no ALLOW
    NOTE       context that explains (who spoke, what fell back) and decides nothing
    ERROR      a check failed: the decision fails closed to DENY, and says which check
    """

    FORBID = "FORBID"
    CHALLENGE = "CHALLENGE"
    PERMIT = "PERMIT"
    NOTE = "NOTE"
    ERROR = "ERROR"


class ChallengeMethod(enum.Enum):
    SPOKEN_PIN = "SPOKEN_PIN"
    RANDOM_DIGITS = "RANDOM_DIGITS"
    PARENT_APPROVAL = "PARENT_APPROVAL"


class UnknownVoice(enum.Enum):
    """What a voice that matches no enrolled member gets. A parent who was not recognised (a cold,
    a noisy kitchen, a short command) is asked for approval rather than refused outright."""

    PARENT_APPROVAL = "PARENT_APPROVAL"
    GUEST_RULE = "GUEST_RULE"


class PurchaseMode(enum.Enum):
    ALLOWED = "ALLOWED"
    WITH_CHALLENGE = "WITH_CHALLENGE"
    NEVER = "NEVER"


class LimitAction(enum.Enum):
    CHALLENGE = "CHALLENGE"
    DENY = "DENY"


class ChallengeStatus(enum.Enum):
    PENDING = "PENDING"
    PASSED = "PASSED"  # answered correctly or approved; single use, so closed
    APPROVED = "APPROVED"  # parent approved; the next Confirm turns it into PASSED
    REJECTED = "REJECTED"
    LOCKED = "LOCKED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class Money:
    minor_units: int
    currency: str


@dataclass(frozen=True, slots=True)
class LineItem:
    sku: str
    title: str
    category: str
    quantity: int
    unit_price: Money


@dataclass(frozen=True, slots=True)
class Order:
    items: tuple[LineItem, ...]
    total: Money
    merchant: str


@dataclass(frozen=True, slots=True)
class Household:
    household_id: str
    name: str
    time_zone: str
    currency: str
    retain_audio: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    household_id: str
    display_name: str
    role: Role
    is_parent: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Voiceprint:
    """A member's enrolled centroid. The embedding never leaves the process in logs or records."""

    member_id: str
    household_id: str
    encoder: str  # name/version; a print is only ever scored by the encoder that made it
    embedding: tuple[float, ...] = field(repr=False)
    n_utterances: int
    created_at: datetime
    # A child's voiceprint expires (COPPA: no indefinite retention); None for adults and teens.
    expires_at: datetime | None = None
    # The enrollment takes sounded like a child's; until a parent confirms the member's role
    # (`role_confirmed_by`), this voice's purchases go to a parent's approval.
    child_like: bool = False
    role_confirmed_by: str | None = None
    # The accepted enrollment takes' embeddings (same encoder). When present the verifier
    # scores against all of them, not only the centroid (voice/backend.py).
    templates: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    # Embeddings of confirmed purchases added after enrollment (voice/adaptation.py): at most
    # adaptation.MAX_ADAPTED, oldest first, together weighing at most adaptation.MAX_WEIGHT of the
    # model. The enrollment (`embedding`, `templates`) is never changed by them; a reset drops them.
    adapted: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    adapted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AdaptationSample:
    """A request utterance's embedding and what was measured on it, kept sealed with the challenge
    it raised until that challenge closes: what may adapt the voiceprint of the member the voice
    verified as, if the challenge is passed (voice/adaptation.py decides). Never audio; the
    embedding never reaches a log, an audit record or an export."""

    challenge_id: str
    household_id: str
    member_id: str  # the member the request's voice verified as
    encoder: str
    embedding: tuple[float, ...] = field(repr=False)
    score: float  # against that member's print as it was at the request
    threshold: float  # the band threshold the score was held to
    child_likelihood: float  # -1 when no detector ran
    net_speech_s: float
    snr_db: float
    clipped: float  # fraction of samples at full scale
    broadcast: bool  # the broadcast check matched (or failed)
    replayed: bool  # the replay check matched (or failed)
    created_at: datetime
    # Against the member's ORIGINAL enrollment alone (no adapted rows), same back-end and band as
    # `score`; -inf when not measured (a sample kept before it was): refused wherever a margin is set.
    enrollment_score: float = -math.inf


@dataclass(frozen=True, slots=True)
class RoleRule:
    role: Role
    mode: PurchaseMode
    max_order_minor: int = 0  # 0: no maximum
    daily_cap_minor: int = 0
    monthly_cap_minor: int = 0
    on_limit: LimitAction = LimitAction.DENY
    challenge_method: ChallengeMethod = ChallengeMethod.SPOKEN_PIN
    blocked_categories: frozenset[str] = frozenset()
    allowed_categories: frozenset[str] = frozenset()  # empty: every category not blocked


@dataclass(frozen=True, slots=True)
class QuietHours:
    start_minute: int
    end_minute: int
    action: LimitAction = LimitAction.DENY


@dataclass(frozen=True, slots=True)
class LowValueExemption:
    per_order_max_minor: int
    cumulative_max_minor: int


# Measured by scripts/eval_adaptation.py (docs/voice.md, "Voiceprints that improve with use").
DEFAULT_VOICE_ADAPTATION = True


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[RoleRule, ...]
    household_daily_cap_minor: int = 0
    household_monthly_cap_minor: int = 0
    blocked_categories: frozenset[str] = frozenset()
    quiet_hours: QuietHours | None = None
    low_value_exemption: LowValueExemption | None = None
    revision: int = 0
    unknown_voice: UnknownVoice = UnknownVoice.PARENT_APPROVAL
    # Whether confirmed purchases may adapt members' voiceprints (voice/adaptation.py).
    voice_adaptation: bool = DEFAULT_VOICE_ADAPTATION

    def rule_for(self, role: Role) -> RoleRule | None:
        for rule in self.rules:
            if rule.role is role:
                return rule
        return None


@dataclass(frozen=True, slots=True)
class SpendSnapshot:
    """Spend already committed in the rolling windows, read from the store before deciding."""

    member_daily_minor: int = 0
    member_monthly_minor: int = 0
    household_daily_minor: int = 0
    household_monthly_minor: int = 0
    exempt_since_last_challenge_minor: int = 0


@dataclass(frozen=True, slots=True)
class Reason:
    """A finding: what was found (code, message, detail), its effect, and the rule that found it.

    `rule` names the rule in words a reviewer can look up (e.g. "policy.max_order",
    "voice.speaker", "broadcast.fleet"); `effect` is what the verdict does with it, so nothing
    downstream guesses effects back from codes.
    """

    code: ReasonCode
    message: str
    detail: tuple[tuple[str, str], ...] = ()
    effect: Effect = Effect.NOTE
    rule: str = ""


def forbid(code: ReasonCode, message: str, rule: str, detail: tuple[tuple[str, str], ...] = ()) -> Reason:
    return Reason(code, message, detail, Effect.FORBID, rule)


def needs_challenge(
    code: ReasonCode, message: str, rule: str, detail: tuple[tuple[str, str], ...] = ()
) -> Reason:
    return Reason(code, message, detail, Effect.CHALLENGE, rule)


def permit(code: ReasonCode, message: str, rule: str, detail: tuple[tuple[str, str], ...] = ()) -> Reason:
    return Reason(code, message, detail, Effect.PERMIT, rule)


def note(code: ReasonCode, message: str, rule: str, detail: tuple[tuple[str, str], ...] = ()) -> Reason:
    return Reason(code, message, detail, Effect.NOTE, rule)


def check_error(message: str, rule: str, detail: tuple[tuple[str, str], ...] = ()) -> Reason:
    return Reason(ReasonCode.GUARD_ERROR, message, detail, Effect.ERROR, rule)


# The effect a decision's outcome is determined by (DENY: a forbid; when only errors fired, them).
_DECIDING_EFFECT = {"ALLOW": Effect.PERMIT, "CHALLENGE": Effect.CHALLENGE, "DENY": Effect.FORBID}


@dataclass(frozen=True, slots=True)
class SpeakerResult:
    """Outcome of speaker verification; scores only, never the embedding."""

    member_id: str | None
    role: Role | None
    score: float
    threshold: float
    verified: bool
    child_likelihood: float  # -1 when no detector ran
    encoder: str
    usable: bool = True  # False when the audio had too little speech to judge
    problem: str = ""


@dataclass(frozen=True, slots=True)
class BroadcastCheck:
    """What the broadcast check found: its reasons, or the error that stopped it."""

    # KNOWN_BROADCAST / BROADCAST_MATCH (forbids) or SUSPECTED_BROADCAST (a step-up) when matched
    reasons: tuple[Reason, ...] = ()
    error: str | None = None
    # (household_id, decision_id) of earlier utterances in the same broadcast cluster: their
    # pending challenges are cancelled ("late catch"), since they heard the broadcast first.
    cluster_decisions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ChallengeInfo:
    challenge_id: str
    method: ChallengeMethod
    prompt: str
    digits_to_repeat: str
    expires_at: datetime
    attempts_left: int


@dataclass(frozen=True, slots=True)
class Challenge:
    """A challenge as stored. Holds digests only: never the PIN or the expected digits in clear."""

    challenge_id: str
    household_id: str
    decision_id: str
    method: ChallengeMethod
    order_digest: str
    order: Order
    member_id: str | None
    status: ChallengeStatus
    attempts_left: int
    expires_at: datetime
    created_at: datetime
    expected_digits_hash: str = ""  # RANDOM_DIGITS: salted sha256 of the digits
    digits_to_repeat: str = ""  # RANDOM_DIGITS: kept so the prompt can be repeated
    resolved_by: str | None = None
    # Why a CANCELLED challenge was cancelled (e.g. BROADCAST_MATCH), with its detail.
    cancel_reason: ReasonCode | None = None
    cancel_detail: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    household_id: str
    kind: str  # "evaluate" | "confirm"
    request_id: str
    device_id: str
    outcome: Outcome
    reasons: tuple[Reason, ...]
    speaker: SpeakerResult | None
    policy_revision: int
    total: Money
    decided_at: datetime
    challenge: ChallengeInfo | None = None
    member_id: str | None = None
    # Who asked (the authenticated caller's stable id); request ids are unique per caller.
    caller_id: str = ""

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(r.code for r in self.reasons)

    @property
    def errors(self) -> tuple[Reason, ...]:
        """Checks that failed; a decision with any is a DENY (fail closed)."""
        return tuple(r for r in self.reasons if r.effect is Effect.ERROR)

    @property
    def determining(self) -> tuple[Reason, ...]:
        """The findings that decided the outcome (Cedar's `reason`): the permits of an ALLOW, the
        step-ups of a CHALLENGE, the forbids of a DENY, or, for a DENY only errors explain, them."""
        wanted = _DECIDING_EFFECT[self.outcome.value]
        found = tuple(r for r in self.reasons if r.effect is wanted)
        return found if found or self.outcome is not Outcome.DENY else self.errors

    @property
    def context(self) -> tuple[Reason, ...]:
        """Everything else the decision reports: notes, and non-deciding findings of a CHALLENGE."""
        deciding = set(map(id, self.determining)) | set(map(id, self.errors))
        return tuple(r for r in self.reasons if id(r) not in deciding)


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: str
    household_id: str
    kind: str
    message: str
    challenge_id: str | None
    created_at: datetime


class CredentialKind(enum.Enum):
    PARENT = "parent"  # acts as one parent of one household (admin calls, approvals)
    DEVICE = "device"  # calls Evaluate and Confirm for one household's one device
    BACKEND = "backend"  # calls Evaluate and Confirm for every household (a voice platform)


@dataclass(frozen=True, slots=True)
class Credential:
    """An issued credential; its token exists only with whoever it was given to (sha256 stored)."""

    credential_id: str
    kind: CredentialKind
    household_id: str | None  # None only for a backend credential
    member_id: str | None  # the parent of a parent credential
    device_id: str | None  # the device of a device credential
    label: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PinState:
    """The household PIN: a peppered argon2id hash and its guess budget (limits/pin_budget.py)."""

    household_id: str
    pin_hash: str = field(repr=False)
    set_at: datetime
    failures: int = 0  # wrong PINs checked since the last right one (or since it was set)
    next_try_at: datetime | None = None  # no PIN is checked before this
    disabled_at: datetime | None = None  # too many failures: off until a parent sets a new PIN
    peppered: bool = True  # False for hashes made before the pepper; rehashed at the next right PIN


@dataclass(frozen=True, slots=True)
class AudioInput:
    """Audio as received: an encoded container, or raw PCM16 with its rate. Never logged."""

    encoded: bytes | None = field(default=None, repr=False)
    pcm16: bytes | None = field(default=None, repr=False)
    sample_rate_hz: int | None = None

    @property
    def present(self) -> bool:
        return bool(self.encoded) or bool(self.pcm16)


class EventKind(enum.Enum):
    """What parents are told about, pushed (WatchEvents, webhooks). Values are the webhook JSON's
    `kind`; the proto enum names are these with an `EVENT_` prefix."""

    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_APPROVED = "approval_approved"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_EXPIRED = "approval_expired"
    CHALLENGE_LOCKED = "challenge_locked"
    PIN_THROTTLED = "pin_throttled"
    BROADCAST_BLOCKED = "broadcast_blocked"
    PURCHASE_ALLOWED = "purchase_allowed"


@dataclass(frozen=True, slots=True)
class Event:
    """One event for a household's parents. Carries ids, the order and reason codes: never audio, a
    PIN, digits to repeat or an embedding. `event_id` is assigned by the store when the event is
    queued (monotonic per household; 0 before); `dedup` is unique per household, so the same fact
    (this decision's approval request, this challenge's expiry) is never queued twice."""

    household_id: str
    kind: EventKind
    occurred_at: datetime
    dedup: str
    decision_id: str = ""
    challenge_id: str = ""
    member_id: str = ""
    device_id: str = ""
    outcome: Outcome | None = None
    reasons: tuple[ReasonCode, ...] = ()
    order: Order | None = None
    message: str = ""  # a sentence for a person (amounts and merchant; no secrets)
    event_id: int = 0
