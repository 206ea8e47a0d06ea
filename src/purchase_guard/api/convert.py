"""Protobuf <-> domain conversion. The only place (with the servicers) that sees generated code."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from purchase_guard._gen.purchaseguard.v1 import admin_pb2, common_pb2
from purchase_guard.domain import (
    DEFAULT_VOICE_ADAPTATION,
    AudioInput,
    Challenge,
    ChallengeInfo,
    ChallengeMethod,
    Credential,
    CredentialKind,
    Decision,
    Effect,
    Event,
    Household,
    LimitAction,
    LineItem,
    LowValueExemption,
    Member,
    Money,
    Notification,
    Order,
    Outcome,
    Policy,
    PurchaseMode,
    QuietHours,
    Reason,
    Role,
    RoleRule,
    SpeakerResult,
    UnknownVoice,
    Voiceprint,
)
from purchase_guard.errors import InvalidArgument
from purchase_guard.store.protocol import DeadLetter, Webhook

_OUTCOME_TO_PB = {
    Outcome.ALLOW: common_pb2.ALLOW,
    Outcome.DENY: common_pb2.DENY,
    Outcome.CHALLENGE: common_pb2.CHALLENGE,
}
_ROLE_TO_PB = {
    Role.ADULT: common_pb2.ADULT,
    Role.TEEN: common_pb2.TEEN,
    Role.CHILD: common_pb2.CHILD,
    Role.GUEST: common_pb2.GUEST,
}
_ROLE_FROM_PB = {v: k for k, v in _ROLE_TO_PB.items()}
_METHOD_TO_PB = {
    ChallengeMethod.SPOKEN_PIN: common_pb2.SPOKEN_PIN,
    ChallengeMethod.RANDOM_DIGITS: common_pb2.RANDOM_DIGITS,
    ChallengeMethod.PARENT_APPROVAL: common_pb2.PARENT_APPROVAL,
}
_METHOD_FROM_PB = {v: k for k, v in _METHOD_TO_PB.items()}
_MODE_TO_PB = {
    PurchaseMode.ALLOWED: admin_pb2.PURCHASE_ALLOWED,
    PurchaseMode.WITH_CHALLENGE: admin_pb2.PURCHASE_WITH_CHALLENGE,
    PurchaseMode.NEVER: admin_pb2.PURCHASE_NEVER,
}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}
_ACTION_TO_PB = {LimitAction.CHALLENGE: admin_pb2.LIMIT_CHALLENGE, LimitAction.DENY: admin_pb2.LIMIT_DENY}
_ACTION_FROM_PB = {v: k for k, v in _ACTION_TO_PB.items()}
_UNKNOWN_VOICE_TO_PB = {
    UnknownVoice.PARENT_APPROVAL: admin_pb2.UNKNOWN_VOICE_PARENT_APPROVAL,
    UnknownVoice.GUEST_RULE: admin_pb2.UNKNOWN_VOICE_GUEST_RULE,
}
# Unset is the default; an unknown future value falls back to it too (a step-up, never an ALLOW).
_UNKNOWN_VOICE_FROM_PB = {v: k for k, v in _UNKNOWN_VOICE_TO_PB.items()}


def ts(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when.astimezone(UTC))
    return out


def from_ts(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


# ---------------------------------------------------------------- requests -> domain
def money_from_pb(pb: common_pb2.Money, field: str) -> Money:
    if pb.minor_units < 0:
        raise InvalidArgument(
            f"{field}.minor_units must not be negative, got {pb.minor_units}", field=f"{field}.minor_units"
        )
    return Money(pb.minor_units, pb.currency.strip().upper())


def order_from_pb(pb: common_pb2.Order, field: str = "order") -> Order:
    items = tuple(
        LineItem(
            sku=item.sku,
            title=item.title,
            category=item.category,
            quantity=item.quantity,
            unit_price=money_from_pb(item.unit_price, f"{field}.items[{i}].unit_price"),
        )
        for i, item in enumerate(pb.items)
    )
    return Order(items=items, total=money_from_pb(pb.total, f"{field}.total"), merchant=pb.merchant)


def audio_from_pb(pb: common_pb2.Audio) -> AudioInput:
    which = pb.WhichOneof("payload")
    if which == "encoded":
        return AudioInput(encoded=pb.encoded)
    if which == "pcm16":
        return AudioInput(pcm16=pb.pcm16.samples, sample_rate_hz=pb.pcm16.sample_rate_hz)
    return AudioInput()


def role_from_pb(value: int) -> Role:
    for pb, role in _ROLE_FROM_PB.items():
        if pb == value:
            return role
    raise InvalidArgument("role must be ADULT, TEEN, CHILD or GUEST", field="role")


def policy_from_pb(pb: admin_pb2.Policy) -> Policy:
    rules = []
    for i, rule in enumerate(pb.rules):
        where = f"policy.rules[{i}]"
        if rule.mode not in _MODE_FROM_PB:
            raise InvalidArgument(
                f"{where}.mode must be PURCHASE_ALLOWED, PURCHASE_WITH_CHALLENGE or PURCHASE_NEVER",
                field=f"{where}.mode",
            )
        if rule.challenge_method not in _METHOD_FROM_PB:
            raise InvalidArgument(f"{where}.challenge_method must be set", field=f"{where}.challenge_method")
        if rule.on_limit not in _ACTION_FROM_PB:
            raise InvalidArgument(
                f"{where}.on_limit must be LIMIT_CHALLENGE or LIMIT_DENY", field=f"{where}.on_limit"
            )
        rules.append(
            RoleRule(
                role=role_from_pb(rule.role),
                mode=_MODE_FROM_PB[rule.mode],
                max_order_minor=rule.max_order_minor,
                daily_cap_minor=rule.daily_cap_minor,
                monthly_cap_minor=rule.monthly_cap_minor,
                on_limit=_ACTION_FROM_PB[rule.on_limit],
                challenge_method=_METHOD_FROM_PB[rule.challenge_method],
                blocked_categories=frozenset(rule.blocked_categories),
                allowed_categories=frozenset(rule.allowed_categories),
            )
        )
    quiet = None
    if pb.HasField("quiet_hours"):
        if pb.quiet_hours.action not in _ACTION_FROM_PB:
            raise InvalidArgument(
                "policy.quiet_hours.action must be LIMIT_CHALLENGE or LIMIT_DENY",
                field="policy.quiet_hours.action",
            )
        quiet = QuietHours(
            pb.quiet_hours.start_minute, pb.quiet_hours.end_minute, _ACTION_FROM_PB[pb.quiet_hours.action]
        )
    exemption = None
    if pb.HasField("low_value_exemption"):
        exemption = LowValueExemption(
            pb.low_value_exemption.per_order_max_minor, pb.low_value_exemption.cumulative_max_minor
        )
    return Policy(
        rules=tuple(rules),
        household_daily_cap_minor=pb.household_daily_cap_minor,
        household_monthly_cap_minor=pb.household_monthly_cap_minor,
        blocked_categories=frozenset(pb.blocked_categories),
        quiet_hours=quiet,
        low_value_exemption=exemption,
        unknown_voice=_UNKNOWN_VOICE_FROM_PB.get(pb.unknown_voice, UnknownVoice.PARENT_APPROVAL),
        # Unset (or a value this server does not know) is the default.
        voice_adaptation={
            admin_pb2.VOICE_ADAPTATION_ON: True,
            admin_pb2.VOICE_ADAPTATION_OFF: False,
        }.get(pb.voice_adaptation, DEFAULT_VOICE_ADAPTATION),
    )


# ---------------------------------------------------------------- domain -> responses
def money_to_pb(money: Money) -> common_pb2.Money:
    return common_pb2.Money(minor_units=money.minor_units, currency=money.currency)


def order_to_pb(order: Order) -> common_pb2.Order:
    return common_pb2.Order(
        items=[
            common_pb2.LineItem(
                sku=i.sku,
                title=i.title,
                category=i.category,
                quantity=i.quantity,
                unit_price=money_to_pb(i.unit_price),
            )
            for i in order.items
        ],
        total=money_to_pb(order.total),
        merchant=order.merchant,
    )


def outcome_to_pb(outcome: Outcome) -> common_pb2.Outcome.ValueType:
    return _OUTCOME_TO_PB[outcome]


_EFFECT_TO_PB = {
    Effect.FORBID: common_pb2.FORBID,
    Effect.CHALLENGE: common_pb2.NEEDS_CHALLENGE,
    Effect.PERMIT: common_pb2.PERMIT,
    Effect.NOTE: common_pb2.NOTE,
    Effect.ERROR: common_pb2.CHECK_ERROR,
}


def reasons_to_pb(reasons: Iterable[Reason], determining: Iterable[Reason] = ()) -> list[common_pb2.Reason]:
    deciding = {id(r) for r in determining}
    return [
        common_pb2.Reason(
            code=common_pb2.ReasonCode.Value(r.code.value),
            message=r.message,
            detail=dict(r.detail),
            effect=_EFFECT_TO_PB[r.effect],
            rule=r.rule,
            determining=id(r) in deciding,
        )
        for r in reasons
    ]


def decision_reasons_to_pb(decision: Decision) -> list[common_pb2.Reason]:
    return reasons_to_pb(decision.reasons, decision.determining)


def speaker_to_pb(result: SpeakerResult | None) -> common_pb2.SpeakerMatch:
    if result is None:
        return common_pb2.SpeakerMatch(child_likelihood=-1.0)
    return common_pb2.SpeakerMatch(
        member_id=result.member_id or "",
        role=_ROLE_TO_PB.get(result.role, common_pb2.ROLE_UNSPECIFIED)
        if result.role
        else common_pb2.ROLE_UNSPECIFIED,
        score=result.score,
        threshold=result.threshold,
        verified=result.verified,
        child_likelihood=result.child_likelihood,
        encoder=result.encoder,
    )


def challenge_to_pb(info: ChallengeInfo | None) -> common_pb2.Challenge | None:
    if info is None:
        return None
    return common_pb2.Challenge(
        challenge_id=info.challenge_id,
        method=_METHOD_TO_PB[info.method],
        prompt=info.prompt,
        digits_to_repeat=info.digits_to_repeat,
        expires_at=ts(info.expires_at),
        attempts_left=info.attempts_left,
    )


def household_to_pb(h: Household) -> admin_pb2.Household:
    return admin_pb2.Household(
        household_id=h.household_id,
        name=h.name,
        time_zone=h.time_zone,
        currency=h.currency,
        retain_audio=h.retain_audio,
        created_at=ts(h.created_at),
    )


def member_to_pb(
    m: Member, voiceprint: Voiceprint | None, current_encoder: str, digits_enrolled: bool = False
) -> admin_pb2.Member:
    out = admin_pb2.Member(
        digits_enrolled=digits_enrolled,
        voice_child_like=voiceprint is not None
        and voiceprint.child_like
        and not voiceprint.role_confirmed_by,
        member_id=m.member_id,
        display_name=m.display_name,
        role=_ROLE_TO_PB[m.role],
        is_parent=m.is_parent,
        voice_enrolled=voiceprint is not None,
        voice_encoder="" if voiceprint is None else voiceprint.encoder,
        reenroll_needed=voiceprint is not None and voiceprint.encoder != current_encoder,
    )
    if voiceprint is not None and voiceprint.expires_at is not None:
        out.voiceprint_expires_at.CopyFrom(ts(voiceprint.expires_at))
    return out


_CREDENTIAL_KIND_TO_PB = {
    CredentialKind.PARENT: admin_pb2.PARENT_CREDENTIAL,
    CredentialKind.DEVICE: admin_pb2.DEVICE_CREDENTIAL,
    CredentialKind.BACKEND: admin_pb2.BACKEND_CREDENTIAL,
}
_CREDENTIAL_KIND_FROM_PB = {v: k for k, v in _CREDENTIAL_KIND_TO_PB.items()}


def credential_kind_from_pb(value: int) -> CredentialKind:
    kind: CredentialKind | None = _CREDENTIAL_KIND_FROM_PB.get(value)  # type: ignore[call-overload]
    if kind is None:
        raise InvalidArgument(
            "kind must be PARENT_CREDENTIAL, DEVICE_CREDENTIAL or BACKEND_CREDENTIAL", field="kind"
        )
    return kind


def credential_to_pb(c: Credential) -> admin_pb2.Credential:
    out = admin_pb2.Credential(
        credential_id=c.credential_id,
        kind=_CREDENTIAL_KIND_TO_PB[c.kind],
        household_id=c.household_id or "",
        member_id=c.member_id or "",
        device_id=c.device_id or "",
        label=c.label,
        created_at=ts(c.created_at),
    )
    if c.revoked_at is not None:
        out.revoked_at.CopyFrom(ts(c.revoked_at))
    return out


def policy_to_pb(p: Policy) -> admin_pb2.Policy:
    out = admin_pb2.Policy(
        rules=[
            admin_pb2.RoleRule(
                role=_ROLE_TO_PB[r.role],
                mode=_MODE_TO_PB[r.mode],
                max_order_minor=r.max_order_minor,
                daily_cap_minor=r.daily_cap_minor,
                monthly_cap_minor=r.monthly_cap_minor,
                on_limit=_ACTION_TO_PB[r.on_limit],
                challenge_method=_METHOD_TO_PB[r.challenge_method],
                blocked_categories=sorted(r.blocked_categories),
                allowed_categories=sorted(r.allowed_categories),
            )
            for r in p.rules
        ],
        household_daily_cap_minor=p.household_daily_cap_minor,
        household_monthly_cap_minor=p.household_monthly_cap_minor,
        blocked_categories=sorted(p.blocked_categories),
        revision=p.revision,
        unknown_voice=_UNKNOWN_VOICE_TO_PB[p.unknown_voice],
        voice_adaptation=admin_pb2.VOICE_ADAPTATION_ON
        if p.voice_adaptation
        else admin_pb2.VOICE_ADAPTATION_OFF,
    )
    if p.quiet_hours is not None:
        out.quiet_hours.CopyFrom(
            admin_pb2.QuietHours(
                start_minute=p.quiet_hours.start_minute,
                end_minute=p.quiet_hours.end_minute,
                action=_ACTION_TO_PB[p.quiet_hours.action],
            )
        )
    if p.low_value_exemption is not None:
        out.low_value_exemption.CopyFrom(
            admin_pb2.LowValueExemption(
                per_order_max_minor=p.low_value_exemption.per_order_max_minor,
                cumulative_max_minor=p.low_value_exemption.cumulative_max_minor,
            )
        )
    return out


def decision_record_to_pb(d: Decision) -> admin_pb2.DecisionRecord:
    return admin_pb2.DecisionRecord(
        decision_id=d.decision_id,
        kind=d.kind,
        request_id=d.request_id,
        outcome=_OUTCOME_TO_PB[d.outcome],
        reasons=decision_reasons_to_pb(d),
        speaker=speaker_to_pb(d.speaker),
        policy_revision=d.policy_revision,
        total=money_to_pb(d.total),
        device_id=d.device_id,
        decided_at=ts(d.decided_at),
        challenge_id=d.challenge.challenge_id if d.challenge else "",
    )


def notification_to_pb(n: Notification) -> admin_pb2.Notification:
    return admin_pb2.Notification(
        notification_id=n.notification_id,
        kind=n.kind,
        message=n.message,
        challenge_id=n.challenge_id or "",
        created_at=ts(n.created_at),
    )


def pending_to_pb(c: Challenge) -> admin_pb2.PendingApproval:
    return admin_pb2.PendingApproval(
        challenge_id=c.challenge_id,
        order=order_to_pb(c.order),
        member_id=c.member_id or "",
        expires_at=ts(c.expires_at),
    )


def event_to_pb(e: Event) -> admin_pb2.Event:
    return admin_pb2.Event(
        event_id=e.event_id,
        household_id=e.household_id,
        kind=admin_pb2.EventKind.Value("EVENT_" + e.kind.name),
        occurred_at=ts(e.occurred_at),
        decision_id=e.decision_id,
        challenge_id=e.challenge_id,
        member_id=e.member_id,
        device_id=e.device_id,
        outcome=outcome_to_pb(e.outcome) if e.outcome is not None else common_pb2.OUTCOME_UNSPECIFIED,
        reasons=[common_pb2.ReasonCode.Value(code.value) for code in e.reasons],
        order=order_to_pb(e.order) if e.order is not None else None,
        message=e.message,
    )


def webhook_to_pb(w: Webhook) -> admin_pb2.Webhook:
    return admin_pb2.Webhook(url=w.url, created_at=ts(w.created_at))


def dead_letter_to_pb(d: DeadLetter) -> admin_pb2.DeadLetter:
    return admin_pb2.DeadLetter(
        event=event_to_pb(d.event),
        attempts=d.attempts,
        last_status=d.last_status,
        last_error=d.last_error,
        dead_at=ts(d.dead_at),
    )
