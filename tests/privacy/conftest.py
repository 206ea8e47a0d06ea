"""Fixtures of the privacy tests; the helpers they use live in privacy_world.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from privacy.privacy_world import World, build_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A guard with real services on a SQLite file sealed by an in-memory key ring."""
    built = build_world(tmp_path)
    yield built
    built.store.close()
