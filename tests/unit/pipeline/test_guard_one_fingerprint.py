"""One fingerprint per Evaluate: the replay check and the real broadcast check share it, and both
still find what they are for (a known clip, a resent recording)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from unit.broadcast.broadcast_synth import hear, programme, wav
from unit.pipeline.test_guard_fail_closed import NOW, ORDER, guard_on, make_guard, sqlite

import purchase_guard.broadcast.guard as broadcast_guard
import purchase_guard.pipeline.guard as pipeline_guard
from purchase_guard.broadcast.denylist import Denylist, MemoryClipStore
from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.broadcast.guard import BroadcastGuard
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.broadcast.window import MemoryWindow
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.domain import AudioInput, Outcome, ReasonCode
from purchase_guard.pipeline.guard import EvaluateInput
from purchase_guard.store.sqlite import SqliteStore
from purchase_guard.voice.audio import Pcm

CLIP = programme(7, seconds=12.0)


class Counted:
    """The real fingerprint, counting calls; `fail` makes the pipeline's own call raise."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self, pcm: Pcm, *args: Any, **kwargs: Any) -> Fingerprint:
        self.calls += 1
        return fingerprint(pcm, *args, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counted:
    c = Counted()

    def in_pipeline(pcm: Pcm, *args: Any, **kwargs: Any) -> Fingerprint:
        if c.fail:
            c.calls += 1
            raise RuntimeError("fingerprint crashed")
        return c(pcm, *args, **kwargs)

    monkeypatch.setattr(pipeline_guard, "fingerprint", in_pipeline)
    monkeypatch.setattr(broadcast_guard, "fingerprint", c)
    return c


def clip_guard() -> BroadcastGuard:
    store = MemoryClipStore()
    ClipRegistry(store, FrozenClock(NOW), SequentialIds()).register(
        "Dollhouse ad", AudioInput(encoded=wav(CLIP))
    )
    return BroadcastGuard(MemoryWindow(timedelta(minutes=10)), Denylist(store), SequentialIds())


def heard_clip() -> Callable[[str], EvaluateInput]:
    pcm = hear(CLIP, seed=3, start_s=6.0, snr_db=10)
    audio = AudioInput(encoded=wav(pcm))

    def request(request_id: str) -> EvaluateInput:
        return EvaluateInput(request_id, "hh_1", "dev", ORDER, audio)

    return request


def test_one_print_serves_both_checks(tmp_path: Path, counted: Counted) -> None:
    """Evaluate fingerprints its audio once; the broadcast check still refuses the known clip, and
    the same recording sent again is refused as a replay (with the clip found again)."""
    guard = make_guard(sqlite(tmp_path), broadcast=clip_guard())
    request = heard_clip()
    first = guard.evaluate(request("r1"))
    assert counted.calls == 1
    assert first.outcome is Outcome.DENY
    assert ReasonCode.KNOWN_BROADCAST in first.codes
    assert ReasonCode.REPLAYED_AUDIO not in first.codes
    again = guard.evaluate(request("r2"))
    assert counted.calls == 2
    assert {ReasonCode.KNOWN_BROADCAST, ReasonCode.REPLAYED_AUDIO} <= set(again.codes)


def test_a_failed_print_fails_closed_and_the_broadcast_check_makes_its_own(
    tmp_path: Path, counted: Counted
) -> None:
    """When the pipeline's fingerprint raises, the replay check fails closed (GUARD_ERROR, DENY) and
    the broadcast check is not left without a print: it makes its own and still finds the clip."""
    counted.fail = True
    guard = make_guard(sqlite(tmp_path), broadcast=clip_guard())
    decision = guard.evaluate(heard_clip()("r1"))
    assert decision.outcome is Outcome.DENY
    assert {ReasonCode.GUARD_ERROR, ReasonCode.KNOWN_BROADCAST} <= set(decision.codes)
    assert counted.calls == 2  # the pipeline's failed one, then the broadcast check's own


class OffsetIds(SequentialIds):
    """Sequential ids that start past another guard's, so two guards on one store never clash."""

    def __init__(self, skip: int) -> None:
        super().__init__()
        self._n = skip


class BlobReadsCounted(SqliteStore):
    """The production SQLite store, counting the prints the replay check asks it to open."""

    opened: list[str]

    def audio_print_blobs(self, household_id: str, print_ids: Sequence[str]) -> dict[str, bytes]:
        self.opened = [*getattr(self, "opened", []), *print_ids]
        return super().audio_print_blobs(household_id, print_ids)


def test_a_print_this_guard_stored_is_compared_without_reading_it_back(tmp_path: Path) -> None:
    """The print an Evaluate stores is kept by the guard that stored it: the household's next
    Evaluate opens no print from the store, and the same recording sent again is still refused
    as a replay of the first decision."""
    store = sqlite(tmp_path, BlobReadsCounted)
    guard = make_guard(store)
    request = heard_clip()
    first = guard.evaluate(request("r1"))
    assert ReasonCode.REPLAYED_AUDIO not in first.codes
    again = guard.evaluate(request("r2"))
    assert ReasonCode.REPLAYED_AUDIO in again.codes
    assert again.outcome is not Outcome.ALLOW
    assert getattr(store, "opened", []) == []
    # Another guard on the same store (another replica) has not seen it: it reads it back.
    other = guard_on(store, ids=OffsetIds(1000))
    third = other.evaluate(request("r3"))
    assert ReasonCode.REPLAYED_AUDIO in third.codes
    assert len(store.opened) == 2  # the first two decisions' prints, opened once
