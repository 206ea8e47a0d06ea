"""The masked decision record that goes into the audit chain.

The record is built field by field from an allow-list (what a reviewer needs to understand
a decision), so audio, embeddings, PINs, PIN hashes and the digits a speaker was asked to
repeat never enter it by construction. As a second line of defence every key of the
finished record, including caller-supplied `extra` keys and reason-detail keys, is checked
against `MASKED_KEYS`; a hit raises instead of writing the secret.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

from purchase_guard.audit.chain import canonical_json
from purchase_guard.domain import ChallengeInfo, Decision, Order, SpeakerResult
from purchase_guard.errors import GuardError
from purchase_guard.serial import format_ts

# 2: records carry `inputs`, the values the pure rules decided from, and each reason's effect and rule.
RECORD_VERSION = 2

# Words that must never appear as a key (or as one word of a snake/kebab/camel key) in a record.
MASKED_KEYS: frozenset[str] = frozenset(
    {
        "pin",
        "pins",
        "pin_hash",
        "passcode",
        "password",
        "secret",
        "token",
        "admin_token",
        "audio",
        "pcm",
        "wav",
        "waveform",
        "embedding",
        "embeddings",
        "voiceprint",
        "centroid",
        "digits",
        "digits_to_repeat",
        "spoken_digits",
        "expected_digits",
        "expected_digits_hash",
        "answer",
        "transcript",
    }
)

_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=4096)
def is_masked_key(key: str) -> bool:
    """True if `key`, or any word in it, is on the denylist ("user_pin", "rawAudio", "PIN").

    A pure function of the key: remembered, since a record's keys are nearly all the same few
    dozen names every time (about 80 checks a decision)."""
    normal = _CAMEL.sub("_", key).lower()
    words = [w for w in _SPLIT.split(normal) if w]
    joined = "_".join(words)
    return joined in MASKED_KEYS or any(w in MASKED_KEYS for w in words)


def _check_keys(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if is_masked_key(str(key)):
                # Name the key, never the value: the value is what must not be written.
                raise GuardError(f"audit record refused: masked key {path}{key!r}")
            if isinstance(inner, Mapping | list | tuple):  # scalars hold no keys
                _check_keys(inner, f"{path}{key}.")
    elif isinstance(value, list | tuple):
        for inner in value:
            if isinstance(inner, Mapping | list | tuple):
                _check_keys(inner, path)


def _score(value: float) -> float | None:
    # Strict JSON has no NaN/Infinity; an unscorable value is recorded as null.
    return value if math.isfinite(value) else None


def _speaker(s: SpeakerResult) -> dict[str, Any]:
    return {
        "member_id": s.member_id,
        "role": None if s.role is None else s.role.value,
        "score": _score(s.score),
        "threshold": _score(s.threshold),
        "verified": s.verified,
        "child_likelihood": _score(s.child_likelihood),
        "encoder": s.encoder,
        "usable": s.usable,
        "problem": s.problem,
    }


def _order(order: Order) -> dict[str, Any]:
    # Titles stay out (free text a caller wrote); what the rules read is here.
    return {
        "merchant": order.merchant,
        "currency": order.total.currency,
        "total_minor": order.total.minor_units,
        "items": [
            {
                "sku": item.sku,
                "category": item.category,
                "quantity": item.quantity,
                "unit_price_minor": item.unit_price.minor_units,
                "amount_minor": item.unit_price.minor_units * item.quantity,
            }
            for item in order.items
        ],
    }


def _challenge(c: ChallengeInfo) -> dict[str, Any]:
    # Not the prompt nor digits_to_repeat: both can carry the digits the speaker must say.
    return {
        "challenge_id": c.challenge_id,
        "method": c.method.value,
        "expires_at": format_ts(c.expires_at),
        "attempts_left": c.attempts_left,
    }


def audit_record(
    decision: Decision,
    order: Order | None,
    extra: Mapping[str, str],
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The masked record as a dict; raises GuardError if any key is on the denylist.

    `inputs` holds what the pure rules were given beyond the order and the time (JSON values,
    written by the pipeline), so the decision can be re-run; it is masked like everything else.
    """
    record: dict[str, Any] = {
        "v": RECORD_VERSION,
        "decision_id": decision.decision_id,
        "household_id": decision.household_id,
        "kind": decision.kind,
        "request_id": decision.request_id,
        "device_id": decision.device_id,
        "caller_id": decision.caller_id,
        "member_id": decision.member_id,
        "outcome": decision.outcome.value,
        "decided_at": format_ts(decision.decided_at),
        "reasons": [
            {
                "code": r.code.value,
                "message": r.message,
                "detail": dict(r.detail),
                "effect": r.effect.value,
                "rule": r.rule,
            }
            for r in decision.reasons
        ],
        "determining": [r.code.value for r in decision.determining],
        "speaker": None if decision.speaker is None else _speaker(decision.speaker),
        "policy_revision": decision.policy_revision,
        "total": {"minor_units": decision.total.minor_units, "currency": decision.total.currency},
        "order": None if order is None else _order(order),
        "challenge": None if decision.challenge is None else _challenge(decision.challenge),
        "extra": {str(k): str(v) for k, v in extra.items()},
        "inputs": dict(inputs or {}),
    }
    _check_keys(record, "")
    return record


def audit_body(
    decision: Decision,
    order: Order | None,
    extra: Mapping[str, str],
    inputs: Mapping[str, Any] | None = None,
) -> str:
    """Canonical JSON of the masked record, ready to be the body of an audit entry."""
    return canonical_json(audit_record(decision, order, extra, inputs))
