"""Fixtures of the attack suite (tests/attacks): a fake-encoder guard per test, and for the PIN
attacks, which need answers the digit checker really hears, GE2E and FSDD recordings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from attacks.attack_world import Family, World, make_family, start_world

from purchase_guard.voice.encoder import SpeakerEncoder


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A guard with the FakeEncoder on a free port, built as `make run` builds one."""
    w = start_world(tmp_path / "guard")
    yield w
    w.stop()


@pytest.fixture
def family(world: World) -> Family:
    return make_family(world.operator)


@pytest.fixture(scope="session")
def ge2e() -> SpeakerEncoder:
    """The real GE2E encoder, loaded once for the PIN attacks."""
    from purchase_guard.voice.ge2e import Ge2eEncoder

    return Ge2eEncoder()
