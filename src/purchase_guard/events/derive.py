"""Which events a recorded decision causes. Pure: values in, values out.

The pipeline passes these to `record_decision`, so they are queued in the same transaction as the
decision, its challenge and its notifications: a decision that commits announces them, one that is
rolled back announces nothing. Each event's `dedup` names the fact it reports (the kind and the
decision, or the challenge), so the same fact is never queued twice.
"""

from __future__ import annotations

from purchase_guard.domain import (
    Challenge,
    ChallengeMethod,
    ChallengeStatus,
    Decision,
    Effect,
    Event,
    EventKind,
    Notification,
    Order,
    Outcome,
    ReasonCode,
)
from purchase_guard.money import format_money

BROADCAST_CODES = frozenset({ReasonCode.KNOWN_BROADCAST, ReasonCode.BROADCAST_MATCH})
_NOTICE_KINDS = {
    "challenge_locked": EventKind.CHALLENGE_LOCKED,
    "pin_throttled": EventKind.PIN_THROTTLED,
    "pin_disabled": EventKind.PIN_THROTTLED,
}


def _event(decision: Decision, kind: EventKind, order: Order, **fields: str) -> Event:
    return Event(
        household_id=decision.household_id,
        kind=kind,
        occurred_at=decision.decided_at,
        dedup=f"{kind.value}:{decision.decision_id}",
        decision_id=decision.decision_id,
        challenge_id=fields.get(
            "challenge_id", decision.challenge.challenge_id if decision.challenge else ""
        ),
        member_id=fields.get("member_id", decision.member_id or ""),
        device_id=decision.device_id,
        outcome=decision.outcome,
        reasons=tuple(r.code for r in decision.determining),
        order=order,
        message=fields.get("message", ""),
    )


def decision_events(
    decision: Decision,
    order: Order,
    challenge: Challenge | None = None,
    notifications: tuple[Notification, ...] = (),
) -> tuple[Event, ...]:
    """The events of one decision: `challenge` is the challenge as recorded with it (new or
    updated), `notifications` the parents' notices recorded with it."""
    spent = f"{format_money(order.total)} from {order.merchant}"
    out: list[Event] = []
    if decision.kind == "approval":
        kind = (
            EventKind.APPROVAL_APPROVED if decision.outcome is Outcome.ALLOW else EventKind.APPROVAL_REJECTED
        )
        verb = "approved" if kind is EventKind.APPROVAL_APPROVED else "rejected"
        out.append(_event(decision, kind, order, message=f"A parent {verb} the purchase of {spent}."))
    elif decision.outcome is Outcome.ALLOW:
        out.append(
            _event(
                decision, EventKind.PURCHASE_ALLOWED, order, message=f"A purchase of {spent} went through."
            )
        )
    if (
        challenge is not None
        and decision.outcome is Outcome.CHALLENGE
        and challenge.method is ChallengeMethod.PARENT_APPROVAL
        and challenge.status is ChallengeStatus.PENDING
        and challenge.decision_id == decision.decision_id
    ):
        out.append(
            _event(
                decision,
                EventKind.APPROVAL_REQUESTED,
                order,
                challenge_id=challenge.challenge_id,
                member_id=challenge.member_id or "",
                message=f"A purchase of {spent} waits for a parent's approval.",
            )
        )
    if decision.outcome is Outcome.DENY and any(
        r.code in BROADCAST_CODES and r.effect is Effect.FORBID for r in decision.reasons
    ):
        out.append(
            _event(
                decision,
                EventKind.BROADCAST_BLOCKED,
                order,
                message=f"A purchase of {spent} was refused: the audio matched a broadcast.",
            )
        )
    for notice in notifications:
        noticed = _NOTICE_KINDS.get(notice.kind)
        if noticed is not None and all(e.kind is not noticed for e in out):
            out.append(
                _event(
                    decision, noticed, order, challenge_id=notice.challenge_id or "", message=notice.message
                )
            )
    return tuple(out)


def approval_expired(challenge: Challenge) -> Event:
    """A parent approval request that nobody answered in time (found by the delivery worker's sweep)."""
    return Event(
        household_id=challenge.household_id,
        kind=EventKind.APPROVAL_EXPIRED,
        occurred_at=challenge.expires_at,
        dedup=f"{EventKind.APPROVAL_EXPIRED.value}:{challenge.challenge_id}",
        decision_id=challenge.decision_id,
        challenge_id=challenge.challenge_id,
        member_id=challenge.member_id or "",
        reasons=(ReasonCode.CHALLENGE_EXPIRED,),
        order=challenge.order,
        message=(
            f"Nobody answered the approval request for {format_money(challenge.order.total)} from "
            f"{challenge.order.merchant} in time; it has expired."
        ),
    )
