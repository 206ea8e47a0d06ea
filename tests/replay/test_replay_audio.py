"""Audio specs: the recordings a scenario names, rendered the same way every time."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.audio import fsdd_join

from purchase_guard.replay.audio import (
    AudioRenderer,
    AudioSpec,
    FileSource,
    FsddSource,
    NoiseMix,
    identity_from_path,
    mix_noise,
)


@pytest.mark.data
def test_fsdd_spec_is_the_integration_tests_recording(data_dir: Path) -> None:
    """An fsdd spec joins the same takes with the same gaps as tests/support/audio.py."""
    ours, rate = AudioRenderer(data_dir).samples(AudioSpec(fsdd=FsddSource("george", "7391", 20)))
    theirs, their_rate = fsdd_join(data_dir, "george", "7391", 20)
    assert rate == their_rate == 8000
    np.testing.assert_allclose(ours, np.clip(theirs, -1, 1), atol=1e-6)


def test_rendered_wav_is_pcm16_at_the_source_rate(synth_root: Path) -> None:
    """Rendering gives a WAV the guard accepts: PCM16, mono, the source's rate, cropped when asked."""
    spec = AudioSpec(file=FileSource("voices/low.flac"), start_s=0.5, max_s=1.0)
    data = AudioRenderer(synth_root).render(spec)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 1, 16000)
    assert info.frames == 16000


def test_concat_of_different_rates_resamples_to_16k(synth_root: Path) -> None:
    """Parts at 8 kHz and 16 kHz are joined at 16 kHz with a gap between them."""
    spec = AudioSpec(
        parts=(AudioSpec(fsdd=FsddSource("george", "12", 0)), AudioSpec(file=FileSource("voices/low.flac")))
    )
    samples, rate = AudioRenderer(synth_root).samples(spec)
    fsdd, fsdd_rate = AudioRenderer(synth_root).samples(spec.parts[0])
    low, _ = AudioRenderer(synth_root).samples(spec.parts[1])
    assert rate == 16000
    expected = round(fsdd.size * 16000 / fsdd_rate) + low.size + 2 * int(0.3 * 16000)
    assert abs(samples.size - expected) <= 2


def test_noise_is_mixed_at_the_requested_snr() -> None:
    """The added noise is `snr_db` below the signal, and the seed picks where the noise starts."""
    rng = np.random.default_rng(0)
    signal = (0.3 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)
    noise = rng.standard_normal(50000).astype(np.float32)
    mixed = mix_noise(signal, 16000, noise, 16000, 20.0, "home-1")
    added = mixed - signal
    snr = 10 * np.log10(np.mean(signal.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.01)
    other = mix_noise(signal, 16000, noise, 16000, 20.0, "home-2")
    assert not np.allclose(other, mixed)
    assert np.array_equal(mix_noise(signal, 16000, noise, 16000, 20.0, "home-1"), mixed)


def test_templates_resolve_only_template_fields() -> None:
    """Digits and the noise seed go through the resolver; the rest of the spec is kept as it is."""
    spec = AudioSpec(
        fsdd=FsddSource("george", "${pin}", 3),
        noise=NoiseMix("noise/a.flac", 10),
        noise_seed="${household.key}",
    )
    out = spec.with_templates(lambda s: s.replace("${pin}", "7391").replace("${household.key}", "home-4"))
    assert out.fsdd == FsddSource("george", "7391", 3)
    assert out.noise_seed == "home-4"
    assert out.noise == spec.noise


@pytest.mark.parametrize(
    ("path", "identity"),
    [
        ("librispeech/test-other/1688/1688-142285-0000.flac", "librispeech/1688"),
        ("librispeech/train-clean-100/1963-142393-0000.flac", "librispeech/1963"),
        ("${DATA}/speechocean762-train/audio/1042/010420022.flac", "speechocean/1042"),
        ("broadcast/jfk.flac", "broadcast/jfk"),
        ("voices/low.flac", ""),
    ],
)
def test_speaker_identity_from_the_path(path: str, identity: str) -> None:
    """Who speaks is read from the data set's layout, so the report can tell genuine from impostor."""
    assert identity_from_path(path) == identity
