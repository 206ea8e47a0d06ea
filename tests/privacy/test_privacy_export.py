"""Export: a complete, checked, machine-readable archive of one household, and nothing else."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from privacy.privacy_world import NOW, OPERATOR, World, make_family
from structlog.testing import capture_logs

from purchase_guard.domain import Member, Role
from purchase_guard.errors import NotFound, PermissionDenied
from purchase_guard.privacy.export import ForeignRecord, build_archive, check_records, read_archive
from purchase_guard.store.protocol import AuditRecord, HouseholdRecords


def _export(world: World, token: str, household_id: str) -> dict[str, Any]:
    archive = world.privacy.export(world.app.households.authenticate(token), household_id)
    return read_archive(archive.data)


def test_export_holds_every_kind_of_record_with_a_checksum_per_part(world: World) -> None:
    """The archive's manifest lists every part with its sha256 (verified on read), and the parts hold
    the household, both members, voiceprint metadata, the policy, decisions, challenge, notification,
    spend and an audit chain that matches the stored one."""
    fam = make_family(world, "Export Family", "Expo")
    parts = _export(world, fam.token, fam.household_id)
    manifest = parts["manifest.json"]
    assert manifest["format"] == "purchase-guard/household-export/v1"
    assert manifest["household_id"] == fam.household_id
    names = {p["name"] for p in manifest["parts"]}
    assert names == {
        "household.json",
        "members.json",
        "voiceprints.json",
        "policies.json",
        "pin.json",
        "decisions.json",
        "spend.json",
        "challenges.json",
        "notifications.json",
        "audit.json",
        "events.json",
        "webhook.json",
        "derived_audio.json",
    }
    assert parts["household.json"]["name"] == "Export Family"
    assert sorted(m["display_name"] for m in parts["members.json"]) == ["Expo Ann", "Expo Tim"]
    assert {d["decision_id"] for d in parts["decisions.json"]} == set(fam.decision_ids)
    assert [c["challenge_id"] for c in parts["challenges.json"]] == [fam.challenge_id]
    assert [n["challenge_id"] for n in parts["notifications.json"]] == [fam.challenge_id]
    assert len(parts["policies.json"]) == 1
    assert len(parts["spend.json"]) == 1
    stored = world.store.audit_entries(fam.household_id)
    entries = parts["audit.json"]["entries"]
    assert [(e["seq"], e["entry_hash"], e["stored_body"]) for e in entries] == [
        (s.seq, s.entry_hash, s.body) for s in stored
    ]
    assert all(e["record"]["household_id"] == fam.household_id for e in entries)
    counts = {p["name"]: p["records"] for p in manifest["parts"]}
    assert counts["decisions.json"] == len(fam.decision_ids)
    assert counts["members.json"] == 2
    # The events the parents were sent, and what is kept derived from the family's audio (the
    # audio prints of its requests), as metadata: never the prints or templates themselves.
    assert {e["kind"] for e in parts["events.json"]} >= {"approval_requested", "approval_approved"}
    assert all(e["event_id"] > 0 for e in parts["events.json"])
    prints = [a for a in parts["derived_audio.json"] if a["what"] == "audio_print"]
    assert {a["decision_id"] for a in prints} <= set(fam.decision_ids)
    assert prints
    assert parts["webhook.json"] is None


def test_export_leaves_out_voice_templates_pin_hash_and_challenge_digits(world: World) -> None:
    """Voiceprints appear as metadata only (no vector anywhere in the archive); no PIN hash, no
    expected digits."""
    fam = make_family(world, "Private Family", "Priv")
    world.app.households.set_pin(world.app.households.authenticate(fam.token), fam.household_id, "7391")
    parts = _export(world, fam.token, fam.household_id)
    prints = parts["voiceprints.json"]
    assert {p["member_id"] for p in prints} == {fam.adult_id, fam.child_id}
    assert all(set(p) >= {"encoder", "dimensions", "utterances", "created_at"} for p in prints)
    text = json.dumps(parts)
    for vp in world.store.list_voiceprints(fam.household_id):
        assert f"{vp.embedding[0]:.6f}"[:8] not in text
        assert "embedding" not in text
    assert set(parts["pin.json"]) == {"household_id", "set_at", "failures", "next_try_at", "disabled_at"}
    assert "argon2" not in text
    assert all(
        "expected_digits_hash" not in c and "digits_to_repeat" not in c for c in parts["challenges.json"]
    )


def test_export_is_reproducible_for_the_same_state(world: World) -> None:
    """Exporting twice at the same instant gives byte-identical archives (same sha256)."""
    fam = make_family(world, "Stable Family", "Stab")
    me = world.app.households.authenticate(fam.token)
    assert (
        world.privacy.export(me, fam.household_id).sha256 == world.privacy.export(me, fam.household_id).sha256
    )


def test_a_household_token_exports_its_own_household_only(world: World) -> None:
    """Household A's token on B's id is PERMISSION_DENIED with the same message as for an unknown id;
    the operator can export any household; an unknown id is NOT_FOUND for the operator."""
    a = make_family(world, "Family A", "Aaaa")
    b = make_family(world, "Family B", "Bbbb")
    me = world.app.households.authenticate(a.token)
    with pytest.raises(PermissionDenied) as real:
        world.privacy.export(me, b.household_id)
    with pytest.raises(PermissionDenied) as made_up:
        world.privacy.export(me, "hh_unknown")
    assert str(real.value) == str(made_up.value)
    assert _export(world, OPERATOR, b.household_id)["household.json"]["household_id"] == b.household_id
    with pytest.raises(NotFound):
        world.privacy.export(world.app.households.authenticate(OPERATOR), "hh_unknown")


def _inject(records: HouseholdRecords, where: str) -> HouseholdRecords:
    foreign = Member("mem_foreign", "hh_someone_else", "Mallory", Role.ADULT, True, NOW)
    if where == "members":
        return replace(records, members=(*records.members, foreign))
    if where == "decisions":
        return replace(
            records,
            decisions=(*records.decisions, replace(records.decisions[0], household_id="hh_someone_else")),
        )
    if where == "audit.body":
        first = records.audit[0]
        body = json.loads(first.body) | {"household_id": "hh_someone_else"}
        return replace(
            records, audit=(AuditRecord(first.entry, json.dumps(body), first.sealed), *records.audit[1:])
        )
    if where == "audit":
        first = records.audit[0]
        moved = AuditRecord(replace(first.entry, household_id="hh_someone_else"), first.body, first.sealed)
        return replace(records, audit=(*records.audit, moved))
    if where == "challenges":
        return replace(records, challenges=(replace(records.challenges[0], household_id="hh_someone_else"),))
    if where == "notifications":
        return replace(
            records, notifications=(replace(records.notifications[0], household_id="hh_someone_else"),)
        )
    raise AssertionError(where)


@pytest.mark.parametrize(
    "where", ["members", "decisions", "challenges", "notifications", "audit", "audit.body"]
)
def test_one_foreign_record_aborts_the_export(world: World, where: str) -> None:
    """A single record of another household among the records makes the export fail with an internal
    error (no archive), and the log line names the part but none of the foreign record's content."""
    fam = make_family(world, "Checked Family", "Chek")
    records = world.store.household_records(fam.household_id)
    assert check_records(records, fam.household_id) > 10
    with capture_logs() as logs, pytest.raises(ForeignRecord) as caught:
        build_archive(_inject(records, where), fam.household_id, NOW)
    assert "hh_someone_else" not in str(caught.value)
    (line,) = [entry for entry in logs if entry["event"] == "export_refused_foreign_record"]
    assert (line["part"], line["household_id"], line["log_level"]) == (where, fam.household_id, "error")
    assert "hh_someone_else" not in repr(logs)
    assert "Mallory" not in repr(logs)


def test_a_store_that_returns_a_foreign_record_gets_no_export_through_the_service(world: World) -> None:
    """The check runs on the service path too: a store bug that mixes in another household's member
    is an internal error for the caller, never an archive."""
    fam = make_family(world, "Guarded Family", "Guar")
    other = make_family(world, "Other Family", "Othr")
    real = world.store.household_records

    def leaky(household_id: str) -> HouseholdRecords:
        records = real(household_id)
        stolen = world.store.list_members(other.household_id)[0]
        return replace(records, members=(*records.members, stolen))

    world.store.household_records = leaky  # type: ignore[method-assign]
    with pytest.raises(ForeignRecord):
        world.privacy.export(world.app.households.authenticate(fam.token), fam.household_id)


def test_export_after_retention_carries_the_anchor(world: World) -> None:
    """After a purge the audit part starts after the anchor and names it, so it still verifies offline."""
    fam = make_family(world, "Old Family", "Oldf")
    world.store.purge_household(fam.household_id, NOW + timedelta(days=1))
    parts = _export(world, fam.token, fam.household_id)
    anchor = parts["audit.json"]["anchor"]
    assert anchor["seq"] == len(fam.decision_ids)
    assert parts["audit.json"]["entries"] == []
