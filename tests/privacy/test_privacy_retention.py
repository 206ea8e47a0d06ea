"""Retention: old decisions and audit entries are purged on a schedule; the chain stays verifiable."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from privacy.privacy_world import NOW, OPERATOR, World, make_family, order, utterance

from purchase_guard.audit.chain import verify_chain
from purchase_guard.clock import RandomIds
from purchase_guard.domain import Outcome
from purchase_guard.pipeline.guard import EvaluateInput
from purchase_guard.privacy.retention import (
    MIN_RETENTION_DAYS,
    MinimisePlan,
    RetentionWorker,
    minimise,
    purge_expired,
)
from purchase_guard.sealing import KeyRing
from purchase_guard.store.sqlite import SqliteStore

PLAN = MinimisePlan(audio_prints=timedelta(days=30), issued_digits=timedelta(days=90))


def test_purge_expired_removes_what_is_older_than_the_retention(world: World) -> None:
    """After 40 days with a 31-day retention, the first family's decisions and audit entries are gone,
    a newer decision is kept, and VerifyAudit (anchored) still says ok."""
    fam = make_family(world, "Aging Family", "Agin")
    world.clock.advance(timedelta(days=40))
    fresh = world.app.guard.evaluate(
        EvaluateInput("Agin-r9", fam.household_id, "kitchen", order(500), utterance("low"))
    )
    assert fresh.outcome is Outcome.ALLOW
    report = purge_expired(world.store, world.clock.now(), MIN_RETENTION_DAYS)
    assert (report.households, report.decisions, report.audit_entries) == (
        1,
        len(fam.decision_ids),
        len(fam.decision_ids),
    )
    me = world.app.households.authenticate(fam.token)
    assert [d.decision_id for d in world.app.households.list_decisions(me, fam.household_id, 50)] == [
        fresh.decision_id
    ]
    entries = world.store.audit_entries(fam.household_id)
    assert [e.decision_id for e in entries] == [fresh.decision_id]
    assert not verify_chain(entries).ok  # the plain check cannot know where the chain now starts
    report_ok = world.privacy.verify_audit(world.app.households.authenticate(OPERATOR), fam.household_id)
    assert (report_ok.ok, report_ok.entries) == (True, 1)


def test_retention_below_the_spend_window_is_refused(world: World) -> None:
    """A retention shorter than 31 days is refused before anything is purged (30-day caps need the spend)."""
    make_family(world, "Short Family", "Shor")
    world.clock.advance(timedelta(days=40))
    with pytest.raises(ValueError, match="at least 31 days"):
        purge_expired(world.store, world.clock.now(), 30)
    with pytest.raises(ValueError, match="at least 31 days"):
        RetentionWorker(world.store, world.clock.now, 7, ids=RandomIds(), plan=PLAN)
    assert world.store.retention_candidates(world.clock.now()) != []


def test_retention_also_ages_out_an_erased_households_sealed_entries(world: World) -> None:
    """An erased household's kept audit entries are purged too; its chain then verifies against the
    tombstone's head through the anchor."""
    fam = make_family(world, "Gone Family", "Gone")
    op = world.app.households.authenticate(OPERATOR)
    world.privacy.erase(op, fam.household_id, fam.household_id)
    world.clock.advance(timedelta(days=60))
    purge_expired(world.store, world.clock.now(), 45)
    assert world.store.audit_entries(fam.household_id) == []
    report = world.privacy.verify_audit(op, fam.household_id)
    assert (report.ok, report.entries) == (True, 0)


class _FailingOnce(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, sealer=KeyRing.in_memory())
        self.calls = 0
        self.second_run = threading.Event()

    def retention_candidates(self, cutoff: datetime) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise OSError("disk hiccup")
        self.second_run.set()
        return super().retention_candidates(cutoff)


def test_the_worker_survives_a_failed_run_and_runs_again(tmp_path: Path) -> None:
    """A run that raises is logged and the worker keeps its schedule: the next run happens."""
    store = _FailingOnce(tmp_path / "guard.db")
    worker = RetentionWorker(store, lambda: NOW, 31, interval_seconds=0.01, ids=RandomIds(), plan=PLAN)
    worker.start()
    try:
        assert store.second_run.wait(10)
    finally:
        worker.stop()
    assert store.calls >= 2
    assert worker.runs >= 2


def test_the_worker_purges_on_its_first_run(tmp_path: Path) -> None:
    """run_once purges with the configured retention and reports what it removed."""
    store = SqliteStore(tmp_path / "guard.db", sealer=KeyRing.in_memory())
    worker = RetentionWorker(store, lambda: NOW, 31, ids=RandomIds(), plan=PLAN)
    report = worker.run_once()
    assert report is not None
    assert report.cutoff == NOW - timedelta(days=31)
    assert report.households == 0


def _kinds(world: World, household_id: str) -> list[str]:
    return [n.kind for n in world.store.list_notifications(household_id)]


def test_a_childs_voiceprint_is_reminded_once_then_deleted_with_a_notice(world: World) -> None:
    """A child's voiceprint (kept 365 days) brings one reminder to the parents 30 days before it
    expires, however often minimisation runs, and is deleted once past it, with a notice; the
    parent's voiceprint, which does not expire, stays."""
    fam = make_family(world, "Kept Family", "Kept")
    ids = RandomIds()
    assert minimise(world.store, NOW, ids, PLAN).reminded == 0
    near = NOW + timedelta(days=340)
    assert minimise(world.store, near, ids, PLAN).reminded == 1
    assert minimise(world.store, near, ids, PLAN).reminded == 0
    assert _kinds(world, fam.household_id).count("voiceprint_expiring") == 1
    reminder = next(
        n for n in world.store.list_notifications(fam.household_id) if n.kind == "voiceprint_expiring"
    )
    assert "Kept Tim" in reminder.message
    gone = minimise(world.store, NOW + timedelta(days=366), ids, PLAN)
    assert gone.voiceprints_deleted == 1
    assert [vp.member_id for vp in world.store.list_voiceprints(fam.household_id)] == [fam.adult_id]
    assert "voiceprint_expired" in _kinds(world, fam.household_id)


def test_renewing_a_childs_voiceprint_keeps_it_and_reminds_again_next_time(world: World) -> None:
    """A parent's renewal moves the expiry a full period on from now and clears the reminder, so
    the next expiry is reminded again; nothing is deleted at the old date."""
    fam = make_family(world, "Renew Family", "Renw")
    ids = RandomIds()
    minimise(world.store, NOW + timedelta(days=340), ids, PLAN)
    world.clock.advance(timedelta(days=340))
    svc = world.app.households
    svc.renew_voiceprint(svc.authenticate(fam.token), fam.household_id, fam.child_id)
    assert minimise(world.store, NOW + timedelta(days=366), ids, PLAN).voiceprints_deleted == 0
    assert minimise(world.store, NOW + timedelta(days=340 + 340), ids, PLAN).reminded == 1
    assert {vp.member_id for vp in world.store.list_voiceprints(fam.household_id)} == {
        fam.adult_id,
        fam.child_id,
    }


def test_audio_prints_live_only_as_long_as_the_replay_check_looks_back(world: World) -> None:
    """The prints of a household's audio are dropped once older than the replay window, and not
    before; the issued-digit digests follow their own (longer) window."""
    fam = make_family(world, "Print Family", "Prnt")
    ids = RandomIds()
    kept = world.store.recent_audio_prints(fam.household_id, NOW - timedelta(days=1))
    assert kept
    assert minimise(world.store, NOW + timedelta(days=29), ids, PLAN).audio_prints == 0
    assert minimise(world.store, NOW + timedelta(days=31), ids, PLAN).audio_prints == len(kept)
    assert world.store.recent_audio_prints(fam.household_id, NOW - timedelta(days=1)) == []


def test_the_worker_minimises_even_when_decisions_are_kept_forever(world: World) -> None:
    """With retention_days 0 (decisions kept), a worker pass still deletes an expired child's
    voiceprint, and reports no decisions purge."""
    fam = make_family(world, "Forever Family", "Forv")
    later = NOW + timedelta(days=400)
    worker = RetentionWorker(world.store, lambda: later, 0, ids=RandomIds(), plan=PLAN)
    assert worker.run_once() is None
    assert [vp.member_id for vp in world.store.list_voiceprints(fam.household_id)] == [fam.adult_id]
    assert len(
        world.app.households.list_decisions(
            world.app.households.authenticate(fam.token), fam.household_id, 50
        )
    ) == len(fam.decision_ids)
