"""Poisoning a voiceprint through adaptation (docs/voice.md, "Voiceprints that improve with use").

A purchase confirmed by a challenge may add its voice to the print of the member it verified as.
The attacks: a child gets a parent to approve, hoping the child's voice enters the parent's print;
a replayed or broadcast utterance rides a challenge. Each test also shows the mechanism is live
(the parent's own confirmed purchase does adapt), so a refusal is the rule's, not a dead path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from attacks.attack_world import Family, World, make_family, new_id, order, start_world
from support.takes import new_take

from purchase_guard.domain import BroadcastCheck, Reason, ReasonCode
from purchase_guard.voice.encoder import FakeEncoder

OVER_LIMIT = 15_000  # over the adults' 100 USD maximum: a verified adult is challenged


def adaptive_thresholds(folder: Path) -> Path:
    """The attack world's fake thresholds, with a drift floor and margin so adaptation is on."""
    path = folder / "fake-thresholds-adaptive.json"
    bands = [{"name": "all", "max_speech_s": None, "threshold": 0.95}]
    entry = {"bands": bands, "adaptation": {"drift_floor": 0.9, "margin": 0.0}}
    path.write_text(json.dumps({"version": 1, "encoders": {FakeEncoder.name: entry}}))
    return path


@pytest.fixture
def adaptive(tmp_path: Path) -> Iterator[World]:
    folder = tmp_path / "guard"
    folder.mkdir(mode=0o700)
    w = start_world(folder, thresholds_file=adaptive_thresholds(folder))
    yield w
    w.stop()


def adapted(world: World, family: Family) -> dict[str, int]:
    return {vp.member_id: len(vp.adapted) for vp in world.app.store.list_voiceprints(family.household_id)}


def approve_and_confirm(
    world: World, family: Family, reply: dict[str, object], amount: int, category: str = "household"
) -> dict[str, object]:
    challenge = reply["challenge"]["challenge_id"]  # type: ignore[index]
    parent = world.operator.with_token(family.ann_token)
    parent.resolve_approval(family.household_id, challenge, "", True)
    return family.me.confirm(new_id(), family.household_id, challenge, order(amount, category), "", None)


def test_a_parent_approved_child_request_does_not_enter_the_parents_print(adaptive: World) -> None:
    """Tim (the child) asks; Ann approves, and the purchase goes through. Neither Ann's nor anyone's
    print takes Tim's voice, whether Tim is recognised (his own print) or not (an unrecognised voice
    a parent approves adapts nobody). Ann's own approved over-limit order does adapt her print."""
    family = make_family(adaptive.operator)
    for _ in range(3):
        reply = family.ask("high", 1500, "toys")
        assert reply["outcome"] == "CHALLENGE"
        confirmed = approve_and_confirm(adaptive, family, reply, 1500, "toys")
        assert confirmed["outcome"] == "ALLOW"
        assert "VOICEPRINT_ADAPTED" not in {r["code"] for r in confirmed["reasons"]}
    assert adapted(adaptive, family) == {family.ann: 0, family.bea: 0, family.tim: 0}
    # Unrecognised: the child's voice in a household where the child is not enrolled.
    adaptive.operator.with_token(family.token).remove_member(family.household_id, family.tim)
    reply = family.ask("high", 1500)
    assert reply["outcome"] == "CHALLENGE"
    assert approve_and_confirm(adaptive, family, reply, 1500)["outcome"] == "ALLOW"
    assert adapted(adaptive, family) == {family.ann: 0, family.bea: 0}
    # The mechanism is live: Ann's own verified voice, confirmed by the approval, adapts her print.
    reply = family.ask("low", OVER_LIMIT)
    assert reply["outcome"] == "CHALLENGE"
    confirmed = approve_and_confirm(adaptive, family, reply, OVER_LIMIT)
    assert confirmed["outcome"] == "ALLOW"
    assert adapted(adaptive, family) == {family.ann: 1, family.bea: 0}
    # The Confirm that adapted says so, as a note that decided nothing.
    notes = [r for r in confirmed["reasons"] if r["code"] == "VOICEPRINT_ADAPTED"]
    assert len(notes) == 1
    assert notes[0]["effect"] == "NOTE"
    assert not notes[0].get("determining", False)
    assert notes[0]["detail"] == {"member_id": family.ann, "kept": "1", "dropped": "0"}
    decisions = adaptive.app.store.household_records(family.household_id).audit
    said = [json.loads(a.body)["extra"].get("adaptation", "") for a in decisions]
    assert sum(s.startswith(f"adapted {family.ann}") for s in said) == 1


def test_a_replayed_request_cannot_adapt_a_print(adaptive: World) -> None:
    """Ann's over-limit request recorded and sent again is refused as a replay; no challenge, so
    nothing is kept to adapt from, and her print stays as enrolled."""
    family = make_family(adaptive.operator)
    take = new_take("low")
    first = family.ask("low", OVER_LIMIT, audio=take)
    assert first["outcome"] == "CHALLENGE"
    again = family.ask("low", OVER_LIMIT, audio=take)
    assert again["outcome"] == "DENY"
    assert "REPLAYED_AUDIO" in {r["code"] for r in again["reasons"]}
    assert adapted(adaptive, family)[family.ann] == 0


class MatchEverything:
    """A broadcast defence that finds every utterance in a broadcast cluster."""

    def check(
        self,
        household_id: str,
        device_id: str,
        decision_id: str,
        pcm: object,
        now: object,
        *,
        caller_id: str,
        fp: object = None,
    ) -> BroadcastCheck:
        return BroadcastCheck(reasons=(Reason(ReasonCode.BROADCAST_MATCH, "heard on many devices"),))


def test_a_broadcast_utterance_cannot_adapt_a_print(tmp_path: Path) -> None:
    """An utterance the broadcast check matches keeps no adaptation sample, even in the parent's
    voice, so no approval can make it part of the print."""
    folder = tmp_path / "guard"
    folder.mkdir(mode=0o700)
    world = start_world(folder, thresholds_file=adaptive_thresholds(folder), broadcast=MatchEverything())
    try:
        family = make_family(world.operator)
        reply = family.ask("low", OVER_LIMIT)
        assert reply["outcome"] in ("DENY", "CHALLENGE")
        if reply["outcome"] == "CHALLENGE":
            approve_and_confirm(world, family, reply, OVER_LIMIT)
        assert adapted(world, family)[family.ann] == 0
    finally:
        world.stop()


def test_reset_goes_back_to_the_enrollment(adaptive: World) -> None:
    """After an adaptation, ResetVoiceAdaptation drops it: the print is its enrollment again."""
    family = make_family(adaptive.operator)
    reply = family.ask("low", OVER_LIMIT)
    approve_and_confirm(adaptive, family, reply, OVER_LIMIT)
    assert adapted(adaptive, family)[family.ann] == 1
    assert family.me.reset_voice_adaptation(family.household_id, family.ann).get("dropped") == 1
    assert adapted(adaptive, family)[family.ann] == 0
