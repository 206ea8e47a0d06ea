"""The replay rule (broadcast/repeat.py): copies of a household's earlier audio, long or short."""

from __future__ import annotations

import numpy as np
from unit.broadcast.broadcast_synth import hear, programme

from purchase_guard.broadcast.fingerprint import Fingerprint, fingerprint
from purchase_guard.broadcast.repeat import (
    MIN_VOICED_SECONDS,
    EarlierAudio,
    EarlierAudioCache,
    _exact_copy,
    exact_copy_print_by_print,
    find_replay,
)
from purchase_guard.voice.audio import Pcm


def _earlier(*pcms: Pcm) -> list[EarlierAudio]:
    return [EarlierAudio(f"apr_{i}", f"dec_{i}", "confirm", fingerprint(p)) for i, p in enumerate(pcms)]


def test_a_short_answer_sent_again_is_a_replay_even_below_the_tolerant_rules_length() -> None:
    """A quick answer has too few voiced bits for the tolerant rule, which says nothing below
    MIN_VOICED_SECONDS; its bit-exact copy (the same file sent again) is still found, and another
    short utterance is not taken for it."""
    short = Pcm(programme(3, seconds=0.7))
    assert fingerprint(short).voiced_seconds < MIN_VOICED_SECONDS
    earlier = _earlier(Pcm(programme(9, seconds=0.7)), short)
    found = find_replay(fingerprint(short), earlier)
    assert found is not None
    assert (found.decision_id, found.ber) == ("dec_1", 0.0)
    assert find_replay(fingerprint(Pcm(programme(4, seconds=0.7))), earlier) is None


def test_a_long_copy_through_noise_is_a_replay_and_new_audio_is_not() -> None:
    """Above the length limit the tolerant rule finds a copy heard through 30 dB of noise; a
    different programme is not a replay of it."""
    prog = programme(5, seconds=6.0)
    earlier = _earlier(hear(prog, seed=1, snr_db=60.0))
    assert find_replay(fingerprint(hear(prog, seed=2, snr_db=30.0)), earlier) is not None
    assert find_replay(fingerprint(hear(programme(6, seconds=6.0), seed=3)), earlier) is None


def _blobs(*pcms: Pcm) -> dict[str, bytes]:
    return {f"apr_{i}": fingerprint(p).to_bytes() for i, p in enumerate(pcms)}


class _Fetch:
    """A store's `audio_print_blobs` over `blobs`, recording which ids each call asked for."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.asked: list[list[str]] = []

    def __call__(self, ids: list[str]) -> dict[str, bytes]:
        self.asked.append(list(ids))
        return {i: self.blobs[i] for i in ids if i in self.blobs}


def _refs(*ids: str) -> list[tuple[str, str, str]]:
    return [(i, i.replace("apr", "dec"), "evaluate") for i in ids]


def test_the_cache_opens_each_print_once_and_returns_what_the_store_lists() -> None:
    """A second check fetches only the print it has not opened before; the prints come back in
    the store's order, and a cached print the store no longer lists (purged, or out of the
    window) is not compared again."""
    fetch = _Fetch(_blobs(*(Pcm(programme(k, seconds=1.5)) for k in range(3))))
    cache = EarlierAudioCache(max_bytes=10 * 2**20)
    first = cache.earlier("hh_a", _refs("apr_0", "apr_1"), fetch)
    assert [e.print_id for e in first] == ["apr_0", "apr_1"]
    again = cache.earlier("hh_a", _refs("apr_1", "apr_2"), fetch)
    assert [e.print_id for e in again] == ["apr_1", "apr_2"]
    assert fetch.asked == [["apr_0", "apr_1"], ["apr_2"]]
    assert again[0] is first[1]
    assert [e.print_id for e in cache.earlier("hh_a", _refs("apr_2"), fetch)] == ["apr_2"]


def test_a_listed_print_the_store_no_longer_returns_is_left_out() -> None:
    """Deleted between the listing and the fetch: the check goes on with what exists, as a fresh
    read of the window would."""
    fetch = _Fetch(_blobs(Pcm(programme(1, seconds=1.5))))
    cache = EarlierAudioCache(max_bytes=2**20)
    assert [e.print_id for e in cache.earlier("hh_a", _refs("apr_0", "apr_9"), fetch)] == ["apr_0"]


def test_the_cache_is_per_household() -> None:
    """The same print id under another household is fetched for that household, never served
    from the first one's entries."""
    blobs = _blobs(Pcm(programme(1, seconds=1.5)))
    fetch_a, fetch_b = _Fetch(blobs), _Fetch({})
    cache = EarlierAudioCache(max_bytes=2**20)
    assert len(cache.earlier("hh_a", _refs("apr_0"), fetch_a)) == 1
    assert cache.earlier("hh_b", _refs("apr_0"), fetch_b) == []
    assert fetch_b.asked == [["apr_0"]]


def test_the_cache_holds_at_most_its_bytes_dropping_the_least_recently_used() -> None:
    """With room for about two prints, a third pushes out the one used longest ago; a print
    larger than the whole cache is compared but not kept; a cache of 0 bytes keeps nothing."""
    fetch = _Fetch(_blobs(*(Pcm(programme(k, seconds=1.5)) for k in range(3))))
    one = EarlierAudioCache(max_bytes=2**30).earlier("hh_a", _refs("apr_0"), fetch)[0].nbytes
    cache = EarlierAudioCache(max_bytes=int(2.5 * one))
    cache.earlier("hh_a", _refs("apr_0", "apr_1"), fetch)
    cache.earlier("hh_a", _refs("apr_0"), fetch)  # apr_0 used again: apr_1 is now the oldest
    cache.earlier("hh_a", _refs("apr_2"), fetch)
    assert cache.bytes_held <= int(2.5 * one)
    assert len(cache) == 2
    fetch.asked.clear()
    cache.earlier("hh_a", _refs("apr_0", "apr_1", "apr_2"), fetch)
    assert fetch.asked == [["apr_1"]]
    none = EarlierAudioCache(max_bytes=0)
    assert len(none.earlier("hh_a", _refs("apr_0"), fetch)) == 1
    assert len(none) == 0


def test_cached_prints_find_the_same_replays_as_fresh_ones() -> None:
    """find_replay over prints opened by the cache finds the bit-exact copy and the copy through
    noise it finds over freshly made ones, and nothing for new audio."""
    prog = programme(5, seconds=6.0)
    short = Pcm(programme(3, seconds=0.7))
    fetch = _Fetch(_blobs(hear(prog, seed=1, snr_db=60.0), short))
    cached = EarlierAudioCache(max_bytes=2**24).earlier("hh_a", _refs("apr_0", "apr_1"), fetch)
    noisy = fingerprint(hear(prog, seed=2, snr_db=30.0))
    found = find_replay(noisy, cached)
    assert found is not None
    assert found.decision_id == "dec_0"
    exact = find_replay(fingerprint(short), cached)
    assert exact is not None
    assert (exact.decision_id, exact.ber) == ("dec_1", 0.0)
    assert find_replay(fingerprint(hear(programme(6, seconds=6.0), seed=3)), cached) is None


def _cut(fp: Fingerprint, a: int, b: int) -> Fingerprint:
    """The frames from the a-th voiced frame of `fp` up to its b-th (a new print of them)."""
    voiced = np.flatnonzero(fp.mask)
    lo, hi = int(voiced[a]), int(voiced[b])
    return Fingerprint(fp.bits[lo:hi].copy(), fp.mask[lo:hi].copy(), fp.hop_s)


def test_the_one_array_exact_search_names_what_a_print_by_print_search_names() -> None:
    """On 40 earlier prints (one with no voiced frames, one holding a copy twice over) the
    vectorised exact-copy search names the same earlier print as a byte search per print for:
    each print itself, stretches cut from the middle of one, a stretch found twice (the first
    listed is named), a stretch that matches only 4 bytes off a frame boundary (no copy), a
    print longer than every earlier one, and new audio."""
    fps = [fingerprint(Pcm(programme(100 + i, seconds=1.5))) for i in range(38)]
    silent = Fingerprint(np.zeros(50, np.uint32), np.zeros(50, np.uint32))
    twice = Fingerprint(
        np.concatenate([fps[7].bits, fps[7].bits]), np.concatenate([fps[7].mask, fps[7].mask])
    )
    # A print whose (mask, next sub-print) pairs spell out a query's (sub-print, mask) frames.
    q_bits = np.array([0x11111111, 0x22222222, 0x33333333], np.uint32)
    q_mask = np.array([0xAAAAAAAA, 0xBBBBBBBB, 0xCCCCCCCC], np.uint32)
    shifted = Fingerprint(
        np.array([5, 0xAAAAAAAA, 0xBBBBBBBB, 0xCCCCCCCC], np.uint32),
        np.array([0x11111111, 0x22222222, 0x33333333, 7], np.uint32),
    )
    prints = [*fps[:20], silent, twice, shifted, *fps[20:]]
    earlier = [EarlierAudio(f"apr_{i}", f"dec_{i}", "evaluate", p) for i, p in enumerate(prints)]
    queries = [
        *fps,
        *(_cut(fps[k], 10, 60) for k in (0, 7, 19, 37)),
        _cut(fps[3], 5, 6),
        Fingerprint(q_bits, q_mask),
        Fingerprint(np.tile(twice.bits, 2), np.tile(twice.mask, 2)),
        *(fingerprint(Pcm(programme(900 + i, seconds=1.5))) for i in range(3)),
    ]
    named = []
    for q in queries:
        assert q.voiced_frames > 0  # as find_replay calls it
        want = exact_copy_print_by_print(q, earlier)
        assert _exact_copy(q, earlier) == want
        named.append(None if want is None else want.decision_id)
    assert named[7] == "dec_7"  # fps[7] is listed before the print holding it twice
    assert named[38 + 1] == "dec_7"
    assert named[38 + 5] is None  # found only 4 bytes off a frame boundary
    assert named[38 + 6] is None  # longer than any earlier print
    assert named[-3:] == [None, None, None]
    assert sum(n is not None for n in named) == 38 + 5
