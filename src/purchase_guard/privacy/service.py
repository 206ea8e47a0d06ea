"""The data-subject requests behind the HouseholdData API and the CLI: export, erase, verify.

Authorisation is the household administration's (one rule for every entry point): a household
token opens its own household only, the operator token opens all. A refused call changes
nothing and its message names no other household.
"""

from __future__ import annotations

from purchase_guard.audit.chain import ChainReport
from purchase_guard.audit.verify import verify_household_audit
from purchase_guard.clock import Clock
from purchase_guard.errors import InvalidArgument, NotFound
from purchase_guard.household.principals import Principal
from purchase_guard.household.service import HouseholdService
from purchase_guard.ids import validate_id
from purchase_guard.privacy.erase import ErasureResult, erase_household
from purchase_guard.privacy.export import ExportArchive, export_household
from purchase_guard.store.protocol import Store


class PrivacyService:
    def __init__(self, store: Store, households: HouseholdService, clock: Clock) -> None:
        self._store = store
        self._households = households
        self._clock = clock

    def authenticate(self, token: str | None) -> Principal:
        return self._households.authenticate(token)

    def _target(self, principal: Principal, household_id: str) -> str:
        # Authorise before validating: a household token learns nothing about other ids' shape.
        HouseholdService.authorize(principal, household_id)
        return validate_id(household_id, "household_id")

    def export(self, principal: Principal, household_id: str) -> ExportArchive:
        hid = self._target(principal, household_id)
        if self._store.get_tombstone(hid) is not None:
            raise NotFound(f"household {hid!r} was erased; nothing is left to export")
        return export_household(self._store, hid, self._clock.now)

    def erase(self, principal: Principal, household_id: str, confirm_household_id: str) -> ErasureResult:
        hid = self._target(principal, household_id)
        if confirm_household_id != hid:
            raise InvalidArgument(
                "erasure cannot be undone: confirm_household_id must repeat household_id exactly"
            )
        return erase_household(self._store, hid, self._clock.now())

    def verify_audit(self, principal: Principal, household_id: str) -> ChainReport:
        """The audit chain check that also works after retention purges and after erasure."""
        hid = self._target(principal, household_id)
        if self._store.get_tombstone(hid) is None:
            self._store.get_household(hid)  # NotFound for an unknown household
        return verify_household_audit(self._store, hid)
