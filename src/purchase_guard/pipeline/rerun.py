"""Re-running stored decisions through today's policy engine, verdict and answer rules.

Like temporalio's replayer, which re-runs recorded workflow histories against today's code, this
reads each audit record's `inputs` (what the pure core was given: pipeline/record.py), decides
again with the current rules, and reports where the outcome or the reasons differ. It catches a
change to the rules that would have decided yesterday's purchases differently, and it proves the
record holds everything a decision depended on.

A record written before inputs were kept (record version 1) cannot be re-run and is reported as
such, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from purchase_guard.broadcast.repeat import Replay
from purchase_guard.challenge.rules import AnswerFacts, judge_answer
from purchase_guard.domain import (
    BroadcastCheck,
    Challenge,
    ChallengeMethod,
    ChallengeStatus,
    LineItem,
    Money,
    Order,
    Outcome,
    Policy,
    ReasonCode,
    Role,
    SpeakerResult,
    SpendSnapshot,
)
from purchase_guard.pipeline.verdict import (
    NEVER,
    ChallengeOptions,
    ReplayCheck,
    UnknownVoiceGate,
    VoiceCheck,
    decide,
    policy_failed,
    policy_role,
)
from purchase_guard.policy.engine import evaluate_policy
from purchase_guard.serial import parse_ts
from purchase_guard.store import codec
from purchase_guard.store.protocol import HouseholdRules, Records

PolicyLookup = Callable[[str, int], Policy | None]


@dataclass(frozen=True, slots=True)
class Rerun:
    decision_id: str
    kind: str
    recorded: tuple[str, tuple[str, ...]]  # (outcome, reason codes) as stored
    now: tuple[str, tuple[str, ...]] | None  # as decided today; None when the record has no inputs

    @property
    def same(self) -> bool:
        return self.now == self.recorded


def _order(rec: Mapping[str, Any]) -> Order:
    o = rec["order"]
    currency = str(o["currency"])
    items = tuple(
        # Titles are not recorded (and no rule reads them).
        LineItem(
            str(i["sku"]),
            "",
            str(i["category"]),
            int(i["quantity"]),
            Money(int(i["unit_price_minor"]), currency),
        )
        for i in o["items"]
    )
    return Order(items, Money(int(o["total_minor"]), currency), str(o["merchant"]))


def _speaker(s: Mapping[str, Any] | None) -> SpeakerResult | None:
    if s is None:
        return None
    role = s.get("role")
    return SpeakerResult(
        member_id=s.get("member_id"),
        role=None if role is None else Role(role),
        score=float(s["score"]) if s.get("score") is not None else float("nan"),
        threshold=float(s["threshold"]) if s.get("threshold") is not None else float("nan"),
        verified=bool(s["verified"]),
        child_likelihood=float(s["child_likelihood"]) if s.get("child_likelihood") is not None else -1.0,
        encoder=str(s["encoder"]),
        usable=bool(s.get("usable", True)),
        problem=str(s.get("problem", "")),
    )


def _options(flags: Sequence[str]) -> ChallengeOptions:
    chosen = set(flags)
    return ChallengeOptions(
        has_pin="has_pin" in chosen,
        pin_throttled="pin_throttled" in chosen,
        has_enrolled_adult="has_enrolled_adult" in chosen,
        has_parent="has_parent" in chosen,
    )


def _rerun_evaluate(
    rec: Mapping[str, Any], inputs: Mapping[str, Any], policies: PolicyLookup
) -> tuple[str, tuple[str, ...]]:
    voice = VoiceCheck(
        _speaker(rec.get("speaker")),
        error=inputs.get("voice_error"),
        enrolled_child_like=bool(inputs.get("voice_enrolled_child_like", False)),
    )
    r = inputs.get("replay") or {}
    of = r.get("of")
    replay = ReplayCheck(
        replay_of=None
        if of is None
        else Replay(str(of["decision_id"]), str(of["kind"]), float(of["ber"]), float(of["effective_bits"])),
        error=r.get("error"),
    )
    b = inputs["broadcast"]
    broadcast = BroadcastCheck(
        reasons=tuple(codec.reason_from_dict(r) for r in b["reasons"]), error=b.get("error")
    )
    order = _order(rec)
    now = parse_ts(rec["decided_at"])
    u = inputs.get("unknown_voice") or {}
    unknown = UnknownVoiceGate(
        bool(u.get("to_parent", False)), int(u.get("recent", 0)), int(u.get("limit", 0))
    )
    if inputs.get("policy_error"):
        verdict_of_policy = policy_failed(str(inputs["policy_error"]))
    else:
        revision = int(inputs["policy_revision"])
        policy = policies(str(rec["household_id"]), revision) if revision else None
        spend = SpendSnapshot(**{k: int(v) for k, v in inputs["spend"].items()})
        verdict_of_policy = evaluate_policy(
            policy, policy_role(voice, unknown), order, spend, now, str(inputs["time_zone"])
        )
    verdict = decide(
        voice,
        broadcast,
        verdict_of_policy,
        _options(inputs["options"]),
        float(inputs["child_threshold"]),
        high_child_threshold=float(inputs.get("high_child_threshold", NEVER)),
        replay=replay,
        unknown=unknown,
    )
    return verdict.outcome.value, tuple(r.code.value for r in verdict.reasons)


def _challenge_before(rec: Mapping[str, Any], before: Mapping[str, Any]) -> Challenge:
    """The challenge as it stood, rebuilt from what the answer rules read of it."""
    cancel = before.get("cancel_code")
    return Challenge(
        challenge_id=str(rec["challenge"]["challenge_id"]),
        household_id=str(rec["household_id"]),
        decision_id="",
        method=ChallengeMethod(before["method"]),
        order_digest="",
        order=_order(rec),
        member_id=before.get("member_id"),
        status=ChallengeStatus(before["status"]),
        attempts_left=int(before["attempts_left"]),
        expires_at=parse_ts(before["expires_at"]),
        created_at=parse_ts(before["expires_at"]),  # not read by the rules
        cancel_reason=None if cancel is None else ReasonCode(cancel),
        cancel_detail=tuple((str(k), str(v)) for k, v in before.get("cancel_detail", [])),
    )


def _rerun_confirm(rec: Mapping[str, Any], inputs: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    f = inputs["facts"]
    blocked = f.get("code_blocked")
    facts = AnswerFacts(
        order_matches=bool(f["order_matches"]),
        pin_set=bool(f["household_code_set"]),
        pin_blocked=None if blocked is None else codec.reason_from_dict(blocked),
        speaker_ok=f.get("speaker_ok"),
        content_ok=f.get("content_ok"),
        replayed=f.get("replayed"),
        child_like=f.get("child_like"),
        heard_ok=f.get("heard_ok"),
        transcript_ok=f.get("backend_text_ok"),
        check_failed=bool(f.get("check_failed", False)),
    )
    verdict = judge_answer(
        _challenge_before(rec, inputs["challenge_before"]), facts, parse_ts(rec["decided_at"])
    )
    return verdict.outcome.value, tuple(r.code.value for r in verdict.reasons)


def _rerun_approval(inputs: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    approve = bool(inputs["approve"])
    if approve:
        return Outcome.ALLOW.value, (ReasonCode.APPROVAL_GRANTED.value,)
    return Outcome.DENY.value, (ReasonCode.APPROVAL_REJECTED.value,)


# Notes written after the verdict, on what the decision went on to do: VOICEPRINT_ADAPTED comes
# from the adaptation rule, which reads the request's embedding (never in a record), so it is not
# re-run; the verdict beside it is, and compares without it.
AFTER_VERDICT = frozenset({ReasonCode.VOICEPRINT_ADAPTED.value})


def rerun_record(record: Mapping[str, Any], policies: PolicyLookup) -> Rerun:
    """Decides the stored decision again; `policies(household_id, revision)` reads a policy revision."""
    recorded = (
        str(record["outcome"]),
        tuple(str(r["code"]) for r in record["reasons"] if str(r["code"]) not in AFTER_VERDICT),
    )
    inputs = record.get("inputs") or {}
    kind = str(record["kind"])
    now: tuple[str, tuple[str, ...]] | None = None
    if inputs:
        if kind == "evaluate":
            now = _rerun_evaluate(record, inputs, policies)
        elif kind == "confirm":
            now = _rerun_confirm(record, inputs)
        elif kind == "approval":
            now = _rerun_approval(inputs)
    return Rerun(str(record["decision_id"]), kind, recorded, now)


class RerunSource(Records, HouseholdRules, Protocol):
    """What re-running a household's decisions reads: its opened audit records and policy revisions."""


def rerun_household(store: RerunSource, household_id: str) -> list[Rerun]:
    """Every stored decision of the household, decided again (in chain order)."""

    def policies(hid: str, revision: int) -> Policy | None:
        return store.get_policy(hid, revision)

    records = store.household_records(household_id).audit
    return [rerun_record(json.loads(r.body), policies) for r in records]
