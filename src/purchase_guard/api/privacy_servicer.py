"""gRPC servicer of HouseholdData (export and erasure): unpack, call the privacy service, pack.

Errors are raised as `purchase_guard.errors` types; the interceptor maps them to statuses.
"""

from __future__ import annotations

import grpc

from purchase_guard._gen.purchaseguard.v1 import privacy_pb2, privacy_pb2_grpc
from purchase_guard.api import convert
from purchase_guard.api.gate import current_principal
from purchase_guard.privacy.export import FORMAT, MEDIA_TYPE
from purchase_guard.privacy.service import PrivacyService


class HouseholdDataServicer(privacy_pb2_grpc.HouseholdDataServicer):
    def __init__(self, service: PrivacyService) -> None:
        self._svc = service

    def ExportHousehold(
        self, request: privacy_pb2.ExportHouseholdRequest, context: grpc.ServicerContext
    ) -> privacy_pb2.ExportHouseholdResponse:
        archive = self._svc.export(current_principal(), request.household_id)
        return privacy_pb2.ExportHouseholdResponse(
            household_id=archive.household_id,
            archive=archive.data,
            media_type=MEDIA_TYPE,
            sha256=archive.sha256,
            parts=[
                privacy_pb2.ExportPart(name=p.name, sha256=p.sha256, size_bytes=p.size, records=p.records)
                for p in archive.parts
            ],
            generated_at=convert.ts(archive.generated_at),
            format=FORMAT,
        )

    def EraseHousehold(
        self, request: privacy_pb2.EraseHouseholdRequest, context: grpc.ServicerContext
    ) -> privacy_pb2.EraseHouseholdResponse:
        result = self._svc.erase(current_principal(), request.household_id, request.confirm_household_id)
        tombstone = result.tombstone
        return privacy_pb2.EraseHouseholdResponse(
            household_id=tombstone.household_id,
            erased_at=convert.ts(tombstone.erased_at),
            already_erased=result.already_erased,
            audit_entries_kept=tombstone.audit_entries,
            audit_head=tombstone.audit_head,
        )
