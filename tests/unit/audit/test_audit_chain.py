"""The audit hash chain: hashing, canonical JSON and tamper detection, on plain values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purchase_guard.audit.chain import GENESIS, AuditEntry, canonical_json, entry_hash, hash_of, verify_chain
from purchase_guard.serial import format_ts

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def build_chain(n: int, household_id: str = "hh_1") -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        at = T0 + timedelta(seconds=seq)
        body = canonical_json({"n": seq})
        digest = entry_hash(household_id, seq, f"dec_{seq}", format_ts(at), body, prev)
        entries.append(AuditEntry(household_id, seq, f"dec_{seq}", at, body, prev, digest))
        prev = digest
    return entries


def relink(entries: list[AuditEntry]) -> list[AuditEntry]:
    """Recomputes seq, prev_hash and entry_hash as a forger who cannot anchor the head would."""
    out: list[AuditEntry] = []
    prev = GENESIS
    for seq, e in enumerate(entries, start=1):
        e2 = replace(e, seq=seq, prev_hash=prev)
        e2 = replace(e2, entry_hash=hash_of(e2))
        out.append(e2)
        prev = e2.entry_hash
    return out


def test_genesis_is_64_zeros() -> None:
    """The first entry links to a hash of 64 zeros."""
    assert GENESIS == "0" * 64
    assert build_chain(1)[0].prev_hash == GENESIS


def test_entry_hash_is_hex_sha256_and_deterministic() -> None:
    """entry_hash gives the same 64 lowercase hex digits for the same fields."""
    a = entry_hash("hh", 1, "d", "t", "{}", GENESIS)
    assert a == entry_hash("hh", 1, "d", "t", "{}", GENESIS)
    assert len(a) == 64
    assert set(a) <= set("0123456789abcdef")


def test_every_field_feeds_the_hash() -> None:
    """Changing any one field changes the hash."""
    base = ("hh", 1, "d", "t", "{}", GENESIS)
    variants = [
        ("hx", 1, "d", "t", "{}", GENESIS),
        ("hh", 2, "d", "t", "{}", GENESIS),
        ("hh", 1, "e", "t", "{}", GENESIS),
        ("hh", 1, "d", "u", "{}", GENESIS),
        ("hh", 1, "d", "t", "[]", GENESIS),
        ("hh", 1, "d", "t", "{}", "1" * 64),
    ]
    hashes = {entry_hash(*v) for v in variants}  # type: ignore[arg-type]
    assert entry_hash(*base) not in hashes  # type: ignore[arg-type]
    assert len(hashes) == len(variants)


def test_encoding_is_unambiguous() -> None:
    """Moving text across a field boundary changes the hash (length-prefixed fields)."""
    assert entry_hash("ab", 1, "c", "t", "{}", GENESIS) != entry_hash("a", 1, "bc", "t", "{}", GENESIS)
    assert entry_hash("hh", 1, "d", "t1", "{}", GENESIS) != entry_hash("hh", 1, "d", "t", "1{}", GENESIS)


@given(st.text(max_size=6), st.text(max_size=6), st.text(max_size=6), st.text(max_size=6))
def test_split_points_never_collide(a: str, b: str, c: str, d: str) -> None:
    """Two different splits of the same text into household and decision id hash differently."""
    if (a, b) != (c, d):
        assert entry_hash(a, 1, b, "t", "{}", GENESIS) != entry_hash(c, 1, d, "t", "{}", GENESIS)


def test_canonical_json_is_sorted_compact_and_strict() -> None:
    """Keys sorted, no spaces, unicode kept, NaN refused."""
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'
    with pytest.raises(ValueError, match="JSON"):
        canonical_json({"x": float("nan")})


def test_an_intact_chain_verifies() -> None:
    """A chain built by the rules verifies, and so does an empty one."""
    report = verify_chain(build_chain(5))
    assert (report.ok, report.entries, report.first_bad_seq) == (True, 5, None)
    assert verify_chain([]).ok


@pytest.mark.parametrize("field", ["body", "decision_id", "at", "household_id"])
def test_an_edited_entry_is_detected(field: str) -> None:
    """Changing any field of entry 3 breaks the chain at seq 3."""
    chain = build_chain(5)
    new = {
        "body": '{"n":"x"}',
        "decision_id": "dec_forged",
        "at": T0 + timedelta(days=1),
        "household_id": "hh_other",
    }[field]
    chain[2] = replace(chain[2], **{field: new})
    report = verify_chain(chain)
    assert not report.ok
    assert report.first_bad_seq == 3


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    """Re-hashing an edited entry is not enough: the next entry's prev_hash no longer matches."""
    chain = build_chain(5)
    edited = replace(chain[1], body='{"n":"x"}')
    chain[1] = replace(edited, entry_hash=hash_of(edited))
    assert verify_chain(chain).first_bad_seq == 3


def test_a_deleted_entry_is_detected() -> None:
    """Removing entry 2 breaks the chain at seq 2, even if the later entries are renumbered and relinked."""
    chain = build_chain(5)
    del chain[1]
    assert verify_chain(chain).first_bad_seq == 2
    # A forger who relinks everything yields a valid-looking chain: only an anchor catches that.
    forged = relink(chain)
    assert verify_chain(forged).ok
    assert not verify_chain(forged, expected_head=build_chain(5)[-1].entry_hash).ok


def test_reordered_entries_are_detected() -> None:
    """Swapping two entries breaks the chain at the first swapped position."""
    chain = build_chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    assert verify_chain(chain).first_bad_seq == 2


def test_an_inserted_entry_is_detected() -> None:
    """An entry inserted in the middle breaks the chain where it sits."""
    chain = build_chain(4)
    fake = AuditEntry("hh_1", 3, "dec_x", T0, "{}", chain[1].entry_hash, "f" * 64)
    chain.insert(2, fake)
    report = verify_chain(chain)
    assert not report.ok
    assert report.first_bad_seq == 3


def test_truncation_needs_an_anchor() -> None:
    """Dropping the last entries leaves a valid shorter chain; the known head hash reveals it."""
    full = build_chain(5)
    head = full[-1].entry_hash
    assert verify_chain(full[:3]).ok
    report = verify_chain(full[:3], expected_head=head)
    assert not report.ok
    assert report.first_bad_seq == 4
    assert verify_chain(full, expected_head=head).ok
