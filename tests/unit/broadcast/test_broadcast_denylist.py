"""The denylist's search: the inverted index over clip segments (and the scan it replaced)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pytest
from unit.broadcast.broadcast_synth import hear, programme

from purchase_guard.broadcast.denylist import PROMOTED, REGISTERED, Clip, Denylist, MemoryClipStore
from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.voice.audio import Pcm

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def clip(clip_id: str, fp: Fingerprint, *, expires_at: datetime | None = None) -> Clip:
    return Clip(clip_id, clip_id, PROMOTED if expires_at else REGISTERED, T0, expires_at, fp)


def scrambled(fp: Fingerprint, rng: np.random.Generator) -> Fingerprint:
    """Unrelated to `fp` and to every other scrambled copy, with the same bit statistics."""
    return Fingerprint(fp.bits ^ np.uint32(rng.integers(1, 2**32)), fp.mask, fp.hop_s)


@pytest.fixture(scope="module")
def long_clip() -> np.ndarray:
    return programme(31, seconds=40.0)


@pytest.mark.parametrize("search", ["index", "scan"])
@pytest.mark.parametrize("start_s", [0.5, 8.1, 19.7, 33.0])
def test_a_copy_heard_anywhere_in_a_long_clip_is_found_once(
    long_clip: np.ndarray, search: Literal["index", "scan"], start_s: float
) -> None:
    """A 40 s clip among 300 unrelated ones: 3 s heard from its start, its middle or near its
    end is matched to that clip alone, once, at the offset where the 3 s were cut."""
    store = MemoryClipStore()
    target = fingerprint(Pcm(long_clip))
    store.put(clip("ad", target))
    rng = np.random.default_rng(0)
    others = [fingerprint(Pcm(programme(200 + k, seconds=20.0))) for k in range(3)]
    for k in range(300):
        store.put(clip(f"other-{k}", scrambled(others[k % 3], rng)))
    deny = Denylist(store, search=search)
    found = deny.match(fingerprint(hear(long_clip, seed=7, start_s=start_s, snr_db=10)), T0)
    assert [m.clip.clip_id for m in found] == ["ad"]
    # hear() cuts within 0.2 s of start_s; the offset is where the query's frames sit in the clip.
    assert abs(found[0].match.offset * target.hop_s - start_s) < 0.3


def test_expired_clip_is_not_matched() -> None:
    """A promoted clip matches while it is live and not after it expires, with no store change."""
    audio = programme(41, seconds=8.0)
    store = MemoryClipStore()
    store.put(clip("promoted", fingerprint(Pcm(audio)), expires_at=T0 + timedelta(hours=48)))
    deny = Denylist(store)
    heard = fingerprint(hear(audio, seed=2, start_s=3.0))
    assert [m.clip.clip_id for m in deny.match(heard, T0 + timedelta(hours=47))] == ["promoted"]
    assert deny.match(heard, T0 + timedelta(hours=48)) == []


def test_index_is_rebuilt_when_the_generation_moves_and_only_then(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same Denylist finds a clip added after its first search and stops finding a removed
    one; while the store's generation stays put it does not reload the clips."""
    first, second = programme(51, seconds=8.0), programme(52, seconds=8.0)
    store = MemoryClipStore()
    store.put(clip("first", fingerprint(Pcm(first))))
    deny = Denylist(store)
    heard_first = fingerprint(hear(first, seed=1, start_s=2.0))
    heard_second = fingerprint(hear(second, seed=2, start_s=4.0))
    loads = 0
    all_clips = store.all

    def counted() -> list[Clip]:
        nonlocal loads
        loads += 1
        return all_clips()

    monkeypatch.setattr(store, "all", counted)
    assert [m.clip.clip_id for m in deny.match(heard_first, T0)] == ["first"]
    assert deny.match(heard_second, T0) == []
    assert loads == 1
    store.put(clip("second", fingerprint(Pcm(second))))
    assert [m.clip.clip_id for m in deny.match(heard_second, T0)] == ["second"]
    store.delete("first")
    assert deny.match(heard_first, T0) == []
    assert [m.clip.clip_id for m in deny.match(heard_second, T0)] == ["second"]
    assert loads == 3
