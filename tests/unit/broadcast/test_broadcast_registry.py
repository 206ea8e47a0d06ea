"""ClipRegistry validation and the clip stores (SQLite persistence across restarts)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from unit.broadcast.broadcast_synth import RATE, programme, wav

from purchase_guard.api.broadcast_servicer import clip_to_pb
from purchase_guard.broadcast import denylist as denylist_module
from purchase_guard.broadcast.denylist import PROMOTED, Clip, Denylist, MemoryClipStore, SqliteClipStore
from purchase_guard.broadcast.fingerprint import PRINT_VERSION, Fingerprint, fingerprint
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.domain import AudioInput
from purchase_guard.errors import AudioError, InvalidArgument, NotFound
from purchase_guard.voice.audio import Pcm, pcm16_to_pcm

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def registry(store: MemoryClipStore | SqliteClipStore, clock: FrozenClock | None = None) -> ClipRegistry:
    return ClipRegistry(store, clock or FrozenClock(T0), SequentialIds())


@pytest.mark.parametrize(
    "audio",
    [
        AudioInput(),
        AudioInput(encoded=b"RIFF\x00\x00\x00\x00WAVEjunk"),
        AudioInput(encoded=b"not audio at all"),
        AudioInput(encoded=wav(np.zeros(4 * RATE, dtype=np.float32))),
        AudioInput(encoded=wav(programme(1, seconds=0.5))),
    ],
    ids=["empty", "damaged-wav", "unknown-container", "silent", "too-short"],
)
def test_unusable_clip_is_invalid_argument(audio: AudioInput) -> None:
    """Empty, undecodable, silent or too short clips are refused as InvalidArgument and nothing is stored."""
    store = MemoryClipStore()
    with pytest.raises(InvalidArgument):
        registry(store).register("Ad", audio)
    assert store.all() == []


def test_silent_clip_names_the_problem() -> None:
    """The refusal of a silent clip says how much usable sound it had."""
    with pytest.raises(AudioError, match="usable sound"):
        registry(MemoryClipStore()).register(
            "Ad", AudioInput(encoded=wav(np.zeros(4 * RATE, dtype=np.float32)))
        )


@pytest.mark.parametrize("label", ["", "   ", "x" * 201])
def test_label_is_required_and_bounded(label: str) -> None:
    """A missing or overlong label is InvalidArgument."""
    with pytest.raises(InvalidArgument, match="label"):
        registry(MemoryClipStore()).register(label, AudioInput(encoded=wav(programme(1))))


def test_list_is_newest_first_and_hides_promoted_unless_asked() -> None:
    """ListClips returns registered clips newest first; promoted ones only with include_promoted."""
    store = MemoryClipStore()
    clock = FrozenClock(T0)
    reg = registry(store, clock)
    a = reg.register("A", AudioInput(encoded=wav(programme(1))))
    clock.advance(timedelta(minutes=1))
    b = reg.register("B", AudioInput(encoded=wav(programme(2))))
    promoted = Clip("bcl_1", "cluster", PROMOTED, T0, T0 + timedelta(hours=48), a.fp, households=3)
    store.put(promoted)
    assert [c.clip_id for c in reg.list()] == [b.clip_id, a.clip_id]
    assert {c.clip_id for c in reg.list(include_promoted=True)} == {a.clip_id, b.clip_id, "bcl_1"}
    assert "bcl_1" not in {c.clip_id for c in reg.list(include_promoted=True, now=T0 + timedelta(hours=49))}


def test_removing_an_unknown_clip_is_not_found() -> None:
    """RemoveClip of an id that does not exist is NotFound."""
    with pytest.raises(NotFound):
        registry(MemoryClipStore()).remove("clip_nope")


def test_sqlite_store_keeps_clips_across_restarts(tmp_path: Path) -> None:
    """Clips registered before a restart are listed and enforced after it; removal also persists."""
    path = tmp_path / "guard-broadcast.db"
    store = SqliteClipStore(path)
    audio = programme(3, seconds=6.0)
    clip = registry(store).register("Ad", AudioInput(encoded=wav(audio)))
    store.close()

    reopened = SqliteClipStore(path)
    listed = registry(reopened).list()
    assert [c.clip_id for c in listed] == [clip.clip_id]
    assert np.array_equal(listed[0].fp.bits, clip.fp.bits)
    heard = fingerprint(Pcm(np.ascontiguousarray(audio[RATE : 4 * RATE])))
    assert [m.clip.clip_id for m in Denylist(reopened).match(heard, T0)] == [clip.clip_id]
    registry(reopened).remove(clip.clip_id)
    reopened.close()
    assert SqliteClipStore(path).all() == []


def test_denylist_reloads_when_another_writer_changes_the_store(tmp_path: Path) -> None:
    """A clip registered through a second connection (another replica) is enforced on the next check."""
    path = tmp_path / "shared.db"
    deny = Denylist(SqliteClipStore(path))
    audio = programme(4, seconds=6.0)
    heard = fingerprint(Pcm(np.ascontiguousarray(audio[RATE : 4 * RATE])))
    assert deny.match(heard, T0) == []
    clip = registry(SqliteClipStore(path)).register("Ad", AudioInput(encoded=wav(audio)))
    assert [m.clip.clip_id for m in deny.match(heard, T0)] == [clip.clip_id]


def test_clip_printed_by_an_older_method_is_kept_but_not_searched(tmp_path: Path) -> None:
    """A stored clip whose print version differs and whose audio was not kept (a promoted
    cluster, or a clip stored before registered audio was kept) survives a restart but never
    matches, and ListClips shows it as not enforced; current clips beside it still match."""
    path = tmp_path / "old.db"
    store = SqliteClipStore(path)
    audio = programme(5, seconds=6.0)
    current = registry(store).register("Ad", AudioInput(encoded=wav(audio)))
    old = Clip("clip_old", "Old ad", current.source, T0, None, current.fp, print_version=PRINT_VERSION - 1)
    store.put(old)
    store.close()

    reopened = SqliteClipStore(path)
    by_id = {c.clip_id: c for c in reopened.all()}
    assert by_id["clip_old"].print_version == PRINT_VERSION - 1
    assert by_id[current.clip_id].print_version == PRINT_VERSION
    assert (by_id["clip_old"].enforced, by_id[current.clip_id].enforced) == (False, True)
    assert (clip_to_pb(by_id["clip_old"]).enforced, clip_to_pb(by_id[current.clip_id]).enforced) == (
        False,
        True,
    )
    heard = fingerprint(Pcm(np.ascontiguousarray(audio[RATE : 4 * RATE])))
    assert [m.clip.clip_id for m in Denylist(reopened).match(heard, T0)] == [current.clip_id]


def scrambled(fp: Fingerprint) -> Fingerprint:
    """The same frames and mask with every bit flipped: a print that matches nothing heard."""
    return Fingerprint(fp.bits ^ np.uint32(0xFFFFFFFF), fp.mask.copy(), fp.hop_s)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_registered_clip_keeps_its_audio_until_removed(kind: str, tmp_path: Path) -> None:
    """RegisterClip stores the clip's audio as 16 kHz PCM16 beside its print (what re-printing
    needs); RemoveClip deletes both."""
    store = MemoryClipStore() if kind == "memory" else SqliteClipStore(tmp_path / "clips.db")
    audio = programme(6, seconds=3.0)
    clip = registry(store).register("Ad", AudioInput(encoded=wav(audio)))
    assert clip.audio_kept
    kept = store.audio(clip.clip_id)
    assert kept is not None
    restored = pcm16_to_pcm(kept).samples
    assert restored.shape == audio.shape
    assert float(np.max(np.abs(restored - audio))) < 2.0 / 32768
    registry(store).remove(clip.clip_id)
    assert store.audio(clip.clip_id) is None


def test_registered_clip_printed_by_an_older_method_is_reprinted_from_its_audio(tmp_path: Path) -> None:
    """After an upgrade that changes the print, a registered clip is re-printed from its kept
    audio and keeps protecting: it matches, ListClips shows it enforced, and the stored print
    is left as it was (replicas still on the old version keep searching theirs)."""
    path = tmp_path / "upgrade.db"
    store = SqliteClipStore(path)
    audio = programme(7, seconds=6.0)
    clip = registry(store).register("Ad", AudioInput(encoded=wav(audio)))
    kept = store.audio(clip.clip_id)
    # As an older version would have stored it: another print version, a print this
    # version's bits do not agree with.
    store.put(replace(clip, fp=scrambled(clip.fp), print_version=PRINT_VERSION - 1), kept)
    store.close()

    reopened = SqliteClipStore(path)
    (old,) = reopened.all()
    assert (old.print_version, old.enforced, clip_to_pb(old).enforced) == (PRINT_VERSION - 1, True, True)
    heard = fingerprint(Pcm(np.ascontiguousarray(audio[RATE : 4 * RATE])))
    (found,) = Denylist(reopened).match(heard, T0)
    assert (found.clip.clip_id, found.clip.print_version) == (clip.clip_id, PRINT_VERSION)
    assert reopened.all()[0].print_version == PRINT_VERSION - 1
    # Without the kept audio the same stored clip is not searched at all.
    reopened.put(old, None)
    assert Denylist(reopened).match(heard, T0) == []


def test_reprinted_clip_is_not_recomputed_on_every_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-printed clip is fingerprinted once per process, not again each time the store
    changes (every registration elsewhere reloads the index)."""
    store = MemoryClipStore()
    reg = registry(store)
    audio = programme(8, seconds=6.0)
    clip = reg.register("Ad", AudioInput(encoded=wav(audio)))
    store.put(
        replace(clip, fp=scrambled(clip.fp), print_version=PRINT_VERSION - 1), store.audio(clip.clip_id)
    )
    calls: list[int] = []
    real = denylist_module.fingerprint

    def counting(*args: object, **kwargs: object) -> Fingerprint:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(denylist_module, "fingerprint", counting)
    deny = Denylist(store)
    heard = fingerprint(Pcm(np.ascontiguousarray(audio[RATE : 4 * RATE])))
    assert [m.clip.clip_id for m in deny.match(heard, T0)] == [clip.clip_id]
    reg.register("Other", AudioInput(encoded=wav(programme(9))))
    assert [m.clip.clip_id for m in deny.match(heard, T0)] == [clip.clip_id]
    assert len(calls) == 1


def test_damaged_kept_audio_leaves_the_clip_unsearched_and_the_rest_working() -> None:
    """Kept audio that cannot be read back (a damaged blob) does not break the denylist: that
    clip is skipped with a warning, current clips still match."""
    store = MemoryClipStore()
    audio = programme(10, seconds=6.0)
    current = registry(store).register("Ad", AudioInput(encoded=wav(audio)))
    old = Clip("clip_old", "Old ad", current.source, T0, None, current.fp, print_version=0, audio_kept=True)
    store.put(old, b"\x01\x02\x03")  # an odd number of bytes is not PCM16
    heard = fingerprint(Pcm(np.ascontiguousarray(audio[RATE : 4 * RATE])))
    assert [m.clip.clip_id for m in Denylist(store).match(heard, T0)] == [current.clip_id]
