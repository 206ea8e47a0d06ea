"""Fixtures for the replay tests: a synthetic data root and settings for the fake encoder.

Only the corpus test needs ../shared/data; the schema and runner tests build a tiny data root
of synthetic recordings, so they run (and fail) without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

RATE = 16_000


def synth_voice(f0: float, seconds: float, seed: int = 0) -> np.ndarray:
    """A harmonic, speech-like signal with syllable-rate loudness changes and quiet edges."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 3 * t))) / RATE
    sig = sum(np.sin(k * phase) / k for k in range(1, 20))
    sig = 0.3 * sig * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2) / np.max(np.abs(sig))
    edge = 0.001 * rng.standard_normal(int(0.3 * RATE))
    return np.concatenate([edge, sig, edge]).astype(np.float32)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with FSDD-named digit takes for "george" (takes 0, 7, 14, 21: a 4-digit join
    of take 0) and two longer synthetic voices."""
    # Session-wide and never written to by a test: building it takes about half a second.
    root = tmp_path_factory.mktemp("replay-data")
    fsdd = root / "fsdd" / "recordings"
    fsdd.mkdir(parents=True)
    for digit in range(10):
        for take in (0, 7, 14, 21):
            path = fsdd / f"{digit}_george_{take}.flac"
            sf.write(path, synth_voice(110 + digit, 0.3, take)[:: RATE // 8000], 8000)
    voices = root / "voices"
    voices.mkdir()
    sf.write(voices / "low.flac", synth_voice(110, 2.5), RATE)
    sf.write(voices / "high.flac", synth_voice(230, 2.5, 1), RATE)
    return root


@pytest.fixture
def fake_thresholds(tmp_path: Path) -> Path:
    """Thresholds for the fake encoder, which has none packaged (it is not a speaker model)."""
    path = tmp_path / "fake-thresholds.json"
    bands = [{"name": "all", "max_speech_s": None, "threshold": 0.95}]
    path.write_text(json.dumps({"version": 1, "encoders": {"fake-spectral/1": {"bands": bands}}}))
    return path
