"""Verify every household's audit chain when the server starts.

A server that was killed (SIGKILL, power loss) or whose database was restored or edited
while it was down must not go back to deciding on top of a broken record. At start the guard
walks each household's chain; the report lists every household whose chain is broken and
where, and `ok` is False if any is. What to do with a broken chain (refuse to start, or
serve and alert) is the caller's choice; the report is never silent.

The ids come from the caller, or from the store (`AuditSource.list_household_ids`), which lists
erased households too: their sealed chains must still verify.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from purchase_guard.audit.chain import ChainReport
from purchase_guard.audit.verify import AuditSource, verify_household_audit
from purchase_guard.logs import get_logger

log = get_logger("purchase_guard.audit.startup")


@dataclass(frozen=True, slots=True)
class BrokenChain:
    household_id: str
    first_bad_seq: int | None
    problem: str


@dataclass(frozen=True, slots=True)
class StartupAuditReport:
    households: int
    entries: int
    broken: tuple[BrokenChain, ...]

    @property
    def ok(self) -> bool:
        return not self.broken


def verify_all_chains(store: AuditSource, household_ids: Iterable[str] | None = None) -> StartupAuditReport:
    """Check the audit chain of every household (all of `household_ids`, else all the store has).

    A household whose entries cannot even be read counts as broken: an unverifiable chain is
    not a verified one.
    """
    if household_ids is None:
        household_ids = store.list_household_ids()
    households = 0
    entries = 0
    broken: list[BrokenChain] = []
    for hh in household_ids:
        households += 1
        try:
            report: ChainReport = verify_household_audit(store, hh)
        except Exception as exc:
            broken.append(BrokenChain(hh, None, f"entries could not be read: {type(exc).__name__}"))
            continue
        entries += report.entries
        if not report.ok:
            broken.append(BrokenChain(hh, report.first_bad_seq, report.problem))
    result = StartupAuditReport(households, entries, tuple(broken))
    if result.ok:
        log.info("audit_chains_verified", households=households, entries=entries)
    else:
        for b in broken:
            log.error(
                "audit_chain_broken",
                household_id=b.household_id,
                first_bad_seq=b.first_bad_seq,
                problem=b.problem,
            )
    return result
