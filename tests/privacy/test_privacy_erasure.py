"""Sealing at rest and erasure, end to end through the services on a real SQLite file."""

from __future__ import annotations

import sqlite3
import struct
from contextlib import closing
from pathlib import Path

import pytest
from privacy.privacy_world import NOW, OPERATOR, World, make_family

from purchase_guard.domain import Household
from purchase_guard.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from purchase_guard.sealing import TEST_MASTER_KEY, KeyUnavailable, MasterKeys, SealError
from purchase_guard.store import codec
from purchase_guard.store.sqlite import SqliteStore


def _file_bytes(world: World) -> bytes:
    """Everything SQLite has on disk for the store: the database and its write-ahead log."""
    path = Path(world.app.settings.sqlite_path)
    parts = [path, path.with_name(path.name + "-wal")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


def test_the_database_file_holds_no_embedding_name_or_decision_in_clear(world: World) -> None:
    """Neither the packed float32 embedding, nor names, nor order titles or reason texts appear in the
    database file or its WAL; the voiceprint still reads back through the store."""
    fam = make_family(world, "The Zyxwvuts", "Qqzx")
    prints = world.store.list_voiceprints(fam.household_id)
    assert len(prints) == 2
    raw = _file_bytes(world)
    for vp in prints:
        packed = struct.pack(f"<{len(vp.embedding)}f", *vp.embedding)
        assert packed not in raw
        assert packed[:16] not in raw  # not even the first four values
    for text in (
        "The Zyxwvuts",
        "Qqzx Ann",
        "Qqzx Tim",
        "Qqzx batteries",
        "Qqzx toy",
        "approved the purchase",
    ):
        assert text.encode() not in raw, text
    # The same file without the key ring: the sealed columns are just sealed text.
    with closing(sqlite3.connect(world.app.settings.sqlite_path)) as conn:
        (name,) = conn.execute("SELECT name FROM households").fetchone()
    assert name.startswith("pgs1:")


def test_after_erasure_the_kept_rows_cannot_be_opened(world: World) -> None:
    """Erasure leaves only sealed audit entries; with the data key destroyed none of them opens, even
    from a copy of the database file taken before the erasure."""
    fam = make_family(world, "Erased Family", "Eras")
    db = Path(world.app.settings.sqlite_path)
    with closing(sqlite3.connect(db)) as live, closing(sqlite3.connect(db.with_name("copy.db"))) as copy:
        live.backup(copy)
    op = world.app.households.authenticate(OPERATOR)
    result = world.privacy.erase(op, fam.household_id, fam.household_id)
    entries = world.store.audit_entries(fam.household_id)
    assert result.tombstone.audit_entries == len(entries) == len(fam.decision_ids)
    for entry in entries:
        with pytest.raises(KeyUnavailable):
            world.ring.open(fam.household_id, codec.unarmour(entry.body), codec.audit_aad(entry.decision_id))
    with closing(sqlite3.connect(db.with_name("copy.db"))) as copy:
        (blob, member_id, encoder, dim) = copy.execute(
            "SELECT embedding, member_id, encoder, dim FROM voiceprints LIMIT 1"
        ).fetchone()
        (stored_name,) = copy.execute("SELECT name FROM households").fetchone()
    with pytest.raises(KeyUnavailable):
        world.ring.open(fam.household_id, blob, codec.voiceprint_aad(member_id, encoder, dim))
    with pytest.raises(KeyUnavailable):
        world.ring.open(
            fam.household_id, codec.unarmour(stored_name), codec.household_name_aad(fam.household_id)
        )
    with closing(sqlite3.connect(db)) as live:
        assert live.execute("SELECT COUNT(*) FROM data_keys").fetchone() == (0,)


def test_erasure_needs_the_exact_confirmation_and_changes_nothing_without_it(world: World) -> None:
    """A missing or different confirmation is INVALID_ARGUMENT and the household stays whole."""
    fam = make_family(world, "Careful Family", "Care")
    me = world.app.households.authenticate(fam.token)
    for wrong in ("", fam.household_id.upper(), fam.household_id + " "):
        with pytest.raises(InvalidArgument, match="confirm_household_id"):
            world.privacy.erase(me, fam.household_id, wrong)
    assert world.store.get_tombstone(fam.household_id) is None
    assert len(world.store.list_members(fam.household_id)) == 2


def test_a_household_erases_itself_and_its_token_stops_working(world: World) -> None:
    """With its own token a household erases itself; the token is then UNAUTHENTICATED everywhere,
    the operator sees the tombstone, a second erasure says already erased, and the chain verifies."""
    fam = make_family(world, "Leaving Family", "Leav")
    svc = world.app.households
    me = svc.authenticate(fam.token)
    first = world.privacy.erase(me, fam.household_id, fam.household_id)
    assert not first.already_erased
    with pytest.raises(Unauthenticated):
        svc.authenticate(fam.token)
    op = svc.authenticate(OPERATOR)
    again = world.privacy.erase(op, fam.household_id, fam.household_id)
    assert again.already_erased
    assert again.tombstone == first.tombstone
    report = world.privacy.verify_audit(op, fam.household_id)
    assert (report.ok, report.entries) == (True, len(fam.decision_ids))
    with pytest.raises(NotFound, match="was erased"):
        world.privacy.export(op, fam.household_id)
    with pytest.raises(NotFound):
        svc.get_household(op, fam.household_id)


def test_a_household_cannot_erase_another(world: World) -> None:
    """A household token used on another household is PERMISSION_DENIED and erases nothing; the
    message is the same for an id that does not exist."""
    a = make_family(world, "Family A", "Aaaa")
    b = make_family(world, "Family B", "Bbbb")
    me = world.app.households.authenticate(a.token)
    with pytest.raises(PermissionDenied) as real:
        world.privacy.erase(me, b.household_id, b.household_id)
    with pytest.raises(PermissionDenied) as made_up:
        world.privacy.erase(me, "hh_does_not_exist", "hh_does_not_exist")
    assert str(real.value) == str(made_up.value)
    assert world.store.get_tombstone(b.household_id) is None
    assert world.privacy.verify_audit(world.app.households.authenticate(b.token), b.household_id).ok


def test_erasing_an_unknown_household_is_not_found(world: World) -> None:
    """The operator erasing an id that never existed gets NOT_FOUND and no tombstone appears."""
    op = world.app.households.authenticate(OPERATOR)
    with pytest.raises(NotFound):
        world.privacy.erase(op, "hh_never", "hh_never")
    assert world.store.get_tombstone("hh_never") is None


def test_a_store_on_master_keys_reopens_its_data_and_another_key_cannot(tmp_path: Path) -> None:
    """The production wiring (master keys, wrapped data keys in the same file) reads its data after a
    reopen; the same file opened with a different master key cannot open anything."""
    db = tmp_path / "guard.db"
    household = Household("hh_1", "Secret Name", "UTC", "EUR", False, NOW)
    with SqliteStore(db, master_keys=MasterKeys.of(TEST_MASTER_KEY)) as store:
        store.create_household(household, "tok")
    with SqliteStore(db, master_keys=MasterKeys.of(TEST_MASTER_KEY)) as store:
        assert store.get_household("hh_1") == household
    with (
        SqliteStore(db, master_keys=MasterKeys.of(bytes(32))) as store,
        pytest.raises((KeyUnavailable, SealError)),
    ):
        store.get_household("hh_1")
