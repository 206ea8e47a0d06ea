"""Retention: decisions and audit entries older than `retention_days` are purged on a schedule,
and the audit chain stays verifiable from the anchor the purge leaves behind.

A purge removes the oldest *prefix* of a household's chain and stores the hash of the last
removed entry as that household's anchor (`AuditAnchor`): the first kept entry's prev_hash must
equal it, so verification starts there instead of at the genesis. An erased household's
tombstone holds the hash its chain ended at, which also catches entries cut off the end.

Retention never goes below `MIN_RETENTION_DAYS`: spend within the last 30 days feeds the
monthly caps, and purging it would let a household spend past a cap (fail open).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from purchase_guard.logs import get_logger
from purchase_guard.store.protocol import Store

log = get_logger("purchase_guard.privacy.retention")

# Monthly caps look back 30 days; one more day covers a window that starts mid-day.
MIN_RETENTION_DAYS = 31


@dataclass(frozen=True, slots=True)
class RetentionReport:
    cutoff: datetime
    households: int
    decisions: int
    spend: int
    audit_entries: int
    challenges: int
    notifications: int


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    if retention_days < MIN_RETENTION_DAYS:
        raise ValueError(
            f"retention must be at least {MIN_RETENTION_DAYS} days (spend feeds 30-day caps),"
            f" got {retention_days}"
        )
    return now - timedelta(days=retention_days)


def purge_expired(store: Store, now: datetime, retention_days: int) -> RetentionReport:
    """Purges, household by household, everything older than `retention_days` before `now`.
    Each household is purged under its decision lock, in one transaction of its own."""
    cutoff = cutoff_for(now, retention_days)
    totals = [0, 0, 0, 0, 0]
    households = store.retention_candidates(cutoff)
    for household_id in households:
        with store.household_lock(household_id):
            result = store.purge_household(household_id, cutoff)
        for i, n in enumerate(
            (result.decisions, result.spend, result.audit_entries, result.challenges, result.notifications)
        ):
            totals[i] += n
    report = RetentionReport(cutoff, len(households), *totals)
    log.info(
        "retention_purged",
        households=report.households,
        decisions=report.decisions,
        audit_entries=report.audit_entries,
        spend=report.spend,
        challenges=report.challenges,
        notifications=report.notifications,
    )
    return report


class RetentionWorker:
    """Runs `purge_expired` every `interval_seconds` on a daemon thread until `stop()`.

    A failing run is logged and retried at the next interval; it never stops the worker, and
    never touches deciding (a purge only removes rows older than any limit looks at)."""

    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime],
        retention_days: int,
        interval_seconds: float = 3600.0,
    ) -> None:
        cutoff_for(now(), retention_days)  # reject a bad retention at start, not at the first run
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self._store = store
        self._now = now
        self._days = retention_days
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> RetentionReport | None:
        try:
            return purge_expired(self._store, self._now(), self._days)
        except Exception as exc:  # a purge failure must not end the worker
            log.exception("retention_failed", error=type(exc).__name__)
            return None
        finally:
            self.runs += 1

    def _run(self) -> None:
        # First run right away: a server that restarts often would otherwise never purge.
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self._interval)
