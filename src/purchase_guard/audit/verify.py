"""Verifying a household's stored chain, and every chain at start, through a small read protocol.

The audit package sits below the store: it says what it needs to read (`AuditSource`) and
the store implements that, so neither imports the other's internals.
"""

from __future__ import annotations

from typing import Protocol

from purchase_guard.audit.chain import AuditAnchor, AuditEntry, ChainReport, verify_anchored_chain


class ErasureMark(Protocol):
    @property
    def audit_head(self) -> str: ...


class AuditSource(Protocol):
    """What verification reads; every store implements it."""

    def audit_entries(self, household_id: str) -> list[AuditEntry]: ...

    def audit_anchor(self, household_id: str) -> AuditAnchor | None: ...

    def get_tombstone(self, household_id: str) -> ErasureMark | None: ...

    def list_household_ids(self) -> list[str]:
        """Every household with data or a chain, erased ones included."""
        ...


def verify_household_audit(source: AuditSource, household_id: str) -> ChainReport:
    """Verifies a household's chain from its retention anchor; for an erased household also that
    it still ends where it ended at erasure. Needs no key: the hashes cover the sealed bodies."""
    tombstone = source.get_tombstone(household_id)
    return verify_anchored_chain(
        source.audit_entries(household_id),
        source.audit_anchor(household_id),
        None if tombstone is None else tombstone.audit_head,
    )
