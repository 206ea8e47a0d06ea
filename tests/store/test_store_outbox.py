"""The outbox contract, on SQLite and PostgreSQL: events queued with their decision (or not at all),
ids monotonic per household, claims that one worker wins and that run out, dead letters, replay,
and no row of one household reachable through another."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from purchase_guard.domain import Event, EventKind
from purchase_guard.errors import AlreadyExists, InvalidArgument
from purchase_guard.events.derive import decision_events
from purchase_guard.store.protocol import AudioPrint, Store, Webhook

if TYPE_CHECKING:
    from conftest import Make

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)  # same instant as conftest.T0


def _queue(store: Store, make: Make, hid: str, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        d = make.decision(hid)
        store.record_decision(d, "dg-" + d.decision_id, "{}", events=decision_events(d, make.order()))
        ids.append(d.decision_id)
    return ids


def _hook(store: Store, hid: str) -> None:
    store.set_webhook(Webhook(hid, f"https://hooks.example.com/{hid}", T0, "whsec_" + hid))


def test_events_are_queued_with_the_decision_and_numbered_per_household(store: Store, make: Make) -> None:
    """Each decision's event is in the outbox with an id one past the last of its household; the
    other household's ids start on their own; a cursor returns only later events."""
    a, b = make.household(store).household_id, make.household(store).household_id
    decisions = _queue(store, make, a, 3)
    _queue(store, make, b, 1)
    got = store.events_after(a, 0, 100)
    assert [e.event_id for e in got] == [1, 2, 3]
    assert [e.decision_id for e in got] == decisions
    assert {e.kind for e in got} == {EventKind.PURCHASE_ALLOWED}
    assert [e.event_id for e in store.events_after(b, 0, 100)] == [1]
    assert [e.event_id for e in store.events_after(a, 2, 100)] == [3]
    assert all(e.household_id == b for e in store.events_after(b, 0, 100))


def test_a_rolled_back_decision_queues_no_event(store: Store, make: Make) -> None:
    """A request id reused for another request is refused: nothing of it (event included) is written."""
    hid = make.household(store).household_id
    first = make.decision(hid, request_id="same")
    store.record_decision(first, "dg-1", "{}", events=decision_events(first, make.order()))
    other = make.decision(hid, request_id="same")
    with pytest.raises(AlreadyExists):
        store.record_decision(other, "dg-2", "{}", events=decision_events(other, make.order()))
    assert [e.decision_id for e in store.events_after(hid, 0, 100)] == [first.decision_id]


def test_a_write_refused_at_the_end_of_the_transaction_keeps_nothing(store: Store, make: Make) -> None:
    """A decision whose own insert is refused by the database (its decision id is taken), found
    only when its writes are sent (PostgreSQL sends them with the COMMIT): AlreadyExists, none of
    its spend, audit entry, audio print or events is kept, and the next decision records and
    numbers its events as if the refused one never came."""
    hid = make.household(store).household_id
    first = make.decision(hid)
    store.record_decision(first, "dg-1", "{}", events=decision_events(first, make.order()))
    clash = replace(make.decision(hid), decision_id=first.decision_id)
    print_ = AudioPrint("apr_clash", hid, first.decision_id, "evaluate", T0, b"print")
    with pytest.raises(AlreadyExists):
        store.record_decision(
            clash,
            "dg-2",
            "{}",
            spend=make.spend(clash),
            audio_print=print_,
            events=(Event(hid, EventKind.PURCHASE_ALLOWED, T0, "clash:1"),),
        )
    assert [e.seq for e in store.audit_entries(hid)] == [1]
    assert store.spend_since(hid, None, T0 - timedelta(days=1)) == 0
    assert store.recent_audio_print_refs(hid, T0 - timedelta(days=1)) == []
    nxt = make.decision(hid)
    store.record_decision(nxt, "dg-3", "{}", events=decision_events(nxt, make.order()))
    events = store.events_after(hid, 0, 100)
    assert [e.decision_id for e in events] == [first.decision_id, nxt.decision_id]
    assert [e.event_id for e in events] == [1, 2]


def test_events_of_another_household_are_refused(store: Store, make: Make) -> None:
    """An event naming another household cannot ride on a decision."""
    a, b = make.household(store).household_id, make.household(store).household_id
    d = make.decision(a)
    foreign = Event(b, EventKind.PURCHASE_ALLOWED, T0, "x:1")
    with pytest.raises(InvalidArgument):
        store.record_decision(d, "dg", "{}", events=(foreign,))


def test_the_same_fact_is_queued_once(store: Store, make: Make) -> None:
    """add_events skips an event whose dedup is queued already."""
    hid = make.household(store).household_id
    event = Event(hid, EventKind.APPROVAL_EXPIRED, T0, "approval_expired:chl_1", challenge_id="chl_1")
    assert [e.event_id for e in store.add_events(hid, (event,))] == [1]
    assert store.add_events(hid, (event,)) == ()
    assert len(store.events_after(hid, 0, 10)) == 1


def test_only_hooked_households_deliver_and_a_claim_is_won_once(store: Store, make: Make) -> None:
    """Events of a household with a webhook are claimable (once until the claim runs out, then again);
    those of a household without one never are."""
    hooked, plain = make.household(store).household_id, make.household(store).household_id
    _hook(store, hooked)
    _queue(store, make, hooked, 2)
    _queue(store, make, plain, 2)
    now = T0 + timedelta(days=1)
    claimed = store.claim_deliveries(now, now + timedelta(seconds=30), 10)
    assert sorted(d.event.event_id for d in claimed) == [1, 2]
    assert {d.event.household_id for d in claimed} == {hooked}
    assert claimed[0].webhook.secret == "whsec_" + hooked
    assert store.claim_deliveries(now + timedelta(seconds=10), now + timedelta(seconds=40), 10) == []
    again = store.claim_deliveries(now + timedelta(seconds=31), now + timedelta(seconds=60), 10)
    assert sorted(d.event.event_id for d in again) == [1, 2]  # the claim ran out: at least once


def test_done_retry_dead_and_replay(store: Store, make: Make) -> None:
    """Delivered rows are never claimed again; a retry is due at its time; a dead letter is listed with
    its status and, replayed, is due at once with fresh attempts."""
    hid = make.household(store).household_id
    _hook(store, hid)
    _queue(store, make, hid, 3)
    now = T0 + timedelta(days=1)
    lease = now + timedelta(seconds=30)
    store.claim_deliveries(now, lease, 10)
    store.delivery_done(hid, 1, attempts=1, status=200, at=now)
    store.delivery_retry(hid, 2, attempts=1, status=503, error="HTTP 503", at=now + timedelta(seconds=5))
    store.delivery_dead(hid, 3, attempts=1, status=410, error="HTTP 410", at=now)
    assert store.claim_deliveries(now + timedelta(seconds=1), lease, 10) == []
    due = store.claim_deliveries(now + timedelta(seconds=6), lease, 10)
    assert [(d.event.event_id, d.attempts) for d in due] == [(2, 1)]
    (dead,) = store.list_dead_letters(hid)
    assert (dead.event.event_id, dead.last_status, dead.last_error, dead.attempts) == (3, 410, "HTTP 410", 1)
    assert store.replay_dead_letters(hid, ()) == 1
    assert store.list_dead_letters(hid) == []
    replayed = store.claim_deliveries(now + timedelta(seconds=7), lease + timedelta(seconds=10), 10)
    assert [(d.event.event_id, d.attempts) for d in replayed] == [(3, 0)]


def test_removing_the_webhook_stops_deliveries_and_another_household_cannot_replay(
    store: Store, make: Make
) -> None:
    """After RemoveWebhook nothing is claimable; a replay for another household touches nothing."""
    a, b = make.household(store).household_id, make.household(store).household_id
    _hook(store, a)
    _hook(store, b)
    _queue(store, make, a, 1)
    now = T0 + timedelta(days=1)
    store.claim_deliveries(now, now + timedelta(seconds=30), 10)
    store.delivery_dead(a, 1, attempts=1, status=404, error="HTTP 404", at=now)
    assert store.replay_dead_letters(b, (1,)) == 0
    assert len(store.list_dead_letters(a)) == 1
    assert store.list_dead_letters(b) == []
    _queue(store, make, a, 1)
    assert store.remove_webhook(a)
    assert store.get_webhook(a) is None
    assert store.claim_deliveries(now + timedelta(minutes=5), now + timedelta(minutes=6), 10) == []


def test_retention_purges_old_events_but_not_pending_deliveries(store: Store, make: Make) -> None:
    """Events older than the cutoff go with the household's other old rows, except a delivery still
    pending (it is delivered first); ids stay monotonic after the purge."""
    hooked, plain = make.household(store).household_id, make.household(store).household_id
    _queue(store, make, plain, 2)
    _hook(store, hooked)
    _queue(store, make, hooked, 1)
    cutoff = T0 + timedelta(days=1)
    store.purge_household(plain, cutoff)
    store.purge_household(hooked, cutoff)
    assert store.events_after(plain, 0, 10) == []
    assert [e.event_id for e in store.events_after(hooked, 0, 10)] == [1]
    _queue(store, make, plain, 1)
    assert [e.event_id for e in store.events_after(plain, 0, 10)] == [3]
