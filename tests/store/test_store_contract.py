"""The Store contract: behaviour every backend must show. Runs once per backend (conftest)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from purchase_guard.audit.chain import GENESIS, verify_anchored_chain, verify_chain
from purchase_guard.domain import (
    Challenge,
    ChallengeInfo,
    ChallengeMethod,
    ChallengeStatus,
    Credential,
    CredentialKind,
    Household,
    Member,
    Outcome,
    PinState,
    Policy,
    PurchaseMode,
    Role,
    RoleRule,
    Voiceprint,
)
from purchase_guard.errors import Aborted, AlreadyExists, InvalidArgument, NotFound, Unavailable
from purchase_guard.store.protocol import Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Backend, Make

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)  # same instant as conftest.T0


def _race(*calls: Callable[[], object]) -> list[object]:
    """Runs the callables at once (released by a barrier) and returns results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int, fn: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


# --- households --------------------------------------------------------------------------


def test_household_round_trips(store: Store, make: Make) -> None:
    """A created household reads back field for field."""
    household = make.household(store, "hh_one")
    assert store.get_household("hh_one") == household


def test_unknown_household_is_not_found_naming_the_kind(store: Store) -> None:
    """Reading an unknown household raises NotFound whose message names the household id."""
    with pytest.raises(NotFound, match="household 'hh_x' not found"):
        store.get_household("hh_x")


def test_household_times_normalise_to_utc(store: Store) -> None:
    """A created_at in another zone reads back as the same instant, in UTC."""
    at = T0.astimezone(timezone(timedelta(hours=2)))
    store.create_household(Household("hh_tz", "H", "Europe/Berlin", "EUR", True, at), "tok")
    got = store.get_household("hh_tz")
    assert got.created_at == T0
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.retain_audio is True


def test_duplicate_household_id_or_token_is_rejected(store: Store, make: Make) -> None:
    """A second household with the same id, or with the same admin token hash, is AlreadyExists."""
    make.household(store, "hh_a")
    with pytest.raises(AlreadyExists):
        store.create_household(Household("hh_a", "X", "UTC", "EUR", False, T0), "other-hash")
    with pytest.raises(AlreadyExists):
        store.create_household(Household("hh_b", "X", "UTC", "EUR", False, T0), "hash-of-hh_a")


def test_token_hash_resolves_to_its_household(store: Store, make: Make) -> None:
    """household_for_token_hash finds the household of a known hash and None for an unknown one."""
    make.household(store, "hh_a")
    assert store.household_for_token_hash("hash-of-hh_a") == "hh_a"
    assert store.household_for_token_hash("nope") is None


# --- members and voiceprints ---------------------------------------------------------------


def test_members_round_trip_in_creation_order(store: Store, make: Make) -> None:
    """Members read back equal to what was added, listed in creation order."""
    hh = make.household(store)
    first = make.member(store, hh.household_id, "Ada")
    second = Member("mem_z", hh.household_id, "Bo", Role.CHILD, False, T0 + timedelta(seconds=1))
    store.add_member(second)
    assert store.get_member(hh.household_id, first.member_id) == first
    assert store.list_members(hh.household_id) == [first, second]


def test_member_errors(store: Store, make: Make) -> None:
    """Unknown member or household: NotFound naming it; duplicate member id: AlreadyExists."""
    hh = make.household(store)
    member = make.member(store, hh.household_id)
    with pytest.raises(NotFound, match="member 'mem_x' not found"):
        store.get_member(hh.household_id, "mem_x")
    with pytest.raises(NotFound, match="household 'hh_x' not found"):
        store.add_member(replace(member, member_id="mem_new", household_id="hh_x"))
    with pytest.raises(AlreadyExists):
        store.add_member(member)
    with pytest.raises(NotFound):
        store.remove_member(hh.household_id, "mem_x")


def test_voiceprint_round_trips_as_float32_and_replaces(store: Store, make: Make) -> None:
    """A voiceprint reads back with float32 values; a second put for the member replaces the first."""
    hh = make.household(store)
    member = make.member(store, hh.household_id)
    vp = Voiceprint(member.member_id, hh.household_id, "ge2e-v1", (0.5, -0.25, 1.0), 4, T0)
    store.put_voiceprint(vp)
    assert store.list_voiceprints(hh.household_id) == [vp]
    newer = replace(vp, encoder="ecapa-v1", embedding=(0.1, 0.2), n_utterances=6)
    store.put_voiceprint(newer)
    (got,) = store.list_voiceprints(hh.household_id)
    assert got.encoder == "ecapa-v1"
    assert got.n_utterances == 6
    assert got.embedding == pytest.approx((0.1, 0.2), abs=1e-7)
    assert got.embedding != (0.1, 0.2)  # float32 storage, not float64


def test_voiceprint_needs_a_member_of_that_household(store: Store, make: Make) -> None:
    """A voiceprint for a member of another household is NotFound, and nothing is stored."""
    a = make.household(store)
    b = make.household(store)
    member_a = make.member(store, a.household_id)
    with pytest.raises(NotFound):
        store.put_voiceprint(Voiceprint(member_a.member_id, b.household_id, "ge2e-v1", (1.0,), 1, T0))
    assert store.list_voiceprints(b.household_id) == []


def test_removing_a_member_removes_their_voiceprint(store: Store, make: Make) -> None:
    """remove_member deletes the member and their voiceprint; other members keep theirs."""
    hh = make.household(store)
    gone = make.member(store, hh.household_id)
    kept = make.member(store, hh.household_id)
    for m in (gone, kept):
        store.put_voiceprint(Voiceprint(m.member_id, hh.household_id, "ge2e-v1", (1.0, 0.0), 3, T0))
    store.remove_member(hh.household_id, gone.member_id)
    with pytest.raises(NotFound):
        store.get_member(hh.household_id, gone.member_id)
    assert [v.member_id for v in store.list_voiceprints(hh.household_id)] == [kept.member_id]


# --- policy and PIN ------------------------------------------------------------------------


def _policy() -> Policy:
    rule = RoleRule(Role.CHILD, PurchaseMode.WITH_CHALLENGE, blocked_categories=frozenset({"games"}))
    return Policy(rules=(rule,), household_daily_cap_minor=10_000, revision=99)


def test_policy_revisions_count_up(store: Store, make: Make) -> None:
    """Each put_policy stores the next revision (1, 2, ...) and get_policy returns the latest."""
    hh = make.household(store)
    assert store.get_policy(hh.household_id) is None
    first = store.put_policy(hh.household_id, _policy(), T0)
    second = store.put_policy(hh.household_id, replace(_policy(), household_daily_cap_minor=5), T0)
    assert (first.revision, second.revision) == (1, 2)
    assert store.get_policy(hh.household_id) == second


def test_policy_for_unknown_household_is_not_found(store: Store) -> None:
    """put_policy for an unknown household raises NotFound."""
    with pytest.raises(NotFound):
        store.put_policy("hh_x", _policy(), T0)


def test_pin_round_trips_and_is_replaced(store: Store, make: Make) -> None:
    """put_pin stores the PIN state; a later put replaces it; no PIN reads as None."""
    hh = make.household(store)
    assert store.get_pin(hh.household_id) is None
    state = PinState(hh.household_id, "argon2id$...", T0)
    store.put_pin(state)
    assert store.get_pin(hh.household_id) == state
    paused = replace(state, failures=6, next_try_at=T0 + timedelta(minutes=1), peppered=False)
    store.put_pin(paused)
    assert store.get_pin(hh.household_id) == paused
    disabled = replace(paused, failures=50, next_try_at=None, disabled_at=T0)
    store.put_pin(disabled)
    assert store.get_pin(hh.household_id) == disabled


# --- decisions -----------------------------------------------------------------------------


def test_decision_is_stored_with_its_digest(store: Store, make: Make) -> None:
    """record_decision stores the decision; get_decision returns it with its request digest."""
    hh = make.household(store)
    info = ChallengeInfo("chl_1", ChallengeMethod.RANDOM_DIGITS, "Say 4 8 2 1", "4821", T0, 3)
    decision = make.decision(hh.household_id, request_id="r1", outcome=Outcome.CHALLENGE, challenge=info)
    assert store.record_decision(decision, "dg1", "{}") == decision
    stored = store.get_decision(hh.household_id, "evaluate", "r1")
    assert stored is not None
    assert stored.decision == decision
    assert stored.request_digest == "dg1"
    assert store.get_decision(hh.household_id, "confirm", "r1") is None


def test_record_decision_is_idempotent(store: Store, make: Make) -> None:
    """A retry with the same request id writes nothing and returns the first decision."""
    hh = make.household(store)
    first = make.decision(hh.household_id, request_id="r1")
    retry = make.decision(hh.household_id, request_id="r1")
    store.record_decision(first, "dg", "{}", spend=make.spend(first))
    assert store.record_decision(retry, "dg", "{}", spend=make.spend(retry)) == first
    assert store.list_decisions(hh.household_id, 10) == [first]
    assert len(store.audit_entries(hh.household_id)) == 1
    assert store.spend_since(hh.household_id, None, T0) == first.total.minor_units


def test_request_id_reused_for_another_request_is_rejected(store: Store, make: Make) -> None:
    """The same request id with a different request digest raises AlreadyExists and writes nothing."""
    hh = make.household(store)
    store.record_decision(make.decision(hh.household_id, request_id="r1"), "dg-a", "{}")
    with pytest.raises(AlreadyExists):
        store.record_decision(make.decision(hh.household_id, request_id="r1"), "dg-b", "{}")
    assert len(store.audit_entries(hh.household_id)) == 1


def test_request_ids_are_scoped_by_kind_and_household(store: Store, make: Make) -> None:
    """The same request id under another kind, or in another household, is a separate decision."""
    a = make.household(store)
    b = make.household(store)
    store.record_decision(make.decision(a.household_id, request_id="r1"), "dg", "{}")
    store.record_decision(make.decision(a.household_id, request_id="r1", kind="confirm"), "dg", "{}")
    store.record_decision(make.decision(b.household_id, request_id="r1"), "dg", "{}")
    assert len(store.list_decisions(a.household_id, 10)) == 2
    assert len(store.list_decisions(b.household_id, 10)) == 1


def test_decision_for_unknown_household_is_not_found(store: Store, make: Make) -> None:
    """record_decision for an unknown household raises NotFound."""
    with pytest.raises(NotFound, match="household 'hh_x' not found"):
        store.record_decision(make.decision("hh_x"), "dg", "{}")


def test_mismatched_spend_is_refused(store: Store, make: Make) -> None:
    """A spend entry for another decision is InvalidArgument and nothing is written."""
    hh = make.household(store)
    decision = make.decision(hh.household_id)
    other = make.decision(hh.household_id)
    with pytest.raises(InvalidArgument):
        store.record_decision(decision, "dg", "{}", spend=make.spend(other))
    assert store.list_decisions(hh.household_id, 10) == []


def test_list_decisions_is_newest_first_and_limited(store: Store, make: Make) -> None:
    """list_decisions returns the most recent first, at most `limit` of them."""
    hh = make.household(store)
    decisions = [make.decision(hh.household_id, at=T0 + timedelta(seconds=i)) for i in range(4)]
    for d in decisions:
        store.record_decision(d, "dg", "{}")
    assert store.list_decisions(hh.household_id, 2) == [decisions[3], decisions[2]]
    assert store.list_decisions(hh.household_id, 0) == []


def test_racing_retries_store_exactly_one_decision(backend: Backend, make: Make) -> None:
    """Two threads (own connections where the backend has them) racing one request id store one decision."""
    first, second = backend.open(), backend.open()
    hh = make.household(first)
    for _ in range(5):
        request_id = make._id("race")
        a = make.decision(hh.household_id, request_id=request_id)
        b = make.decision(hh.household_id, request_id=request_id)
        results = _race(
            lambda a=a: first.record_decision(a, "dg", "{}", spend=make.spend(a)),
            lambda b=b: second.record_decision(b, "dg", "{}", spend=make.spend(b)),
        )
        assert results[0] == results[1]
        assert results[0] in (a, b)
    assert len(first.list_decisions(hh.household_id, 100)) == 5
    assert verify_chain(first.audit_entries(hh.household_id)).ok
    assert first.spend_since(hh.household_id, None, T0) == 5 * 1999


def test_failed_record_writes_nothing(store: Store, make: Make) -> None:
    """When part of record_decision fails (challenge id of another household), no part is kept."""
    a = make.household(store)
    b = make.household(store)
    decision_a = make.decision(a.household_id)
    challenge_a = make.challenge(a.household_id, decision_a.decision_id)
    store.record_decision(decision_a, "dg", "{}", challenge=challenge_a)
    decision_b = make.decision(b.household_id)
    stolen = replace(challenge_a, household_id=b.household_id, decision_id=decision_b.decision_id)
    with pytest.raises(NotFound):
        store.record_decision(decision_b, "dg", "{}", spend=make.spend(decision_b), challenge=stolen)
    assert store.list_decisions(b.household_id, 10) == []
    assert store.audit_entries(b.household_id) == []
    assert store.spend_since(b.household_id, None, T0) == 0
    assert store.get_challenge(a.household_id, challenge_a.challenge_id) == challenge_a


# --- audit ---------------------------------------------------------------------------------


def test_audit_chain_grows_and_verifies(store: Store, make: Make) -> None:
    """Each decision appends one entry: seq 1, 2, 3 linked by hashes from the genesis; the chain verifies."""
    hh = make.household(store)
    decisions = [make.decision(hh.household_id, at=T0 + timedelta(seconds=i)) for i in range(3)]
    for i, d in enumerate(decisions):
        store.record_decision(d, "dg", f'{{"n":{i}}}')
    entries = store.audit_entries(hh.household_id)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.decision_id for e in entries] == [d.decision_id for d in decisions]
    assert entries[0].prev_hash == GENESIS
    assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
    assert entries[2].at == decisions[2].decided_at
    report = verify_chain(entries)
    assert (report.ok, report.entries, report.first_bad_seq) == (True, 3, None)


def test_each_household_has_its_own_chain(store: Store, make: Make) -> None:
    """Chains are per household: both start at seq 1 from the genesis hash."""
    a = make.household(store)
    b = make.household(store)
    store.record_decision(make.decision(a.household_id), "dg", "{}")
    store.record_decision(make.decision(a.household_id), "dg", "{}")
    store.record_decision(make.decision(b.household_id), "dg", "{}")
    (only_b,) = store.audit_entries(b.household_id)
    assert only_b.seq == 1
    assert only_b.prev_hash == GENESIS
    assert verify_chain(store.audit_entries(a.household_id)).ok


def _three_entries(store: Store, make: Make) -> str:
    hh = make.household(store)
    for i in range(3):
        store.record_decision(make.decision(hh.household_id), "dg", f'{{"n":{i}}}')
    return hh.household_id


def test_edited_audit_body_is_detected(backend: Backend, store: Store, make: Make) -> None:
    """Rewriting the body of entry 2 behind the store's back makes verification fail at seq 2."""
    hid = _three_entries(store, make)
    backend.tamper_audit_body(store, hid, 2, '{"n":"edited"}')
    report = verify_chain(store.audit_entries(hid))
    assert not report.ok
    assert report.first_bad_seq == 2


def test_deleted_audit_entry_is_detected(backend: Backend, store: Store, make: Make) -> None:
    """Deleting entry 2 makes verification fail at the missing seq."""
    hid = _three_entries(store, make)
    backend.tamper_delete_audit(store, hid, 2)
    report = verify_chain(store.audit_entries(hid))
    assert not report.ok
    assert report.first_bad_seq == 2


# --- spend ---------------------------------------------------------------------------------


def test_spend_since_sums_the_window(store: Store, make: Make) -> None:
    """spend_since counts spend at or after `since`, per member or for the whole household."""
    hh = make.household(store)
    ada = make.member(store, hh.household_id)
    bo = make.member(store, hh.household_id)
    for offset, who, amount in [(0, ada, 100), (60, ada, 200), (120, bo, 400), (180, None, 800)]:
        d = make.decision(
            hh.household_id,
            at=T0 + timedelta(minutes=offset),
            amount=amount,
            member_id=None if who is None else who.member_id,
        )
        store.record_decision(d, "dg", "{}", spend=make.spend(d))
    assert store.spend_since(hh.household_id, None, T0) == 1500
    assert store.spend_since(hh.household_id, None, T0 + timedelta(minutes=60)) == 1400  # inclusive
    assert store.spend_since(hh.household_id, None, T0 + timedelta(minutes=61)) == 1200
    assert store.spend_since(hh.household_id, ada.member_id, T0) == 300
    assert store.spend_since(hh.household_id, bo.member_id, T0 + timedelta(minutes=121)) == 0
    assert store.spend_since(hh.household_id, None, T0 + timedelta(days=1)) == 0


def test_deciding_facts_are_the_separate_reads_in_one(store: Store, make: Make) -> None:
    """deciding_facts answers what get_policy, spend_snapshot, get_pin and digit_template_members
    answer: first for a household with none of them, then with a policy (two revisions), a PIN,
    templates for two members and spend; another household's rows never leak in."""
    hh = make.household(store)
    hid = hh.household_id
    day, month = T0 - timedelta(days=1), T0 - timedelta(days=30)
    empty = store.deciding_facts(hid, None, day, month)
    assert empty.policy is None
    assert empty.pin is None
    assert empty.digit_template_members == frozenset()
    assert empty.spend == store.spend_snapshot(hid, None, day, month)
    ada = make.member(store, hid)
    bo = make.member(store, hid)
    store.put_policy(hid, _policy(), T0)
    store.put_policy(hid, replace(_policy(), household_daily_cap_minor=5), T0)
    store.put_pin(PinState(hid, "argon2id$...", T0, failures=2))
    store.put_digit_templates(hid, ada.member_id, "mfcc/1", b"a", T0, None)
    store.put_digit_templates(hid, bo.member_id, "mfcc/1", b"b", T0, None)
    for offset, amount in ((-30, 200), (-5, 800)):
        d = make.decision(hid, at=T0 + timedelta(minutes=offset), amount=amount, member_id=ada.member_id)
        store.record_decision(d, "dg", "{}", spend=make.spend(d, exempt=amount == 800))
    other = make.household(store)
    store.put_pin(PinState(other.household_id, "argon2id$other", T0))
    for member in (ada.member_id, None):
        facts = store.deciding_facts(hid, member, day, month)
        assert facts.policy == store.get_policy(hid)
        assert facts.policy is not None
        assert facts.policy.household_daily_cap_minor == 5
        assert facts.pin == store.get_pin(hid)
        assert facts.pin is not None
        assert facts.pin.failures == 2
        assert (
            facts.digit_template_members == store.digit_template_members(hid) == {ada.member_id, bo.member_id}
        )
        assert facts.spend == store.spend_snapshot(hid, member, day, month)
    assert store.deciding_facts(hid, ada.member_id, day, month).spend.member_daily_minor == 1000
    assert store.deciding_facts(other.household_id, None, day, month).digit_template_members == frozenset()


def test_opening_reads_are_the_separate_reads_in_one(store: Store, make: Make) -> None:
    """opening_reads answers what get_household, get_decision, list_members and list_voiceprints
    answer: for a household with nothing yet, then with members, a voiceprint and a decision
    recorded under a caller's request id (found for that caller only); another household's rows
    never come back, and an unknown household is NotFound."""
    hh = make.household(store)
    hid = hh.household_id
    empty = store.opening_reads(hid, "evaluate", "req-1")
    assert empty.household == store.get_household(hid)
    assert empty.stored is None
    assert empty.members == ()
    assert empty.voiceprints == ()
    ada = make.member(store, hid)
    make.member(store, hid, name="Bo")
    store.put_voiceprint(Voiceprint(ada.member_id, hid, "ge2e-v1", (0.5, -0.25, 1.0), 4, T0))
    d = replace(make.decision(hid, request_id="req-1"), caller_id="cred-1")
    store.record_decision(d, "digest-1", "{}")
    other = make.household(store)
    other_member = make.member(store, other.household_id)
    store.put_voiceprint(Voiceprint(other_member.member_id, other.household_id, "ge2e-v1", (1.0,), 1, T0))
    got = store.opening_reads(hid, "evaluate", "req-1", "cred-1")
    assert got.household == store.get_household(hid)
    assert got.stored == store.get_decision(hid, "evaluate", "req-1", "cred-1")
    assert got.stored is not None
    assert got.stored.request_digest == "digest-1"
    assert got.members == tuple(store.list_members(hid))
    assert got.voiceprints == tuple(store.list_voiceprints(hid))
    assert [vp.member_id for vp in got.voiceprints or ()] == [ada.member_id]
    assert store.opening_reads(hid, "evaluate", "req-1").stored is None  # another caller's id
    assert store.opening_reads(hid, "confirm", "req-1", "cred-1").stored is None
    with pytest.raises(NotFound):
        store.opening_reads("hh_nobody", "evaluate", "req-1")


def test_spend_snapshot_is_the_same_sums_in_one_read(store: Store, make: Make) -> None:
    """spend_snapshot gives exactly what spend_since and exempt_spend_since_last_challenge give, for
    a member, another member, no member, and spend older than the day but inside the month."""
    hh = make.household(store)
    hid = hh.household_id
    ada = make.member(store, hid)
    bo = make.member(store, hid)
    spends = [
        (-40 * 24 * 60, ada, 9),
        (-20 * 24 * 60, ada, 100),
        (-30, ada, 200),
        (-10, bo, 400),
        (-5, None, 800),
    ]
    for offset, who, amount in spends:
        d = make.decision(
            hid,
            at=T0 + timedelta(minutes=offset),
            amount=amount,
            member_id=None if who is None else who.member_id,
        )
        store.record_decision(d, "dg", "{}", spend=make.spend(d, exempt=amount == 800))
    day, month = T0 - timedelta(days=1), T0 - timedelta(days=30)
    for member in (ada.member_id, bo.member_id, None):
        snap = store.spend_snapshot(hid, member, day, month)
        assert snap.member_daily_minor == (store.spend_since(hid, member, day) if member else 0)
        assert snap.member_monthly_minor == (store.spend_since(hid, member, month) if member else 0)
        assert snap.household_daily_minor == store.spend_since(hid, None, day) == 1400
        assert snap.household_monthly_minor == store.spend_since(hid, None, month) == 1500
        assert snap.exempt_since_last_challenge_minor == store.exempt_spend_since_last_challenge(hid) == 800
    assert store.spend_snapshot(hid, ada.member_id, day, month).member_monthly_minor == 300
    other = make.household(store)
    assert store.spend_snapshot(other.household_id, None, day, month).household_monthly_minor == 0


def test_spend_window_compares_instants_across_zones(store: Store, make: Make) -> None:
    """A `since` given in another zone selects by instant, not by wall-clock text."""
    hh = make.household(store)
    d = make.decision(hh.household_id, at=T0)
    store.record_decision(d, "dg", "{}", spend=make.spend(d))
    plus_two = timezone(timedelta(hours=2))
    assert store.spend_since(hh.household_id, None, (T0 - timedelta(seconds=1)).astimezone(plus_two)) == 1999
    assert store.spend_since(hh.household_id, None, (T0 + timedelta(seconds=1)).astimezone(plus_two)) == 0


def _spend(store: Store, make: Make, hid: str, amount: int, *, exempt: bool) -> None:
    d = make.decision(hid, amount=amount)
    store.record_decision(d, "dg", "{}", spend=make.spend(d, exempt=exempt))


def test_exempt_spend_resets_after_a_passed_challenge(store: Store, make: Make) -> None:
    """Exempt spend accumulates; a challenge passed in a recorded decision resets the count."""
    hh = make.household(store)
    hid = hh.household_id
    _spend(store, make, hid, 300, exempt=True)
    _spend(store, make, hid, 5000, exempt=False)
    _spend(store, make, hid, 200, exempt=True)
    assert store.exempt_spend_since_last_challenge(hid) == 500
    evaluate = make.decision(hid, outcome=Outcome.CHALLENGE)
    challenge = make.challenge(hid, evaluate.decision_id)
    store.record_decision(evaluate, "dg", "{}", challenge=challenge)
    assert store.exempt_spend_since_last_challenge(hid) == 500  # pending does not reset
    confirm = make.decision(hid, kind="confirm")
    passed = replace(challenge, status=ChallengeStatus.PASSED, resolved_by="ada")
    store.record_decision(confirm, "dg", "{}", spend=make.spend(confirm), challenge=passed)
    assert store.exempt_spend_since_last_challenge(hid) == 0
    _spend(store, make, hid, 150, exempt=True)
    assert store.exempt_spend_since_last_challenge(hid) == 150


def test_exempt_spend_resets_when_update_challenge_passes_it(store: Store, make: Make) -> None:
    """A challenge moved to PASSED by update_challenge also resets the exempt count."""
    hid = make.household(store).household_id
    evaluate = make.decision(hid, outcome=Outcome.CHALLENGE)
    challenge = make.challenge(hid, evaluate.decision_id)
    store.record_decision(evaluate, "dg", "{}", challenge=challenge)
    _spend(store, make, hid, 400, exempt=True)
    assert store.update_challenge(replace(challenge, status=ChallengeStatus.PASSED), ChallengeStatus.PENDING)
    assert store.exempt_spend_since_last_challenge(hid) == 0
    _spend(store, make, hid, 70, exempt=True)
    assert store.exempt_spend_since_last_challenge(hid) == 70


def test_exempt_spend_is_per_household(store: Store, make: Make) -> None:
    """Another household's exempt spend and passed challenges do not affect this one's count."""
    a = make.household(store).household_id
    b = make.household(store).household_id
    _spend(store, make, a, 300, exempt=True)
    evaluate = make.decision(b, outcome=Outcome.CHALLENGE)
    passed = make.challenge(b, evaluate.decision_id, status=ChallengeStatus.PASSED)
    store.record_decision(evaluate, "dg", "{}", challenge=passed)
    _spend(store, make, b, 20, exempt=True)
    assert store.exempt_spend_since_last_challenge(a) == 300
    assert store.exempt_spend_since_last_challenge(b) == 20


# --- challenges ----------------------------------------------------------------------------


def _pending(store: Store, make: Make, attempts: int = 3) -> tuple[str, Challenge]:
    hid = make.household(store).household_id
    evaluate = make.decision(hid, outcome=Outcome.CHALLENGE)
    challenge = make.challenge(hid, evaluate.decision_id, attempts=attempts)
    store.record_decision(evaluate, "dg", "{}", challenge=challenge)
    return hid, challenge


def test_challenge_round_trips_and_lists_by_status(store: Store, make: Make) -> None:
    """A challenge written with its decision reads back exactly, order included, and lists by status."""
    hid = make.household(store).household_id
    d1 = make.decision(hid, outcome=Outcome.CHALLENGE)
    c1 = make.challenge(hid, d1.decision_id)
    store.record_decision(d1, "dg", "{}", challenge=c1)
    d2 = make.decision(hid, outcome=Outcome.CHALLENGE)
    c2 = make.challenge(hid, d2.decision_id, status=ChallengeStatus.LOCKED, at=T0 + timedelta(seconds=1))
    store.record_decision(d2, "dg", "{}", challenge=c2)
    assert store.get_challenge(hid, c1.challenge_id) == c1
    assert store.list_challenges(hid) == [c1, c2]
    assert store.list_challenges(hid, ChallengeStatus.PENDING) == [c1]
    assert store.list_challenges(hid, ChallengeStatus.PASSED) == []
    with pytest.raises(NotFound, match="challenge 'chl_x' not found"):
        store.get_challenge(hid, "chl_x")


def test_update_challenge_is_compare_and_set_on_status(store: Store, make: Make) -> None:
    """The update writes only while the stored status is the expected one."""
    hid, challenge = _pending(store, make)
    approved = replace(challenge, status=ChallengeStatus.APPROVED, resolved_by="parent")
    assert not store.update_challenge(approved, ChallengeStatus.APPROVED)
    assert store.update_challenge(approved, ChallengeStatus.PENDING)
    assert store.get_challenge(hid, challenge.challenge_id) == approved
    passed = replace(approved, status=ChallengeStatus.PASSED)
    assert not store.update_challenge(passed, ChallengeStatus.PENDING)
    assert store.update_challenge(passed, ChallengeStatus.APPROVED)
    assert store.list_challenges(hid, ChallengeStatus.PASSED) == [passed]


def test_update_challenge_never_loses_an_attempt(store: Store, make: Make) -> None:
    """Two wrong answers read at 3 attempts both write 2: only the first wins, so no attempt is lost."""
    hid, challenge = _pending(store, make, attempts=3)
    wrong = replace(challenge, attempts_left=2)
    assert store.update_challenge(wrong, ChallengeStatus.PENDING)
    assert not store.update_challenge(wrong, ChallengeStatus.PENDING)
    # Re-read at 2, the next wrong answer goes through.
    assert store.update_challenge(replace(challenge, attempts_left=1), ChallengeStatus.PENDING)
    assert store.get_challenge(hid, challenge.challenge_id).attempts_left == 1


def test_update_challenge_attempts_rule(store: Store, make: Make) -> None:
    """A status change may keep or use one attempt; no write may use two, add one, or change nothing."""
    _hid, challenge = _pending(store, make, attempts=3)
    pending = ChallengeStatus.PENDING
    assert not store.update_challenge(challenge, pending)  # no change at all
    assert not store.update_challenge(replace(challenge, attempts_left=4), pending)
    assert not store.update_challenge(replace(challenge, attempts_left=1), pending)
    assert not store.update_challenge(
        replace(challenge, status=ChallengeStatus.LOCKED, attempts_left=1), pending
    )
    assert store.update_challenge(replace(challenge, status=ChallengeStatus.CANCELLED), pending)
    _, other = _pending(store, make, attempts=1)
    assert store.update_challenge(replace(other, status=ChallengeStatus.LOCKED, attempts_left=0), pending)


def test_concurrent_answers_only_one_wins(backend: Backend, make: Make) -> None:
    """Two concurrent updates from PENDING (pass and lock) through separate handles: exactly one writes."""
    first, second = backend.open(), backend.open()
    hid, challenge = _pending(first, make, attempts=1)
    passed = replace(challenge, status=ChallengeStatus.PASSED)
    locked = replace(challenge, status=ChallengeStatus.LOCKED, attempts_left=0)
    results = _race(
        lambda: first.update_challenge(passed, ChallengeStatus.PENDING),
        lambda: second.update_challenge(locked, ChallengeStatus.PENDING),
    )
    assert sorted(results, key=bool) == [False, True]
    winner = passed if results[0] else locked
    assert first.get_challenge(hid, challenge.challenge_id) == winner


def test_update_of_unknown_challenge_is_not_found(store: Store, make: Make) -> None:
    """Updating a challenge that is not in its household raises NotFound."""
    _hid, challenge = _pending(store, make)
    with pytest.raises(NotFound):
        store.update_challenge(replace(challenge, challenge_id="chl_x"), ChallengeStatus.PENDING)


# --- notifications -------------------------------------------------------------------------


def test_notifications_round_trip_in_order(store: Store, make: Make) -> None:
    """Notifications list in creation order; a duplicate id is AlreadyExists; unknown household NotFound."""
    hid = make.household(store).household_id
    later = make.notification(hid, T0 + timedelta(minutes=1), challenge_id="chl_1")
    earlier = make.notification(hid, T0)
    store.add_notification(later)
    store.add_notification(earlier)
    assert store.list_notifications(hid) == [earlier, later]
    with pytest.raises(AlreadyExists):
        store.add_notification(later)
    with pytest.raises(NotFound):
        store.add_notification(make.notification("hh_x"))


# --- isolation -----------------------------------------------------------------------------


def test_households_are_isolated(store: Store, make: Make) -> None:
    """Nothing of household A comes back from any query for household B, and A's ids are NotFound via B."""
    a = make.household(store, name="Secret Family A").household_id
    b = make.household(store).household_id
    member = make.member(store, a, name="Alice A")
    store.put_voiceprint(Voiceprint(member.member_id, a, "ge2e-v1", (1.0,), 3, T0))
    store.put_policy(a, _policy(), T0)
    store.put_pin(PinState(a, "hash", T0))
    d = make.decision(a, request_id="r-a", member_id=member.member_id)
    challenge = make.challenge(a, d.decision_id)
    store.record_decision(d, "dg", "{}", spend=make.spend(d, exempt=True), challenge=challenge)
    store.add_notification(make.notification(a, challenge_id=challenge.challenge_id))

    assert store.list_members(b) == []
    assert store.list_voiceprints(b) == []
    assert store.get_policy(b) is None
    assert store.get_pin(b) is None
    assert store.get_decision(b, "evaluate", "r-a") is None
    assert store.list_decisions(b, 100) == []
    assert store.spend_since(b, None, T0 - timedelta(days=1)) == 0
    assert store.spend_since(b, member.member_id, T0 - timedelta(days=1)) == 0
    assert store.exempt_spend_since_last_challenge(b) == 0
    assert store.audit_entries(b) == []
    assert store.list_challenges(b) == []
    assert store.list_notifications(b) == []
    for call in (
        lambda: store.get_member(b, member.member_id),
        lambda: store.remove_member(b, member.member_id),
        lambda: store.get_challenge(b, challenge.challenge_id),
        lambda: store.update_challenge(replace(challenge, household_id=b), ChallengeStatus.PENDING),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        assert "Secret Family A" not in str(caught.value)
        assert "Alice A" not in str(caught.value)
        assert a not in str(caught.value)
    # A's data is untouched by B's attempts.
    assert store.get_member(a, member.member_id) == member
    assert store.get_challenge(a, challenge.challenge_id) == challenge


# --- lifecycle -----------------------------------------------------------------------------


def test_ping_works_until_closed(backend: Backend) -> None:
    """ping succeeds on an open store and raises Unavailable once it is closed."""
    store = backend.open()
    store.ping()
    store.close()
    with pytest.raises(Unavailable):
        store.ping()


def test_data_survives_reopen(backend: Backend, make: Make) -> None:
    """Everything written is there after close and a fresh open (persistent backends)."""
    if not backend.persistent:
        pytest.skip(f"{backend.name} keeps nothing after close")
    store = backend.open()
    hid = make.household(store).household_id
    member = make.member(store, hid)
    d = make.decision(hid)
    store.record_decision(d, "dg", "{}", spend=make.spend(d))
    store.close()
    again = backend.open()
    assert again.get_member(hid, member.member_id) == member
    assert again.list_decisions(hid, 10) == [d]
    assert verify_chain(again.audit_entries(hid)).ok
    # Appending after a reopen continues the same chain.
    again.record_decision(make.decision(hid), "dg", "{}")
    assert [e.seq for e in again.audit_entries(hid)] == [1, 2]
    assert verify_chain(again.audit_entries(hid)).ok


# --- privacy: sealed bodies, records for export, erasure, retention --------------------------
#
def _full_household(store: Store, make: Make, name: str = "Home") -> str:
    """A household with a row in every table: member, voiceprint, policy, PIN, decision with
    spend and challenge, notification."""
    hid = make.household(store, name=name).household_id
    member = make.member(store, hid, name=f"{name} Ada")
    store.put_voiceprint(Voiceprint(member.member_id, hid, "ge2e-v1", (0.25, -0.5, 1.0), 3, T0))
    store.put_policy(hid, _policy(), T0)
    store.put_pin(PinState(hid, "argon2id$hash", T0))
    d = make.decision(hid, member_id=member.member_id, outcome=Outcome.CHALLENGE)
    challenge = make.challenge(hid, d.decision_id)
    store.record_decision(
        d, "dg", f'{{"household_id":"{hid}","n":1}}', spend=make.spend(d), challenge=challenge
    )
    store.add_notification(make.notification(hid, challenge_id=challenge.challenge_id))
    return hid


def test_audit_bodies_are_stored_sealed_and_open_in_the_records(store: Store, make: Make) -> None:
    """The audit body as stored (and hashed) is sealed text, not the record; household_records opens it."""
    privacy = store
    hid = make.household(store).household_id
    store.record_decision(make.decision(hid), "dg", '{"n":1}')
    (entry,) = store.audit_entries(hid)
    assert entry.body.startswith("pgs1:")
    assert '"n"' not in entry.body
    assert verify_chain([entry]).ok
    (record,) = privacy.household_records(hid).audit
    assert (record.body, record.sealed, record.entry) == ('{"n":1}', True, entry)


def test_household_records_hold_that_household_only(store: Store, make: Make) -> None:
    """Every record returned for A belongs to A, however much B has stored beside it."""
    privacy = store
    a = _full_household(store, make, "Alpha")
    b = _full_household(store, make, "Bravo")
    records = privacy.household_records(a)
    assert records.household.name == "Alpha"
    assert [m.display_name for m in records.members] == ["Alpha Ada"]
    groups = (
        records.members,
        records.voiceprints,
        records.policies,
        records.decisions,
        records.spend,
        records.challenges,
        records.notifications,
    )
    assert all(len(group) == 1 for group in groups)
    assert {r.household_id for group in groups for r in group} == {a}
    assert [r.entry.household_id for r in records.audit] == [a]
    assert records.pin is not None
    assert records.pin.household_id == a
    assert b not in repr(records)
    with pytest.raises(NotFound):
        privacy.household_records("hh_x")


def test_household_records_carry_voiceprint_metadata_and_every_policy_revision(
    store: Store, make: Make
) -> None:
    """Voiceprints come back as metadata (no embedding field at all); every policy revision is there."""
    privacy = store
    hid = _full_household(store, make)
    store.put_policy(hid, replace(_policy(), household_daily_cap_minor=7), T0 + timedelta(days=1))
    records = privacy.household_records(hid)
    (info,) = records.voiceprints
    assert (info.encoder, info.dim, info.n_utterances) == ("ge2e-v1", 3, 3)
    assert not hasattr(info, "embedding")
    assert [(p.policy.revision, p.created_at) for p in records.policies] == [
        (1, T0),
        (2, T0 + timedelta(days=1)),
    ]


def test_erasure_deletes_everything_but_the_sealed_audit_chain(store: Store, make: Make) -> None:
    """After erasure: no row of the household is readable, its token resolves to nothing, a tombstone
    records where the kept chain ends, and that chain still verifies."""
    privacy = store
    hid = _full_household(store, make)
    entries = store.audit_entries(hid)
    tombstone, erased = privacy.erase_household(hid, T0 + timedelta(days=2))
    assert erased
    assert tombstone.household_id == hid
    assert (tombstone.erased_at, tombstone.audit_entries) == (T0 + timedelta(days=2), 1)
    assert tombstone.audit_head == entries[-1].entry_hash
    assert privacy.get_tombstone(hid) == tombstone
    with pytest.raises(NotFound):
        store.get_household(hid)
    assert store.household_for_token_hash(f"hash-of-{hid}") is None
    assert store.list_members(hid) == []
    assert store.list_voiceprints(hid) == []
    assert store.get_policy(hid) is None
    assert store.get_pin(hid) is None
    assert store.list_decisions(hid, 10) == []
    assert store.spend_since(hid, None, T0 - timedelta(days=1)) == 0
    assert store.list_challenges(hid) == []
    assert store.list_notifications(hid) == []
    assert store.audit_entries(hid) == entries
    assert verify_anchored_chain(store.audit_entries(hid), None, tombstone.audit_head).ok
    with pytest.raises(NotFound):
        privacy.household_records(hid)


def test_erasure_is_idempotent_and_unknown_households_are_not_found(store: Store, make: Make) -> None:
    """A second erasure returns the first tombstone and says it did nothing; an unknown id is NotFound."""
    privacy = store
    hid = _full_household(store, make)
    first, _ = privacy.erase_household(hid, T0)
    again, erased = privacy.erase_household(hid, T0 + timedelta(hours=1))
    assert (again, erased) == (first, False)
    with pytest.raises(NotFound):
        privacy.erase_household("hh_x", T0)
    assert privacy.get_tombstone("hh_x") is None


def test_an_erased_household_id_is_never_reused(store: Store, make: Make) -> None:
    """Creating a household with an erased id is AlreadyExists (its kept chain must not grow again)."""
    privacy = store
    hid = _full_household(store, make)
    privacy.erase_household(hid, T0)
    with pytest.raises(AlreadyExists):
        store.create_household(Household(hid, "New", "UTC", "EUR", False, T0), "another-hash")


def test_erasure_leaves_other_households_untouched(store: Store, make: Make) -> None:
    """Erasing A changes nothing of B: B's records before and after are equal and B's chain verifies."""
    privacy = store
    a = _full_household(store, make, "Alpha")
    b = _full_household(store, make, "Bravo")
    before = privacy.household_records(b)
    privacy.erase_household(a, T0)
    assert privacy.household_records(b) == before
    assert verify_chain(store.audit_entries(b)).ok


def _decisions_at(store: Store, make: Make, hid: str, days: list[int]) -> None:
    for day in days:
        d = make.decision(hid, at=T0 + timedelta(days=day))
        store.record_decision(d, "dg", "{}", spend=make.spend(d))


def test_purge_drops_the_old_prefix_and_anchors_the_rest(store: Store, make: Make) -> None:
    """Decisions and audit entries before the cutoff go; the anchor holds the last purged entry's
    hash, and the kept chain verifies from it (but not from the genesis)."""
    privacy = store
    hid = make.household(store).household_id
    _decisions_at(store, make, hid, [0, 1, 2, 40, 41])
    before = store.audit_entries(hid)
    result = privacy.purge_household(hid, T0 + timedelta(days=10))
    assert (result.decisions, result.spend, result.audit_entries) == (3, 3, 3)
    assert result.anchor is not None
    assert (result.anchor.seq, result.anchor.entry_hash) == (3, before[2].entry_hash)
    assert privacy.audit_anchor(hid) == result.anchor
    kept = store.audit_entries(hid)
    assert kept == before[3:]
    assert verify_anchored_chain(kept, result.anchor).ok
    assert not verify_chain(kept).ok
    assert len(store.list_decisions(hid, 10)) == 2
    again = privacy.purge_household(hid, T0 + timedelta(days=10))
    assert (again.decisions, again.audit_entries, again.anchor) == (0, 0, result.anchor)


def test_chain_continues_from_the_anchor_after_everything_was_purged(store: Store, make: Make) -> None:
    """With every entry purged, the next decision gets the next seq and links to the anchor."""
    privacy = store
    hid = make.household(store).household_id
    _decisions_at(store, make, hid, [0, 1])
    last = store.audit_entries(hid)[-1]
    anchor = privacy.purge_household(hid, T0 + timedelta(days=60)).anchor
    assert store.audit_entries(hid) == []
    store.record_decision(make.decision(hid, at=T0 + timedelta(days=61)), "dg", "{}")
    (entry,) = store.audit_entries(hid)
    assert (entry.seq, entry.prev_hash) == (3, last.entry_hash)
    assert verify_anchored_chain([entry], anchor).ok


def test_purge_keeps_exempt_spend_that_still_counts(store: Store, make: Make) -> None:
    """Old low-value-exempt spend after the last passed challenge, its decision and that challenge stay:
    the exemption's cumulative count must not shrink because time passed."""
    privacy = store
    hid = make.household(store).household_id
    evaluate = make.decision(hid, outcome=Outcome.CHALLENGE)
    challenge = make.challenge(hid, evaluate.decision_id, status=ChallengeStatus.PASSED)
    store.record_decision(evaluate, "dg", "{}", challenge=challenge)
    _spend(store, make, hid, 300, exempt=True)
    _spend(store, make, hid, 5000, exempt=False)
    assert store.exempt_spend_since_last_challenge(hid) == 300
    result = privacy.purge_household(hid, T0 + timedelta(days=40))
    assert (result.spend, result.decisions, result.challenges) == (1, 2, 0)
    assert store.exempt_spend_since_last_challenge(hid) == 300
    assert store.get_challenge(hid, challenge.challenge_id).status is ChallengeStatus.PASSED


def test_purge_removes_old_closed_challenges_and_notifications(store: Store, make: Make) -> None:
    """Challenges that expired before the cutoff (other than the last passed one) and old
    notifications are purged; newer ones stay."""
    privacy = store
    hid = make.household(store).household_id
    d = make.decision(hid, outcome=Outcome.CHALLENGE)
    store.record_decision(d, "dg", "{}", challenge=make.challenge(hid, d.decision_id))
    late = T0 + timedelta(days=50)
    d2 = make.decision(hid, outcome=Outcome.CHALLENGE, at=late)
    newer = make.challenge(hid, d2.decision_id, at=late)
    store.record_decision(d2, "dg", "{}", challenge=newer)
    store.add_notification(make.notification(hid, T0))
    kept = make.notification(hid, late)
    store.add_notification(kept)
    result = privacy.purge_household(hid, T0 + timedelta(days=40))
    assert (result.challenges, result.notifications) == (1, 1)
    assert store.list_challenges(hid) == [newer]
    assert store.list_notifications(hid) == [kept]


def test_retention_candidates_are_households_with_old_rows(store: Store, make: Make) -> None:
    """Households with decisions, audit entries or notifications before the cutoff are candidates,
    erased ones included (their sealed audit entries age out too); others are not."""
    privacy = store
    old = make.household(store).household_id
    _decisions_at(store, make, old, [0])
    recent = make.household(store).household_id
    _decisions_at(store, make, recent, [50])
    erased = make.household(store).household_id
    _decisions_at(store, make, erased, [0])
    privacy.erase_household(erased, T0 + timedelta(days=1))
    noted = make.household(store).household_id
    store.add_notification(make.notification(noted, T0))
    assert privacy.retention_candidates(T0 + timedelta(days=10)) == sorted([old, erased, noted])


def test_list_household_ids_includes_erased_households_with_a_chain(store: Store, make: Make) -> None:
    """The startup audit check finds live households and erased ones (whose chains are kept)."""
    privacy = store
    lister = getattr(store, "list_household_ids", None)
    if lister is None:
        pytest.skip(f"{type(store).__name__} cannot list households")
    live = make.household(store).household_id
    erased = _full_household(store, make)
    privacy.erase_household(erased, T0)
    assert lister() == sorted([live, erased])


# --- trust: credentials, the PIN's guess budget, request ids per caller, voiceprint expiry -------


def test_credentials_are_found_by_token_hash_until_revoked(backend: Backend, make: Make) -> None:
    """An issued credential is found by its token hash; revoked, it is not (but still listed, with
    when); another household cannot list or revoke it."""
    store = backend.open()
    a = make.household(store).household_id
    b = make.household(store, name="Other").household_id
    parent = make.member(store, a)
    cred = Credential("crd_1", CredentialKind.PARENT, a, parent.member_id, None, "phone", T0)
    store.add_credential(cred, "hash-1")
    assert store.credential_for_token_hash("hash-1") == cred
    assert store.list_credentials(a) == [cred]
    assert store.list_credentials(b) == []
    with pytest.raises(NotFound):
        store.revoke_credential(b, "crd_1", T0)
    revoked = store.revoke_credential(a, "crd_1", T0 + timedelta(hours=1))
    assert revoked.revoked_at == T0 + timedelta(hours=1)
    assert store.credential_for_token_hash("hash-1") is None
    assert store.list_credentials(a) == [revoked]
    backend_cred = Credential("crd_2", CredentialKind.BACKEND, None, None, None, "fleet", T0)
    store.add_credential(backend_cred, "hash-2")
    assert store.list_credentials(None) == [backend_cred]


def test_the_pin_hash_is_sealed_at_rest(backend: Backend, make: Make) -> None:
    """The stored PIN hash is a sealed value: the database alone does not hold the argon2 text."""
    store = backend.open()
    hid = make.household(store).household_id
    store.put_pin(PinState(hid, "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA", T0))
    assert store.get_pin(hid) is not None
    rows = store.household_records(hid)
    assert rows.pin is not None
    assert backend.raw_pin_hash(hid).startswith("pgs1:")
    assert "argon2" not in backend.raw_pin_hash(hid)


def test_a_pin_update_is_written_only_on_the_count_it_was_judged_on(backend: Backend, make: Make) -> None:
    """A decision carrying (PIN as judged, PIN next) writes the PIN with it; if another answer
    changed the count first, the whole decision is Aborted and nothing is written."""
    store = backend.open()
    hid = make.household(store).household_id
    start = PinState(hid, "h", T0, failures=3)
    store.put_pin(start)
    first = make.decision(hid, request_id="r1")
    store.record_decision(first, "d1", "{}", pin_update=(start, replace(start, failures=4)))
    assert store.get_pin(hid) == replace(start, failures=4)
    late = make.decision(hid, request_id="r2")
    with pytest.raises(Aborted):
        store.record_decision(late, "d2", "{}", pin_update=(start, replace(start, failures=4)))
    assert store.get_decision(hid, "evaluate", "r2") is None
    assert store.get_pin(hid) == replace(start, failures=4)


def test_request_ids_are_unique_per_caller(backend: Backend, make: Make) -> None:
    """Two callers may use the same request id for the same household: each finds only its own."""
    store = backend.open()
    hid = make.household(store).household_id
    mine = replace(make.decision(hid, request_id="same"), caller_id="backend")
    theirs = replace(make.decision(hid, request_id="same"), caller_id="device:crd_9")
    store.record_decision(mine, "dg-a", "{}")
    store.record_decision(theirs, "dg-b", "{}")
    found = store.get_decision(hid, "evaluate", "same", "backend")
    assert found is not None
    assert found.decision == mine
    other = store.get_decision(hid, "evaluate", "same", "device:crd_9")
    assert other is not None
    assert other.decision == theirs


def test_childrens_voiceprints_expire_with_a_reminder_first(backend: Backend, make: Make) -> None:
    """A voiceprint with an expiry is listed as expiring, reminded once, renewed, and deleted once
    past it; one without an expiry never is."""
    store = backend.open()
    hid = make.household(store).household_id
    child = make.member(store, hid, name="Kid")
    adult = make.member(store, hid, name="Grown-up")
    store.put_voiceprint(
        Voiceprint(child.member_id, hid, "e", (1.0,), 3, T0, expires_at=T0 + timedelta(days=365))
    )
    store.put_voiceprint(Voiceprint(adult.member_id, hid, "e", (1.0,), 3, T0))
    soon = T0 + timedelta(days=340)
    assert store.voiceprints_expiring(soon + timedelta(days=30), notified=False) == [
        (hid, child.member_id, T0 + timedelta(days=365))
    ]
    reminder = make.notification(hid)
    assert store.mark_expiry_notified(hid, child.member_id, reminder)
    assert not store.mark_expiry_notified(hid, child.member_id, make.notification(hid))
    assert store.voiceprints_expiring(soon + timedelta(days=30), notified=False) == []
    assert store.renew_voiceprint(hid, child.member_id, T0 + timedelta(days=730))
    assert not store.renew_voiceprint(hid, adult.member_id, T0 + timedelta(days=730))
    assert store.delete_expired_voiceprints(T0 + timedelta(days=400)) == []
    assert store.delete_expired_voiceprints(T0 + timedelta(days=731)) == [(hid, child.member_id)]
    assert [vp.member_id for vp in store.list_voiceprints(hid)] == [adult.member_id]


def test_unknown_voice_approvals_are_counted_since_a_time(store: Store, make: Make) -> None:
    """unknown_voice_approvals_since counts the household's PARENT_APPROVAL challenges with no member
    created at or after `since`: not a member's approval, not another method, not another home's,
    not an older one; a resolved one still counts (it reached the parents)."""
    hid = make.household(store).household_id
    ada = make.member(store, hid)

    def given(at: datetime, **changes: object) -> Challenge:
        d = make.decision(hid, outcome=Outcome.CHALLENGE, at=at)
        c = replace(
            make.challenge(hid, d.decision_id, at=at), method=ChallengeMethod.PARENT_APPROVAL, **changes
        )
        store.record_decision(d, "dg", "{}", challenge=c)
        return c

    since = T0 + timedelta(minutes=10)
    given(T0)  # before `since`
    counted = given(since)
    given(since + timedelta(minutes=1))
    given(since + timedelta(minutes=2), member_id=ada.member_id)
    d = make.decision(hid, outcome=Outcome.CHALLENGE, at=since)
    store.record_decision(d, "dg", "{}", challenge=make.challenge(hid, d.decision_id, at=since))  # digits
    other = make.household(store).household_id
    od = make.decision(other, outcome=Outcome.CHALLENGE, at=since)
    store.record_decision(
        od,
        "dg",
        "{}",
        challenge=replace(
            make.challenge(other, od.decision_id, at=since), method=ChallengeMethod.PARENT_APPROVAL
        ),
    )
    assert store.unknown_voice_approvals_since(hid, since) == 2
    assert store.update_challenge(replace(counted, status=ChallengeStatus.APPROVED), ChallengeStatus.PENDING)
    assert store.unknown_voice_approvals_since(hid, since) == 2
    assert store.unknown_voice_approvals_since(hid, T0) == 3


def test_digit_templates_are_listed_by_member_and_read_one_at_a_time(store: Store, make: Make) -> None:
    """digit_template_members names the members with templates; get_digit_templates gives back one
    member's bytes as stored, and None for a member without any or another home."""
    hid = make.household(store).household_id
    ada, bo = make.member(store, hid), make.member(store, hid, name="Bo")
    store.put_digit_templates(hid, ada.member_id, "mfcc/1", b"ada-templates", T0, None)
    assert store.digit_template_members(hid) == frozenset({ada.member_id})
    assert store.get_digit_templates(hid, ada.member_id) == ("mfcc/1", b"ada-templates")
    assert store.get_digit_templates(hid, bo.member_id) is None
    other = make.household(store).household_id
    assert store.get_digit_templates(other, ada.member_id) is None
    assert store.digit_template_members(other) == frozenset()


def test_audio_print_refs_list_the_window_and_blobs_open_only_the_households_own(
    store: Store, make: Make
) -> None:
    """The replay check's two reads: `recent_audio_print_refs` lists (print id, decision, kind) of
    the household's prints in the window, oldest first, as `recent_audio_prints` does; and
    `audio_print_blobs` opens the named prints, leaving out ids that are another household's or
    that do not exist (so one household's print can never be handed to another's check)."""
    from purchase_guard.store.protocol import AudioPrint

    hh = make.household(store)
    other = make.household(store, name="Other")
    prints = {}
    for k, (home, at) in enumerate(
        [
            (hh, T0),
            (hh, T0 + timedelta(hours=1)),
            (other, T0 + timedelta(hours=2)),
            (hh, T0 - timedelta(days=2)),
        ]
    ):
        decision = make.decision(home.household_id, request_id=f"r{k}")
        blob = bytes([k]) * 24
        ap = AudioPrint(f"apr_{k}", home.household_id, decision.decision_id, "evaluate", at, blob)
        store.record_decision(decision, f"dg{k}", "{}", audio_print=ap)
        prints[ap.print_id] = ap
    since = T0 - timedelta(days=1)
    refs = store.recent_audio_print_refs(hh.household_id, since)
    assert refs == [
        (p.print_id, p.decision_id, p.kind) for p in store.recent_audio_prints(hh.household_id, since)
    ]
    assert [r[0] for r in refs] == ["apr_0", "apr_1"]
    opened = store.audio_print_blobs(hh.household_id, ["apr_1", "apr_0", "apr_2", "apr_missing"])
    assert opened == {"apr_0": prints["apr_0"].print, "apr_1": prints["apr_1"].print}
    assert store.audio_print_blobs(other.household_id, ["apr_0"]) == {}
    assert store.audio_print_blobs(hh.household_id, []) == {}
