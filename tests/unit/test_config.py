"""Settings: read once from the environment, and bad values stop the start."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from purchase_guard.config import ConfigError, Settings, load_settings


def test_defaults_are_the_embedded_setup() -> None:
    """With no variables set, the guard uses SQLite, GE2E and localhost:50051."""
    s = load_settings({})
    assert (s.store, s.encoder, s.listen) == ("sqlite", "ge2e", "127.0.0.1:50051")
    assert s.challenge_expiry == timedelta(minutes=2)
    assert s.approval_expiry == timedelta(hours=24)


def test_values_are_parsed_by_type() -> None:
    """Numbers, booleans, paths and durations in seconds are parsed from strings."""
    s = load_settings(
        {
            "PURCHASE_GUARD_LISTEN": "0.0.0.0:6000",
            "PURCHASE_GUARD_MAX_ATTEMPTS": "3",
            "PURCHASE_GUARD_TEST_MODE": "yes",
            "PURCHASE_GUARD_SQLITE_PATH": "/tmp/x.db",
            "PURCHASE_GUARD_CHALLENGE_EXPIRY_SECONDS": "90",
        }
    )
    assert s.port == 6000
    assert s.max_attempts == 3
    assert s.test_mode is True
    assert s.sqlite_path == Path("/tmp/x.db")
    assert s.challenge_expiry == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PURCHASE_GUARD_LISTEN": "nonsense"}, "LISTEN"),
        ({"PURCHASE_GUARD_LISTEN": "h:99999"}, "LISTEN"),
        ({"PURCHASE_GUARD_MAX_ATTEMPTS": "many"}, "MAX_ATTEMPTS"),
        ({"PURCHASE_GUARD_MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS"),
        ({"PURCHASE_GUARD_ENCODER": "fake"}, "TEST_MODE"),
        ({"PURCHASE_GUARD_ENCODER": "wav2vec"}, "ENCODER"),
        ({"PURCHASE_GUARD_STORE": "postgres"}, "POSTGRES_DSN"),
        ({"PURCHASE_GUARD_BROADCAST_WINDOW": "redis"}, "REDIS_URL"),
        ({"PURCHASE_GUARD_OPERATOR_TOKEN": "short"}, "OPERATOR_TOKEN"),
        ({"PURCHASE_GUARD_TEST_MODE": "perhaps"}, "TEST_MODE"),
        ({"PURCHASE_GUARD_GE2E_WEIGHTS": "/no/such/file.pt"}, "GE2E_WEIGHTS"),
        ({"PURCHASE_GUARD_LISTN": "x:1"}, "LISTN"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_variable(env: dict[str, str], needle: str) -> None:
    """A bad or unknown variable raises ConfigError whose message names it."""
    with pytest.raises(ConfigError, match=needle):
        load_settings(env)


def test_with_overrides_revalidates() -> None:
    """Overrides in code go through the same validation as the environment."""
    with pytest.raises(ConfigError):
        Settings().with_overrides(workers=0)
