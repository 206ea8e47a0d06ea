"""Issue 14, attacks 1, 2 and 5: who may ask for a decision, whose request ids are whose, and who
approves. Each test names the attack as it was found against 773a185 ("Before: ...") and shows
over real gRPC that it now fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from attacks.attack_world import Family, World, fake_settings, new_id, order, rpc_error
from support.takes import enrollment, new_take

from purchase_guard.api.client import GuardClient
from purchase_guard.config import ConfigError


def anonymous_evaluate(world: World, family: Family, request_id: str, **changes: str) -> grpc.StatusCode:
    """An Evaluate with no credential at all (the channel carries no metadata)."""
    anon = world.client()
    try:
        fields = {"household_id": family.household_id, "device_id": "kitchen", **changes}
        return rpc_error(
            anon.evaluate,
            request_id,
            fields["household_id"],
            fields["device_id"],
            order(1500),
            new_take("low"),
        ).code()
    finally:
        anon.close()


def test_evaluate_and_confirm_without_a_credential_are_unauthenticated(world: World, family: Family) -> None:
    """Before: Evaluate and Confirm accepted anyone. Now a call with no credential, or with one
    the guard never issued, is UNAUTHENTICATED, even when it names no household or its payload is
    invalid (it is refused before any lookup or validation); with the backend credential the same
    calls are decided, and the invalid one is INVALID_ARGUMENT."""
    challenge = family.ask("high", 1500, "toys")["challenge"]["challenge_id"]
    for client in (world.client(), world.client(backend_token="pgb_" + "z" * 40)):
        try:
            hid = family.household_id
            for fn, args in (
                (client.evaluate, (new_id(), hid, "kitchen", order(1500), new_take("low"))),
                (client.confirm, (new_id(), hid, challenge, order(1500), "", None)),
                # A well-formed id of no household: an authorised caller would get NOT_FOUND.
                (client.evaluate, (new_id(), "hh_" + "0" * 32, "kitchen", order(1500), new_take("low"))),
                # Invalid on every field: an authorised caller would get INVALID_ARGUMENT.
                (client.evaluate, ("bad id!", "no such household!", "", order(-1), b"junk")),
            ):
                assert rpc_error(fn, *args).code() is grpc.StatusCode.UNAUTHENTICATED
        finally:
            client.close()
    assert family.ask("low", 1500)["outcome"] == "ALLOW"
    invalid = rpc_error(family.me.evaluate, "bad id!", family.household_id, "kitchen", order(1500), b"x")
    assert invalid.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_anonymous_junk_for_a_household_does_not_exhaust_its_real_device(
    world: World, family: Family
) -> None:
    """Before: rate limits were charged before authentication, so anonymous junk naming household B
    and its device made B's real device get RESOURCE_EXHAUSTED. Now 40 anonymous Evaluates (twice
    the device's 20 a minute) are each UNAUTHENTICATED and charge no bucket: the real device is
    then decided, not refused."""
    statuses = {anonymous_evaluate(world, family, new_id()) for _ in range(40)}
    assert statuses == {grpc.StatusCode.UNAUTHENTICATED}
    for _ in range(5):
        assert family.ask("low", 1500)["outcome"] == "ALLOW"


def test_anonymous_enrollment_calls_do_not_block_the_parents_own(world: World, family: Family) -> None:
    """Before: 20 anonymous EnrollVoice calls used up the household's enrollment bucket and blocked
    the parent's own enrollment for 180 s. Now 25 anonymous EnrollVoice calls are UNAUTHENTICATED
    and the parent's enrollment right after them succeeds."""
    anon = world.client()
    try:
        takes = [enrollment("low", s) for s in range(3)]
        for _ in range(25):
            call = rpc_error(anon.enroll, family.household_id, family.ann, takes)
            assert call.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        anon.close()
    report = family.me.enroll(family.household_id, family.ann, takes)
    assert report["member"]["voice_enrolled"]


def test_an_anonymous_request_id_does_not_poison_the_backends_later_request(
    world: World, family: Family
) -> None:
    """Before: an anonymous caller who sent a request id first made the backend's later request with
    that id fail with ALREADY_EXISTS. Now the anonymous call is UNAUTHENTICATED and records
    nothing; the backend's request with the same id is decided normally."""
    request_id = new_id("shared")
    assert anonymous_evaluate(world, family, request_id) is grpc.StatusCode.UNAUTHENTICATED
    reply = family.ask("low", 1500, request_id=request_id)
    assert reply["outcome"] == "ALLOW"


def test_admin_calls_are_authorised_before_their_payload_is_validated(world: World, family: Family) -> None:
    """Before: SetPolicy validated the payload before authorising, so a caller without the right
    credential learned INVALID_ARGUMENT (and what the guard checks). Now an invalid policy with no
    token or an unknown one is UNAUTHENTICATED, with another household's token PERMISSION_DENIED;
    only the household's own token reaches validation (INVALID_ARGUMENT)."""
    other = world.operator.create_household("Other", "America/Los_Angeles", "USD")["admin_token"]
    bad_policy = {"rules": [{"role": "ADULT"}]}  # no mode, no challenge method: invalid
    expected = {
        "": grpc.StatusCode.UNAUTHENTICATED,
        "pgh_" + "q" * 40: grpc.StatusCode.UNAUTHENTICATED,
        other: grpc.StatusCode.PERMISSION_DENIED,
        family.token: grpc.StatusCode.INVALID_ARGUMENT,
    }
    for token, status in expected.items():
        client = world.operator.with_token(token)
        assert rpc_error(client.set_policy, family.household_id, bad_policy).code() is status


def test_evaluate_request_ids_are_scoped_to_the_caller(world: World, family: Family) -> None:
    """Before: request ids were global per household, so one caller's id answered (or blocked)
    another caller's Evaluate. Now two callers (the backend and a device credential) sending the
    same request id each get their own decision, and each retry returns that caller's own."""
    device = family.me.issue_credential(family.household_id, "DEVICE_CREDENTIAL", device_id="kitchen")[
        "token"
    ]
    as_device = world.operator.with_backend_token(device)
    request_id = new_id("same")
    audio_a, audio_b = new_take("low"), new_take("low")
    first = family.ask("low", 1500, request_id=request_id, audio=audio_a)
    second = family.ask("low", 2500, request_id=request_id, audio=audio_b, guard=as_device)
    assert first["outcome"] == second["outcome"] == "ALLOW"
    assert first["decision_id"] != second["decision_id"]
    assert (
        family.ask("low", 1500, request_id=request_id, audio=audio_a)["decision_id"] == first["decision_id"]
    )
    again = family.ask("low", 2500, request_id=request_id, audio=audio_b, guard=as_device)
    assert again["decision_id"] == second["decision_id"]


def test_confirm_request_ids_are_scoped_to_the_caller(world: World, family: Family) -> None:
    """Before: request ids were global per household. Now two callers answering the same challenge
    with the same Confirm request id each get a decision of their own (neither is ALREADY_EXISTS
    nor handed the other's), and each retry returns that caller's own decision."""
    device = family.me.issue_credential(family.household_id, "DEVICE_CREDENTIAL", device_id="kitchen")[
        "token"
    ]
    as_device = world.operator.with_backend_token(device)
    challenge = family.ask("high", 1500, "toys")["challenge"]["challenge_id"]
    request_id = new_id("same-confirm")

    def answer(client: GuardClient) -> dict[str, Any]:
        return client.confirm(
            request_id, family.household_id, challenge, order(1500, "toys"), "", None, device_id="kitchen"
        )

    first, second = answer(family.me), answer(as_device)
    assert first["decision_id"] != second["decision_id"]
    assert answer(family.me)["decision_id"] == first["decision_id"]
    assert answer(as_device)["decision_id"] == second["decision_id"]


def test_a_household_token_cannot_approve_as_a_parent(world: World, family: Family) -> None:
    """Before: ResolveApproval's parent_member_id was a claim: anyone holding the household token
    acted as any parent. Now the household token (naming a parent or not), a device credential
    and the backend credential are PERMISSION_DENIED, and the request stays pending."""
    challenge = family.ask("high", 1500, "toys")["challenge"]["challenge_id"]
    device = family.me.issue_credential(family.household_id, "DEVICE_CREDENTIAL", device_id="kitchen")[
        "token"
    ]
    for token, claimed in ((family.token, family.ann), (family.token, ""), (device, family.ann)):
        client = world.operator.with_token(token)
        call = rpc_error(client.resolve_approval, family.household_id, challenge, claimed, True)
        assert call.code() is grpc.StatusCode.PERMISSION_DENIED
    backend = world.operator.with_token(world.app.backend_token)
    call = rpc_error(backend.resolve_approval, family.household_id, challenge, family.ann, True)
    assert call.code() is grpc.StatusCode.PERMISSION_DENIED
    assert challenge in family.pending()


def test_a_parent_cannot_approve_as_another_parent_and_is_recorded_as_themselves(
    world: World, family: Family
) -> None:
    """Before: a caller could name any parent in parent_member_id. Now Bea's credential claiming
    Ann's id is PERMISSION_DENIED; Bea's credential without a claim approves, and the record
    names Bea (the credential's parent), not Ann."""
    challenge = family.ask("high", 1500, "toys")["challenge"]["challenge_id"]
    bea = world.operator.with_token(family.bea_token)
    call = rpc_error(bea.resolve_approval, family.household_id, challenge, family.ann, True)
    assert call.code() is grpc.StatusCode.PERMISSION_DENIED
    assert challenge in family.pending()
    resolved = bea.resolve_approval(family.household_id, challenge, "", True)
    assert resolved["state"] == "approved"
    assert world.app.store.get_challenge(family.household_id, challenge).resolved_by == family.bea
    approvals = [
        d for d in family.me.list_decisions(family.household_id)["decisions"] if d["kind"] == "approval"
    ]
    assert [[r["message"] for r in d["reasons"]] for d in approvals] == [
        ["Parent Bea approved the purchase."]
    ]
    assert challenge not in family.pending()


def test_a_revoked_parent_credential_is_refused(world: World, family: Family) -> None:
    """Before: there were no per-parent credentials to revoke. Now a parent credential the household
    revoked is UNAUTHENTICATED on ResolveApproval, and the request stays pending for a parent whose
    credential is live."""
    challenge = family.ask("high", 1500, "toys")["challenge"]["challenge_id"]
    creds = family.me.list_credentials(family.household_id)["credentials"]
    bea_cred = next(c for c in creds if c.get("member_id") == family.bea)
    family.me.revoke_credential(family.household_id, bea_cred["credential_id"])
    bea = world.operator.with_token(family.bea_token)
    call = rpc_error(bea.resolve_approval, family.household_id, challenge, "", True)
    assert call.code() is grpc.StatusCode.UNAUTHENTICATED
    assert challenge in family.pending()
    ann = world.operator.with_token(family.ann_token)
    ann.resolve_approval(family.household_id, challenge, "", False)
    assert challenge not in family.pending()


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "192.0.2.10:50051"])
def test_plaintext_on_a_network_address_does_not_start(tmp_path: Path, listen: str) -> None:
    """Before: the guard served plaintext gRPC on any address, so the new credentials (and the
    audio) would cross a network in the clear. Now settings listening off loopback without TLS
    stop the start, naming the TLS settings and the explicit opt-out, which alone allows it."""
    with pytest.raises(ConfigError, match="ALLOW_PLAINTEXT"):
        fake_settings(tmp_path, listen=listen)
    assert fake_settings(tmp_path, listen=listen, allow_plaintext=True).listen == listen
