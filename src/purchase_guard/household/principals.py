"""Who is calling: the principal an authenticated credential stands for, and what it may name.

    OPERATOR   the operator token (settings): every household; creates households, backends
    HOUSEHOLD  a household's admin token (from CreateHousehold): that household, for setup
    PARENT     a parent's own credential: that household, acting as that parent (approvals)
    DEVICE     a device credential: Evaluate and Confirm for that household's one device
    BACKEND    the backend token (settings), an issued backend credential, or an mTLS client
               certificate: Evaluate and Confirm for every household (a voice platform)

`caller_id` is stable per credential: rate limits, request ids, the audit record and the fleet
window key on it, never on ids a request merely claims.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PrincipalKind(enum.Enum):
    OPERATOR = "operator"
    HOUSEHOLD = "household"
    PARENT = "parent"
    DEVICE = "device"
    BACKEND = "backend"


# Who may call the decision RPCs, and who the admin ones.
DECIDERS = frozenset({PrincipalKind.BACKEND, PrincipalKind.DEVICE})
ADMINS = frozenset({PrincipalKind.OPERATOR, PrincipalKind.HOUSEHOLD, PrincipalKind.PARENT})


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    caller_id: str
    household_id: str | None = None  # None: every household (operator, backend)
    member_id: str | None = None  # the parent a PARENT credential acts as
    device_id: str | None = None  # the device a DEVICE credential speaks for

    @property
    def is_operator(self) -> bool:
        return self.kind is PrincipalKind.OPERATOR

    def may_name(self, household_id: str) -> bool:
        """Whether a request from this principal may name `household_id` at all."""
        return self.household_id is None or self.household_id == household_id


OPERATOR = Principal(PrincipalKind.OPERATOR, "operator")
