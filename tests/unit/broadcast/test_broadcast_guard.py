"""BroadcastGuard: fleet clusters, promotion, late catch, known clips and the audio gate."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from unit.broadcast.broadcast_synth import RATE, hear, programme, wav

from purchase_guard.broadcast.denylist import PROMOTED, Denylist, MemoryClipStore
from purchase_guard.broadcast.fingerprint import fingerprint
from purchase_guard.broadcast.guard import BroadcastGuard, ClusterRule, find_cluster
from purchase_guard.broadcast.match import DEFAULT_MATCH, FineMatch
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.broadcast.window import MemoryWindow, WindowEntry
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.domain import AudioInput, Effect, ReasonCode
from purchase_guard.voice.audio import Pcm

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


@pytest.fixture
def store() -> MemoryClipStore:
    return MemoryClipStore()


@pytest.fixture
def window() -> MemoryWindow:
    return MemoryWindow(timedelta(minutes=10))


@pytest.fixture
def guard(store: MemoryClipStore, window: MemoryWindow) -> BroadcastGuard:
    return BroadcastGuard(window, Denylist(store), SequentialIds(), promote_for=timedelta(hours=48))


def strength(detail: dict[str, str]) -> FineMatch:
    """The match strength a reason reports, as the rule reads it."""
    return FineMatch(float(detail["ber"]), 0, int(detail["bits"]), float(detail["effective_bits"]))


def codes(check: object) -> list[ReasonCode]:
    return [r.code for r in check.reasons]  # type: ignore[attr-defined]


def test_third_household_is_a_broadcast_and_earlier_ones_are_returned_for_cancelling(
    guard: BroadcastGuard, store: MemoryClipStore
) -> None:
    """Two households hear a clip unflagged; the third matches both: BROADCAST_MATCH with the
    cluster id and strength, the earlier decisions for the late catch, and a promoted clip."""
    prog = programme(1)
    first = guard.check("hh1", "d", "dec1", hear(prog, seed=1), T0, caller_id="")
    second = guard.check("hh2", "d", "dec2", hear(prog, seed=2), T0 + timedelta(seconds=2), caller_id="")
    assert codes(first) == []
    assert codes(second) == []
    third = guard.check("hh3", "d", "dec3", hear(prog, seed=3), T0 + timedelta(seconds=4), caller_id="")
    assert codes(third) == [ReasonCode.BROADCAST_MATCH]
    detail = dict(third.reasons[0].detail)
    assert detail["matched_sources"] == "2"
    assert DEFAULT_MATCH.accepts(strength(detail))  # the strength that passed
    assert set(third.cluster_decisions) == {("hh1", "dec1"), ("hh2", "dec2")}
    promoted = [c for c in store.all() if c.source == PROMOTED]
    assert [c.clip_id for c in promoted] == [detail["cluster_id"]]
    assert promoted[0].expires_at == T0 + timedelta(seconds=4) + timedelta(hours=48)
    # A promoted clip is made of households' utterances: only its print is kept.
    assert (promoted[0].audio_kept, store.audio(promoted[0].clip_id)) == (False, None)


def test_promoted_cluster_catches_a_replay_after_the_window(guard: BroadcastGuard) -> None:
    """Once promoted, the broadcast is refused even when heard alone an hour later."""
    prog = programme(2)
    for k in range(3):
        guard.check(f"hh{k}", "d", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k), caller_id="")
    later = guard.check("hh9", "d", "dec9", hear(prog, seed=9), T0 + timedelta(hours=1), caller_id="")
    assert codes(later) == [ReasonCode.BROADCAST_MATCH]
    assert dict(later.reasons[0].detail)["source"] == PROMOTED


def test_promotion_expires(guard: BroadcastGuard) -> None:
    """After the promotion period a lone replay is no longer refused."""
    prog = programme(3)
    for k in range(3):
        guard.check(f"hh{k}", "d", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k), caller_id="")
    late = guard.check("hh9", "d", "dec9", hear(prog, seed=9), T0 + timedelta(hours=49), caller_id="")
    assert codes(late) == []


def test_devices_of_one_household_never_form_a_cluster(guard: BroadcastGuard) -> None:
    """Five devices in one home hearing the same person (same audio) do not make a broadcast."""
    prog = programme(4)
    for k in range(5):
        check = guard.check(
            "hh1", f"dev{k}", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k), caller_id=""
        )
        assert codes(check) == []
        assert check.cluster_decisions == ()


def test_one_other_household_is_not_enough(guard: BroadcastGuard) -> None:
    """With the default of two other households, a single matching household is not a broadcast."""
    prog = programme(5)
    guard.check("hh1", "d", "dec1", hear(prog, seed=1), T0, caller_id="")
    second = guard.check("hh2", "d", "dec2", hear(prog, seed=2), T0, caller_id="")
    again = guard.check("hh2", "d2", "dec3", hear(prog, seed=3), T0, caller_id="")
    assert codes(second) == []
    assert codes(again) == []


def test_unrelated_utterances_never_cluster(guard: BroadcastGuard) -> None:
    """Ten households saying different things produce no broadcast reason."""
    for k in range(10):
        check = guard.check(f"hh{k}", "d", f"dec{k}", hear(programme(300 + k), seed=k), T0, caller_id="")
        assert codes(check) == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: Pcm(np.zeros(3 * RATE, dtype=np.float32)),
        lambda: Pcm(np.ascontiguousarray(hear(programme(6), seed=1).samples[: RATE // 2])),
        lambda: Pcm(np.clip(hear(programme(6), seed=1).samples * 50, -1, 1).astype(np.float32)),
    ],
    ids=["silence", "half-second", "clipped"],
)
def test_unusable_audio_never_forms_or_joins_a_cluster(
    guard: BroadcastGuard, window: MemoryWindow, make: object
) -> None:
    """Silence, very short or hard-clipped audio from many households is not added to the
    window and never flagged, and does not help a real copy form a cluster either."""
    for k in range(4):
        check = guard.check(f"hh{k}", "d", f"dec{k}", make(), T0, caller_id="")  # type: ignore[operator]
        assert codes(check) == []
    assert len(window) == 0
    real = guard.check("hhx", "d", "decx", hear(programme(6), seed=5), T0, caller_id="")
    assert codes(real) == []


def test_known_clip_is_refused_whatever_part_is_heard(guard: BroadcastGuard, store: MemoryClipStore) -> None:
    """A registered 12 s clip: 3 s heard from its middle is KNOWN_BROADCAST with the clip id."""
    clip_audio = programme(7, seconds=12.0)
    clip = ClipRegistry(store, FrozenClock(T0), SequentialIds()).register(
        "Dollhouse ad", AudioInput(encoded=wav(clip_audio))
    )
    check = guard.check(
        "hh1", "d", "dec1", hear(clip_audio, seed=3, start_s=6.0, snr_db=10), T0, caller_id=""
    )
    assert codes(check) == [ReasonCode.KNOWN_BROADCAST]
    assert check.reasons[0].effect is Effect.FORBID
    detail = dict(check.reasons[0].detail)
    assert detail["clip_id"] == clip.clip_id
    assert DEFAULT_MATCH.accepts(strength(detail))


def test_a_clip_matched_by_a_short_stretch_of_longer_speech_asks_for_a_step_up(
    guard: BroadcastGuard, store: MemoryClipStore
) -> None:
    """The graded denylist: the last 2.5 s of a registered ad followed by 6 s of someone else
    talking matches the ad, but covers too little of the utterance to refuse it:
    SUSPECTED_BROADCAST with effect CHALLENGE and the clip id. It is not known to be the
    broadcast, so the devices that matched it in the window are not returned for the late
    catch (their challenges stand)."""
    clip_audio = programme(43, seconds=8.0)
    clip = ClipRegistry(store, FrozenClock(T0), SequentialIds()).register(
        "Dollhouse ad", AudioInput(encoded=wav(clip_audio))
    )
    tail = hear(clip_audio, seed=4, start_s=5.3, seconds=2.5).samples
    talk = hear(programme(44, seconds=7.0), seed=5, seconds=6.0).samples
    heard = Pcm(np.concatenate([tail, talk]).astype(np.float32))
    guard.check("hh1", "d", "dec1", heard, T0, caller_id="")
    check = guard.check("hh2", "d", "dec2", heard, T0 + timedelta(seconds=1), caller_id="")
    assert [(r.code, r.effect) for r in check.reasons] == [(ReasonCode.SUSPECTED_BROADCAST, Effect.CHALLENGE)]
    assert dict(check.reasons[0].detail)["clip_id"] == clip.clip_id
    assert check.cluster_decisions == ()


def test_removed_clip_is_no_longer_enforced(guard: BroadcastGuard, store: MemoryClipStore) -> None:
    """After RemoveClip, the same audio is no longer refused as a known broadcast."""
    clip_audio = programme(8, seconds=8.0)
    registry = ClipRegistry(store, FrozenClock(T0), SequentialIds())
    clip = registry.register("News", AudioInput(encoded=wav(clip_audio)))
    assert codes(
        guard.check("hh1", "d", "dec1", hear(clip_audio, seed=1, start_s=2.0), T0, caller_id="")
    ) == [ReasonCode.KNOWN_BROADCAST]
    registry.remove(clip.clip_id)
    assert (
        codes(guard.check("hh2", "d", "dec2", hear(clip_audio, seed=2, start_s=2.0), T0, caller_id="")) == []
    )


def test_expired_promotions_are_dropped_when_a_new_cluster_is_promoted(
    guard: BroadcastGuard, store: MemoryClipStore
) -> None:
    """The store keeps only live promotions: an expired one is removed when the next is added."""
    for n, seed in enumerate((11, 12)):
        prog = programme(seed)
        at = T0 + timedelta(hours=50 * n)
        for k in range(3):
            guard.check(
                f"hh{n}{k}", "d", f"dec{n}{k}", hear(prog, seed=k), at + timedelta(seconds=k), caller_id=""
            )
    promoted = [c for c in store.all() if c.source == PROMOTED]
    assert len(promoted) == 1
    assert promoted[0].created_at >= T0 + timedelta(hours=50)


def test_one_caller_and_device_naming_many_households_is_one_source(guard: BroadcastGuard) -> None:
    """The attack of issue 14: one authenticated device sends the victim's own utterance under
    other household ids. It is one source, so the victim's next copy is not a broadcast."""
    prog = programme(21)
    for k in range(4):
        check = guard.check(f"hh{k}", "d", f"dec{k}", hear(prog, seed=k), T0, caller_id="device:cred_x")
        assert codes(check) == []
    victim = guard.check("victim", "home", "dec9", hear(prog, seed=9), T0, caller_id="device:home")
    assert codes(victim) == []


def test_distinct_devices_of_one_backend_are_distinct_sources(guard: BroadcastGuard) -> None:
    """A voice platform calls for every device under one credential: its devices in three
    households (all named "d": device ids are unique only within a household) are three
    sources, so a real broadcast is still caught."""
    prog = programme(22)
    results = [
        guard.check(
            f"hh{k}", f"dev{k}", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k), caller_id="be"
        )
        for k in range(3)
    ]
    assert codes(results[2]) == [ReasonCode.BROADCAST_MATCH]
    assert dict(results[2].reasons[0].detail)["matched_sources"] == "2"


def test_min_callers_stops_one_credential_forming_a_cluster(
    store: MemoryClipStore, window: MemoryWindow
) -> None:
    """With BROADCAST_MIN_CALLERS=2, one caller's devices alone are never a cluster; a second
    caller's copy completes one."""
    guard = BroadcastGuard(window, Denylist(store), SequentialIds(), cluster=ClusterRule(min_callers=2))
    prog = programme(23)
    for k in range(4):
        check = guard.check(f"hh{k}", f"dev{k}", f"dec{k}", hear(prog, seed=k), T0, caller_id="be")
        assert codes(check) == []
    other = guard.check("hh9", "dev9", "dec9", hear(prog, seed=9), T0, caller_id="be2")
    assert codes(other) == [ReasonCode.BROADCAST_MATCH]


def test_copies_further_apart_than_the_spread_are_not_a_cluster(guard: BroadcastGuard) -> None:
    """Three copies 40 s apart (spread 30 s): no verdict; two more within seconds of the last:
    the second of them completes a cluster with it."""
    prog = programme(24)
    spaced = [
        guard.check(
            f"hh{k}", "d", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=40 * k), caller_id=""
        )
        for k in range(3)
    ]
    assert [codes(c) for c in spaced] == [[], [], []]
    near = guard.check("hh8", "d", "dec8", hear(prog, seed=8), T0 + timedelta(seconds=95), caller_id="")
    assert codes(near) == []
    close = guard.check("hh9", "d", "dec9", hear(prog, seed=9), T0 + timedelta(seconds=100), caller_id="")
    assert codes(close) == [ReasonCode.BROADCAST_MATCH]
    assert set(close.cluster_decisions) == {("hh2", "dec2"), ("hh8", "dec8")}


def test_members_must_match_each_other_at_consistent_offsets(window: MemoryWindow) -> None:
    """find_cluster: two true copies matched by a third form a cluster; when one member's match
    offset is moved by 0.4 s (as for two chance matches, which do not line up), they do not."""
    prog = programme(25)
    entries = [
        WindowEntry(f"e{k}", f"hh{k}", "d", f"dec{k}", T0, fingerprint(hear(prog, seed=k)), f"s{k}")
        for k in range(3)
    ]
    window.match_and_add(entries[0])
    window.match_and_add(entries[1])
    query = entries[2]
    matches = window.match_and_add(query)
    assert {m.entry.entry_id for m in find_cluster(query, matches)} == {"e0", "e1"}
    moved = [
        matches[0],
        replace(matches[1], match=replace(matches[1].match, offset=matches[1].match.offset + 50)),
    ]
    assert find_cluster(query, moved) == []
