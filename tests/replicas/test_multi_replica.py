"""Replicas behind a load balancer: what one guard process decides, every other one honours.

Two real server processes (real GE2E encoder, real FSDD voices) on one PostgreSQL schema.
Requests for one household are spread over both, concurrently where it matters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from support.audio import fsdd_digit_takes, fsdd_wav
from support.orders import codes, order

if TYPE_CHECKING:
    from conftest import Replica

pytestmark = pytest.mark.data

PIN = "7391"
WRONG_PIN = "9157"
# Takes of george saying 7305 that verify with a clear margin over the threshold.
GEORGE_TAKES = (10, 11, 12, 13, 16, 17, 18, 19, 20, 21)


def at_once(*calls: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs the calls concurrently (released together by a barrier); re-raises the first error."""
    barrier = threading.Barrier(len(calls))
    results: list[dict[str, Any] | BaseException | None] = [None] * len(calls)

    def run(i: int, fn: Callable[[], dict[str, Any]]) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done: list[dict[str, Any]] = []
    for result in results:
        assert isinstance(result, dict), f"a concurrent call did not answer: {result!r}"
        done.append(result)
    return done


def family(replicas: list[Replica], data: Path, name: str) -> dict[str, str]:
    """A household created on replica 0: george (adult, parent) enrolled (voice and digits), PIN set."""
    operator = replicas[0].client
    created = operator.create_household(name, "UTC", "USD")
    hid = created["household"]["household_id"]
    parent = operator.with_token(created["admin_token"])
    george = parent.add_member(hid, "George", "ADULT", True)["member"]["member_id"]
    takes = [fsdd_wav(data, "george", d, t) for d, t in (("3817", 0), ("5092", 1), ("6641", 2))]
    assert parent.enroll(hid, george, takes)["member"]["voice_enrolled"]
    parent.enroll_digits(hid, george, fsdd_digit_takes(data, "george"))
    parent.set_pin(hid, PIN)
    return {"hid": hid, "george": george}


def test_challenge_issued_on_one_replica_is_confirmed_on_another(
    replicas: list[Replica], shared_dsn: str, data_dir: Path
) -> None:
    """A PIN challenge issued by replica 0 is passed on replica 1; a retry of that Confirm on
    replica 0 returns the same decision, a second use is CHALLENGE_CLOSED, and the one audit
    chain, kept in PostgreSQL, verifies from either replica."""
    a, b = replicas[0].client, replicas[1].client
    hid = family(replicas, data_dir, "Cross-replica")["hid"]
    issued = a.evaluate("ev-1", hid, "kitchen", order(15000), fsdd_wav(data_dir, "george", "7305", 10))
    assert issued["outcome"] == "CHALLENGE", issued
    challenge_id = issued["challenge"]["challenge_id"]
    retried = b.evaluate("ev-1", hid, "kitchen", order(15000), fsdd_wav(data_dir, "george", "7305", 10))
    assert retried == issued

    answer = fsdd_wav(data_dir, "george", PIN, 20)
    passed = b.confirm("cf-1", hid, challenge_id, order(15000), PIN, answer)
    assert passed["outcome"] == "ALLOW", passed
    assert "CHALLENGE_PASSED" in codes(passed)
    assert a.confirm("cf-1", hid, challenge_id, order(15000), PIN, answer) == passed
    again = a.confirm("cf-2", hid, challenge_id, order(15000), PIN, fsdd_wav(data_dir, "george", PIN, 25))
    assert "CHALLENGE_CLOSED" in codes(again)

    for client in (a, b):
        report = client.verify_audit(hid)
        assert report["ok"], report
        assert int(report["entries"]) == 3
    with psycopg.connect(shared_dsn) as conn:
        stored = conn.execute("SELECT count(*) FROM audit WHERE household_id = %s", (hid,)).fetchone()
    assert stored == (3,)


def test_concurrent_wrong_pins_over_replicas_lock_after_exactly_five(
    replicas: list[Replica], data_dir: Path
) -> None:
    """Eight wrong PINs sent at once, alternating replicas: exactly five answers use an attempt
    (reporting 4, 3, 2, 1 attempts left and then the lock), none is lost or counted twice, the
    challenge ends LOCKED with one notification, and even the right PIN is refused afterwards."""
    hid = family(replicas, data_dir, "Wrong PINs")["hid"]
    first = replicas[0].client
    issued = first.evaluate("ev-pin", hid, "kitchen", order(15000), fsdd_wav(data_dir, "george", "7305", 11))
    assert issued["outcome"] == "CHALLENGE", issued
    assert issued["challenge"]["attempts_left"] == 5
    challenge_id = issued["challenge"]["challenge_id"]

    def wrong(i: int) -> dict[str, Any]:
        client = replicas[i % len(replicas)].client
        audio = fsdd_wav(data_dir, "george", WRONG_PIN, 10 + i)
        return client.confirm(f"wrong-{i}", hid, challenge_id, order(15000), WRONG_PIN, audio)

    answers = at_once(*[lambda i=i: wrong(i) for i in range(8)])
    # An answer that lost the compare-and-set three times is refused without using an attempt
    # (CHALLENGE_CLOSED); keep answering, one at a time, until the challenge locks.
    extra = 8
    while not any("CHALLENGE_LOCKED" in codes(r) for r in answers) and extra < 20:
        answers.append(wrong(extra))
        extra += 1

    used = [r for r in answers if "PIN_INCORRECT" in codes(r)]
    left = sorted(int(r.get("challenge", {}).get("attempts_left", 0)) for r in used)
    assert left == [0, 1, 2, 3, 4], answers
    locking = [r for r in used if "CHALLENGE_LOCKED" in codes(r)]
    assert len(locking) == 1
    assert locking[0]["outcome"] == "DENY"
    for r in answers:
        if r not in used:
            assert r["outcome"] == "DENY", r
            assert codes(r) & {"CHALLENGE_LOCKED", "CHALLENGE_CLOSED"}, r

    right = replicas[1].client.confirm(
        "right-after-lock", hid, challenge_id, order(15000), PIN, fsdd_wav(data_dir, "george", PIN, 30)
    )
    assert right["outcome"] == "DENY"
    assert "CHALLENGE_LOCKED" in codes(right)
    notes = first.list_notifications(hid)["notifications"]
    assert [n["kind"] for n in notes if n.get("challenge_id") == challenge_id] == ["challenge_locked"]


def test_daily_cap_holds_for_concurrent_orders_over_replicas(replicas: list[Replica], data_dir: Path) -> None:
    """Household daily cap 100.00 and ten 20.00 orders by the enrolled adult sent at once over both
    replicas: exactly five are allowed, the rest are held back by the cap, and the allowed total is
    exactly the cap."""
    hid = family(replicas, data_dir, "Cap")["hid"]
    operator = replicas[0].client
    policy = operator.get_policy(hid)["policy"]
    policy.pop("revision", None)
    policy["household_daily_cap_minor"] = "10000"
    operator.set_policy(hid, policy)

    def buy(i: int) -> dict[str, Any]:
        client = replicas[i % len(replicas)].client
        audio = fsdd_wav(data_dir, "george", "7305", GEORGE_TAKES[i])
        return client.evaluate(f"buy-{i}", hid, "kitchen", order(2000), audio)

    answers = at_once(*[lambda i=i: buy(i) for i in range(10)])
    allowed = [r for r in answers if r["outcome"] == "ALLOW"]
    assert len(allowed) == 5, [(r["outcome"], sorted(codes(r))) for r in answers]
    for r in answers:
        assert "SPEAKER_VERIFIED" in codes(r), r  # the cap, not the voice, decided the rest
        if r["outcome"] != "ALLOW":
            assert "DAILY_LIMIT_REACHED" in codes(r), r
    decisions = replicas[1].client.list_decisions(hid, 50)["decisions"]
    allowed_total = sum(int(d["total"]["minor_units"]) for d in decisions if d["outcome"] == "ALLOW")
    assert allowed_total == 10000
    assert replicas[1].client.verify_audit(hid)["ok"]


def test_a_replay_of_audio_another_replica_heard_is_refused_after_this_one_cached_the_window(
    replicas: list[Replica], data_dir: Path
) -> None:
    """Each replica keeps the household's earlier prints opened between checks. That must never
    hide a print another replica wrote since: replica 1 checks a request (so it holds the
    household's window), replica 0 then decides a new recording, and that recording sent again
    to replica 1 is REPLAYED_AUDIO."""
    a, b = replicas[0].client, replicas[1].client
    hid = family(replicas, data_dir, "Replay across replicas")["hid"]
    take = {t: fsdd_wav(data_dir, "george", "7305", t) for t in (16, 17, 18)}
    assert a.evaluate("rp-1", hid, "kitchen", order(1500), take[16])["outcome"] == "ALLOW"
    assert b.evaluate("rp-2", hid, "kitchen", order(1500), take[17])["outcome"] == "ALLOW"
    assert a.evaluate("rp-3", hid, "kitchen", order(1500), take[18])["outcome"] == "ALLOW"
    again = b.evaluate("rp-4", hid, "kitchen", order(1500), take[18])
    assert again["outcome"] == "DENY", again
    assert "REPLAYED_AUDIO" in codes(again)
    earlier = a.evaluate("rp-5", hid, "kitchen", order(1500), take[17])
    assert "REPLAYED_AUDIO" in codes(earlier)
