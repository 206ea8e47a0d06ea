"""The denylist's search: the inverted index over clip segments (and the scan it replaced)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pytest
from unit.broadcast.broadcast_synth import hear, programme

from purchase_guard.broadcast.denylist import (
    DENYLIST_MATCH,
    DENYLIST_REFUSE,
    PROMOTED,
    REGISTERED,
    Clip,
    Denylist,
    MemoryClipStore,
    RefusalRule,
)
from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.broadcast.match import FineMatch
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


def _joined(*pcms: Pcm) -> Pcm:
    return Pcm(np.concatenate([p.samples for p in pcms]).astype(np.float32))


@pytest.mark.parametrize("search", ["index", "scan"])
def test_a_whole_copy_refuses_and_a_stretch_of_longer_speech_only_matches(
    search: Literal["index", "scan"],
) -> None:
    """The graded denylist: 3 s heard from inside a clip is a refusing match; the clip's last
    2.5 s followed by 6 s of other speech matches the same clip, but covers too little of the
    utterance to refuse (it is challenged instead)."""
    audio = programme(41, seconds=8.0)
    store = MemoryClipStore()
    store.put(clip("ad", fingerprint(Pcm(audio))))
    deny = Denylist(store, search=search)
    whole = deny.match(fingerprint(hear(audio, seed=1, start_s=2.0)), T0)
    assert [(m.clip.clip_id, m.refuses) for m in whole] == [("ad", True)]
    tail = hear(audio, seed=2, start_s=5.3, seconds=2.5)
    other = hear(programme(42, seconds=7.0), seed=3, seconds=6.0)
    partial = deny.match(fingerprint(_joined(tail, other)), T0)
    assert [(m.clip.clip_id, m.refuses) for m in partial] == [("ad", False)]


@pytest.mark.parametrize(
    ("ber", "bits", "query_bits", "refuses"),
    [
        (0.05, 1000, 1500, True),  # strong and covering two thirds of the query
        (0.05, 1000, 2100, False),  # as strong, but under half of the query
        (0.05, 500, 800, False),  # too few bits for the refusal rule
        (0.10, 1000, 1500, False),  # over the refusal limit, within the match rule's
    ],
)
def test_the_refusal_rule_needs_a_low_error_rate_enough_bits_and_coverage(
    ber: float, bits: int, query_bits: int, refuses: bool
) -> None:
    """DENYLIST_REFUSE refuses only a match that is strong, long and covers half the query
    (at 900 effective bits the refusal limit is 0.13 - 1.5 / 30 = 0.08, the match rule's 0.20)."""
    fine = FineMatch(ber, 0, bits, effective_bits=900.0)
    assert DENYLIST_MATCH.accepts(fine)
    assert DENYLIST_REFUSE.refuses(fine, query_bits) is refuses


def test_a_refusal_rule_looser_than_the_match_rule_is_refused_at_construction() -> None:
    """Only matches by the match rule are found, so a looser refusal rule would silently act
    as the match rule: the Denylist will not be built with one."""
    looser = RefusalRule(replace(DENYLIST_MATCH, ber_limit=DENYLIST_MATCH.ber_limit + 0.05))
    with pytest.raises(ValueError, match="at least as strict"):
        Denylist(MemoryClipStore(), refuse=looser)
