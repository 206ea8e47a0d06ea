"""Turning a verdict into a `Decision`, and what the pure core was given, written down for the record.

`make_decision` is the one place a `Decision` is built (Evaluate, Confirm, a parent's approval,
and the fail-closed error decision all come through it). The `*_inputs` functions write the
values the pure rules decided from (OPA's decision log keeps `input` beside `result`): the
speaker and broadcast findings, the policy revision and time zone, the spend snapshot, the
challenge options and child threshold for Evaluate; the challenge as it stood and the answer's
facts for Confirm. `pipeline/rerun.py` reads them back and decides again with today's code.

Nothing secret is written: no audio, embedding, PIN, digits or transcript. Keys avoid the
words the audit masking refuses (`audit.records.MASKED_KEYS`), so a flag such as "a PIN is set"
is recorded as a value (`"options": ["has_pin", ...]`), never as a key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from purchase_guard.challenge.rules import AnswerFacts
from purchase_guard.domain import (
    BroadcastCheck,
    Challenge,
    ChallengeInfo,
    Decision,
    Money,
    Outcome,
    Reason,
    SpeakerResult,
    SpendSnapshot,
)
from purchase_guard.pipeline.verdict import ChallengeOptions, ReplayCheck, UnknownVoiceGate, VoiceCheck
from purchase_guard.serial import format_ts
from purchase_guard.store import codec

INPUTS_VERSION = 1


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """Who asked for what, when: the part of a decision that does not depend on the verdict."""

    decision_id: str
    household_id: str
    kind: str  # "evaluate" | "confirm" | "approval"
    request_id: str
    device_id: str
    total: Money
    decided_at: datetime
    caller_id: str = ""


def make_decision(
    ctx: DecisionContext,
    outcome: Outcome,
    reasons: tuple[Reason, ...],
    *,
    speaker: SpeakerResult | None = None,
    policy_revision: int = 0,
    challenge: ChallengeInfo | None = None,
    member_id: str | None = None,
) -> Decision:
    return Decision(
        decision_id=ctx.decision_id,
        household_id=ctx.household_id,
        kind=ctx.kind,
        request_id=ctx.request_id,
        device_id=ctx.device_id,
        outcome=outcome,
        reasons=reasons,
        speaker=speaker,
        policy_revision=policy_revision,
        total=ctx.total,
        decided_at=ctx.decided_at,
        challenge=challenge,
        member_id=member_id,
        caller_id=ctx.caller_id,
    )


def _reasons(reasons: tuple[Reason, ...]) -> list[dict[str, Any]]:
    return [codec.reason_to_dict(r) for r in reasons]


def _options(options: ChallengeOptions) -> list[str]:
    return sorted(f.name for f in fields(options) if getattr(options, f.name))


def evaluate_inputs(
    *,
    voice: VoiceCheck,
    broadcast: BroadcastCheck,
    policy_revision: int,
    policy_error: str | None,
    time_zone: str,
    spend: SpendSnapshot,
    options: ChallengeOptions,
    child_threshold: float,
    high_child_threshold: float,
    replay: ReplayCheck,
    unknown: UnknownVoiceGate,
) -> dict[str, Any]:
    """What `evaluate_policy` and `decide` were given, besides the order and `now` (both in the record)."""
    found = replay.replay_of
    return {
        "v": INPUTS_VERSION,
        "voice_error": voice.error,
        "voice_enrolled_child_like": voice.enrolled_child_like,
        "replay": {
            "error": replay.error,
            "of": None
            if found is None
            else {
                "decision_id": found.decision_id,
                "kind": found.kind,
                "ber": found.ber,
                "effective_bits": found.effective_bits,
            },
        },
        "high_child_threshold": high_child_threshold,
        "broadcast": {"reasons": _reasons(broadcast.reasons), "error": broadcast.error},
        "policy_revision": policy_revision,
        "policy_error": policy_error,
        "time_zone": time_zone,
        "spend": {f.name: getattr(spend, f.name) for f in fields(spend)},
        "options": _options(options),
        "child_threshold": child_threshold,
        "unknown_voice": {"to_parent": unknown.to_parent, "recent": unknown.recent, "limit": unknown.limit},
    }


def confirm_inputs(challenge: Challenge, facts: AnswerFacts) -> dict[str, Any]:
    """The challenge as it stood when the answer was judged, and the answer's facts."""
    return {
        "v": INPUTS_VERSION,
        "challenge_before": {
            "status": challenge.status.value,
            "method": challenge.method.value,
            "attempts_left": challenge.attempts_left,
            "expires_at": format_ts(challenge.expires_at),
            "member_id": challenge.member_id,
            "cancel_code": None if challenge.cancel_reason is None else challenge.cancel_reason.value,
            "cancel_detail": [list(pair) for pair in challenge.cancel_detail],
        },
        "facts": {
            "order_matches": facts.order_matches,
            "household_code_set": facts.pin_set,
            "code_blocked": None if facts.pin_blocked is None else codec.reason_to_dict(facts.pin_blocked),
            "speaker_ok": facts.speaker_ok,
            "content_ok": facts.content_ok,
            "replayed": facts.replayed,
            "child_like": facts.child_like,
            "heard_ok": facts.heard_ok,
            "backend_text_ok": facts.transcript_ok,
            "check_failed": facts.check_failed,
        },
    }


def approval_inputs(challenge: Challenge, approve: bool, parent_member_id: str) -> dict[str, Any]:
    return {
        "v": INPUTS_VERSION,
        "challenge_before": {"status": challenge.status.value, "expires_at": format_ts(challenge.expires_at)},
        "approve": approve,
        "parent_member_id": parent_member_id,
    }
