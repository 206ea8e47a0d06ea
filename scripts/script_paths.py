"""Where the repository and the shared speech data are: one default for every script."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """$PURCHASE_GUARD_DATA_DIR, else ../shared/data beside the repository (as the tests use)."""
    return Path(os.environ.get("PURCHASE_GUARD_DATA_DIR", ROOT.parent / "shared" / "data"))
