"""Envelope encryption: per-household data keys under master keys, sealing, destruction, rotation."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from purchase_guard.sealing import (
    TEST_MASTER_KEY,
    KeyRing,
    KeyUnavailable,
    MasterKeys,
    MemoryKeyStore,
    SealError,
    key_id_of,
    resolve_master_keys,
)

OTHER_KEY = bytes(range(100, 132))


def test_sealed_value_opens_only_for_its_household_and_aad() -> None:
    """A value opens with the same household and aad; another household or aad fails authentication."""
    ring = KeyRing.in_memory()
    sealed = ring.seal("hh_a", b"secret voice", b"member-1")
    assert b"secret voice" not in sealed
    assert ring.open("hh_a", sealed, b"member-1") == b"secret voice"
    ring.seal("hh_b", b"x", b"")  # hh_b has a key of its own
    with pytest.raises(SealError):
        ring.open("hh_b", sealed, b"member-1")
    with pytest.raises(SealError):
        ring.open("hh_a", sealed, b"member-2")


def test_each_household_gets_its_own_random_data_key() -> None:
    """Two households' data keys differ, and only wrapped keys are stored (never the key itself)."""
    storage = MemoryKeyStore()
    ring = KeyRing(MasterKeys.of(TEST_MASTER_KEY), storage)
    ring.seal("hh_a", b"1", b"")
    ring.seal("hh_b", b"1", b"")
    wrapped = dict(storage.list_wrapped_keys())
    keys = {hid: ring.unwrap(hid, blob) for hid, blob in wrapped.items()}
    assert keys["hh_a"] != keys["hh_b"]
    assert all(keys[hid] not in blob for hid, blob in wrapped.items())
    assert all(KeyRing.wrapped_key_id(blob) == key_id_of(TEST_MASTER_KEY) for blob in wrapped.values())


def test_a_wrapped_key_cannot_be_moved_to_another_household() -> None:
    """A wrapped data key copied onto another household's row does not unwrap there."""
    storage = MemoryKeyStore()
    ring = KeyRing(MasterKeys.of(TEST_MASTER_KEY), storage)
    ring.seal("hh_a", b"1", b"")
    blob = storage.get_wrapped_key("hh_a")
    assert blob is not None
    with pytest.raises(SealError):
        ring.unwrap("hh_b", blob)


def test_destroyed_key_makes_sealed_values_unreadable_for_good() -> None:
    """After destroy, open raises KeyUnavailable, also in a second key ring on the same storage;
    a new seal creates a fresh key that cannot open the old values either."""
    storage = MemoryKeyStore()
    ring = KeyRing(MasterKeys.of(TEST_MASTER_KEY), storage)
    sealed = ring.seal("hh_a", b"voice", b"")
    ring.destroy("hh_a")
    with pytest.raises(KeyUnavailable):
        ring.open("hh_a", sealed, b"")
    with pytest.raises(KeyUnavailable):
        KeyRing(MasterKeys.of(TEST_MASTER_KEY), storage).open("hh_a", sealed, b"")
    ring.destroy("hh_a")  # idempotent
    ring.seal("hh_a", b"new", b"")
    with pytest.raises(SealError):
        ring.open("hh_a", sealed, b"")


def test_wrong_master_key_cannot_unwrap() -> None:
    """Data keys wrapped under one master key are unavailable to a ring that does not hold it."""
    storage = MemoryKeyStore()
    sealed = KeyRing(MasterKeys.of(TEST_MASTER_KEY), storage).seal("hh_a", b"voice", b"")
    with pytest.raises(KeyUnavailable, match="not configured"):
        KeyRing(MasterKeys.of(OTHER_KEY), storage).open("hh_a", sealed, b"")


def test_rotation_rewraps_under_the_new_key_so_the_old_one_can_be_retired() -> None:
    """With the new key active and the old one kept, rewrap_all re-wraps every data key; afterwards a
    ring holding only the new key opens old values."""
    storage = MemoryKeyStore()
    sealed = KeyRing(MasterKeys.of(TEST_MASTER_KEY), storage).seal("hh_a", b"voice", b"aad")
    rotating = KeyRing(MasterKeys.of(OTHER_KEY, TEST_MASTER_KEY), storage)
    assert rotating.rewrap_all() == 1
    assert rotating.rewrap_all() == 0
    new_only = KeyRing(MasterKeys.of(OTHER_KEY), storage)
    assert new_only.open("hh_a", sealed, b"aad") == b"voice"


def test_tampered_sealed_value_is_refused() -> None:
    """Flipping one bit of a sealed value makes it fail authentication instead of opening to garbage."""
    ring = KeyRing.in_memory()
    sealed = bytearray(ring.seal("hh_a", b"voice", b""))
    sealed[-1] ^= 1
    with pytest.raises(SealError):
        ring.open("hh_a", bytes(sealed), b"")
    with pytest.raises(SealError):
        ring.open("hh_a", b"not sealed at all, just text", b"")


def test_master_key_from_settings_value_wins() -> None:
    """A settings value is used as given (first key active), and the file is not created."""
    value = base64.b64encode(OTHER_KEY).decode() + "," + base64.b64encode(TEST_MASTER_KEY).decode()
    keys = resolve_master_keys(value, Path("/nonexistent/should-not-be-created"))
    assert keys.active == key_id_of(OTHER_KEY)
    assert set(keys.keys) == {key_id_of(OTHER_KEY), key_id_of(TEST_MASTER_KEY)}


def test_missing_master_key_file_is_created_0600_and_then_reused(tmp_path: Path) -> None:
    """Without a value or file, a new key is written with mode 0600; the next start reads the same key."""
    path = tmp_path / "var" / "master-key"
    first = resolve_master_keys("", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_master_keys("", path) == first


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"short").decode(), "32 bytes"),
        ("# only", "no master"),
    ],
)
def test_malformed_master_keys_stop_the_start(tmp_path: Path, text: str, problem: str) -> None:
    """A key file that is not base64, has a short key or no key raises ValueError naming the file only."""
    path = tmp_path / "master-key"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as caught:
        resolve_master_keys("", path)
    assert str(path) in str(caught.value)
    assert text not in str(caught.value) or text.startswith("#")
