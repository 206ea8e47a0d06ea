"""The replay rule (broadcast/repeat.py): copies of a household's earlier audio, long or short."""

from __future__ import annotations

from unit.broadcast.broadcast_synth import hear, programme

from purchase_guard.broadcast.fingerprint import fingerprint
from purchase_guard.broadcast.repeat import MIN_VOICED_SECONDS, EarlierAudio, find_replay
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
