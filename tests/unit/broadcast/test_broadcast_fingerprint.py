"""The fingerprint: gain invariance, silence, serialisation, and copies lining up."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.fft
from unit.broadcast.broadcast_synth import RATE, hear, programme

from purchase_guard.broadcast import fingerprint as fpmod
from purchase_guard.broadcast.fingerprint import DEFAULT_PARAMS, Fingerprint, band_energies, fingerprint
from purchase_guard.broadcast.match import DEFAULT_MATCH, best_offset
from purchase_guard.voice.audio import Pcm


def test_gain_does_not_change_the_print() -> None:
    """The same audio 10 dB quieter gives the same sub-prints and the same reliable bits."""
    pcm = hear(programme(1), seed=1)
    quiet = Pcm(np.ascontiguousarray(pcm.samples * np.float32(0.316)))
    a, b = fingerprint(pcm), fingerprint(quiet)
    assert np.array_equal(a.bits, b.bits)
    assert np.array_equal(a.mask, b.mask)
    assert a.voiced_seconds > 1.0


def test_digital_silence_has_no_voiced_frames() -> None:
    """Silence (and dither far below speech level) yields a print with nothing to compare."""
    silent = Pcm(np.zeros(3 * RATE, dtype=np.float32))
    dither = Pcm((np.random.default_rng(0).standard_normal(3 * RATE) * 1e-5).astype(np.float32))
    assert fingerprint(silent).voiced_frames == 0
    assert fingerprint(dither).voiced_frames == 0


def test_audio_shorter_than_a_frame_gives_an_empty_print() -> None:
    """Less audio than one analysis window cannot be fingerprinted at all."""
    fp = fingerprint(Pcm(np.zeros(1000, dtype=np.float32)))
    assert fp.n_frames == 0
    assert fp.voiced_seconds == 0.0


def test_serialisation_round_trips() -> None:
    """A print survives to_bytes/from_bytes exactly, at 8 bytes a frame."""
    fp = fingerprint(hear(programme(2), seed=2))
    blob = fp.to_bytes()
    assert len(blob) == 4 + 8 * fp.n_frames
    back = Fingerprint.from_bytes(blob)
    assert np.array_equal(back.bits, fp.bits)
    assert np.array_equal(back.mask, fp.mask)


@pytest.mark.parametrize("blob", [b"", b"\x01\x00", (5).to_bytes(4, "little") + b"\x00" * 8])
def test_damaged_blob_is_refused(blob: bytes) -> None:
    """A truncated or mis-sized blob raises instead of yielding a wrong print."""
    with pytest.raises(ValueError, match="fingerprint blob"):
        Fingerprint.from_bytes(blob)


def test_two_households_copies_line_up_and_other_audio_does_not() -> None:
    """Two noisy copies cut at different points match at a low error rate; another programme does not."""
    prog = programme(3)
    a = fingerprint(hear(prog, seed=10, snr_db=10))
    b = fingerprint(hear(prog, seed=11, snr_db=10, gain=0.2))
    other = fingerprint(hear(programme(4), seed=12, snr_db=10))
    same = best_offset(a, b, range(-125, 126), replace(DEFAULT_MATCH, min_bits=400))
    diff = best_offset(a, other, range(-125, 126), replace(DEFAULT_MATCH, min_bits=400))
    assert same is not None
    assert same.ber < 0.1
    assert diff is None or diff.ber > 0.3


@pytest.mark.parametrize("frames", [1, 63, 64, 65, 200])
def test_band_energies_in_blocks_equal_the_whole_utterance_at_once(frames: int) -> None:
    """The blocked band energies equal, bit for bit, one FFT over every frame and one product
    with the band matrix, at frame counts below, at, just past and well past one block."""
    p = DEFAULT_PARAMS
    x = np.random.default_rng(frames).standard_normal(p.frame + (frames - 1) * p.hop).astype(np.float32) * 0.1
    bands = fpmod._used_bands(p)
    window = np.hanning(p.frame).astype(np.float32)
    all_frames = np.lib.stride_tricks.sliding_window_view(x, p.frame)[:: p.hop]
    spec = scipy.fft.rfft(all_frames * window, axis=1)[:, bands.lo : bands.hi]
    expected = (spec.real * spec.real + spec.imag * spec.imag) @ bands.matrix
    got = band_energies(x)
    assert got.shape == (frames, 33)
    assert np.array_equal(got, expected.astype(np.float64))
