"""Erasure (GDPR Art. 17): delete a household's data and destroy its data key.

What happens, in order:
1. Under the household's decision lock (no Evaluate or Confirm of that household is halfway):
   in one transaction, every row of the household is deleted (members, voiceprints, policies,
   PIN, decisions, spend, challenges, notifications, the household and with it its token) and
   a tombstone is written; the audit entries stay, sealed, so the chain still verifies.
2. The household's data key is destroyed. From then on the kept audit entries, and every
   sealed value in any copy of the live database taken earlier, can no longer be opened.

Idempotent: erasing again finds the tombstone, destroys the key again (a no-op unless step 2
failed the first time) and reports that the household was already erased.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from purchase_guard.logs import get_logger
from purchase_guard.store.protocol import Store, Tombstone

log = get_logger("purchase_guard.privacy.erase")


@dataclass(frozen=True, slots=True)
class ErasureResult:
    tombstone: Tombstone
    already_erased: bool


def erase_household(store: Store, household_id: str, now: datetime) -> ErasureResult:
    """Raises NotFound for a household that neither exists nor was erased."""
    with store.household_lock(household_id):
        tombstone, erased_now = store.erase_household(household_id, now)
    log.info(
        "household_erased",
        household_id=household_id,
        already_erased=not erased_now,
        audit_entries_kept=tombstone.audit_entries,
    )
    return ErasureResult(tombstone, already_erased=not erased_now)
