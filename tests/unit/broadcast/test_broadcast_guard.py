"""BroadcastGuard: fleet clusters, promotion, late catch, known clips and the audio gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from unit.broadcast.broadcast_synth import RATE, hear, programme, wav

from purchase_guard.broadcast.denylist import PROMOTED, Denylist, MemoryClipStore
from purchase_guard.broadcast.guard import BroadcastGuard
from purchase_guard.broadcast.match import DEFAULT_MATCH, FineMatch
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.broadcast.window import MemoryWindow
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.domain import AudioInput, ReasonCode
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
    first = guard.check("hh1", "d", "dec1", hear(prog, seed=1), T0)
    second = guard.check("hh2", "d", "dec2", hear(prog, seed=2), T0 + timedelta(seconds=2))
    assert codes(first) == []
    assert codes(second) == []
    third = guard.check("hh3", "d", "dec3", hear(prog, seed=3), T0 + timedelta(seconds=4))
    assert codes(third) == [ReasonCode.BROADCAST_MATCH]
    detail = dict(third.reasons[0].detail)
    assert detail["matched_households"] == "2"
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
        guard.check(f"hh{k}", "d", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k))
    later = guard.check("hh9", "d", "dec9", hear(prog, seed=9), T0 + timedelta(hours=1))
    assert codes(later) == [ReasonCode.BROADCAST_MATCH]
    assert dict(later.reasons[0].detail)["source"] == PROMOTED


def test_promotion_expires(guard: BroadcastGuard) -> None:
    """After the promotion period a lone replay is no longer refused."""
    prog = programme(3)
    for k in range(3):
        guard.check(f"hh{k}", "d", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k))
    late = guard.check("hh9", "d", "dec9", hear(prog, seed=9), T0 + timedelta(hours=49))
    assert codes(late) == []


def test_devices_of_one_household_never_form_a_cluster(guard: BroadcastGuard) -> None:
    """Five devices in one home hearing the same person (same audio) do not make a broadcast."""
    prog = programme(4)
    for k in range(5):
        check = guard.check("hh1", f"dev{k}", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k))
        assert codes(check) == []
        assert check.cluster_decisions == ()


def test_one_other_household_is_not_enough(guard: BroadcastGuard) -> None:
    """With the default of two other households, a single matching household is not a broadcast."""
    prog = programme(5)
    guard.check("hh1", "d", "dec1", hear(prog, seed=1), T0)
    second = guard.check("hh2", "d", "dec2", hear(prog, seed=2), T0)
    again = guard.check("hh2", "d2", "dec3", hear(prog, seed=3), T0)
    assert codes(second) == []
    assert codes(again) == []


def test_unrelated_utterances_never_cluster(guard: BroadcastGuard) -> None:
    """Ten households saying different things produce no broadcast reason."""
    for k in range(10):
        check = guard.check(f"hh{k}", "d", f"dec{k}", hear(programme(300 + k), seed=k), T0)
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
        check = guard.check(f"hh{k}", "d", f"dec{k}", make(), T0)  # type: ignore[operator]
        assert codes(check) == []
    assert len(window) == 0
    real = guard.check("hhx", "d", "decx", hear(programme(6), seed=5), T0)
    assert codes(real) == []


def test_known_clip_is_refused_whatever_part_is_heard(guard: BroadcastGuard, store: MemoryClipStore) -> None:
    """A registered 12 s clip: 3 s heard from its middle is KNOWN_BROADCAST with the clip id."""
    clip_audio = programme(7, seconds=12.0)
    clip = ClipRegistry(store, FrozenClock(T0), SequentialIds()).register(
        "Dollhouse ad", AudioInput(encoded=wav(clip_audio))
    )
    check = guard.check("hh1", "d", "dec1", hear(clip_audio, seed=3, start_s=6.0, snr_db=10), T0)
    assert codes(check) == [ReasonCode.KNOWN_BROADCAST]
    detail = dict(check.reasons[0].detail)
    assert detail["clip_id"] == clip.clip_id
    assert DEFAULT_MATCH.accepts(strength(detail))


def test_removed_clip_is_no_longer_enforced(guard: BroadcastGuard, store: MemoryClipStore) -> None:
    """After RemoveClip, the same audio is no longer refused as a known broadcast."""
    clip_audio = programme(8, seconds=8.0)
    registry = ClipRegistry(store, FrozenClock(T0), SequentialIds())
    clip = registry.register("News", AudioInput(encoded=wav(clip_audio)))
    assert codes(guard.check("hh1", "d", "dec1", hear(clip_audio, seed=1, start_s=2.0), T0)) == [
        ReasonCode.KNOWN_BROADCAST
    ]
    registry.remove(clip.clip_id)
    assert codes(guard.check("hh2", "d", "dec2", hear(clip_audio, seed=2, start_s=2.0), T0)) == []


def test_expired_promotions_are_dropped_when_a_new_cluster_is_promoted(
    guard: BroadcastGuard, store: MemoryClipStore
) -> None:
    """The store keeps only live promotions: an expired one is removed when the next is added."""
    for n, seed in enumerate((11, 12)):
        prog = programme(seed)
        at = T0 + timedelta(hours=50 * n)
        for k in range(3):
            guard.check(f"hh{n}{k}", "d", f"dec{n}{k}", hear(prog, seed=k), at + timedelta(seconds=k))
    promoted = [c for c in store.all() if c.source == PROMOTED]
    assert len(promoted) == 1
    assert promoted[0].created_at >= T0 + timedelta(hours=50)
