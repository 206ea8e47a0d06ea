"""JSON (de)serialisation of domain values for the store, plus the one timestamp format.

Every value round-trips exactly: `X_from_json(X_to_json(x)) == x`. Datetimes must be
timezone-aware; they are stored in UTC with microseconds in a fixed-width form
(`2026-05-09T07:35:25.000000Z`) so that text comparison orders them correctly in SQLite
and PostgreSQL alike. Frozensets are written as sorted lists so equal values give equal
JSON. Embeddings are never part of these records: voiceprints have their own binary column, packed
by `pack_embedding`.
The end of the file holds the sealing helpers every backend uses for values kept encrypted.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from purchase_guard.domain import (
    DEFAULT_VOICE_ADAPTATION,
    AdaptationSample,
    Challenge,
    ChallengeInfo,
    ChallengeMethod,
    ChallengeStatus,
    Decision,
    Effect,
    Event,
    EventKind,
    LimitAction,
    LineItem,
    LowValueExemption,
    Money,
    Order,
    Outcome,
    Policy,
    PurchaseMode,
    QuietHours,
    Reason,
    ReasonCode,
    Role,
    RoleRule,
    SpeakerResult,
    UnknownVoice,
)
from purchase_guard.errors import GuardError
from purchase_guard.sealing import SealError
from purchase_guard.serial import dumps, format_ts, parse_ts

if TYPE_CHECKING:
    from purchase_guard.sealing import Sealer

JsonDict = dict[str, Any]

# --- timestamps and JSON live in serial.py (the audit chain uses them too) -------------


def _loads(text: str) -> JsonDict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    return value


# --- money and orders -----------------------------------------------------------------


def money_to_dict(money: Money) -> JsonDict:
    return {"minor_units": money.minor_units, "currency": money.currency}


def money_from_dict(d: Mapping[str, Any]) -> Money:
    return Money(minor_units=int(d["minor_units"]), currency=str(d["currency"]))


def line_item_to_dict(item: LineItem) -> JsonDict:
    return {
        "sku": item.sku,
        "title": item.title,
        "category": item.category,
        "quantity": item.quantity,
        "unit_price": money_to_dict(item.unit_price),
    }


def line_item_from_dict(d: Mapping[str, Any]) -> LineItem:
    return LineItem(
        sku=str(d["sku"]),
        title=str(d["title"]),
        category=str(d["category"]),
        quantity=int(d["quantity"]),
        unit_price=money_from_dict(d["unit_price"]),
    )


def order_to_dict(order: Order) -> JsonDict:
    return {
        "items": [line_item_to_dict(i) for i in order.items],
        "total": money_to_dict(order.total),
        "merchant": order.merchant,
    }


def order_from_dict(d: Mapping[str, Any]) -> Order:
    return Order(
        items=tuple(line_item_from_dict(i) for i in d["items"]),
        total=money_from_dict(d["total"]),
        merchant=str(d["merchant"]),
    )


# --- reasons, speaker, challenge info ---------------------------------------------------


def reason_to_dict(reason: Reason) -> JsonDict:
    # Detail is an ordered tuple of pairs (keys may repeat), so it stays a list of pairs.
    return {
        "code": reason.code.value,
        "message": reason.message,
        "detail": [[k, v] for k, v in reason.detail],
        "effect": reason.effect.value,
        "rule": reason.rule,
    }


def reason_from_dict(d: Mapping[str, Any]) -> Reason:
    # Decisions stored before findings carried effects read back as notes of no named rule: they
    # are shown, never re-decided.
    return Reason(
        code=ReasonCode(d["code"]),
        message=str(d["message"]),
        detail=tuple((str(k), str(v)) for k, v in d.get("detail", [])),
        effect=Effect(d.get("effect", Effect.NOTE.value)),
        rule=str(d.get("rule", "")),
    )


def speaker_to_dict(s: SpeakerResult) -> JsonDict:
    return {
        "member_id": s.member_id,
        "role": None if s.role is None else s.role.value,
        "score": s.score,
        "threshold": s.threshold,
        "verified": s.verified,
        "child_likelihood": s.child_likelihood,
        "encoder": s.encoder,
        "usable": s.usable,
        "problem": s.problem,
    }


def speaker_from_dict(d: Mapping[str, Any]) -> SpeakerResult:
    role = d.get("role")
    return SpeakerResult(
        member_id=d.get("member_id"),
        role=None if role is None else Role(role),
        score=float(d["score"]),
        threshold=float(d["threshold"]),
        verified=bool(d["verified"]),
        child_likelihood=float(d["child_likelihood"]),
        encoder=str(d["encoder"]),
        usable=bool(d.get("usable", True)),
        problem=str(d.get("problem", "")),
    )


def challenge_info_to_dict(c: ChallengeInfo) -> JsonDict:
    return {
        "challenge_id": c.challenge_id,
        "method": c.method.value,
        "prompt": c.prompt,
        "digits_to_repeat": c.digits_to_repeat,
        "expires_at": format_ts(c.expires_at),
        "attempts_left": c.attempts_left,
    }


def challenge_info_from_dict(d: Mapping[str, Any]) -> ChallengeInfo:
    return ChallengeInfo(
        challenge_id=str(d["challenge_id"]),
        method=ChallengeMethod(d["method"]),
        prompt=str(d["prompt"]),
        digits_to_repeat=str(d["digits_to_repeat"]),
        expires_at=parse_ts(d["expires_at"]),
        attempts_left=int(d["attempts_left"]),
    )


# --- decisions ------------------------------------------------------------------------


def decision_to_dict(d: Decision) -> JsonDict:
    return {
        "decision_id": d.decision_id,
        "household_id": d.household_id,
        "kind": d.kind,
        "request_id": d.request_id,
        "device_id": d.device_id,
        "outcome": d.outcome.value,
        "reasons": [reason_to_dict(r) for r in d.reasons],
        "speaker": None if d.speaker is None else speaker_to_dict(d.speaker),
        "policy_revision": d.policy_revision,
        "total": money_to_dict(d.total),
        "decided_at": format_ts(d.decided_at),
        "challenge": None if d.challenge is None else challenge_info_to_dict(d.challenge),
        "member_id": d.member_id,
        "caller_id": d.caller_id,
    }


def decision_from_dict(d: Mapping[str, Any]) -> Decision:
    speaker = d.get("speaker")
    challenge = d.get("challenge")
    return Decision(
        decision_id=str(d["decision_id"]),
        household_id=str(d["household_id"]),
        kind=str(d["kind"]),
        request_id=str(d["request_id"]),
        device_id=str(d["device_id"]),
        outcome=Outcome(d["outcome"]),
        reasons=tuple(reason_from_dict(r) for r in d["reasons"]),
        speaker=None if speaker is None else speaker_from_dict(speaker),
        policy_revision=int(d["policy_revision"]),
        total=money_from_dict(d["total"]),
        decided_at=parse_ts(d["decided_at"]),
        challenge=None if challenge is None else challenge_info_from_dict(challenge),
        member_id=d.get("member_id"),
        caller_id=str(d.get("caller_id", "")),
    )


def decision_to_json(d: Decision) -> str:
    return dumps(decision_to_dict(d))


def decision_from_json(text: str) -> Decision:
    return decision_from_dict(_loads(text))


# --- policies -------------------------------------------------------------------------


def _sorted(values: frozenset[str]) -> list[str]:
    return sorted(values)


def role_rule_to_dict(r: RoleRule) -> JsonDict:
    return {
        "role": r.role.value,
        "mode": r.mode.value,
        "max_order_minor": r.max_order_minor,
        "daily_cap_minor": r.daily_cap_minor,
        "monthly_cap_minor": r.monthly_cap_minor,
        "on_limit": r.on_limit.value,
        "challenge_method": r.challenge_method.value,
        "blocked_categories": _sorted(r.blocked_categories),
        "allowed_categories": _sorted(r.allowed_categories),
    }


def role_rule_from_dict(d: Mapping[str, Any]) -> RoleRule:
    return RoleRule(
        role=Role(d["role"]),
        mode=PurchaseMode(d["mode"]),
        max_order_minor=int(d["max_order_minor"]),
        daily_cap_minor=int(d["daily_cap_minor"]),
        monthly_cap_minor=int(d["monthly_cap_minor"]),
        on_limit=LimitAction(d["on_limit"]),
        challenge_method=ChallengeMethod(d["challenge_method"]),
        blocked_categories=frozenset(str(c) for c in d["blocked_categories"]),
        allowed_categories=frozenset(str(c) for c in d["allowed_categories"]),
    )


def policy_to_dict(p: Policy) -> JsonDict:
    qh = p.quiet_hours
    lve = p.low_value_exemption
    return {
        "rules": [role_rule_to_dict(r) for r in p.rules],
        "household_daily_cap_minor": p.household_daily_cap_minor,
        "household_monthly_cap_minor": p.household_monthly_cap_minor,
        "blocked_categories": _sorted(p.blocked_categories),
        "quiet_hours": None
        if qh is None
        else {"start_minute": qh.start_minute, "end_minute": qh.end_minute, "action": qh.action.value},
        "low_value_exemption": None
        if lve is None
        else {
            "per_order_max_minor": lve.per_order_max_minor,
            "cumulative_max_minor": lve.cumulative_max_minor,
        },
        "revision": p.revision,
        "unknown_voice": p.unknown_voice.value,
        "voice_adaptation": p.voice_adaptation,
    }


def policy_from_dict(d: Mapping[str, Any]) -> Policy:
    qh = d.get("quiet_hours")
    lve = d.get("low_value_exemption")
    return Policy(
        rules=tuple(role_rule_from_dict(r) for r in d["rules"]),
        household_daily_cap_minor=int(d["household_daily_cap_minor"]),
        household_monthly_cap_minor=int(d["household_monthly_cap_minor"]),
        blocked_categories=frozenset(str(c) for c in d["blocked_categories"]),
        quiet_hours=None
        if qh is None
        else QuietHours(
            start_minute=int(qh["start_minute"]),
            end_minute=int(qh["end_minute"]),
            action=LimitAction(qh["action"]),
        ),
        low_value_exemption=None
        if lve is None
        else LowValueExemption(
            per_order_max_minor=int(lve["per_order_max_minor"]),
            cumulative_max_minor=int(lve["cumulative_max_minor"]),
        ),
        revision=int(d["revision"]),
        # Policies stored before the setting existed get the default.
        unknown_voice=UnknownVoice(d.get("unknown_voice", UnknownVoice.PARENT_APPROVAL.value)),
        voice_adaptation=bool(d.get("voice_adaptation", DEFAULT_VOICE_ADAPTATION)),
    )


def policy_to_json(p: Policy) -> str:
    return dumps(policy_to_dict(p))


def policy_from_json(text: str) -> Policy:
    return policy_from_dict(_loads(text))


# --- challenges -----------------------------------------------------------------------


def challenge_to_dict(c: Challenge) -> JsonDict:
    return {
        "challenge_id": c.challenge_id,
        "household_id": c.household_id,
        "decision_id": c.decision_id,
        "method": c.method.value,
        "order_digest": c.order_digest,
        "order": order_to_dict(c.order),
        "member_id": c.member_id,
        "status": c.status.value,
        "attempts_left": c.attempts_left,
        "expires_at": format_ts(c.expires_at),
        "created_at": format_ts(c.created_at),
        "expected_digits_hash": c.expected_digits_hash,
        "digits_to_repeat": c.digits_to_repeat,
        "resolved_by": c.resolved_by,
        "cancel_reason": c.cancel_reason.value if c.cancel_reason is not None else None,
        "cancel_detail": [list(pair) for pair in c.cancel_detail],
    }


def challenge_from_dict(d: Mapping[str, Any]) -> Challenge:
    return Challenge(
        challenge_id=str(d["challenge_id"]),
        household_id=str(d["household_id"]),
        decision_id=str(d["decision_id"]),
        method=ChallengeMethod(d["method"]),
        order_digest=str(d["order_digest"]),
        order=order_from_dict(d["order"]),
        member_id=d.get("member_id"),
        status=ChallengeStatus(d["status"]),
        attempts_left=int(d["attempts_left"]),
        expires_at=parse_ts(d["expires_at"]),
        created_at=parse_ts(d["created_at"]),
        expected_digits_hash=str(d.get("expected_digits_hash", "")),
        digits_to_repeat=str(d.get("digits_to_repeat", "")),
        resolved_by=d.get("resolved_by"),
        cancel_reason=ReasonCode(d["cancel_reason"]) if d.get("cancel_reason") else None,
        cancel_detail=tuple((str(k), str(v)) for k, v in d.get("cancel_detail", [])),
    )


def challenge_to_json(c: Challenge) -> str:
    return dumps(challenge_to_dict(c))


def challenge_from_json(text: str) -> Challenge:
    return challenge_from_dict(_loads(text))


# --- embeddings -----------------------------------------------------------------------


def pack_embedding(values: tuple[float, ...]) -> bytes:
    """float32 little-endian, whatever the host byte order."""
    return struct.pack(f"<{len(values)}f", *values)


def unpack_embedding(blob: bytes, dim: int) -> tuple[float, ...]:
    if len(blob) != 4 * dim:
        raise GuardError("stored voiceprint has the wrong size for its dimension")
    return struct.unpack(f"<{dim}f", blob)


# --- sealed values --------------------------------------------------------------------
#
# Which stored values are sealed with the household's data key (sealing.py), and the
# associated data each is bound to. Binding to the row's own id means a sealed value copied
# into another row, member or household fails to open instead of being read in the wrong place.
# Every backend uses these helpers, so a value sealed by one opens in the other.

SEALED_TEXT_PREFIX = "pgs1:"


def seal_aad(kind: str, *ids: str) -> bytes:
    """Associated data for a sealed value: what it is and whose row it sits in."""
    parts = [kind, *ids]
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)


def household_name_aad(household_id: str) -> bytes:
    return seal_aad("household.name", household_id)


def member_name_aad(member_id: str) -> bytes:
    return seal_aad("member.display_name", member_id)


def voiceprint_aad(member_id: str, encoder: str, dim: int) -> bytes:
    # Encoder and dimension are bound too: a print cannot be relabelled for another encoder.
    return seal_aad("voiceprint.embedding", member_id, encoder, str(dim))


def decision_aad(decision_id: str) -> bytes:
    return seal_aad("decision.body", decision_id)


def challenge_aad(challenge_id: str) -> bytes:
    return seal_aad("challenge.body", challenge_id)


def audit_aad(decision_id: str) -> bytes:
    return seal_aad("audit.body", decision_id)


def digit_templates_aad(member_id: str, features: str) -> bytes:
    return seal_aad("digit_templates", member_id, features)


def audio_print_aad(print_id: str) -> bytes:
    return seal_aad("audio_print", print_id)


def pin_hash_aad(household_id: str) -> bytes:
    return seal_aad("pin.hash", household_id)


def notification_aad(notification_id: str) -> bytes:
    return seal_aad("notification.message", notification_id)


def armour(sealed: bytes) -> str:
    """Sealed bytes as text for TEXT columns (portable; the audit hash covers this text)."""
    return SEALED_TEXT_PREFIX + base64.b64encode(sealed).decode("ascii")


def unarmour(text: str) -> bytes:
    """Inverse of `armour`; raises ValueError for text that is not a sealed value."""
    if not text.startswith(SEALED_TEXT_PREFIX):
        raise ValueError("not a sealed value")
    return base64.b64decode(text[len(SEALED_TEXT_PREFIX) :], validate=True)


def is_sealed_text(text: str) -> bool:
    return text.startswith(SEALED_TEXT_PREFIX)


def seal_text(sealer: Sealer, household_id: str, text: str, aad: bytes) -> str:
    return armour(sealer.seal(household_id, text.encode("utf-8"), aad))


def open_text(sealer: Sealer, household_id: str, stored: str, aad: bytes) -> str:
    """Opens a value written by `seal_text`; plaintext found where a sealed value belongs is an
    error, never accepted (it would let whoever writes to the database plant values)."""
    try:
        sealed = unarmour(stored)
    except ValueError as exc:
        raise SealError("a stored value that must be sealed is not") from exc
    return sealer.open(household_id, sealed, aad).decode("utf-8")


def event_to_json(e: Event) -> str:
    """The event as stored in the outbox (its id is the row's key, not part of the body)."""
    return dumps(
        {
            "kind": e.kind.value,
            "occurred_at": format_ts(e.occurred_at),
            "dedup": e.dedup,
            "decision_id": e.decision_id,
            "challenge_id": e.challenge_id,
            "member_id": e.member_id,
            "device_id": e.device_id,
            "outcome": None if e.outcome is None else e.outcome.value,
            "reasons": [r.value for r in e.reasons],
            "order": None if e.order is None else order_to_dict(e.order),
            "message": e.message,
        }
    )


def event_from_json(household_id: str, event_id: int, text: str) -> Event:
    d = _loads(text)
    return Event(
        household_id=household_id,
        kind=EventKind(d["kind"]),
        occurred_at=parse_ts(d["occurred_at"]),
        dedup=str(d["dedup"]),
        decision_id=str(d.get("decision_id", "")),
        challenge_id=str(d.get("challenge_id", "")),
        member_id=str(d.get("member_id", "")),
        device_id=str(d.get("device_id", "")),
        outcome=None if d.get("outcome") is None else Outcome(d["outcome"]),
        reasons=tuple(ReasonCode(r) for r in d.get("reasons", ())),
        order=None if d.get("order") is None else order_from_dict(d["order"]),
        message=str(d.get("message", "")),
        event_id=event_id,
    )


def event_aad(dedup: str) -> bytes:
    return seal_aad("event", dedup)


def webhook_secret_aad(household_id: str) -> bytes:
    return seal_aad("webhook-secret", household_id)


# --- voiceprint adaptation (voice/adaptation.py) -----------------------------------------


def adapted_aad(member_id: str, encoder: str, dim: int, n: int) -> bytes:
    # Bound to the count too: rows cannot be cut off or spliced in without the key.
    return seal_aad("voiceprint.adapted", member_id, encoder, str(dim), str(n))


def adaptation_sample_aad(challenge_id: str, member_id: str) -> bytes:
    return seal_aad("adaptation.sample", challenge_id, member_id)


def pack_rows(rows: tuple[tuple[float, ...], ...]) -> bytes:
    return b"".join(pack_embedding(r) for r in rows)


def unpack_rows(blob: bytes, dim: int, n: int) -> tuple[tuple[float, ...], ...]:
    if len(blob) != 4 * dim * n:
        raise GuardError("stored adapted templates have the wrong size")
    step = 4 * dim
    return tuple(unpack_embedding(blob[i * step : (i + 1) * step], dim) for i in range(n))


def adaptation_sample_to_bytes(s: AdaptationSample) -> bytes:
    doc = {
        "challenge_id": s.challenge_id,
        "household_id": s.household_id,
        "member_id": s.member_id,
        "encoder": s.encoder,
        "embedding": base64.b64encode(pack_embedding(s.embedding)).decode("ascii"),
        "dim": len(s.embedding),
        "score": s.score,
        "threshold": s.threshold,
        "child_likelihood": s.child_likelihood,
        "net_speech_s": s.net_speech_s,
        "snr_db": s.snr_db,
        "clipped": s.clipped,
        "broadcast": s.broadcast,
        "replayed": s.replayed,
        "created_at": format_ts(s.created_at),
        # None when not measured (JSON has no infinity); read back as -inf, which never adapts.
        "enrollment_score": s.enrollment_score if math.isfinite(s.enrollment_score) else None,
    }
    return dumps(doc).encode("utf-8")


def adaptation_sample_from_bytes(blob: bytes) -> AdaptationSample:
    d = _loads(blob.decode("utf-8"))
    return AdaptationSample(
        challenge_id=str(d["challenge_id"]),
        household_id=str(d["household_id"]),
        member_id=str(d["member_id"]),
        encoder=str(d["encoder"]),
        embedding=unpack_embedding(base64.b64decode(d["embedding"]), int(d["dim"])),
        score=float(d["score"]),
        threshold=float(d["threshold"]),
        child_likelihood=float(d["child_likelihood"]),
        net_speech_s=float(d["net_speech_s"]),
        snr_db=float(d["snr_db"]),
        clipped=float(d["clipped"]),
        broadcast=bool(d["broadcast"]),
        replayed=bool(d["replayed"]),
        created_at=parse_ts(d["created_at"]),
        enrollment_score=(-math.inf if d.get("enrollment_score") is None else float(d["enrollment_score"])),
    )
