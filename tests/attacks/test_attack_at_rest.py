"""Issue 14, attack 6: a copy of the files at rest. Before (773a185) the SQLite files were 0644 in
a 0755 var/, and the argon2id PIN hash was neither peppered nor sealed: a copy of the database
alone found the PIN in 18.8 s. Each test shows the attack now fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from attacks.attack_world import NOW, PIN, fake_settings, make_family, start_world, thresholds_file

from purchase_guard.app import build_app
from purchase_guard.challenge.pin import PinHasher
from purchase_guard.clock import FrozenClock
from purchase_guard.config import Settings
from purchase_guard.errors import GuardError
from purchase_guard.sealing import resolve_master_keys
from purchase_guard.store.sqlite import SqliteStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def loose_umask() -> Iterator[None]:
    """The common 022 umask, under which files are made 0644 unless the code says otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def var_settings(tmp: Path) -> Settings:
    """Everything the guard keeps in a var/ folder that does not exist yet, as on a first start."""
    var = tmp / "var"
    return fake_settings(
        var,
        thresholds_file=thresholds_file(tmp),
        operator_token="",
        backend_token="",
        operator_token_file=var / "operator-token",
        backend_token_file=var / "backend-token",
    )


def test_a_first_start_makes_var_0700_and_every_file_in_it_0600(tmp_path: Path) -> None:
    """Before: var/ was 0755 and the SQLite files 0644. Now a guard's first start under umask 022
    makes var/ 0700 and the database, its WAL and shared-memory files, the master key and both
    token files 0600, after real decisions were written over gRPC."""
    with loose_umask():
        world = start_world(settings=var_settings(tmp_path))
        try:
            family = make_family(world.operator)
            assert family.ask("low", 1500)["outcome"] == "ALLOW"
            var = tmp_path / "var"
            files = sorted(p.name for p in var.iterdir())
            assert {"guard.db", "master-key", "operator-token", "backend-token"} <= set(files), files
            assert mode(var) == 0o700
            assert {name: mode(var / name) for name in files} == dict.fromkeys(files, 0o600)
        finally:
            world.stop()


@pytest.mark.parametrize(("target", "loose"), [("var", 0o755), ("guard.db", 0o644)])
def test_a_store_others_can_read_stops_the_start(tmp_path: Path, target: str, loose: int) -> None:
    """The check at start: a var/ folder or database file that others may read (as 773a185 left
    them) stops the guard before it serves, naming the path and the chmod to run."""
    settings = var_settings(tmp_path)
    start_world(settings=settings).stop()
    os.chmod(tmp_path / "var" / target if target != "var" else tmp_path / "var", loose)
    with pytest.raises(GuardError, match="chmod"):
        build_app(settings, clock=FrozenClock(NOW))


def test_a_copy_of_the_database_alone_cannot_test_a_pin(tmp_path: Path) -> None:
    """Before: the PIN's argon2id hash sat in the database as is, so a copy of it was enough to try
    PINs offline. Now the column, read straight from a copy of the SQLite file, is sealed (not an
    argon2 hash at all), and a store opened on the copy with another master key cannot read it.
    Even the unsealed hash (which needs the master key) does not verify the true PIN without the
    pepper, which is derived from the household's data key and stored nowhere."""
    settings = var_settings(tmp_path)
    world = start_world(settings=settings)
    try:
        family = make_family(world.operator)
        pepper = world.app.store.pin_pepper(family.household_id)
        unsealed = world.app.store.get_pin(family.household_id)
    finally:
        world.stop()
    assert unsealed is not None
    stolen = tmp_path / "stolen"
    stolen.mkdir(mode=0o700)
    shutil.copy(tmp_path / "var" / "guard.db", stolen / "guard.db")
    with contextlib.closing(sqlite3.connect(stolen / "guard.db")) as conn:
        (column,) = conn.execute(
            "SELECT pin_hash FROM pins WHERE household_id = ?", (family.household_id,)
        ).fetchone()
    assert not str(column).startswith("$argon2")
    with pytest.raises((InvalidHashError, VerificationError)):
        PasswordHasher().verify(column, PIN)

    other_key = tmp_path / "other-master-key"
    thief = SqliteStore(stolen / "guard.db", master_keys=resolve_master_keys("", other_key))
    try:
        with pytest.raises(GuardError):
            thief.get_pin(family.household_id)
    finally:
        thief.close()

    assert unsealed.pin_hash.startswith("$argon2id$")
    with pytest.raises(VerificationError):
        PasswordHasher().verify(unsealed.pin_hash, PIN)
    pins = PinHasher()
    assert not pins.verify(unsealed.pin_hash, PIN, None)
    assert pins.verify(unsealed.pin_hash, PIN, pepper)  # the guard, with its keys, still can
