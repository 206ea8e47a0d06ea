"""Events pushed to parents, end to end: a real guard, real decisions, WatchEvents over gRPC and
webhooks posted to real HTTP receivers."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from console.console_world import OPERATOR, Family, make_family, order, start_guard, voice
from events.conftest import FAST
from events.receiver import HOLD, Receiver
from support.rpc import BACKEND

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer
from purchase_guard.clock import FrozenClock
from purchase_guard.console.guard_api import refusal_from_rpc
from purchase_guard.events.signing import ForgedDelivery, verify_delivery

Make = Callable[..., Receiver]
CLOCK: list[FrozenClock] = []


@pytest.fixture(autouse=True)
def _guard_clock(guard: RunningServer) -> Iterator[None]:
    assert isinstance(guard.app.clock, FrozenClock)
    CLOCK[:] = [guard.app.clock]
    yield
    CLOCK.clear()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Polls until `predicate` holds; False if it never did within the (generous) bound."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def events(family: Family, after: int = 0) -> list[dict[str, Any]]:
    return list(family.guard.watch_events(family.household_id, after))


def kinds(family: Family, after: int = 0) -> list[str]:
    return [e["kind"] for e in events(family, after)]


_requests = itertools.count(1)


def ask(
    family: Family, who: str, amount: int, title: str = "Batteries", category: str = "household"
) -> dict[str, Any]:
    """A real Evaluate, then the guard's clock moves on a day: the synthetic voices sound alike to the
    replay check (one recording per voice), which looks back `replay_window_days` (1 here)."""
    reply = family.guard.evaluate(
        f"ev-{next(_requests)}", family.household_id, "kitchen", order(amount, title, category), voice(who, 7)
    )
    CLOCK[0].advance(timedelta(days=1, minutes=1))
    return reply


def adult_buys(family: Family, amount: int = 1000) -> dict[str, Any]:
    reply = ask(family, "low", amount)
    assert reply["outcome"] == "ALLOW", reply
    return reply


def hook(family: Family, receiver: Receiver) -> str:
    secret: str = family.guard.set_webhook(family.household_id, receiver.url)["secret"]
    return secret


# ------------------------------------------------------------------ the stream
def test_watch_events_resumes_after_the_cursor(family: Family) -> None:
    """Two purchases give two events with increasing ids; asking after the first id returns only the
    second; the events name the decision and carry the order, but no audio, PIN or embedding."""
    first = adult_buys(family)
    second = adult_buys(family, 1200)
    got = events(family)
    assert [e["kind"] for e in got] == ["EVENT_PURCHASE_ALLOWED", "EVENT_PURCHASE_ALLOWED"]
    ids = [int(e["event_id"]) for e in got]
    assert ids[0] < ids[1]
    assert [e["decision_id"] for e in got] == [first["decision_id"], second["decision_id"]]
    assert got[1]["order"]["total"]["minor_units"] == "1200"
    assert set(got[0]) <= {
        "event_id", "household_id", "kind", "occurred_at", "decision_id", "challenge_id", "member_id",
        "device_id", "outcome", "reasons", "order", "message",
    }  # fmt: skip
    assert [int(e["event_id"]) for e in events(family, ids[0])] == [ids[1]]
    assert events(family, ids[1]) == []


def test_a_following_stream_gets_live_events(family: Family) -> None:
    """A stream opened with follow=True first sends the backlog, then an event decided while it is
    open, without the client asking again."""
    adult_buys(family)
    seen: list[dict[str, Any]] = []
    stream = family.guard._admin.WatchEvents(
        __import__("purchase_guard._gen.purchaseguard.v1.admin_pb2", fromlist=["x"]).WatchEventsRequest(
            household_id=family.household_id, after_event_id=0, follow=True
        ),
        metadata=family.guard._meta(),
        timeout=30,
    )

    def read() -> None:
        for event in stream:
            seen.append({"id": event.event_id, "decision": event.decision_id})
            if len(seen) == 2:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert wait_for(lambda: len(seen) == 1)
    live = adult_buys(family, 900)
    assert wait_for(lambda: len(seen) == 2)
    stream.cancel()
    assert seen[1]["decision"] == live["decision_id"]
    assert seen[0]["id"] < seen[1]["id"]


def test_approval_events_follow_the_approval(family: Family, guard: RunningServer) -> None:
    """A child's dollhouse asks a parent (approval requested), the parent approves (approved), the
    device's Confirm buys it (purchase allowed); a second request left unanswered past its expiry is
    announced as expired, once."""
    reply = family.guard.evaluate(
        "dollhouse-1", family.household_id, "kitchen", order(17000, "Dollhouse", "toys"), voice("high", 7)
    )
    assert reply["outcome"] == "CHALLENGE", reply
    challenge = reply["challenge"]["challenge_id"]
    parent = family.guard.with_token(family.parent_token)
    parent.resolve_approval(family.household_id, challenge, "", True)
    done = family.confirm(challenge, 17000, "Dollhouse", "toys")
    assert done["outcome"] == "ALLOW", done
    assert kinds(family) == ["EVENT_APPROVAL_REQUESTED", "EVENT_APPROVAL_APPROVED", "EVENT_PURCHASE_ALLOWED"]
    requested = events(family)[0]
    assert requested["challenge_id"] == challenge
    assert requested["member_id"] == family.child_id

    CLOCK[0].advance(timedelta(days=1, minutes=1))  # past the replay window of the first recording
    second = ask(family, "high", 16000, "Dollhouse", "toys")  # the clock moves a day on after it
    assert second["outcome"] == "CHALLENGE", second
    assert wait_for(lambda: kinds(family)[-1] == "EVENT_APPROVAL_EXPIRED")
    expired = events(family)[-1]
    assert expired["challenge_id"] == second["challenge"]["challenge_id"]
    time.sleep(1.5)  # another sweep or two: the expiry is announced once
    assert kinds(family).count("EVENT_APPROVAL_EXPIRED") == 1


def test_households_never_see_each_others_events(
    operator: GuardClient, family: Family, receiver: Make
) -> None:
    """Two households with their own receivers: each stream and each receiver gets only its own
    household's events, and a household's token cannot open the other's stream."""
    other = make_family(operator, "The Joneses")
    mine, theirs = receiver(), receiver()
    hook(family, mine)
    hook(other, theirs)
    adult_buys(family)
    adult_buys(other)
    adult_buys(other, 1100)
    assert wait_for(lambda: len(mine.received) == 1 and len(theirs.received) == 2)
    assert {r.event["household_id"] for r in mine.received} == {family.household_id}
    assert {r.event["household_id"] for r in theirs.received} == {other.household_id}
    assert {e["household_id"] for e in events(family)} == {family.household_id}
    with pytest.raises(grpc.RpcError) as info:
        list(family.guard.watch_events(other.household_id))
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


# ------------------------------------------------------------------ webhooks
def test_a_delivery_is_signed_and_a_forgery_or_replay_fails(family: Family, receiver: Make) -> None:
    """The receiver's delivery verifies with the secret SetWebhook returned; the same body with one byte
    changed, another secret, or an old timestamp does not."""
    r = receiver()
    secret = hook(family, r)
    adult_buys(family)
    assert wait_for(lambda: len(r.received) == 1)
    got = r.received[0]
    event = verify_delivery(secret, got.headers, got.body)
    assert event["kind"] == "purchase_allowed"
    assert event["household_id"] == family.household_id
    with pytest.raises(ForgedDelivery):
        verify_delivery(secret, got.headers, got.body.replace(b"1000", b"9000"))
    with pytest.raises(ForgedDelivery):
        verify_delivery("whsec_other", got.headers, got.body)
    with pytest.raises(ForgedDelivery):
        verify_delivery(secret, got.headers, got.body, now_s=time.time() + 3600)
    assert "secret" not in family.guard.get_webhook(family.household_id)["webhook"]


def test_a_5xx_is_retried_until_it_is_taken(family: Family, receiver: Make) -> None:
    """503, 500, then 200: three deliveries of the same event id, then none (it was taken)."""
    r = receiver(503, 500)
    hook(family, r)
    adult_buys(family)
    assert wait_for(lambda: len(r.received) == 3)
    time.sleep(0.5)
    assert len(set(r.ids())) == 1
    assert len(r.ids()) == 3
    assert family.guard.dead_letters(family.household_id).get("dead_letters", []) == []


def test_a_4xx_goes_to_dead_letters_and_replay_delivers_it(family: Family, receiver: Make) -> None:
    """410 from the receiver: no retry, the event is a dead letter with the status; replaying it
    delivers the same event id again, and the dead letters are empty after."""
    r = receiver(410)
    hook(family, r)
    adult_buys(family)
    assert wait_for(lambda: bool(family.guard.dead_letters(family.household_id).get("dead_letters")))
    dead = family.guard.dead_letters(family.household_id)["dead_letters"]
    assert len(dead) == 1
    assert dead[0]["last_status"] == 410
    assert dead[0]["attempts"] == 1
    event_id = int(dead[0]["event"]["event_id"])
    assert r.ids() == [event_id]
    assert family.guard.replay_dead_letters(family.household_id)["replayed"] == 1
    assert wait_for(lambda: r.ids() == [event_id, event_id])
    assert wait_for(lambda: not family.guard.dead_letters(family.household_id).get("dead_letters"))


def test_a_receiver_that_keeps_failing_ends_in_dead_letters(family: Family, receiver: Make) -> None:
    """Four 503s with at most four attempts: the event becomes a dead letter saying it gave up."""
    r = receiver(503, 503, 503, 503)
    hook(family, r)
    adult_buys(family)
    assert wait_for(lambda: bool(family.guard.dead_letters(family.household_id).get("dead_letters")))
    dead = family.guard.dead_letters(family.household_id)["dead_letters"][0]
    assert dead["attempts"] == 4
    assert "gave up" in dead["last_error"]


def test_a_webhook_url_that_is_not_https_is_refused(family: Family) -> None:
    """http:// to a public host is INVALID_ARGUMENT naming the url field; https:// and a loopback
    http:// receiver are accepted."""
    with pytest.raises(grpc.RpcError) as info:
        family.guard.set_webhook(family.household_id, "http://hooks.example.com/guard")
    refusal = refusal_from_rpc(info.value)
    assert refusal.code == "INVALID_ARGUMENT"
    assert [v.field for v in refusal.violations] == ["url"]
    with pytest.raises(grpc.RpcError):
        family.guard.set_webhook(family.household_id, "ftp://hooks.example.com/guard")
    assert family.guard.set_webhook(family.household_id, "https://hooks.example.com/guard")["secret"]
    assert family.guard.set_webhook(family.household_id, "http://127.0.0.1:9/hook")["secret"]
    assert family.guard.get_webhook(family.household_id)["webhook"]["url"] == "http://127.0.0.1:9/hook"


def test_a_slow_receiver_never_slows_a_decision(family: Family, receiver: Make) -> None:
    """The receiver holds the first delivery open; while it is held, three more purchases are
    decided and answered, and their events are queued; once released, all four are delivered."""
    r = receiver(HOLD)
    hook(family, r)
    adult_buys(family)
    assert wait_for(r.holding.is_set)
    for amount in (1100, 1200, 1300):
        adult_buys(family, amount)
        assert r.holding.is_set()  # the first delivery is still held open while this decision came back
    assert len(events(family)) == 4
    r.release()
    assert wait_for(lambda: len(set(r.ids())) == 4)


def test_open_streams_are_bounded_and_end_by_themselves(tmp_path: Path) -> None:
    """With one stream allowed, a second following stream is RESOURCE_EXHAUSTED while the first is open;
    a stream ends by itself after events_stream_max_seconds, and then a new one is accepted."""
    folder = tmp_path / "bounded"
    folder.mkdir(mode=0o700)
    running = start_guard(folder, events_max_streams=1, events_stream_max_seconds=2.0, **FAST)
    client = GuardClient(f"127.0.0.1:{running.port}", OPERATOR, timeout=20, backend_token=BACKEND)
    try:
        hid = client.create_household("Streams", "America/Los_Angeles", "USD")["household"]["household_id"]
        first = client.watch_events(hid, 0, follow=True, timeout=30)
        ended: list[bool] = []
        reader = threading.Thread(target=lambda: ended.append(list(first) == []), daemon=True)
        reader.start()
        time.sleep(0.5)  # the first stream is open and waiting for events
        with pytest.raises(grpc.RpcError) as info:
            list(client.watch_events(hid, 0, follow=True, timeout=10))
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        reader.join(10)
        assert ended == [True]  # it ended on its own (no events), well before its 30 s deadline
        assert list(client.watch_events(hid, 0)) == []
    finally:
        client.close()
        running.stop(grace=0)


def test_a_refused_stream_carries_its_field_violation(family: Family) -> None:
    """A negative cursor is INVALID_ARGUMENT from the stream itself, with a BadRequest naming
    after_event_id (the error mapping covers streams as well as unary calls)."""
    with pytest.raises(grpc.RpcError) as info:
        list(family.guard.watch_events(family.household_id, -1))
    refusal = refusal_from_rpc(info.value)
    assert refusal.code == "INVALID_ARGUMENT"
    assert [v.field for v in refusal.violations] == ["after_event_id"]
