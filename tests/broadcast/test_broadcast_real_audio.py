"""The matcher on real speech: broadcast copies in different rooms match, hard negatives do not."""

from __future__ import annotations

from pathlib import Path

import pytest
from broadcast.broadcast_audio import household_copy, load16k
from support.audio import fsdd_join, wav_bytes

from purchase_guard.broadcast.fingerprint import fingerprint
from purchase_guard.broadcast.match import DEFAULT_MATCH, best_offset
from purchase_guard.voice.audio import decode_audio

pytestmark = pytest.mark.data
OFFSETS = range(-125, 126)


def test_jfk_heard_in_two_rooms_matches(data_dir: Path) -> None:
    """Three seconds of a real broadcast recorded in two different rooms at 10 dB SNR match."""
    jfk = load16k(data_dir / "broadcast" / "jfk.flac")
    a = fingerprint(household_copy(data_dir, jfk, 1.0, 4.0, seed=1))
    b = fingerprint(household_copy(data_dir, jfk, 1.0, 4.0, seed=6))
    m = best_offset(a, b, OFFSETS)
    assert m is not None
    assert DEFAULT_MATCH.accepts(m)


@pytest.mark.parametrize(("one", "other"), [("george", "jackson"), ("lucas", "theo"), ("george", "george")])
def test_same_digits_by_other_or_same_speaker_do_not_match(data_dir: Path, one: str, other: str) -> None:
    """The same four digits said by two people, or twice by one person, are not the same audio."""
    x, rate = fsdd_join(data_dir, one, "4821", 1)
    y, _ = fsdd_join(data_dir, other, "4821", 3)
    a = fingerprint(decode_audio(encoded=wav_bytes(x, rate)))
    b = fingerprint(decode_audio(encoded=wav_bytes(y, rate)))
    m = best_offset(a, b, OFFSETS)
    assert m is None or not DEFAULT_MATCH.accepts(m)


def test_steady_stretches_of_two_strangers_do_not_match(data_dir: Path) -> None:
    """Two speechocean762 speakers saying different sentences agree closely over hundreds of
    bits of steady voicing, which a rule on compared bits (0.27 - 5/sqrt(bits)) took for a
    copy; those bits are worth few independent ones, and the rule on effective bits rejects
    the pair."""
    so = data_dir / "speechocean762-train" / "audio"
    a = fingerprint(decode_audio(encoded=(so / "9614" / "096140005.flac").read_bytes()))
    b = fingerprint(decode_audio(encoded=(so / "6010" / "060100066.flac").read_bytes()))
    m = best_offset(a, b, range(-a.n_frames, b.n_frames))
    assert m is not None
    assert m.bits >= 300
    assert m.ber <= 0.27 - 5.0 / m.bits**0.5  # the case the bit-count rule let through
    assert m.effective_bits < 100
    assert not DEFAULT_MATCH.accepts(m)
