"""Shared test support: where ../shared/data is, and whether its absence is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# gRPC's core can log a stopped server's GOAWAY at INFO on stderr ("Got goaway ... UNAVAILABLE")
# when a test shuts a server down under a connected client: noise that reads like a failure in
# CI output. Only gRPC's errors are printed. Set before grpc is first imported (test modules
# and the replica subprocesses, which inherit the environment, come after this file).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def shared_data_dir() -> Path | None:
    path = Path(os.environ.get("PURCHASE_GUARD_DATA_DIR", ROOT.parent / "shared" / "data"))
    return path if (path / "fsdd" / "recordings").is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data, or a skip; under PURCHASE_GUARD_REQUIRE_DATA=1 (CI) a missing folder fails."""
    path = shared_data_dir()
    if path is None:
        if os.environ.get("PURCHASE_GUARD_REQUIRE_DATA") == "1":
            pytest.fail("../shared/data is required (PURCHASE_GUARD_REQUIRE_DATA=1) but was not found")
        pytest.skip("../shared/data not found; set PURCHASE_GUARD_DATA_DIR")
    return path


@pytest.fixture(autouse=True, scope="session")
def _json_logs_on_stderr() -> None:
    """Logs as the server writes them (JSON, stderr), so stdout stays for what CLIs print."""
    from purchase_guard.logs import configure_logging

    configure_logging("info")


def pytest_configure(config: pytest.Config) -> None:
    """Load SpeechBrain (through its compat shim) before any test runs.

    Hypothesis collects constants from every module in sys.modules; if SpeechBrain were first
    imported halfway through the session (by an ECAPA test), the set would change between a
    test's runs and Hypothesis would report flaky data generation in unrelated tests.
    """
    from purchase_guard.voice._speechbrain_compat import import_encoder_classifier

    import_encoder_classifier()
