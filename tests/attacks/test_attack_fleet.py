"""The fleet window: a broadcast verdict made of sources the gate authenticated, not of household ids
a request names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from attacks.attack_world import Family, World, codes, make_family, order, rpc_error, start_world
from support.takes import new_take


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[World]:
    """A guard with the fleet-wide broadcast check on (the default rule: 3 sources in 30 s)."""
    w = start_world(tmp_path / "guard", broadcast_enabled=True)
    yield w
    w.stop()


def _families(world: World, n: int) -> list[Family]:
    return [make_family(world.operator, f"Home {i}", pin=False) for i in range(n)]


def test_one_caller_cannot_frame_a_households_audio_as_a_broadcast(fleet: World) -> None:
    """Before: an anonymous caller sent a victim's own utterance under two other household ids, and
    the victim's next request with it was refused as BROADCAST_MATCH (that audio denylisted for
    48 h). Now an anonymous caller is UNAUTHENTICATED, a device credential cannot name another
    household (PERMISSION_DENIED), and two devices of one home count as one household: the
    victim's request is decided on its merits. The same audio really heard by three homes is still
    a broadcast, so the check is on."""
    attacker_home, victim, other = _families(fleet, 3)
    utterance = new_take("low")
    devices = [
        attacker_home.me.issue_credential(attacker_home.household_id, "DEVICE_CREDENTIAL", device_id=d)[
            "token"
        ]
        for d in ("kitchen", "hallway")
    ]
    anonymous = fleet.client()
    call = rpc_error(anonymous.evaluate, "frame-anon", other.household_id, "kitchen", order(1500), utterance)
    assert call.code() is grpc.StatusCode.UNAUTHENTICATED
    for i, (token, device) in enumerate(zip(devices, ("kitchen", "hallway"), strict=True)):
        as_device = fleet.operator.with_backend_token(token)
        for target in (victim, other):
            call = rpc_error(
                as_device.evaluate,
                f"frame-{i}-{target.household_id}",
                target.household_id,
                device,
                order(1500),
                utterance,
            )
            assert call.code() is grpc.StatusCode.PERMISSION_DENIED
        attacker_home.ask("low", 1500, audio=utterance, guard=as_device, device=device)

    decided = victim.ask("low", 1500, audio=utterance)
    assert "BROADCAST_MATCH" not in codes(decided), decided
    assert decided["outcome"] == "ALLOW", decided

    # The control: one recording really reaching three homes within the spread is a broadcast.
    broadcast = new_take("mid")
    homes = _families(fleet, 3)
    answers = [home.ask("mid", 1500, audio=broadcast, device="living-room-tv") for home in homes]
    assert "BROADCAST_MATCH" in codes(answers[-1]), answers[-1]
