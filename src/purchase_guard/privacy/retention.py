"""Retention: what is kept, for how long, and the worker that enforces it (docs/privacy.md).

Data minimisation runs on every guard, whatever `retention_days` says (`minimise`): a child's
voiceprint and digit templates expire (COPPA treats voiceprints as personal information and bars
keeping them indefinitely), with a reminder to the parents `REMIND_BEFORE` ahead and a notice
when they go; audio prints live only as long as the replay check looks back, and digests of
issued random digits only as long as the no-repeat rule does.

Decisions and audit entries older than `retention_days` are purged on a schedule when it is set,
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

from purchase_guard.clock import IdSource
from purchase_guard.domain import Notification
from purchase_guard.errors import NotFound
from purchase_guard.logs import get_logger
from purchase_guard.store.protocol import Store

log = get_logger("purchase_guard.privacy.retention")

# Monthly caps look back 30 days; one more day covers a window that starts mid-day.
MIN_RETENTION_DAYS = 31


# Parents hear about a child's voiceprint expiring this long before it does.
REMIND_BEFORE = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class MinimisePlan:
    """How long each kind of short-lived data is kept (from Settings, validated at start)."""

    audio_prints: timedelta  # replay_window_days
    issued_digits: timedelta  # random_digits_unique_days
    remind_before: timedelta = REMIND_BEFORE


@dataclass(frozen=True, slots=True)
class MinimiseReport:
    reminded: int
    voiceprints_deleted: int
    audio_prints: int
    issued_digits: int


def _member_name(store: Store, household_id: str, member_id: str) -> str:
    try:
        return store.get_member(household_id, member_id).display_name
    except NotFound:
        return "A child"


def minimise(store: Store, now: datetime, ids: IdSource, plan: MinimisePlan) -> MinimiseReport:
    """Reminds parents of children's voiceprints about to expire, deletes the expired ones (and
    says so), and drops audio prints and issued-digit digests older than their checks look."""
    reminded = 0
    for household_id, member_id, expires_at in store.voiceprints_expiring(
        now + plan.remind_before, notified=False
    ):
        name = _member_name(store, household_id, member_id)
        notice = Notification(
            notification_id=ids.new_id("ntf"),
            household_id=household_id,
            kind="voiceprint_expiring",
            message=(
                f"{name}'s voiceprint will be deleted on {expires_at:%Y-%m-%d}. Renew it to keep it "
                "(console, or `purchase-guard admin renew-voiceprint`); otherwise they enroll again."
            ),
            challenge_id=None,
            created_at=now,
        )
        if store.mark_expiry_notified(household_id, member_id, notice):
            reminded += 1
    deleted = store.delete_expired_voiceprints(now)
    for household_id, member_id in deleted:
        name = _member_name(store, household_id, member_id)
        store.add_notification(
            Notification(
                notification_id=ids.new_id("ntf"),
                household_id=household_id,
                kind="voiceprint_expired",
                message=(
                    f"{name}'s voiceprint and digit takes were deleted: they expired. "
                    "Enroll again to use them."
                ),
                challenge_id=None,
                created_at=now,
            )
        )
    prints, digits = store.purge_audio_prints(now - plan.audio_prints, now - plan.issued_digits)
    # A challenge nobody answered leaves its adaptation sample behind: gone once it has expired.
    samples = store.purge_adaptation_samples(now)
    report = MinimiseReport(reminded, len(deleted), prints, digits)
    log.info(
        "data_minimised",
        reminded=report.reminded,
        voiceprints_deleted=report.voiceprints_deleted,
        audio_prints=report.audio_prints,
        issued_digits=report.issued_digits,
        adaptation_samples=samples,
    )
    return report


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
    """Runs `minimise` and, when `retention_days` is set, `purge_expired` every
    `interval_seconds` on a daemon thread until `stop()`.

    A failing run is logged and retried at the next interval; it never stops the worker, and
    never touches deciding (a purge only removes rows older than any limit looks at)."""

    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime],
        retention_days: int,
        interval_seconds: float = 3600.0,
        *,
        ids: IdSource,
        plan: MinimisePlan,
    ) -> None:
        if retention_days:
            cutoff_for(now(), retention_days)  # reject a bad retention at start, not at the first run
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self._store = store
        self._now = now
        self._ids = ids
        self._plan = plan
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
        """One pass; returns the decisions purge's report (None when off or failed)."""
        try:
            now = self._now()
            try:
                minimise(self._store, now, self._ids, self._plan)
            except Exception as exc:  # logged; the purge below still runs, and the next pass retries
                log.exception("minimise_failed", error=type(exc).__name__)
            if not self._days:
                return None
            return purge_expired(self._store, now, self._days)
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
