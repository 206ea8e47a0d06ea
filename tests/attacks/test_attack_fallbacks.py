"""Issue 14, attack 8: fallbacks that failed open (found by code review against 773a185), each
shown failing closed by injecting the fault into a real guard served over real gRPC."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from attacks.attack_world import (
    NOW,
    World,
    codes,
    fake_settings,
    make_family,
    order,
    rpc_error,
    start_world,
    world_at,
)
from support.takes import new_take

from purchase_guard.app import build_app
from purchase_guard.clock import FrozenClock
from purchase_guard.config import ConfigError
from purchase_guard.domain import BroadcastCheck, ChallengeStatus, ReasonCode, forbid
from purchase_guard.sealing import resolve_master_keys
from purchase_guard.store.sqlite import SqliteStore
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.encoder import Embedding, FakeEncoder


class FaultyStore(SqliteStore):
    """The production SQLite store, with faults armed on demand."""

    policy_fails = False
    approval_write_fails = False

    def get_policy(self, household_id: str) -> Any:
        if self.policy_fails:
            raise OSError("disk gone")
        return super().get_policy(household_id)

    def deciding_facts(self, household_id: str, *args: Any) -> Any:
        # Evaluate reads the policy with spend, PIN and templates in one statement.
        if self.policy_fails:
            raise OSError("disk gone")
        return super().deciding_facts(household_id, *args)

    def _compare_and_set(self, conn: Any, *args: Any) -> bool:  # type: ignore[override]
        # Inside record_decision's transaction, after the decision row, its audit entry and the
        # challenge's new state are written: a failure here must take all of them back.
        done = super()._compare_and_set(conn, *args)
        if self.approval_write_fails:
            raise OSError("disk full")
        return done


def faulty_world(folder: Path, **kw: Any) -> tuple[World, FaultyStore]:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = fake_settings(folder)
    store = FaultyStore(
        settings.sqlite_path, master_keys=resolve_master_keys("", Path(settings.master_key_file))
    )
    return start_world(folder, settings=settings, store=store, **kw), store


class ArmedBroadcast:
    """A broadcast defence that reports a match (and an earlier decision in its cluster) when armed."""

    def __init__(self) -> None:
        self.cluster: tuple[tuple[str, str], ...] = ()
        self.armed = False

    def check(
        self,
        household_id: str,
        device_id: str,
        decision_id: str,
        pcm: Pcm,
        now: datetime,
        *,
        caller_id: str,
        fp: object = None,
    ) -> BroadcastCheck:
        if not self.armed:
            return BroadcastCheck()
        reason = forbid(ReasonCode.BROADCAST_MATCH, "The same audio reached other homes.", "broadcast.fleet")
        return BroadcastCheck(reasons=(reason,), cluster_decisions=self.cluster)


class NamelessEncoder:
    """A working encoder (the fake one's maths) under a name no child detector is packaged for."""

    name = "no-detector/1"
    dim = FakeEncoder.dim

    def __init__(self) -> None:
        self._inner = FakeEncoder()

    def embed(self, samples_16k: Any) -> Embedding:
        return self._inner.embed(samples_16k)

    def embed_batch(self, batch: Sequence[Any]) -> list[Embedding]:
        return [self.embed(s) for s in batch]


def test_an_encoder_without_a_child_detector_does_not_start(tmp_path: Path) -> None:
    """Before: a running encoder without a child detector only logged a warning, and CHILD_VOICE
    could never fire (a child who verifies as a parent would buy). Now such a guard does not start:
    build_app (what `serve` runs before listening) raises ConfigError naming the setting."""
    folder = tmp_path / "guard"
    folder.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="CHILD_DETECTOR_FILE"):
        build_app(fake_settings(folder), encoder=NamelessEncoder(), clock=FrozenClock(NOW))


def test_a_failed_policy_read_keeps_the_broadcast_findings_and_the_late_catch(tmp_path: Path) -> None:
    """Before: a failed policy read returned before the late catch and dropped the broadcast reasons
    from the record. Now, with the policy read failing while the broadcast check matches, the
    answer is DENY with GUARD_ERROR and BROADCAST_MATCH, the stored record keeps BROADCAST_MATCH,
    and the earlier challenge in the broadcast's cluster is cancelled."""
    broadcast = ArmedBroadcast()
    world, store = faulty_world(tmp_path / "guard", broadcast=broadcast)
    try:
        family = make_family(world.operator)
        earlier = family.ask("high", 1500, "toys")
        assert earlier["challenge"]["challenge_id"] in family.pending()
        broadcast.cluster = ((family.household_id, earlier["decision_id"]),)
        broadcast.armed = store.policy_fails = True
        reply = family.ask("low", 1500)
        assert reply["outcome"] == "DENY"
        assert {"GUARD_ERROR", "BROADCAST_MATCH"} <= codes(reply)
        store.policy_fails = False
        record = next(
            d
            for d in family.me.list_decisions(family.household_id)["decisions"]
            if d["decision_id"] == reply["decision_id"]
        )
        assert {"GUARD_ERROR", "BROADCAST_MATCH"} <= codes(record)
        assert earlier["challenge"]["challenge_id"] not in family.pending()
        cancelled = store.get_challenge(family.household_id, earlier["challenge"]["challenge_id"])
        assert cancelled.status is ChallengeStatus.CANCELLED
    finally:
        world.stop()


def test_resolve_approval_updates_the_challenge_and_records_the_decision_together(tmp_path: Path) -> None:
    """Before: ResolveApproval updated the challenge and recorded its decision in two transactions,
    so a failure between them left an approved challenge without its decision. Now, with the write
    failing inside the transaction (after the challenge's new state was written), the call fails,
    the challenge is still pending, no decision or audit entry was added, and the chain verifies;
    once the fault is gone the same approval goes through, once."""
    world, store = faulty_world(tmp_path / "guard")
    try:
        family = make_family(world.operator)
        challenge = family.ask("high", 1500, "toys")["challenge"]["challenge_id"]
        ann = world.operator.with_token(family.ann_token)
        before = family.me.list_decisions(family.household_id)["decisions"]
        store.approval_write_fails = True
        error = rpc_error(ann.resolve_approval, family.household_id, challenge, "", True)
        assert error.code() is grpc.StatusCode.INTERNAL
        store.approval_write_fails = False
        assert store.get_challenge(family.household_id, challenge).status is ChallengeStatus.PENDING
        assert challenge in family.pending()
        assert family.me.list_decisions(family.household_id)["decisions"] == before
        audit = family.me.verify_audit(family.household_id)
        assert audit.get("ok") is True, audit
        assert ann.resolve_approval(family.household_id, challenge, "", True)["state"] == "approved"
        again = rpc_error(ann.resolve_approval, family.household_id, challenge, "", True)
        assert again.code() is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        world.stop()


def test_a_household_whose_audit_chain_is_broken_at_start_is_not_served(tmp_path: Path) -> None:
    """Before: a household whose audit chain failed verification at start was logged and then
    served. Now, after one audit entry of household A is edited in the file while the guard is
    down, the restarted guard answers A's Evaluate and Confirm with FAILED_PRECONDITION (nothing
    recorded) while household B is decided as before."""
    folder = tmp_path / "guard"
    with world_at(folder) as w:
        a, b = make_family(w.operator, "A"), make_family(w.operator, "B")
        pending = a.ask("high", 1500, "toys")["challenge"]["challenge_id"]
        assert a.ask("low", 1500)["outcome"] == "ALLOW"
    with contextlib.closing(sqlite3.connect(folder / "guard.db")) as conn, conn:
        edited = conn.execute(
            "UPDATE audit SET body = body || ' ' WHERE household_id = ? AND seq = 1", (a.household_id,)
        ).rowcount
    assert edited == 1
    with world_at(folder) as w:
        assert w.app.quarantined == frozenset({a.household_id})
        a.me, b.me = w.operator.with_token(a.token), w.operator.with_token(b.token)
        for call, args in (
            (a.me.evaluate, ("q-1", a.household_id, "kitchen", order(1500), new_take("low"))),
            (a.me.confirm, ("q-2", a.household_id, pending, order(1500, "toys"), "", None)),
        ):
            error = rpc_error(call, *args)
            assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "audit" in (error.details() or "")
        assert len(w.app.store.list_decisions(a.household_id, 50)) == 2
        assert b.ask("low", 1500)["outcome"] == "ALLOW"
