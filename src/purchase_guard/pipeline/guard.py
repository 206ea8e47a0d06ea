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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog

from purchase_guard.audit.records import audit_body
from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.broadcast.repeat import EarlierAudio, EarlierAudioCache, find_replay
from purchase_guard.challenge.digest import digits_digest, issued_digits_digest, order_digest
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
    AdaptationSample,
    AudioInput,
    BroadcastCheck,
    Challenge,
    ChallengeMethod,
    ChallengeStatus,
    Decision,
    Effect,
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
    UnknownVoice,
    Voiceprint,
    forbid,
    permit,
)
from purchase_guard.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument
from purchase_guard.events.derive import decision_events
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
    GUEST_RULE_ONLY,
    NEVER,
    NO_OPTIONS,
    ChallengeOptions,
    ReplayCheck,
    UnknownVoiceGate,
    VoiceCheck,
    decide,
    is_child_like,
    is_unknown_voice,
    policy_failed,
    policy_role,
)
from purchase_guard.policy.engine import evaluate_policy
from purchase_guard.store.protocol import (
    AudioPrint,
    DecidingFacts,
    DecidingStore,
    OpeningReads,
    SpendEntry,
    StoredDecision,
    VoiceprintUpdate,
)
from purchase_guard.tracing import span
from purchase_guard.voice.adaptation import AdaptationLimits, NotAdapted, Trigger, decide_adaptation
from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm, decode_audio
from purchase_guard.voice.digits import MAX_DIGITS, MIN_DIGITS, DigitChecker, DigitTemplates
from purchase_guard.voice.verifier import Heard

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


@dataclass(frozen=True, slots=True)
class HeardAnswer:
    """What `_hear` found in one answer's audio (a stage's facts stay None when an earlier one
    decided). `candidate` is secret material (it may be the PIN): never logged or recorded."""

    fp: Fingerprint | None
    replayed: bool = False
    speaker: SpeakerResult | None = None
    speaker_ok: bool = False
    child_like: bool = False
    heard_ok: bool = False
    transcript_ok: bool | None = None
    candidate: str = field(default="", repr=False)
    failed: bool = False

    @classmethod
    def failure(cls, fp: Fingerprint | None) -> HeardAnswer:
        return cls(fp=fp, failed=True)


def _crop(pcm: Pcm, span: tuple[float, float], pad_s: float = 0.15) -> Pcm:
    start = max(0, int((span[0] - pad_s) * TARGET_RATE_HZ))
    end = min(len(pcm.samples), int((span[1] + pad_s) * TARGET_RATE_HZ))
    return Pcm(samples=pcm.samples[start:end]) if end > start else pcm


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
        *,
        digits: DigitChecker | None = None,
        high_child_threshold: float = NEVER,
        adaptation: AdaptationLimits | None = None,
    ) -> None:
        """`digits` checks what an answer says; without one no spoken challenge is offered (and a
        spoken answer cannot pass). `high_child_threshold` is the child detector's high operating
        point: a verified adult whose voice is that child-like goes to a parent. `adaptation` is
        the voiceprint adaptation rule's settings (voice/adaptation.py); None: no adaptation."""
        self._adaptation = adaptation
        self._quarantined = quarantined
        self._digits = digits
        self._high_child = high_child_threshold
        self._replay_window = timedelta(days=settings.replay_window_days)
        self._earlier_audio = EarlierAudioCache(settings.replay_cache_mib * 2**20)
        self._digits_memory = timedelta(days=settings.random_digits_unique_days)
        self._unknown_voice_limit = settings.unknown_voice_approvals_per_hour
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
        self._refuse_quarantined(req.household_id)
        # The household, this request's stored decision, the members and the voiceprints: one read.
        opening = self._store.opening_reads(
            req.household_id, "evaluate", req.request_id, req.caller.caller_id
        )
        household = opening.household
        validate_order(req.order, household.currency)
        digest = request_digest("evaluate", req.household_id, req.device_id, req.order, req.audio)
        replayed = self._replayed("evaluate", req.request_id, opening.stored, digest)
        if replayed is not None:
            return replayed
        pcm = self._decode(req.audio)

        now = self._clock.now()
        decision_id = self._ids.new_id("dec")
        with (
            _decision_context(decision_id, "evaluate", household.household_id),
            span("guard.evaluate") as root,
        ):
            stored = self._decide(household, req, pcm, now, decision_id, digest, opening)
            root.set(decision_id=stored.decision_id, outcome=stored.outcome.name)
            self._observe("evaluate", stored, started)
            return stored

    def _decide(
        self,
        household: Household,
        req: EvaluateInput,
        pcm: Pcm,
        now: datetime,
        decision_id: str,
        digest: str,
        opening: OpeningReads,
    ) -> Decision:
        hh = household.household_id
        members: dict[str, Member] = {}
        prints: list[Voiceprint] = []
        heard: list[Heard] = []
        # The slow checks (model inference, fingerprinting) run outside the household lock.
        voice = self._check_voice(
            hh, pcm, members, prints, heard, read=(opening.members, opening.voiceprints)
        )
        # One print for both audio checks: the replay check and the broadcast check compare the
        # same fingerprint (the costliest audio work after the encoder). A print that could not be
        # made fails the replay check closed, and the broadcast check then tries its own.
        fp = self._fingerprint(pcm)
        broadcast = self._check_broadcast(hh, req.device_id, decision_id, pcm, now, req.caller.caller_id, fp)
        member_id = voice.result.member_id if voice.result is not None and voice.result.verified else None
        ctx = DecisionContext(
            decision_id,
            hh,
            "evaluate",
            req.request_id,
            req.device_id,
            req.order.total,
            now,
            # Request ids are the caller's: another credential of the household reusing one must
            # not take (or block) this caller's decision.
            req.caller.caller_id,
        )
        with span("store.lock"), self._store.household_lock(hh):
            # Spend is read and the decision recorded under one lock, so two concurrent orders
            # cannot both fit under a cap that only one of them fits under.
            policy: Policy | None = None
            spend = SpendSnapshot()
            options = NO_OPTIONS
            unknown = GUEST_RULE_ONLY
            policy_error: str | None = None
            # Under the lock: two copies of one recording sent at once cannot both pass.
            replay = self._check_replay(hh, fp, now)
            try:
                # Policy, spend, PIN and digit-template members: one statement.
                facts = self._store.deciding_facts(hh, member_id, now - DAY, now - MONTH)
                policy, spend = facts.policy, facts.spend
                options = self._challenge_options(facts, members, prints, now)
                unknown = self._unknown_voice_gate(hh, policy, options, voice, now)
                role = policy_role(voice, unknown)
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
            verdict = decide(
                voice,
                broadcast,
                policy_verdict,
                options,
                self._child_threshold,
                high_child_threshold=self._high_child,
                replay=replay,
                unknown=unknown,
            )

            challenge: Challenge | None = None
            notifications: tuple[Notification, ...] = ()
            issued: str | None = None
            sample: AdaptationSample | None = None
            if verdict.outcome is Outcome.CHALLENGE and verdict.challenge_method is not None:
                challenge, issued = self._new_challenge(
                    hh, decision_id, req.order, verdict.member_id, verdict.challenge_method, now
                )
                notifications = self._challenge_notifications(challenge, now)
                sample = self._adaptation_sample(
                    challenge, voice, heard, members, prints, policy, broadcast, replay, now
                )
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
                high_child_threshold=self._high_child,
                replay=replay,
                unknown=unknown,
            )
            body = audit_body(decision, req.order, {"device_id": req.device_id}, inputs)
            audio_print = self._audio_print(hh, decision_id, "evaluate", fp, now)
            with span("store.record", kind="evaluate", outcome=decision.outcome.name):
                stored = self._store.record_decision(
                    decision,
                    digest,
                    body,
                    spend=spend_entry,
                    challenge=challenge,
                    notifications=notifications,
                    audio_print=audio_print,
                    issued_digits=issued,
                    events=decision_events(decision, req.order, challenge, notifications),
                    adaptation_sample=sample,
                )
        if audio_print is not None and stored.decision_id == decision_id:
            # Committed with this decision: the household's next check compares it without
            # reading it back (parsed from the bytes stored, as a read would give them).
            self._remember_print(audio_print)
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

    def _adaptation_sample(
        self,
        challenge: Challenge,
        voice: VoiceCheck,
        heard: Sequence[Heard],
        members: Mapping[str, Member],
        prints: Sequence[Voiceprint],
        policy: Policy | None,
        broadcast: BroadcastCheck,
        replay: ReplayCheck,
        now: datetime,
    ) -> AdaptationSample | None:
        """What is kept with a new challenge so that, if it is passed, the request's voice may adapt
        the print of the member it verified as. Nothing is kept when nothing could adapt: no rule,
        adaptation off, a voice that did not verify (an approval of an unrecognised voice adapts
        nobody), or a member who is not an adult."""
        result = voice.result
        if (
            self._adaptation is None
            or self._adaptation.drift_floor is None
            or policy is None
            or not policy.voice_adaptation
            or not heard
            or result is None
            or not result.verified
            or result.member_id is None
            or result.member_id != challenge.member_id
        ):
            return None
        member = members.get(result.member_id)
        if member is None or member.role is not Role.ADULT:
            return None
        h = heard[0]
        target = next((vp for vp in prints if vp.member_id == result.member_id), None)
        if target is None:
            return None
        try:
            enrollment_score = self._verifier.enrollment_score(h.embedding, h.net_speech_s, h.snr_db, target)
        except Exception as exc:
            # No score, no sample: the challenge goes on, it just cannot adapt the print.
            CHECK_ERRORS.labels("adaptation").inc()
            log.warning("adaptation_sample_failed", error=type(exc).__name__)
            return None
        return AdaptationSample(
            challenge_id=challenge.challenge_id,
            household_id=challenge.household_id,
            member_id=result.member_id,
            encoder=result.encoder,
            embedding=h.embedding,
            score=result.score,
            threshold=result.threshold,
            child_likelihood=result.child_likelihood,
            net_speech_s=h.net_speech_s,
            snr_db=h.snr_db,
            clipped=h.clipped,
            # A check that failed counts as a match: the rule refuses both.
            broadcast=bool(broadcast.reasons) or broadcast.error is not None,
            replayed=replay.replay_of is not None or replay.error is not None,
            created_at=now,
            enrollment_score=enrollment_score,
        )

    def _adapt(self, challenge: Challenge, now: datetime) -> tuple[VoiceprintUpdate | None, dict[str, str]]:
        """For a challenge just passed: the adapted set its sample gives (decide_adaptation), and
        what the decision record says about it. Any failure adapts nothing (never blocks the pass)."""
        if self._adaptation is None:
            return None, {}
        hh = challenge.household_id
        try:
            sample = self._store.get_adaptation_sample(hh, challenge.challenge_id)
            if sample is None:
                return None, {}
            prints = self._store.list_voiceprints(hh)
            target = next((vp for vp in prints if vp.member_id == sample.member_id), None)
            member = self._store.get_member(hh, sample.member_id)
            if target is None:
                return None, {"adaptation": f"not adapted ({sample.member_id}): no voiceprint"}
            policy = self._store.get_policy(hh)
            outcome = decide_adaptation(
                sample,
                target,
                member.role,
                [vp for vp in prints if vp.member_id != target.member_id],
                Trigger(challenge.method.value),
                self._adaptation,
                enabled=policy is not None and policy.voice_adaptation,
            )
        except Exception as exc:
            CHECK_ERRORS.labels("adaptation").inc()
            log.warning("adaptation_failed", error=type(exc).__name__)
            return None, {"adaptation": "not adapted: the adaptation check raised an internal error"}
        if isinstance(outcome, NotAdapted):
            log.info("voiceprint_not_adapted", member_id=sample.member_id, reason=outcome.reason)
            return None, {"adaptation": f"not adapted ({sample.member_id}): {outcome.reason}"}
        log.info("voiceprint_adapted", member_id=sample.member_id, kept=len(outcome.adapted))
        update = VoiceprintUpdate(
            household_id=hh,
            member_id=target.member_id,
            encoder=target.encoder,
            enrolled_at=target.created_at,
            expected_adapted=len(target.adapted),
            adapted=outcome.adapted,
            at=now,
        )
        note_ = (
            f"adapted {target.member_id}: {len(outcome.adapted)} of {self._adaptation.max_templates} kept, "
            f"{outcome.dropped} dropped, cosine to enrollment {outcome.drift_score:.3f}"
        )
        return update, {"adaptation": note_}

    def _check_voice(
        self,
        household_id: str,
        pcm: Pcm,
        members_out: dict[str, Member],
        prints_out: list[Voiceprint] | None = None,
        heard_out: list[Heard] | None = None,
        read: tuple[Sequence[Member] | None, Sequence[Voiceprint] | None] = (None, None),
    ) -> VoiceCheck:
        """Verify the speaker; the members and voiceprints read (and what adaptation needs of the
        utterance) are handed back for reuse. `read`: the members and voiceprints already read
        (`opening_reads`); what is None is read here."""
        try:
            members = read[0] if read[0] is not None else self._store.list_members(household_id)
            members_out.update({m.member_id: m for m in members})
            prints = list(read[1]) if read[1] is not None else self._store.list_voiceprints(household_id)
            if prints_out is not None:
                prints_out.extend(prints)
            roles = {m.member_id: m.role for m in members}
            with span("voice.verify", encoder=self._verifier.encoder.name, enrolled=len(prints)) as s:
                if self._adaptation is None or heard_out is None:
                    result = self._verifier.verify(pcm, prints, roles)
                else:
                    # Only with adaptation on is the embedding kept past the check.
                    result, heard = self._verifier.verify_sample(pcm, prints, roles)
                    if heard is not None:
                        heard_out.append(heard)
                s.set(verified=result.verified, usable=result.usable, score=round(result.score, 4))
            mine = next((vp for vp in prints if vp.member_id == result.member_id), None)
            child_like = (
                result.verified and mine is not None and mine.child_like and not mine.role_confirmed_by
            )
            return VoiceCheck(result, enrolled_child_like=child_like)
        except Exception as exc:
            CHECK_ERRORS.labels("voice").inc()
            log.warning("voice_check_failed", error=type(exc).__name__)
            return VoiceCheck(None, error="the speaker check raised an internal error")

    def _check_broadcast(
        self,
        hh: str,
        device_id: str,
        decision_id: str,
        pcm: Pcm,
        now: datetime,
        caller_id: str,
        fp: Fingerprint | None,
    ) -> BroadcastCheck:
        try:
            with span("broadcast.check") as s:
                found = self._broadcast.check(
                    hh, device_id, decision_id, pcm, now, caller_id=caller_id, fp=fp
                )
                s.set(matched=bool(found.reasons), cluster_size=len(found.cluster_decisions))
        except Exception as exc:
            CHECK_ERRORS.labels("broadcast").inc()
            log.warning("broadcast_check_failed", error=type(exc).__name__)
            return BroadcastCheck(error="the broadcast check raised an internal error")
        return found

    def _unknown_voice_gate(
        self, hh: str, policy: Policy | None, options: ChallengeOptions, voice: VoiceCheck, now: datetime
    ) -> UnknownVoiceGate:
        """Whether an unrecognised voice goes to a parent, and how many already went this hour."""
        if (
            policy is None
            or policy.unknown_voice is not UnknownVoice.PARENT_APPROVAL
            or not options.has_parent
        ):
            return GUEST_RULE_ONLY
        if not is_unknown_voice(voice):
            return UnknownVoiceGate(to_parent=True, limit=self._unknown_voice_limit)
        recent = self._store.unknown_voice_approvals_since(hh, now - timedelta(hours=1))
        return UnknownVoiceGate(to_parent=True, recent=recent, limit=self._unknown_voice_limit)

    def _challenge_options(
        self, facts: DecidingFacts, members: Mapping[str, Member], prints: Sequence[Voiceprint], now: datetime
    ) -> ChallengeOptions:
        pin = facts.pin
        voices = {vp.member_id for vp in prints if vp.encoder == self._verifier.encoder.name}
        # A spoken answer is checked for what it says as well as who says it: only an adult with
        # digit templates enrolled can answer one (the packaged bank alone hears right answers
        # too rarely to be offered, docs/challenges.md).
        templated = facts.digit_template_members if self._digits is not None else frozenset()
        enrolled = voices & templated
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
    ) -> tuple[Challenge, str | None]:
        """The challenge, and for random digits the keyed digest of the digits (kept, so the
        household is not asked for the same digits again within `random_digits_unique_days`)."""
        challenge_id = self._ids.new_id("chl")
        expiry = (
            self._settings.approval_expiry
            if method is ChallengeMethod.PARENT_APPROVAL
            else self._settings.challenge_expiry
        )
        digits, issued = "", None
        if method is ChallengeMethod.RANDOM_DIGITS:
            digits, issued = self._fresh_digits(hh, now)
        challenge = Challenge(
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
        return challenge, issued

    def _fresh_digits(self, hh: str, now: datetime) -> tuple[str, str]:
        key = self._store.digits_key(hh)
        seen = self._store.recently_issued_digits(hh, now - self._digits_memory)
        for _ in range(64):
            digits = self._ids.digits(self._settings.random_digits)
            digest = issued_digits_digest(key, digits)
            if digest not in seen:
                return digits, digest
        # 10^5 strings or more and a few dozen a month: unreachable unless the store is wrong.
        raise FailedPrecondition("no fresh digits could be drawn for this household")

    def _fingerprint(self, pcm: Pcm) -> Fingerprint | None:
        try:
            return fingerprint(pcm)
        except Exception as exc:
            CHECK_ERRORS.labels("replay").inc()
            log.warning("fingerprint_failed", error=type(exc).__name__)
            return None

    def _check_replay(self, hh: str, fp: Fingerprint | None, now: datetime) -> ReplayCheck:
        if fp is None:
            return ReplayCheck(error="the audio could not be fingerprinted")
        try:
            earlier = self._earlier_audio.earlier(
                hh,
                self._store.recent_audio_print_refs(hh, now - self._replay_window),
                lambda ids: self._store.audio_print_blobs(hh, ids),
            )
            with span("audio.replay", earlier=len(earlier)):
                return ReplayCheck(replay_of=find_replay(fp, earlier))
        except Exception as exc:
            CHECK_ERRORS.labels("replay").inc()
            log.warning("replay_check_failed", error=type(exc).__name__)
            return ReplayCheck(error="the replay check raised an internal error")

    def _remember_print(self, stored: AudioPrint) -> None:
        try:
            item = EarlierAudio(
                stored.print_id, stored.decision_id, stored.kind, Fingerprint.from_bytes(stored.print)
            )
        except Exception as exc:
            # Only a saving lost: the next check reads the print from the store.
            log.warning("replay_cache_add_failed", error=type(exc).__name__)
            return
        self._earlier_audio.remember(stored.household_id, item)

    def _audio_print(
        self, hh: str, decision_id: str, kind: str, fp: Fingerprint | None, now: datetime
    ) -> AudioPrint | None:
        if fp is None or fp.voiced_frames == 0:
            return None
        return AudioPrint(self._ids.new_id("apr"), hh, decision_id, kind, now, fp.to_bytes())

    def _challenge_notifications(self, challenge: Challenge, now: datetime) -> tuple[Notification, ...]:
        if challenge.method is not ChallengeMethod.PARENT_APPROVAL:
            return ()
        total = format_money(challenge.order.total)
        asked = f"A purchase of {total} from {challenge.order.merchant} is waiting for your approval."
        if challenge.member_id is None:
            # Say it plainly: the parent must know nobody was recognised before approving.
            asked = (
                f"A voice the guard did not recognise asked for a purchase of {total} from "
                f"{challenge.order.merchant}. Approve it only if it was someone in your household."
            )
        return (
            Notification(
                notification_id=self._ids.new_id("ntf"),
                household_id=challenge.household_id,
                kind="approval_requested",
                message=asked,
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
            heard: HeardAnswer | None = None
            for _ in range(3):
                now = self._clock.now()
                try:
                    stored, heard = self._answer(
                        household, challenge, req, pcm, now, decision_id, digest, heard
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
        heard: HeardAnswer | None,
    ) -> tuple[Decision, HeardAnswer | None]:
        """Judges and records one answer. Facts are gathered stage by stage (no audio is judged when
        the challenge, the order or the PIN's state already decides); what the audio says and who
        says it are checked on the audio itself (`_hear`, once per answer, reused on a retry); a
        PIN is then checked and counted under the household lock, so concurrent answers meet one
        guess budget."""
        hh = household.household_id
        facts = AnswerFacts(order_matches=order_digest(hh, req.order) == challenge.order_digest)
        if challenge.method is ChallengeMethod.SPOKEN_PIN and state_check(challenge, now) is None:
            pin = self._store.get_pin(hh)
            facts = replace(
                facts, pin_set=pin is not None, pin_blocked=None if pin is None else pin_gate(pin, now)
            )
        early = pre_answer(challenge, facts, now)
        if early is not None:
            return self._record_confirm(req, decision_id, challenge, facts, early, None, now, digest), heard
        assert pcm is not None  # checked by the caller for spoken methods
        if heard is None:
            heard = self._hear(hh, challenge, req, pcm, now)
        facts = replace(
            facts,
            replayed=heard.replayed,
            speaker_ok=heard.speaker_ok,
            child_like=heard.child_like,
            heard_ok=heard.heard_ok,
            transcript_ok=heard.transcript_ok,
            check_failed=heard.failed,
        )
        ready = (
            not heard.failed
            and not heard.replayed
            and heard.speaker_ok
            and not heard.child_like
            and heard.transcript_ok is not False
            and heard.heard_ok
        )
        print_ = self._audio_print(hh, decision_id, "confirm", heard.fp, now)
        if challenge.method is not ChallengeMethod.SPOKEN_PIN:
            facts = replace(facts, content_ok=ready)
            verdict = judge_answer(challenge, facts, now)
            stored = self._record_confirm(
                req, decision_id, challenge, facts, verdict, heard.speaker, now, digest, audio_print=print_
            )
            return stored, heard
        with self._store.household_lock(hh):
            # Read again under the lock: the budget this answer is judged on is the one it changes.
            pin = self._store.get_pin(hh)
            facts = replace(
                facts, pin_set=pin is not None, pin_blocked=None if pin is None else pin_gate(pin, now)
            )
            pin_update: tuple[PinState, PinState] | None = None
            notices: tuple[Notification, ...] = ()
            content_ok = False
            # Only an answer whose audio says the candidate, in an enrolled adult's voice, gets
            # its PIN checked: anything else teaches a guesser nothing, and is no guess.
            if pin is not None and facts.pin_blocked is None and ready:
                pepper = self._store.pin_pepper(hh)
                content_ok = self._pins.verify(
                    pin.pin_hash, heard.candidate, pepper if pin.peppered else None
                )
                if content_ok:
                    after = after_right_pin(pin)
                    if not pin.peppered:
                        # Hashes made before the pepper are replaced the first time the PIN is heard.
                        after = replace(
                            after, pin_hash=self._pins.hash(heard.candidate, pepper), peppered=True
                        )
                    pin_update = (pin, after)
                else:
                    wrong = after_wrong_pin(pin, now, self._pin_budget)
                    pin_update = (pin, wrong.state)
                    if wrong.notify is not None:
                        notices = (self._pin_notification(hh, wrong.notify, wrong.state, now),)
            facts = replace(facts, content_ok=content_ok)
            verdict = judge_answer(challenge, facts, now)
            stored = self._record_confirm(
                req,
                decision_id,
                challenge,
                facts,
                verdict,
                heard.speaker,
                now,
                digest,
                pin_update=pin_update,
                notices=notices,
                audio_print=print_,
            )
        return stored, heard

    def _hear(self, hh: str, challenge: Challenge, req: ConfirmInput, pcm: Pcm, now: datetime) -> HeardAnswer:
        """Everything the answer audio itself says: a replay or not; which adult speaks; whether it
        says the expected digits (for a PIN, the candidate: the backend's transcript, else what the
        audio is heard to say) and agrees with the transcript; and, on the stretch where the
        digits were found, whether that adult's voice says them and sounds like a child's."""
        fp = self._fingerprint(pcm)
        replay = self._check_replay(hh, fp, now)
        if replay.error is not None or self._digits is None:
            return HeardAnswer.failure(fp)
        if replay.replay_of is not None:
            return HeardAnswer(fp=fp, replayed=True)
        try:
            members = {m.member_id: m for m in self._store.list_members(hh)}
            prints = self._store.list_voiceprints(hh)
            roles = {mid: m.role for mid, m in members.items()}
            adults = {mid for mid, m in members.items() if m.role is Role.ADULT}
            with span("voice.verify", stage="answer"):
                whole = self._verifier.verify_against(pcm, prints, roles, adults)
            if not whole.verified or whole.member_id is None:
                return HeardAnswer(fp=fp, speaker=whole)
            member = whole.member_id
            stored = self._store.get_digit_templates(hh, member)
            templates = None if stored is None else DigitTemplates.from_bytes(stored[1])
            spoken = normalise_digits(req.spoken_digits)
            if challenge.method is ChallengeMethod.RANDOM_DIGITS:
                candidate = challenge.digits_to_repeat
                transcript_ok = None  # compared below, once the audio is known to say the digits
            elif MIN_DIGITS <= len(spoken) <= MAX_DIGITS:
                candidate, transcript_ok = spoken, True
            else:
                heard_digits = self._digits.recognise(pcm, None, templates)
                candidate, transcript_ok = heard_digits.digits, None if not spoken else False
            if not MIN_DIGITS <= len(candidate) <= MAX_DIGITS or not candidate.isdigit():
                return HeardAnswer(
                    fp=fp, speaker=whole, speaker_ok=True, heard_ok=False, transcript_ok=transcript_ok
                )
            with span("digits.check"):
                content = self._digits.check(pcm, candidate, templates)
            if transcript_ok is True and not content.accepted:
                # The transcript says digits the audio does not: the two disagree.
                transcript_ok = False
            if challenge.method is ChallengeMethod.RANDOM_DIGITS and spoken and content.accepted:
                # The audio says the digits; a transcript of other digits is the backend's mistake
                # (or a forged answer), never a pass.
                transcript_ok = spoken == candidate
            # The voice is judged again on the stretch where the digits were heard, so speech
            # elsewhere in the file (a recording of the parent saying something else) cannot lend
            # its voice to digits someone else said.
            stretch = _crop(pcm, content.span) if content.accepted else pcm
            own_print = next((vp for vp in prints if vp.member_id == member), None)
            with span("voice.verify", stage="answer_digits"):
                if templates is not None and own_print is not None:
                    # Digits against the member saying digits too (voice/digit_print.py).
                    on_digits = self._verifier.verify_digits(
                        stretch, own_print, roles, templates.speaker_takes, templates.speaker_encoder
                    )
                else:
                    on_digits = self._verifier.verify_against(stretch, prints, roles, {member})
            child_like = is_child_like(on_digits, self._high_child) or is_child_like(whole, self._high_child)
            return HeardAnswer(
                fp=fp,
                speaker=on_digits,
                speaker_ok=on_digits.verified and on_digits.member_id == member,
                child_like=child_like,
                heard_ok=content.accepted,
                transcript_ok=transcript_ok,
                candidate=candidate,
            )
        except Exception as exc:
            CHECK_ERRORS.labels("answer").inc()
            log.warning("answer_check_failed", error=type(exc).__name__)
            return HeardAnswer.failure(fp)

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
        audio_print: AudioPrint | None = None,
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
        spend = None
        update: VoiceprintUpdate | None = None
        extra = {"challenge_method": challenge.method.value}
        reasons = verdict.reasons
        if verdict.passed:
            spend = SpendEntry(
                before.household_id, challenge.member_id, req.order.total.minor_units, decision_id, now, False
            )
            update, said = self._adapt(before, now)
            extra.update(said)
            if update is not None:
                # Written in the same transaction as the decision (compare-and-set on the print),
                # so the note is on exactly the decisions that adapted a print.
                reasons = (*reasons, adapted_note(update, self._adaptation))
        decision = make_decision(
            ctx,
            verdict.outcome,
            reasons,
            speaker=speaker,
            challenge=challenge_info(challenge),
            member_id=challenge.member_id,
        )
        changed = challenge != before
        notifications = notices + ((self._locked_notification(challenge, now),) if verdict.locked_now else ())
        body = audit_body(decision, req.order, extra, confirm_inputs(before, facts))
        return self._store.record_decision(
            decision,
            digest,
            body,
            spend=spend,
            challenge=challenge if changed else None,
            expected_status=before.status if changed else None,
            notifications=notifications,
            pin_update=pin_update,
            audio_print=audio_print,
            events=decision_events(decision, req.order, challenge if changed else None, notifications),
            voiceprint_update=update,
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
                    events=decision_events(decision, challenge.order, updated),
                )
            except Aborted as exc:
                raise FailedPrecondition(
                    "this challenge was resolved at the same moment by someone else"
                ) from exc
            log.info("approval_resolved", approve=approve, challenge_id=challenge.challenge_id)
        return updated

    # ------------------------------------------------------------------ shared
    def _refuse_quarantined(self, household_id: str) -> None:
        if household_id in self._quarantined:
            raise FailedPrecondition(
                "this household's audit record failed verification when the guard started; no "
                "purchase is decided for it until an operator has reviewed the record (VerifyAudit)"
            )

    def _household(self, household_id: str) -> Household:
        self._refuse_quarantined(household_id)
        return self._store.get_household(household_id)

    def _replay(
        self, kind: str, household_id: str, request_id: str, caller: Caller, digest: str
    ) -> Decision | None:
        stored = self._store.get_decision(household_id, kind, request_id, caller.caller_id)
        return self._replayed(kind, request_id, stored, digest)

    @staticmethod
    def _replayed(kind: str, request_id: str, stored: StoredDecision | None, digest: str) -> Decision | None:
        """The stored answer to a retry of this request (None: not a retry); AlreadyExists when
        the request id was used for a different request."""
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


def adapted_note(update: VoiceprintUpdate, limits: AdaptationLimits | None) -> Reason:
    """The machine-readable trace of an adaptation on the Confirm that caused it: a NOTE (it
    decides nothing), with the member whose print took the voice and how many are kept."""
    cap = limits.max_templates if limits is not None else len(update.adapted)
    dropped = max(0, update.expected_adapted + 1 - len(update.adapted))
    return Reason(
        ReasonCode.VOICEPRINT_ADAPTED,
        f"this voice was added to {update.member_id}'s voiceprint ({len(update.adapted)} of {cap} kept)",
        (("member_id", update.member_id), ("kept", str(len(update.adapted))), ("dropped", str(dropped))),
        Effect.NOTE,
        "voice.adaptation",
    )
