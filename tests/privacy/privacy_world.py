"""Shared by the privacy tests (imported as `privacy.privacy_world`): a whole guard in process.

Real services, a real SQLite store sealed with a real in-memory key ring (fixed test master key),
the FakeEncoder and synthetic voices.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from support.server import fast_pins, local_settings
from unit.voice.voice_synth import RATE, encode, synth_voice

from purchase_guard.app import App, build_app
from purchase_guard.clock import FrozenClock
from purchase_guard.domain import AudioInput, CredentialKind, LineItem, Money, Order, Outcome, Role
from purchase_guard.pipeline.guard import EvaluateInput
from purchase_guard.privacy.service import PrivacyService
from purchase_guard.sealing import KeyRing
from purchase_guard.store.sqlite import SqliteStore
from purchase_guard.voice.encoder import FakeEncoder

OPERATOR = "op-" + "p" * 40
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # a Wednesday, outside any quiet hours


@functools.cache
def voice_wav(voice: str, seed: int, seconds: float = 1.8) -> bytes:
    """A synthetic utterance of one of the voices in unit/voice/voice_synth.py, as WAV bytes."""
    return encode(synth_voice(voice, seconds, seed=seed), RATE)


def takes(voice: str) -> list[AudioInput]:
    return [AudioInput(encoded=voice_wav(voice, seed)) for seed in range(3)]


def utterance(voice: str) -> AudioInput:
    return AudioInput(encoded=voice_wav(voice, 7))


def order(amount: int, currency: str = "USD", title: str = "Batteries") -> Order:
    item = LineItem("sku-1", title, "household", 1, Money(amount, currency))
    return Order((item,), Money(amount, currency), "shop")


@dataclass
class World:
    app: App
    store: SqliteStore
    ring: KeyRing
    privacy: PrivacyService
    clock: FrozenClock


def build_world(folder: Path) -> World:
    thresholds = folder / "fake-thresholds.json"
    bands = [{"name": "all", "max_speech_s": None, "threshold": 0.95}]
    thresholds.write_text(json.dumps({"version": 1, "encoders": {"fake-spectral/1": {"bands": bands}}}))
    settings = local_settings(folder, OPERATOR, encoder="fake", test_mode=True, thresholds_file=thresholds)
    ring = KeyRing.in_memory()
    store = SqliteStore(settings.sqlite_path, sealer=ring)
    clock = FrozenClock(NOW)
    app = build_app(settings, store=store, encoder=FakeEncoder(), clock=clock, pins=fast_pins(memory_cost=8))
    return World(app, store, ring, PrivacyService(store, app.households, clock), clock)


@dataclass(frozen=True)
class Family:
    household_id: str
    token: str
    adult_id: str
    child_id: str
    decision_ids: tuple[str, ...]
    challenge_id: str


def make_family(world: World, name: str, tag: str) -> Family:
    """A household with an enrolled parent and child, an allowed order, a child's order sent to the
    parent (challenge and notification) and the parent's approval: a row in every table."""
    svc = world.app.households
    household, token = svc.create_household(
        svc.authenticate(OPERATOR), name, "America/Los_Angeles", "USD", False
    )
    hid = household.household_id
    me = svc.authenticate(token)
    adult = svc.add_member(me, hid, f"{tag} Ann", Role.ADULT, True)
    child = svc.add_member(me, hid, f"{tag} Tim", Role.CHILD, False)
    svc.enroll_voice(me, hid, adult.member_id, takes("low"))
    svc.enroll_voice(me, hid, child.member_id, takes("high"))
    allowed = world.app.guard.evaluate(
        EvaluateInput(f"{tag}-r1", hid, "kitchen", order(1200, title=f"{tag} batteries"), utterance("low"))
    )
    asked = world.app.guard.evaluate(
        EvaluateInput(f"{tag}-r2", hid, "kitchen", order(900, title=f"{tag} toy"), utterance("high"))
    )
    assert allowed.outcome is Outcome.ALLOW, allowed.codes
    assert asked.outcome is Outcome.CHALLENGE, asked.codes
    assert asked.challenge is not None
    challenge_id = asked.challenge.challenge_id
    _, parent_token = svc.issue_credential(me, hid, CredentialKind.PARENT, adult.member_id, "", "phone")
    svc.resolve_approval(svc.authenticate(parent_token), hid, challenge_id, adult.member_id, approve=True)
    decisions = tuple(d.decision_id for d in svc.list_decisions(me, hid, 50))
    return Family(hid, token, adult.member_id, child.member_id, decisions, challenge_id)
