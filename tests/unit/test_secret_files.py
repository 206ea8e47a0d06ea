"""Secrets written by the first start (operator token, master key) when replicas start together."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from purchase_guard.app import resolve_operator_token
from purchase_guard.config import Settings
from purchase_guard.sealing import resolve_master_keys
from purchase_guard.secret_files import write_once


def test_write_once_keeps_the_first_writers_text(tmp_path: Path) -> None:
    """The first call creates the file (0600); a later one gets the first text back and changes
    nothing; no temporary file is left beside it."""
    path = tmp_path / "var" / "secret"
    assert write_once(path, "first\n") == ("first\n", True)
    assert write_once(path, "second\n") == ("first\n", False)
    assert path.read_text() == "first\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret"]


def _lose_the_race(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make the existence check miss `path`: another replica creates it right after we looked."""
    real = Path.is_file

    def is_file(self: Path) -> bool:
        return False if self == path else real(self)

    monkeypatch.setattr(Path, "is_file", is_file)


def test_master_key_created_by_another_replica_meanwhile_is_the_one_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that finds no key file, while another creates it in the same moment, uses the
    other's key instead of crashing or writing a second key (which would seal data the other
    replica could not open)."""
    path = tmp_path / "master-key"
    first = resolve_master_keys("", path)
    written = path.read_text()
    _lose_the_race(monkeypatch, path)
    assert resolve_master_keys("", path) == first
    assert path.read_text() == written


def test_operator_token_created_by_another_replica_meanwhile_is_the_one_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for the operator token: the second replica does not overwrite the token the
    first one already accepts."""
    settings = Settings(operator_token="", operator_token_file=tmp_path / "operator-token")
    first = resolve_operator_token(settings)
    _lose_the_race(monkeypatch, settings.operator_token_file)
    assert resolve_operator_token(settings) == first
    assert settings.operator_token_file.read_text().strip() == first


def test_unusable_operator_token_file_is_replaced(tmp_path: Path) -> None:
    """An empty or cut-short token file is replaced by a new token, as before."""
    path = tmp_path / "operator-token"
    path.write_text("short\n")
    token = resolve_operator_token(Settings(operator_token="", operator_token_file=path))
    assert token.startswith("pgo_")
    assert len(token) >= 24
    assert path.read_text().strip() == token
