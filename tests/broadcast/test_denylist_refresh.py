"""The denylist follows its store without rebuilding on the request path: a change costs what
changed, inline; the whole index is rebuilt by a background compaction that no match waits for."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from unit.broadcast.broadcast_synth import hear, programme, wav

from purchase_guard.broadcast.denylist import (
    REGISTERED,
    Clip,
    Denylist,
    MemoryClipStore,
    SqliteClipStore,
)
from purchase_guard.broadcast.fingerprint import PRINT_VERSION, Fingerprint, fingerprint
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.domain import AudioInput
from purchase_guard.errors import Unavailable
from purchase_guard.voice.audio import Pcm, to_pcm16

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
WAIT_S = 60.0  # only ever reached when the code under test is broken: the tests wait on events


def clip(clip_id: str, fp: Fingerprint) -> Clip:
    return Clip(clip_id, clip_id, REGISTERED, T0, None, fp)


def filled_store(n: int = 100) -> MemoryClipStore:
    """A store of `n` unrelated clips (bit-scrambled copies of one programme's print)."""
    store = MemoryClipStore()
    base = fingerprint(Pcm(programme(300, seconds=10.0)))
    rng = np.random.default_rng(0)
    for k in range(n):
        store.put(clip(f"other-{k}", Fingerprint(base.bits ^ np.uint32(rng.integers(1, 2**32)), base.mask)))
    return store


def ids(deny: Denylist, fp: Fingerprint) -> list[str]:
    return [m.clip.clip_id for m in deny.match(fp, T0)]


def counted_builds(deny: Denylist, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch the denylist's whole-index builder to record the thread of every build."""
    threads: list[str] = []
    build = deny._build

    def recording(clips: Any) -> Any:
        threads.append(threading.current_thread().name)
        return build(clips)

    monkeypatch.setattr(deny, "_build", recording)
    return threads


def in_thread(fn: Callable[[], Any]) -> Any:
    """fn() on another thread; fails (instead of hanging) when it does not finish."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(WAIT_S)
    assert not worker.is_alive(), "the call did not finish"
    return out[0]


def test_clip_registered_after_the_index_was_built_matches_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 100 clips indexed, a clip put in the store afterwards is matched by the very next
    check, without a whole-index build on the request path (nor one due yet: 1 change of 100)."""
    store = filled_store()
    deny = Denylist(store)
    audio = programme(61, seconds=8.0)
    heard = fingerprint(hear(audio, seed=1, start_s=2.0))
    assert ids(deny, heard) == []
    builds = counted_builds(deny, monkeypatch)
    store.put(clip("new", fingerprint(Pcm(audio))))
    assert ids(deny, heard) == ["new"]
    assert builds == []
    assert deny.pending_changes == 1


def test_removed_clip_stops_matching_at_once() -> None:
    """A clip of the main index and a clip added since (in the small index) both stop matching
    on the first check after their removal, while the other clip keeps matching."""
    store = filled_store()
    old_audio, new_audio = programme(62, seconds=8.0), programme(63, seconds=8.0)
    store.put(clip("old", fingerprint(Pcm(old_audio))))
    deny = Denylist(store)
    heard_old = fingerprint(hear(old_audio, seed=2, start_s=3.0))
    heard_new = fingerprint(hear(new_audio, seed=3, start_s=1.0))
    assert ids(deny, heard_old) == ["old"]
    store.put(clip("new", fingerprint(Pcm(new_audio))))
    assert ids(deny, heard_new) == ["new"]
    store.delete("old")
    assert ids(deny, heard_old) == []
    assert ids(deny, heard_new) == ["new"]
    store.delete("new")
    assert ids(deny, heard_new) == []


def test_match_does_not_wait_for_a_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a background compaction is held inside its build, checks complete and see every
    change at once (a registration, then a removal of a clip the compaction is building in);
    once released, the compacted index carries the removal over and nothing is left pending."""
    store = filled_store(20)
    first_audio, second_audio = programme(64, seconds=8.0), programme(65, seconds=8.0)
    store.put(clip("first", fingerprint(Pcm(first_audio))))
    deny = Denylist(store, compact_fraction=0.0)  # every change is due a compaction
    heard_first = fingerprint(hear(first_audio, seed=4, start_s=2.0))
    heard_second = fingerprint(hear(second_audio, seed=5, start_s=2.0))
    assert ids(deny, heard_first) == ["first"]  # the first index is built inline
    started, release = threading.Event(), threading.Event()
    build = deny._build

    def held(clips: Any) -> Any:
        started.set()
        assert release.wait(WAIT_S)
        return build(clips)

    monkeypatch.setattr(deny, "_build", held)
    store.put(clip("second", fingerprint(Pcm(second_audio))))
    assert in_thread(lambda: ids(deny, heard_second)) == ["second"]
    assert started.wait(WAIT_S)
    store.delete("first")  # in the snapshot the held compaction is building
    assert in_thread(lambda: ids(deny, heard_first)) == []
    assert in_thread(lambda: ids(deny, heard_second)) == ["second"]
    assert not deny.wait_compacted(0)  # still held: the checks above did not wait for it
    release.set()
    assert deny.wait_compacted(WAIT_S)
    assert deny.compactions >= 1
    assert deny.pending_changes == 0
    assert ids(deny, heard_first) == []
    assert ids(deny, heard_second) == ["second"]


def test_another_store_clients_registration_and_removal_are_picked_up(tmp_path: Path) -> None:
    """Two clients of one SQLite clip store, as two replicas have: a clip registered and then
    removed through one is enforced, then no longer, by the other's already built denylist."""
    path = tmp_path / "clips.db"
    writer, reader = SqliteClipStore(path), SqliteClipStore(path)
    deny = Denylist(reader)
    audio = programme(66, seconds=8.0)
    heard = fingerprint(hear(audio, seed=6, start_s=3.0))
    assert ids(deny, heard) == []
    registry = ClipRegistry(writer, FrozenClock(T0), SequentialIds())
    registered = registry.register("Ad", AudioInput(encoded=wav(audio)))
    assert ids(deny, heard) == [registered.clip_id]
    registry.remove(registered.clip_id)
    assert ids(deny, heard) == []
    writer.close()
    reader.close()


def test_clip_of_another_print_version_added_later_is_reprinted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clip stored with an older print (and its audio) after the index was built is
    re-printed inline and matched at once; after a compaction it still matches, and its
    audio was read once (the re-print is carried, not redone)."""
    store = filled_store(20)
    deny = Denylist(store, compact_fraction=0.0)
    audio = programme(67, seconds=8.0)
    heard = fingerprint(hear(audio, seed=7, start_s=2.0))
    assert ids(deny, heard) == []
    fp = fingerprint(Pcm(audio))
    old = Clip("old-print", "Ad", REGISTERED, T0, None, Fingerprint(fp.bits ^ np.uint32(0xFFFFFFFF), fp.mask))
    store.put(replace(old, print_version=PRINT_VERSION - 1, audio_kept=True), to_pcm16(Pcm(audio)))
    reads = 0
    read = store.audio

    def counted(clip_id: str) -> bytes | None:
        nonlocal reads
        reads += 1
        return read(clip_id)

    monkeypatch.setattr(store, "audio", counted)
    found = deny.match(heard, T0)
    assert [(m.clip.clip_id, m.clip.print_version) for m in found] == [("old-print", PRINT_VERSION)]
    assert deny.wait_compacted(WAIT_S)
    assert ids(deny, heard) == ["old-print"]
    assert reads == 1


def test_store_failure_while_following_a_change_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the store cannot be read after its generation moved, the check raises (the guard
    denies), never answers "no match"; once the store is back the new clip is matched."""
    store = filled_store(20)
    deny = Denylist(store)
    audio = programme(68, seconds=8.0)
    heard = fingerprint(hear(audio, seed=8, start_s=2.0))
    assert ids(deny, heard) == []
    store.put(clip("new", fingerprint(Pcm(audio))))
    read = store.all

    def down() -> list[Clip]:
        raise Unavailable("the broadcast clip store is unavailable")

    monkeypatch.setattr(store, "all", down)
    with pytest.raises(Unavailable):
        deny.match(heard, T0)
    monkeypatch.setattr(store, "all", read)
    assert ids(deny, heard) == ["new"]


def test_failed_compaction_keeps_the_live_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction that fails in the background is counted and leaves the live index as it
    was: the clip it was folding in keeps matching, and the next change retries it."""
    store = filled_store(20)
    deny = Denylist(store, compact_fraction=0.0)
    first_audio, second_audio = programme(69, seconds=8.0), programme(70, seconds=8.0)
    heard_first = fingerprint(hear(first_audio, seed=9, start_s=2.0))
    heard_second = fingerprint(hear(second_audio, seed=10, start_s=2.0))
    assert ids(deny, heard_first) == []
    build = deny._build

    def broken(clips: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(deny, "_build", broken)
    store.put(clip("first", fingerprint(Pcm(first_audio))))
    assert ids(deny, heard_first) == ["first"]
    assert deny.wait_compacted(WAIT_S)
    assert deny.compaction_failures == 1
    assert ids(deny, heard_first) == ["first"]
    monkeypatch.setattr(deny, "_build", build)
    store.put(clip("second", fingerprint(Pcm(second_audio))))
    assert ids(deny, heard_second) == ["second"]
    assert deny.wait_compacted(WAIT_S)
    assert deny.pending_changes == 0
    assert ids(deny, heard_first) == ["first"]


def _unavailable_clips() -> list[Clip]:
    raise Unavailable("the clip store is unavailable")


def test_preload_builds_the_index_before_the_first_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """After `preload` (run at start) the first check builds nothing: it matches a registered
    clip with the store's clip list made to fail, which only a build would read."""
    store = filled_store(20)
    prog = programme(301, seconds=6.0)
    store.put(clip("ad", fingerprint(Pcm(prog))))
    deny = Denylist(store)
    deny.preload()
    monkeypatch.setattr(store, "all", _unavailable_clips)
    assert ids(deny, fingerprint(hear(prog, seed=1))) == ["ad"]


def test_preload_failure_is_left_to_the_check_which_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that fails during `preload` does not stop the start; the first check then
    builds again and raises (the guard answers DENY), never an empty match."""
    store = filled_store(5)
    prog = programme(302, seconds=6.0)
    store.put(clip("ad", fingerprint(Pcm(prog))))
    monkeypatch.setattr(store, "all", _unavailable_clips)
    deny = Denylist(store)
    deny.preload()
    with pytest.raises(Unavailable):
        deny.match(fingerprint(hear(prog, seed=1)), T0)
