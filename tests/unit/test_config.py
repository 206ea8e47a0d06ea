"""Settings: read once from the environment, and bad values stop the start."""

from __future__ import annotations

import os
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
            "PURCHASE_GUARD_ALLOW_PLAINTEXT": "1",
            "PURCHASE_GUARD_MAX_ATTEMPTS": "3",
            "PURCHASE_GUARD_TEST_MODE": "yes",
            "PURCHASE_GUARD_SQLITE_PATH": "/tmp/x.db",
            "PURCHASE_GUARD_CHALLENGE_EXPIRY_SECONDS": "90",
        }
    )
    assert s.port == 6000
    assert s.allow_plaintext is True
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
        ({"PURCHASE_GUARD_BROADCAST_MIN_SOURCES": "1"}, "BROADCAST_MIN_SOURCES"),
        ({"PURCHASE_GUARD_BROADCAST_MIN_CALLERS": "4"}, "BROADCAST_MIN_CALLERS"),
        ({"PURCHASE_GUARD_BROADCAST_MAX_SPREAD_SECONDS": "900"}, "BROADCAST_MAX_SPREAD_SECONDS"),
        ({"PURCHASE_GUARD_BROADCAST_MAX_IN_SPAN": "50"}, "BROADCAST_MAX_IN_SPAN"),
        ({"PURCHASE_GUARD_BROADCAST_MAX_IN_SPAN": "-1"}, "BROADCAST_MAX_IN_SPAN"),
        ({"PURCHASE_GUARD_BROADCAST_INDEX": "hash"}, "BROADCAST_INDEX"),
        ({"PURCHASE_GUARD_GE2E_RUNTIME": "tensorrt"}, "GE2E_RUNTIME"),
        # Replaced by BROADCAST_MIN_SOURCES (sources, not claimed households): refused, not ignored.
        ({"PURCHASE_GUARD_BROADCAST_MIN_OTHER_HOUSEHOLDS": "2"}, "BROADCAST_MIN_OTHER_HOUSEHOLDS"),
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


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "192.168.1.20:50051", "guard.lan:50051"])
def test_plaintext_on_a_non_loopback_address_is_refused_at_start(listen: str) -> None:
    """Serving without TLS on an address other than loopback stops the server at start, naming the
    settings that would make it start (TLS files, or an explicit ALLOW_PLAINTEXT)."""
    with pytest.raises(ConfigError, match="ALLOW_PLAINTEXT"):
        load_settings({"PURCHASE_GUARD_LISTEN": listen})
    assert (
        load_settings({"PURCHASE_GUARD_LISTEN": listen, "PURCHASE_GUARD_ALLOW_PLAINTEXT": "1"}).listen
        == listen
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.0.0.2:50051", "localhost:50051", "[::1]:50051"])
def test_plaintext_on_loopback_is_fine(listen: str) -> None:
    """Loopback addresses never leave the machine: plaintext is allowed there without a flag."""
    assert load_settings({"PURCHASE_GUARD_LISTEN": listen}).listen == listen


SHARED = {
    "PURCHASE_GUARD_PROCESSES": "2",
    "PURCHASE_GUARD_REDIS_URL": "redis://127.0.0.1:6379/0",
    "PURCHASE_GUARD_RATE_LIMIT_BACKEND": "redis",
    "PURCHASE_GUARD_BROADCAST_WINDOW": "redis",
}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"PURCHASE_GUARD_RATE_LIMIT_BACKEND": "memory"}, "RATE_LIMIT_BACKEND=redis"),
        ({"PURCHASE_GUARD_BROADCAST_WINDOW": "memory"}, "BROADCAST_WINDOW=redis"),
        ({"PURCHASE_GUARD_TEST_MODE": "1"}, "TEST_MODE"),
        ({"PURCHASE_GUARD_SQLITE_PATH": ":memory:"}, ":memory:"),
        ({"PURCHASE_GUARD_METRICS_PORT": "65535"}, "METRICS_PORT"),
        ({"PURCHASE_GUARD_PROCESSES": "0"}, "PROCESSES must be 1-64"),
        ({"PURCHASE_GUARD_PROCESSES": "65"}, "PROCESSES must be 1-64"),
    ],
)
def test_several_processes_refuse_state_kept_per_process(change: dict[str, str], needle: str) -> None:
    """PROCESSES > 1 with in-process rate limits, an in-process broadcast window, the per-process
    test clock, an in-memory SQLite or metrics ports past 65535 fails at start, naming the fix."""
    with pytest.raises(ConfigError, match=needle):
        load_settings({**SHARED, **change})


def test_several_processes_with_shared_state_start_and_split_the_cores() -> None:
    """With Redis for the limits and the window, PROCESSES=2 is accepted; each process's encoder
    gets the cores divided by the processes unless ENCODER_THREADS says otherwise, and one
    process leaves the runtime's default (0)."""
    s = load_settings(SHARED)
    assert s.processes == 2
    assert s.threads_per_encoder == max(1, (os.cpu_count() or 1) // 2)
    assert load_settings({**SHARED, "PURCHASE_GUARD_ENCODER_THREADS": "3"}).threads_per_encoder == 3
    assert load_settings({}).threads_per_encoder == 0
    off = {
        "PURCHASE_GUARD_PROCESSES": "2",
        "PURCHASE_GUARD_RATE_LIMITS_ENABLED": "0",
        "PURCHASE_GUARD_BROADCAST_ENABLED": "0",
    }
    assert load_settings(off).processes == 2
