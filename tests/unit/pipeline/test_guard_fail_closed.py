"""The pipeline with failing parts: a failing check or store read never becomes ALLOW."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from purchase_guard.challenge.pin import PinHasher
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.config import Settings
from purchase_guard.domain import (
    AudioInput,
    BroadcastCheck,
    Household,
    LineItem,
    Member,
    Money,
    Order,
    Outcome,
    ReasonCode,
    Role,
    SpeakerResult,
    Voiceprint,
)
from purchase_guard.pipeline.guard import Caller, EvaluateInput, Guard
from purchase_guard.pipeline.ports import NoBroadcastDefence
from purchase_guard.policy.defaults import default_policy
from purchase_guard.sealing import KeyRing
from purchase_guard.store.sqlite import SqliteStore
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.encoder import FakeEncoder

NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
ORDER = Order((LineItem("s", "t", "household", 1, Money(500, "USD")),), Money(500, "USD"), "m")


def pcm16(seconds: float = 2.0) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (wave * 32767).astype("<i2").tobytes()


class AdultVerifier:
    """Always verifies the adult: isolates the pipeline from voice scoring."""

    encoder = FakeEncoder()

    def verify(self, pcm: Pcm, voiceprints: Sequence[Voiceprint], roles: Mapping[str, Role]) -> SpeakerResult:
        return SpeakerResult("mem_a", Role.ADULT, 0.95, 0.8, True, -1.0, self.encoder.name)


class ExplodingVerifier(AdultVerifier):
    def verify(self, pcm: Pcm, voiceprints: Sequence[Voiceprint], roles: Mapping[str, Role]) -> SpeakerResult:
        raise RuntimeError("model crashed")


class ExplodingBroadcast:
    def check(
        self,
        household_id: str,
        device_id: str,
        decision_id: str,
        pcm: Pcm,
        now: datetime,
        *,
        caller_id: str,
        fp: object = None,
    ) -> BroadcastCheck:
        raise ConnectionError("redis gone")


class RecordingBroadcast(NoBroadcastDefence):
    """Remembers which caller each check was made for."""

    def __init__(self) -> None:
        self.callers: list[str] = []

    def check(
        self,
        household_id: str,
        device_id: str,
        decision_id: str,
        pcm: Pcm,
        now: datetime,
        *,
        caller_id: str,
        fp: object = None,
    ) -> BroadcastCheck:
        self.callers.append(caller_id)
        return BroadcastCheck()


class PolicyReadFails(SqliteStore):
    def get_policy(self, household_id: str) -> Any:
        raise OSError("disk gone")

    def deciding_facts(self, household_id: str, *args: Any) -> Any:
        # Evaluate reads the policy with spend, PIN and templates in one statement.
        raise OSError("disk gone")


def sqlite(path: Path, kind: type[SqliteStore] = SqliteStore) -> SqliteStore:
    return kind(path / "guard.db", sealer=KeyRing.in_memory())


def make_guard(store: SqliteStore, verifier: Any = None, broadcast: Any = None) -> Guard:
    store.create_household(Household("hh_1", "H", "UTC", "USD", False, NOW), "tokenhash")
    store.put_policy("hh_1", default_policy(), NOW)
    store.add_member(Member("mem_a", "hh_1", "A", Role.ADULT, True, NOW))
    return guard_on(store, verifier, broadcast)


def guard_on(store: SqliteStore, verifier: Any = None, broadcast: Any = None, ids: Any = None) -> Guard:
    """A guard over a store that holds hh_1 already (another replica of `make_guard`'s)."""
    return Guard(
        Settings(),
        store,
        verifier or AdultVerifier(),
        broadcast or NoBroadcastDefence(),
        PinHasher(time_cost=1, memory_cost=8),
        FrozenClock(NOW),
        ids or SequentialIds(),
    )


def evaluate(guard: Guard, request_id: str = "r1") -> Any:
    return guard.evaluate(
        EvaluateInput(request_id, "hh_1", "dev", ORDER, AudioInput(pcm16=pcm16(), sample_rate_hz=16000))
    )


def test_baseline_adult_is_allowed(tmp_path: Path) -> None:
    """With working checks the verified adult is allowed, so the failures below mean something."""
    assert evaluate(make_guard(sqlite(tmp_path))).outcome is Outcome.ALLOW


@pytest.mark.parametrize(
    ("kind", "verifier", "broadcast"),
    [
        (SqliteStore, ExplodingVerifier(), None),
        (SqliteStore, None, ExplodingBroadcast()),
        (PolicyReadFails, None, None),
    ],
    ids=["voice model raises", "broadcast backend raises", "policy read raises"],
)
def test_a_failing_check_is_deny_with_guard_error(
    tmp_path: Path, kind: type[SqliteStore], verifier: Any, broadcast: Any
) -> None:
    """Whatever check fails, the answer is DENY with GUARD_ERROR, and it is recorded in the audit chain."""
    store = sqlite(tmp_path, kind)
    guard = make_guard(store, verifier, broadcast)
    decision = evaluate(guard)
    assert decision.outcome is Outcome.DENY
    assert ReasonCode.GUARD_ERROR in decision.codes
    assert [e.decision_id for e in store.audit_entries("hh_1")] == [decision.decision_id]
    assert store.spend_since("hh_1", None, NOW) == 0


def test_the_broadcast_check_is_told_the_authenticated_caller(tmp_path: Path) -> None:
    """The fleet window counts sources by authenticated caller: Evaluate passes the caller id
    the api layer authenticated to the broadcast check, not anything the request claims."""
    broadcast = RecordingBroadcast()
    guard = make_guard(sqlite(tmp_path), broadcast=broadcast)
    guard.evaluate(
        EvaluateInput(
            "r9",
            "hh_1",
            "dev",
            ORDER,
            AudioInput(pcm16=pcm16(), sample_rate_hz=16000),
            caller=Caller("backend:voice-platform", fleet=True),
        )
    )
    assert broadcast.callers == ["backend:voice-platform"]
