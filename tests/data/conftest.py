"""Where the shared corpora live, and what happens when they do not.

Data tests skip when the folder is missing, unless PURCHASE_GUARD_REQUIRE_DATA=1 (CI), in
which case a missing folder is a failure: a silently skipped accuracy test is no test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _missing(what: str) -> None:
    if os.environ.get("PURCHASE_GUARD_REQUIRE_DATA") == "1":
        pytest.fail(f"{what} (PURCHASE_GUARD_REQUIRE_DATA=1)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder: $PURCHASE_GUARD_DATA_DIR, else <repo>/../shared/data."""
    path = Path(os.environ.get("PURCHASE_GUARD_DATA_DIR", str(REPO.parent / "shared" / "data")))
    if not (path / "fsdd" / "recordings").is_dir():
        _missing(f"shared data not found at {path}; set PURCHASE_GUARD_DATA_DIR")
    return path
