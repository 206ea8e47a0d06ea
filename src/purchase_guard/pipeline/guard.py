"""The decision pipeline: gathers facts (store, voice, broadcast), applies the pure rules, records.

Order of work in Evaluate: validate input (bad input is an error status, not a DENY),
answer idempotent retries from the store, run the checks, each in its own try block so
that a failing check becomes GUARD_ERROR (never ALLOW), evaluate policy, apply the
verdict rule, and write decision + audit entry + spend + challenge in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from purchase_guard.audit.records import audit_body
from purchase_guard.challenge.digest import digits_digest, digits_match, order_digest
from purchase_guard.challenge.pin import PinHasher
from purchase_guard.challenge.prompts import challenge_info
from purchase_guard.challenge.rules import (
    AnswerFacts,
    AnswerVerdict,
    judge_answer,
    normalise_digits,
    pre_answer,
    state_check,
)
from purchase_guard.clock import Clock, IdSource
from purchase_guard.config import Settings
from purchase_guard.domain import (
    AudioInput,
    BroadcastCheck,
    Challenge,
    ChallengeMethod,
    ChallengeStatus,
    Decision,
    Household,
    Member,
    Notification,
    Order,
    Outcome,
    PinState,
    Policy,
    Reason,
    ReasonCode,
    Role,
    SpeakerResult,
    SpendSnapshot,
    Voiceprint,
    forbid,
    permit,
)
from purchase_guard.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument
from purchase_guard.ids import validate_id
from purchase_guard.limits import PinBudget, after_right_pin, after_wrong_pin, pin_gate
from purchase_guard.logs import get_logger
from purchase_guard.metrics import CHECK_ERRORS, DECISIONS, LATENCY, REASONS
from purchase_guard.money import format_money
from purchase_guard.pipeline.ports import BroadcastDefence, SpeakerVerifier
from purchase_guard.pipeline.record import (
    DecisionContext,
    approval_inputs,
    confirm_inputs,
    evaluate_inputs,
    make_decision,
)
from purchase_guard.pipeline.validate import request_digest, validate_order
from purchase_guard.pipeline.verdict import (
    DEFAULT_CHILD_THRESHOLD,
    NO_OPTIONS,
    ChallengeOptions,
    VoiceCheck,
    decide,
    policy_failed,
    policy_role,
)
from purchase_guard.policy.engine import evaluate_policy
from purchase_guard.store.protocol import DecidingStore, SpendEntry
from purchase_guard.tracing import span
from purchase_guard.voice.audio import Pcm, decode_audio

log = get_logger("purchase_guard.pipeline")

DAY = timedelta(days=1)
MONTH = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked, as authenticated by the api layer: a stable id (request ids are unique per caller,
    and the audit record names it), and whether it speaks for a whole fleet of households."""

    caller_id: str
    fleet: bool = False


IN_PROCESS = Caller("")  # calls made inside the process (tests, tools), not over the API


@dataclass(frozen=True, slots=True)
class EvaluateInput:
    request_id: str
    household_id: str
    device_id: str
    order: Order
    audio: AudioInput
    transcript: str = ""
    caller: Caller = IN_PROCESS


@dataclass(frozen=True, slots=True)
class ConfirmInput:
    request_id: str
    household_id: str
    challenge_id: str
    order: Order
    spoken_digits: str
    audio: AudioInput
    device_id: str = ""
    caller: Caller = IN_PROCESS


@contextmanager
def _decision_context(decision_id: str, rpc: str, household_id: str) -> Iterator[None]:
    with structlog.contextvars.bound_contextvars(decision_id=decision_id, rpc=rpc, household_id=household_id):
        yield


class Guard:
    def __init__(
        self,
        settings: Settings,
        store: DecidingStore,
        verifier: SpeakerVerifier,
        broadcast: BroadcastDefence,
        pins: PinHasher,
        clock: Clock,
        ids: IdSource,
        child_threshold: float = DEFAULT_CHILD_THRESHOLD,
        quarantined: frozenset[str] = frozenset(),
    ) -> None:
        self._quarantined = quarantined
        self._settings = settings
        self._store = store
        self._verifier = verifier
        self._broadcast = broadcast
        self._pins = pins
        self._clock = clock
        self._ids = ids
        self._child_threshold = child_threshold
        # Wrong PINs are counted per household across challenges (with the PIN, in the store), so a
        # brute force spread over many short-lived challenges meets the same budget.
        self._pin_budget = PinBudget(
            free_failures=settings.pin_free_failures, disable_after=settings.pin_disable_after
        )

    # ------------------------------------------------------------------ Evaluate
    def evaluate(self, req: EvaluateInput) -> Decision:
        started = time.perf_counter()
        validate_id(req.request_id, "request_id")
        validate_id(req.household_id, "household_id")
        validate_id(req.device_id, "device_id")
        if len(req.transcript) > 2000:
            raise InvalidArgument("transcript is longer than 2000 characters")
        household = self._household(req.household_id)
        validate_order(req.order, household.currency)
        digest = request_digest("evaluate", req.household_id, req.device_id, req.order, req.audio)
        replayed = self._replay("evaluate", req.household_id, req.request_id, req.caller, digest)
        if replayed is not None:
            return replayed
        pcm = self._decode(req.audio)

        now = self._clock.now()
        decision_id = self._ids.new_id("dec")
        with (
            _decision_context(decision_id, "evaluate", household.household_id),
            span("guard.evaluate") as root,
        ):
            stored = self._decide(household, req, pcm, now, decision_id, digest)
            root.set(decision_id=stored.decision_id, outcome=stored.outcome.name)
            self._observe("evaluate", stored, started)
            return stored

    def _decide(
        self, household: Household, req: EvaluateInput, pcm: Pcm, now: datetime, decision_id: str, digest: str
    ) -> Decision:
        hh = household.household_id
        members: dict[str, Member] = {}
        prints: list[Voiceprint] = []
        # The slow checks (model inference, fingerprinting) run outside the household lock.
        voice = self._check_voice(hh, pcm, members, prints)
        broadcast = self._check_broadcast(hh, req.device_id, decision_id, pcm, now)
        role = policy_role(voice)
        member_id = voice.result.member_id if voice.result is not None and voice.result.verified else None
        ctx = DecisionContext(
            decision_id, hh, "evaluate", req.request_id, req.device_id, req.order.total, now
        )
        with span("store.lock"), self._store.household_lock(hh):
            # Spend is read and the decision recorded under one lock, so two concurrent orders
            # cannot both fit under a cap that only one of them fits under.
            policy: Policy | None = None
            spend = SpendSnapshot()
            options = NO_OPTIONS
            policy_error: str | None = None
            try:
                policy = self._store.get_policy(hh)
                spend = self._spend_snapshot(hh, member_id, now)
                options = self._challenge_options(hh, members, prints, now)
                with span("policy.evaluate", role=role.name) as s:
                    policy_verdict = evaluate_policy(policy, role, req.order, spend, now, household.time_zone)
                    s.set(effect=policy_verdict.effect.name, revision=policy.revision if policy else 0)
            except Exception as exc:
                # Still decided (and recorded) by the verdict rule, so the broadcast findings and
                # the late catch below are not lost with the policy.
                CHECK_ERRORS.labels("policy").inc()
                log.warning("policy_facts_failed", error=type(exc).__name__)
                policy_error = "policy data unavailable"
                policy_verdict = policy_failed(policy_error)
            verdict = decide(voice, broadcast, policy_verdict, options, self._child_threshold)

            challenge: Challenge | None = None
            notifications: tuple[Notification, ...] = ()
            if verdict.outcome is Outcome.CHALLENGE and verdict.challenge_method is not None:
                challenge = self._new_challenge(
                    hh, decision_id, req.order, verdict.member_id, verdict.challenge_method, now
                )
                notifications = self._challenge_notifications(challenge, now)
            revision = policy.revision if policy is not None else 0
            decision = make_decision(
                ctx,
                verdict.outcome,
                verdict.reasons,
                speaker=voice.result,
                policy_revision=revision,
                challenge=None if challenge is None else challenge_info(challenge),
                member_id=verdict.member_id,
            )
            spend_entry = None
            if verdict.outcome is Outcome.ALLOW:
                spend_entry = SpendEntry(
                    hh,
                    verdict.member_id,
                    req.order.total.minor_units,
                    decision_id,
                    now,
                    verdict.low_value_exempt,
                )
            inputs = evaluate_inputs(
                voice=voice,
                broadcast=broadcast,
                policy_revision=revision,
                policy_error=policy_error,
                time_zone=household.time_zone,
                spend=spend,
                options=options,
                child_threshold=self._child_threshold,
            )
            body = audit_body(decision, req.order, {"device_id": req.device_id}, inputs)
            with span("store.record", kind="evaluate", outcome=decision.outcome.name):
                stored = self._store.record_decision(
                    decision,
                    digest,
                    body,
                    spend=spend_entry,
                    challenge=challenge,
                    notifications=notifications,
                )
        if broadcast.cluster_decisions:
            self._cancel_broadcast_challenges(broadcast.cluster_decisions, broadcast.reasons)
        return stored

    def _cancel_broadcast_challenges(
        self, decisions: tuple[tuple[str, str], ...], reasons: tuple[Reason, ...]
    ) -> None:
        """Late catch: devices that heard the broadcast before the cluster formed got a challenge;
        cancel those still open so a later Confirm cannot pass them."""
        by_household: dict[str, set[str]] = {}
        for hh, decision_id in decisions:
            by_household.setdefault(hh, set()).add(decision_id)
        cause = reasons[0] if reasons else Reason(ReasonCode.BROADCAST_MATCH, "broadcast")
        for hh, ids in by_household.items():
            for status in (ChallengeStatus.PENDING, ChallengeStatus.APPROVED):
                for challenge in self._store.list_challenges(hh, status):
                    if challenge.decision_id in ids:
                        cancelled = replace(
                            challenge,
                            status=ChallengeStatus.CANCELLED,
                            cancel_reason=cause.code,
                            cancel_detail=cause.detail,
                        )
                        if self._store.update_challenge(cancelled, status):
                            log.warning("challenge_cancelled_broadcast", challenge_id=challenge.challenge_id)

    def _check_voice(
        self,
        household_id: str,
        pcm: Pcm,
        members_out: dict[str, Member],
        prints_out: list[Voiceprint] | None = None,
    ) -> VoiceCheck:
        """Verify the speaker; the members and voiceprints read are handed back for reuse."""
        try:
            members = self._store.list_members(household_id)
            members_out.update({m.member_id: m for m in members})
            prints = self._store.list_voiceprints(household_id)
            if prints_out is not None:
                prints_out.extend(prints)
            roles = {m.member_id: m.role for m in members}
            with span("voice.verify", encoder=self._verifier.encoder.name, enrolled=len(prints)) as s:
                result = self._verifier.verify(pcm, prints, roles)
                s.set(verified=result.verified, usable=result.usable, score=round(result.score, 4))
            return VoiceCheck(result)
        except Exception as exc:
            CHECK_ERRORS.labels("voice").inc()
            log.warning("voice_check_failed", error=type(exc).__name__)
            return VoiceCheck(None, error="the speaker check raised an internal error")

    def _check_broadcast(
        self, hh: str, device_id: str, decision_id: str, pcm: Pcm, now: datetime
    ) -> BroadcastCheck:
        try:
            with span("broadcast.check") as s:
                found = self._broadcast.check(hh, device_id, decision_id, pcm, now)
                s.set(matched=bool(found.reasons), cluster_size=len(found.cluster_decisions))
        except Exception as exc:
            CHECK_ERRORS.labels("broadcast").inc()
            log.warning("broadcast_check_failed", error=type(exc).__name__)
            return BroadcastCheck(error="the broadcast check raised an internal error")
        return found

    def _spend_snapshot(self, hh: str, member_id: str | None, now: datetime) -> SpendSnapshot:
        store = self._store
        return SpendSnapshot(
            member_daily_minor=store.spend_since(hh, member_id, now - DAY) if member_id else 0,
            member_monthly_minor=store.spend_since(hh, member_id, now - MONTH) if member_id else 0,
            household_daily_minor=store.spend_since(hh, None, now - DAY),
            household_monthly_minor=store.spend_since(hh, None, now - MONTH),
            exempt_since_last_challenge_minor=store.exempt_spend_since_last_challenge(hh),
        )

    def _challenge_options(
        self, hh: str, members: Mapping[str, Member], prints: Sequence[Voiceprint], now: datetime
    ) -> ChallengeOptions:
        pin = self._store.get_pin(hh)
        enrolled = {vp.member_id for vp in prints if vp.encoder == self._verifier.encoder.name}
        return ChallengeOptions(
            has_pin=pin is not None,
            pin_throttled=pin is not None and pin_gate(pin, now) is not None,
            has_enrolled_adult=any(
                m.role is Role.ADULT and m.member_id in enrolled for m in members.values()
            ),
            has_parent=any(m.is_parent for m in members.values()),
        )

    def _new_challenge(
        self,
        hh: str,
        decision_id: str,
        order: Order,
        member_id: str | None,
        method: ChallengeMethod,
        now: datetime,
    ) -> Challenge:
        challenge_id = self._ids.new_id("chl")
        expiry = (
            self._settings.approval_expiry
            if method is ChallengeMethod.PARENT_APPROVAL
            else self._settings.challenge_expiry
        )
        digits = (
            self._ids.digits(self._settings.random_digits) if method is ChallengeMethod.RANDOM_DIGITS else ""
        )
        return Challenge(
            challenge_id=challenge_id,
            household_id=hh,
            decision_id=decision_id,
            method=method,
            order_digest=order_digest(hh, order),
            order=order,
            member_id=member_id,
            status=ChallengeStatus.PENDING,
            attempts_left=self._settings.max_attempts,
            expires_at=now + expiry,
            created_at=now,
            expected_digits_hash=digits_digest(challenge_id, digits) if digits else "",
            digits_to_repeat=digits,
        )

    def _challenge_notifications(self, challenge: Challenge, now: datetime) -> tuple[Notification, ...]:
        if challenge.method is not ChallengeMethod.PARENT_APPROVAL:
            return ()
        total = format_money(challenge.order.total)
        return (
            Notification(
                notification_id=self._ids.new_id("ntf"),
                household_id=challenge.household_id,
                kind="approval_requested",
                message=(
                    f"A purchase of {total} from {challenge.order.merchant} is waiting for your approval."
                ),
                challenge_id=challenge.challenge_id,
                created_at=now,
            ),
        )

    # ------------------------------------------------------------------ Confirm
    def confirm(self, req: ConfirmInput) -> Decision:
        started = time.perf_counter()
        validate_id(req.request_id, "request_id")
        validate_id(req.household_id, "household_id")
        validate_id(req.challenge_id, "challenge_id")
        if req.device_id:
            validate_id(req.device_id, "device_id")
        if len(req.spoken_digits) > 200:
            raise InvalidArgument("spoken_digits is longer than 200 characters")
        household = self._household(req.household_id)
        validate_order(req.order, household.currency)
        digest = request_digest(
            "confirm",
            req.household_id,
            req.device_id,
            req.order,
            req.audio,
            req.challenge_id + "|" + req.spoken_digits,
        )
        replayed = self._replay("confirm", req.household_id, req.request_id, req.caller, digest)
        if replayed is not None:
            return replayed
        challenge = self._store.get_challenge(req.household_id, req.challenge_id)
        pcm = self._decode(req.audio) if req.audio.present else None
        if pcm is None and challenge.method is not ChallengeMethod.PARENT_APPROVAL:
            raise InvalidArgument("audio is required to answer a spoken challenge")

        decision_id = self._ids.new_id("dec")
        with _decision_context(decision_id, "confirm", household.household_id), span("guard.confirm") as root:
            stored: Decision | None = None
            voice: VoiceCheck | None = None
            for _ in range(3):
                now = self._clock.now()
                try:
                    stored, voice = self._answer(
                        household, challenge, req, pcm, now, decision_id, digest, voice
                    )
                    break
                except Aborted:
                    # Another answer to the same challenge (or PIN) landed first; judge again on
                    # fresh state. The voice check is not repeated: the audio did not change.
                    challenge = self._store.get_challenge(req.household_id, req.challenge_id)
            if stored is None:
                closed = AnswerVerdict(
                    Outcome.DENY,
                    (
                        forbid(
                            ReasonCode.CHALLENGE_CLOSED,
                            "The challenge changed while this answer was checked.",
                            "challenge.state",
                        ),
                    ),
                    challenge,
                )
                facts = AnswerFacts(order_matches=True)
                stored = self._record_confirm(req, decision_id, challenge, facts, closed, None, now, digest)
            root.set(
                decision_id=stored.decision_id, outcome=stored.outcome.name, method=challenge.method.name
            )
            self._observe("confirm", stored, started)
            return stored

    def _answer(
        self,
        household: Household,
        challenge: Challenge,
        req: ConfirmInput,
        pcm: Pcm | None,
        now: datetime,
        decision_id: str,
        digest: str,
        voice: VoiceCheck | None,
    ) -> tuple[Decision, VoiceCheck | None]:
        """Judges and records one answer. Facts are gathered stage by stage (no audio is judged when
        the challenge, the order or the PIN's state already decides); a PIN is checked and counted
        under the household lock, so concurrent answers meet one guess budget."""
        hh = household.household_id
        facts = AnswerFacts(order_matches=order_digest(hh, req.order) == challenge.order_digest)
        if challenge.method is ChallengeMethod.SPOKEN_PIN and state_check(challenge, now) is None:
            pin = self._store.get_pin(hh)
            facts = replace(
                facts, pin_set=pin is not None, pin_blocked=None if pin is None else pin_gate(pin, now)
            )
        early = pre_answer(challenge, facts, now)
        if early is not None:
            return self._record_confirm(req, decision_id, challenge, facts, early, None, now, digest), voice
        assert pcm is not None  # checked by the caller for spoken methods
        if voice is None:
            voice = self._check_voice(hh, pcm, {})
        result = voice.result
        # The answer must match an enrolled adult's voiceprint (at the FMR 1e-3 threshold). The
        # child-likeness score is not applied again here: it already forced this challenge, and it
        # flags too many adults to be a gate on the adult's own answer.
        speaker_ok = (
            voice.error is None and result is not None and result.verified and result.role is Role.ADULT
        )
        spoken = normalise_digits(req.spoken_digits)
        if challenge.method is not ChallengeMethod.SPOKEN_PIN:
            content_ok = speaker_ok and digits_match(
                challenge.challenge_id, challenge.expected_digits_hash, spoken
            )
            facts = replace(facts, speaker_ok=speaker_ok, content_ok=content_ok)
            verdict = judge_answer(challenge, facts, now)
            return self._record_confirm(
                req, decision_id, challenge, facts, verdict, result, now, digest
            ), voice
        with self._store.household_lock(hh):
            # Read again under the lock: the budget this answer is judged on is the one it changes.
            pin = self._store.get_pin(hh)
            facts = replace(
                facts, pin_set=pin is not None, pin_blocked=None if pin is None else pin_gate(pin, now)
            )
            pin_update: tuple[PinState, PinState] | None = None
            notices: tuple[Notification, ...] = ()
            content_ok = False
            if pin is not None and facts.pin_blocked is None and speaker_ok:
                pepper = self._store.pin_pepper(hh)
                content_ok = self._pins.verify(pin.pin_hash, spoken, pepper if pin.peppered else None)
                if content_ok:
                    after = after_right_pin(pin)
                    if not pin.peppered:
                        # Hashes made before the pepper are replaced the first time the PIN is heard.
                        after = replace(after, pin_hash=self._pins.hash(spoken, pepper), peppered=True)
                    pin_update = (pin, after)
                else:
                    wrong = after_wrong_pin(pin, now, self._pin_budget)
                    pin_update = (pin, wrong.state)
                    if wrong.notify is not None:
                        notices = (self._pin_notification(hh, wrong.notify, wrong.state, now),)
            facts = replace(facts, speaker_ok=speaker_ok, content_ok=content_ok)
            verdict = judge_answer(challenge, facts, now)
            stored = self._record_confirm(
                req,
                decision_id,
                challenge,
                facts,
                verdict,
                result,
                now,
                digest,
                pin_update=pin_update,
                notices=notices,
            )
        return stored, voice

    def _pin_notification(self, household_id: str, kind: str, pin: PinState, now: datetime) -> Notification:
        log.warning(kind, failures=pin.failures)
        if kind == "pin_disabled":
            message = (
                f"The household PIN was answered wrongly {pin.failures} times and is now switched off. "
                "Set a new PIN to use it again."
            )
        else:
            message = (
                f"The household PIN was answered wrongly {pin.failures} times in a row; further PIN "
                "answers now have to wait, longer after each wrong one."
            )
        return Notification(self._ids.new_id("ntf"), household_id, kind, message, None, now)

    def _locked_notification(self, challenge: Challenge, now: datetime) -> Notification:
        log.warning("challenge_locked", challenge_id=challenge.challenge_id)
        return Notification(
            notification_id=self._ids.new_id("ntf"),
            household_id=challenge.household_id,
            kind="challenge_locked",
            message=(
                f"Someone answered a purchase challenge wrongly {self._settings.max_attempts} times "
                f"({format_money(challenge.order.total)} from {challenge.order.merchant}); "
                "it is now locked."
            ),
            challenge_id=challenge.challenge_id,
            created_at=now,
        )

    def _record_confirm(
        self,
        req: ConfirmInput,
        decision_id: str,
        before: Challenge,
        facts: AnswerFacts,
        verdict: AnswerVerdict,
        speaker: SpeakerResult | None,
        now: datetime,
        digest: str,
        *,
        pin_update: tuple[PinState, PinState] | None = None,
        notices: tuple[Notification, ...] = (),
    ) -> Decision:
        """Records the answer's decision, its spend, the challenge's next state and the PIN's guess
        count in one transaction; the challenge is compare-and-set against `before` and the PIN
        against the count it was judged on (Aborted when another answer won)."""
        challenge = verdict.challenge
        ctx = DecisionContext(
            decision_id,
            before.household_id,
            "confirm",
            req.request_id,
            req.device_id,
            req.order.total,
            now,
            req.caller.caller_id,
        )
        decision = make_decision(
            ctx,
            verdict.outcome,
            verdict.reasons,
            speaker=speaker,
            challenge=challenge_info(challenge),
            member_id=challenge.member_id,
        )
        spend = None
        if verdict.passed:
            spend = SpendEntry(
                before.household_id, challenge.member_id, req.order.total.minor_units, decision_id, now, False
            )
        changed = challenge != before
        notifications = notices + ((self._locked_notification(challenge, now),) if verdict.locked_now else ())
        body = audit_body(
            decision, req.order, {"challenge_method": challenge.method.value}, confirm_inputs(before, facts)
        )
        return self._store.record_decision(
            decision,
            digest,
            body,
            spend=spend,
            challenge=challenge if changed else None,
            expected_status=before.status if changed else None,
            notifications=notifications,
            pin_update=pin_update,
        )

    # ------------------------------------------------------------------ approvals
    def resolve_approval(
        self, household_id: str, challenge_id: str, parent: Member, approve: bool
    ) -> Challenge:
        """A parent's answer to a PARENT_APPROVAL challenge, recorded with its decision in one
        transaction. `parent` is already authorised by the caller (the household service)."""
        self._household(household_id)
        challenge = self._store.get_challenge(household_id, validate_id(challenge_id, "challenge_id"))
        if challenge.method is not ChallengeMethod.PARENT_APPROVAL:
            raise FailedPrecondition("this challenge is answered by voice, not by a parent's approval")
        now = self._clock.now()
        if challenge.status is not ChallengeStatus.PENDING:
            raise FailedPrecondition(f"this challenge is already {challenge.status.value.lower()}")
        if now >= challenge.expires_at:
            raise FailedPrecondition("this approval request has expired")
        status = ChallengeStatus.APPROVED if approve else ChallengeStatus.REJECTED
        updated = replace(challenge, status=status, resolved_by=parent.member_id)
        verb = "approved" if approve else "rejected"
        message = f"Parent {parent.display_name} {verb} the purchase."
        reason = (
            permit(ReasonCode.APPROVAL_GRANTED, message, "approval.parent")
            if approve
            else forbid(ReasonCode.APPROVAL_REJECTED, message, "approval.parent")
        )
        decision_id = self._ids.new_id("dec")
        ctx = DecisionContext(
            decision_id,
            household_id,
            "approval",
            f"approval:{challenge.challenge_id}",
            "",
            challenge.order.total,
            now,
        )
        decision = make_decision(
            ctx,
            Outcome.ALLOW if approve else Outcome.DENY,
            (reason,),
            challenge=challenge_info(updated),
            member_id=parent.member_id,
        )
        body = audit_body(
            decision,
            challenge.order,
            {"resolved_by": parent.member_id},
            approval_inputs(challenge, approve, parent.member_id),
        )
        with _decision_context(decision_id, "approval", household_id):
            try:
                self._store.record_decision(
                    decision,
                    challenge.challenge_id,
                    body,
                    challenge=updated,
                    expected_status=ChallengeStatus.PENDING,
                )
            except Aborted as exc:
                raise FailedPrecondition(
                    "this challenge was resolved at the same moment by someone else"
                ) from exc
            log.info("approval_resolved", approve=approve, challenge_id=challenge.challenge_id)
        return updated

    # ------------------------------------------------------------------ shared
    def _household(self, household_id: str) -> Household:
        if household_id in self._quarantined:
            raise FailedPrecondition(
                "this household's audit record failed verification when the guard started; no "
                "purchase is decided for it until an operator has reviewed the record (VerifyAudit)"
            )
        return self._store.get_household(household_id)

    def _replay(
        self, kind: str, household_id: str, request_id: str, caller: Caller, digest: str
    ) -> Decision | None:
        stored = self._store.get_decision(household_id, kind, request_id, caller.caller_id)
        if stored is None:
            return None
        if stored.request_digest != digest:
            raise AlreadyExists(
                f"request_id {request_id!r} was already used for a different {kind} request; "
                "use a new request_id"
            )
        return stored.decision

    def _decode(self, audio: AudioInput) -> Pcm:
        if not audio.present:
            raise InvalidArgument("audio is required: send WAV or FLAC bytes, or PCM16 with its sample rate")
        return decode_audio(
            encoded=audio.encoded,
            pcm16=audio.pcm16,
            sample_rate_hz=audio.sample_rate_hz,
            max_seconds=self._settings.max_audio_seconds,
        )

    def _observe(self, rpc: str, decision: Decision, started: float) -> None:
        LATENCY.labels(rpc).observe(time.perf_counter() - started)
        DECISIONS.labels(rpc, decision.outcome.value).inc()
        for reason in decision.reasons:
            REASONS.labels(rpc, reason.code.value).inc()
        log.info(
            "decision",
            outcome=decision.outcome.value,
            reasons=[r.code.value for r in decision.reasons],
            score=round(decision.speaker.score, 4) if decision.speaker else None,
            policy_revision=decision.policy_revision,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
