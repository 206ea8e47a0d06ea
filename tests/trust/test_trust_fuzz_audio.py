"""Fuzzing the audio decoders directly: damaged, truncated and hostile containers, raw PCM16 at
any rate. Whatever arrives, decode_audio returns usable samples or raises AudioError; nothing else."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from trust.fuzz_strategies import FUZZ_COUNTS, encoded_audio, pcm16_audio

from purchase_guard.errors import AudioError
from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm, decode_audio

MAX_SECONDS = 5.0
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(result: Pcm) -> None:
    samples = result.samples
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert samples.shape[0] > 0
    assert np.all(np.isfinite(samples))
    assert float(np.max(np.abs(samples))) <= 1.0
    # Resampling to 16 kHz may add a few samples at the edge; never more than the limit allows.
    assert samples.shape[0] <= MAX_SECONDS * TARGET_RATE_HZ + 16


@FUZZ
@given(data=encoded_audio())
def test_encoded_audio_decodes_cleanly_or_raises_audio_error(data: bytes) -> None:
    """Any container bytes: valid 16 kHz mono samples in [-1, 1] within the length limit, or AudioError."""
    FUZZ_COUNTS["audio-decoder (hypothesis, encoded)"] += 1
    try:
        result = decode_audio(encoded=data, max_seconds=MAX_SECONDS)
    except AudioError:
        return
    _check(result)


@FUZZ
@given(pcm=pcm16_audio())
def test_raw_pcm16_at_any_rate_decodes_cleanly_or_raises_audio_error(pcm: tuple[bytes, int]) -> None:
    """Raw PCM16 of any length at any int32 rate: valid samples or AudioError, never another exception."""
    FUZZ_COUNTS["audio-decoder (hypothesis, pcm16)"] += 1
    samples, rate = pcm
    try:
        result = decode_audio(pcm16=samples, sample_rate_hz=rate, max_seconds=MAX_SECONDS)
    except AudioError:
        return
    assert 8000 <= rate <= 48000
    _check(result)
