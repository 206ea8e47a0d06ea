"""HouseholdData over real gRPC: statuses, the archive and the erasure as a client sees them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import replace

import grpc
import pytest
from privacy.privacy_world import OPERATOR, World, make_family

from purchase_guard._gen.purchaseguard.v1 import admin_pb2, admin_pb2_grpc, privacy_pb2, privacy_pb2_grpc
from purchase_guard.api.errors import ErrorInterceptor
from purchase_guard.api.gate import GateInterceptor
from purchase_guard.api.privacy_servicer import HouseholdDataServicer
from purchase_guard.api.servicers import HouseholdAdminServicer
from purchase_guard.limits import InProcessRateLimiter
from purchase_guard.privacy.export import read_archive
from purchase_guard.store.protocol import HouseholdRecords


@pytest.fixture
def channel(world: World) -> Iterator[grpc.Channel]:
    """A server with the admin and data services (as api/server.py registers them) on port 0."""
    gate = GateInterceptor(world.app.households, InProcessRateLimiter(), {})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[gate, ErrorInterceptor()])
    admin_pb2_grpc.add_HouseholdAdminServicer_to_server(HouseholdAdminServicer(world.app.households), server)
    privacy_pb2_grpc.add_HouseholdDataServicer_to_server(HouseholdDataServicer(world.privacy), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    server.stop(0).wait()


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_export_over_grpc_returns_a_verifiable_archive(world: World, channel: grpc.Channel) -> None:
    """ExportHousehold returns the ZIP with its sha256, media type, format and parts matching the manifest."""
    fam = make_family(world, "Wire Family", "Wire")
    data = privacy_pb2_grpc.HouseholdDataStub(channel)
    reply = data.ExportHousehold(
        privacy_pb2.ExportHouseholdRequest(household_id=fam.household_id),
        metadata=_auth(fam.token),
        timeout=30,
    )
    assert reply.household_id == fam.household_id
    assert (reply.media_type, reply.format) == ("application/zip", "purchase-guard/household-export/v1")
    assert hashlib.sha256(reply.archive).hexdigest() == reply.sha256
    manifest = read_archive(reply.archive)["manifest.json"]
    assert [(p.name, p.sha256, p.records) for p in reply.parts] == [
        (p["name"], p["sha256"], p["records"]) for p in manifest["parts"]
    ]


def test_statuses_for_refused_calls(world: World, channel: grpc.Channel) -> None:
    """No token: UNAUTHENTICATED; another household: PERMISSION_DENIED; bad confirmation:
    INVALID_ARGUMENT; unknown household for the operator: NOT_FOUND. Nothing is erased."""
    a = make_family(world, "Family A", "Aaaa")
    b = make_family(world, "Family B", "Bbbb")
    data = privacy_pb2_grpc.HouseholdDataStub(channel)
    calls = [
        (
            (),
            privacy_pb2.ExportHouseholdRequest(household_id=a.household_id),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            _auth(a.token),
            privacy_pb2.ExportHouseholdRequest(household_id=b.household_id),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            _auth(OPERATOR),
            privacy_pb2.ExportHouseholdRequest(household_id="hh_nope"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            _auth(a.token),
            privacy_pb2.EraseHouseholdRequest(
                household_id=b.household_id, confirm_household_id=b.household_id
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            _auth(a.token),
            privacy_pb2.EraseHouseholdRequest(household_id=a.household_id, confirm_household_id="yes"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for metadata, request, code in calls:
        method = (
            data.ExportHousehold
            if isinstance(request, privacy_pb2.ExportHouseholdRequest)
            else data.EraseHousehold
        )
        with pytest.raises(grpc.RpcError) as caught:
            method(request, metadata=metadata, timeout=30)
        assert caught.value.code() is code, (request, caught.value.details())
        assert b.household_id not in (caught.value.details() or "")
    assert world.store.get_tombstone(a.household_id) is None
    assert world.store.get_tombstone(b.household_id) is None


def test_erase_over_grpc_then_the_token_is_dead(world: World, channel: grpc.Channel) -> None:
    """EraseHousehold answers with the tombstone; repeating it says already_erased; afterwards the
    household's token is UNAUTHENTICATED on the admin API."""
    fam = make_family(world, "Bye Family", "Byeb")
    data = privacy_pb2_grpc.HouseholdDataStub(channel)
    request = privacy_pb2.EraseHouseholdRequest(
        household_id=fam.household_id, confirm_household_id=fam.household_id
    )
    first = data.EraseHousehold(request, metadata=_auth(fam.token), timeout=30)
    assert (first.household_id, first.already_erased) == (fam.household_id, False)
    assert first.audit_entries_kept == len(fam.decision_ids)
    again = data.EraseHousehold(request, metadata=_auth(OPERATOR), timeout=30)
    assert again.already_erased
    assert again.erased_at == first.erased_at
    admin = admin_pb2_grpc.HouseholdAdminStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        admin.GetHousehold(
            admin_pb2.GetHouseholdRequest(household_id=fam.household_id),
            metadata=_auth(fam.token),
            timeout=30,
        )
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_foreign_record_is_an_internal_error_without_details(world: World, channel: grpc.Channel) -> None:
    """When the export check trips, the client gets INTERNAL with a generic message, no archive and
    nothing of the other household."""
    fam = make_family(world, "Mixed Family", "Mixd")
    other = make_family(world, "Other Family", "Othr")
    real = world.store.household_records

    def leaky(household_id: str) -> HouseholdRecords:
        records = real(household_id)
        return replace(records, members=(*records.members, *world.store.list_members(other.household_id)))

    world.store.household_records = leaky  # type: ignore[method-assign]
    data = privacy_pb2_grpc.HouseholdDataStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        data.ExportHousehold(
            privacy_pb2.ExportHouseholdRequest(household_id=fam.household_id),
            metadata=_auth(fam.token),
            timeout=30,
        )
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    details = caught.value.details() or ""
    assert other.household_id not in details
    assert "Othr" not in details
