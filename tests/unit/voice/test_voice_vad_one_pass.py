"""The energy VAD's one pass (speech, trim and SNR from one mask) against the code it replaced.

`old_*` (kept in scripts/bench_vad.py, the baseline it times) are the VAD's functions as they
were before the one pass: each measured every frame's energy and found the speech on its own
(`snr_db` measured the energies twice). The new
code must give the same values, bit for bit (the same float64 arithmetic, done once), so these
tests compare with `==` and `np.array_equal`, never a tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from unit.voice.voice_synth import RATE, tone, voice_pcm

from purchase_guard.domain import Role
from purchase_guard.voice.audio import Pcm, decode_audio
from purchase_guard.voice.encoder import Embedding, FakeEncoder
from purchase_guard.voice.vad import (
    DEFAULT,
    EnergyVad,
    VadConfig,
    snr_db,
    speech_mask,
    speech_seconds,
    speech_trim_and_snr,
    trim_silence,
)
from purchase_guard.voice.verifier import VoiceVerifier

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
from bench_vad import old_snr_db, old_speech_mask, old_speech_seconds, old_trim_silence

F64 = np.ndarray[Any, np.dtype[np.float64]]
Bool = np.ndarray[Any, np.dtype[np.bool_]]


def _pcm(x: np.ndarray[Any, Any]) -> Pcm:
    return Pcm(samples=np.asarray(x, dtype=np.float32))


def _synthetic() -> list[tuple[str, Pcm]]:
    rng = np.random.default_rng(20261203)
    silence = np.zeros(RATE)
    click = 1e-4 * rng.standard_normal(RATE)
    click[8000] = 0.9
    noisy_tone = 0.01 * rng.standard_normal(3 * RATE)
    noisy_tone[RATE : 2 * RATE] += tone(400, 1.0, level=0.14)
    return [
        ("empty", _pcm(np.zeros(0))),
        ("shorter than one frame", _pcm(0.3 * rng.standard_normal(300))),
        ("digital silence", _pcm(silence)),
        ("a click", _pcm(click)),
        ("tone in noise", _pcm(noisy_tone)),
        ("tone between silences", _pcm(np.concatenate((silence, tone(300, 1.0), silence)))),
        ("steady noise", _pcm(0.05 * rng.standard_normal(2 * RATE))),
        ("full scale", _pcm(np.ones(RATE))),
        *(
            (f"voice {v} {s}", voice_pcm(v, 2.5, lead_s=0.4, tail_s=0.6, seed=s))
            for v in ("low", "high")
            for s in (1, 2)
        ),
    ]


def _assert_same(pcm: Pcm, cfg: VadConfig = DEFAULT) -> None:
    net, trimmed, snr = speech_trim_and_snr(pcm, cfg, DEFAULT)
    assert net == old_speech_seconds(pcm, cfg)
    assert np.array_equal(trimmed.samples, old_trim_silence(pcm, cfg).samples)
    assert trimmed.samples.dtype == np.float32
    assert snr == old_snr_db(pcm)
    # Each function alone, and the VAD's pair, give the same values too.
    assert speech_seconds(pcm, cfg) == net
    assert np.array_equal(trim_silence(pcm, cfg).samples, trimmed.samples)
    assert snr_db(pcm) == snr
    assert np.array_equal(speech_mask(pcm, cfg), old_speech_mask(pcm, cfg))
    pair = EnergyVad(cfg).speech_and_trim(pcm)
    assert pair[0] == net
    assert np.array_equal(pair[1].samples, trimmed.samples)


@pytest.mark.parametrize(("name", "pcm"), _synthetic(), ids=[n for n, _ in _synthetic()])
def test_one_pass_equals_the_separate_measures_on_synthetic_audio(name: str, pcm: Pcm) -> None:
    """On silence, clicks, tones in noise, synthetic voices, empty and sub-frame audio: the
    one pass's net speech, trimmed samples and SNR equal, bit for bit, the old separate
    `speech_seconds`, `trim_silence` and `snr_db` (and so do the functions kept)."""
    _assert_same(pcm)


def test_one_pass_with_other_settings_keeps_the_default_snr() -> None:
    """With a VAD of non-default settings, the pass trims by those settings but measures the
    SNR with the default ones, as `snr_db(pcm)` beside that VAD always did."""
    cfg = VadConfig(margin_db=4.0, hangover_frames=2, min_run_frames=2, pad_s=0.05)
    pcm = voice_pcm("low", 2.0, lead_s=0.5, tail_s=0.5, seed=3)
    pcm = _pcm(pcm.samples + 0.003 * np.random.default_rng(3).standard_normal(pcm.samples.shape[0]))
    _assert_same(pcm, cfg)
    net, trimmed, snr = EnergyVad(cfg).speech_trim_and_snr(pcm)
    assert (net, snr) == (old_speech_seconds(pcm, cfg), old_snr_db(pcm, DEFAULT))
    assert np.array_equal(trimmed.samples, old_trim_silence(pcm, cfg).samples)


def test_one_pass_equals_the_separate_measures_on_real_speech(data_dir: Path) -> None:
    """On 60 real recordings (FSDD digits and LibriSpeech, decoded as a request is, some
    with noise added): the same values, bit for bit, as the separate measures."""
    rng = np.random.default_rng(11)
    files = sorted((data_dir / "fsdd" / "recordings").glob("*.flac"))[::100][:30]
    files += sorted((data_dir / "librispeech").rglob("*.flac"))[:30]
    assert len(files) >= 40
    for k, f in enumerate(files):
        pcm = decode_audio(encoded=f.read_bytes())
        if k % 2:
            noise = rng.standard_normal(pcm.samples.shape[0]).astype(np.float32) * 0.01
            pcm = _pcm(pcm.samples + noise)
        _assert_same(pcm)


class _Recording(FakeEncoder):
    """The FakeEncoder, keeping the samples it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[np.ndarray[Any, Any]] = []

    def embed(self, samples_16k: Any) -> Embedding:
        self.seen.append(np.array(samples_16k, copy=True))
        return super().embed(samples_16k)


def test_verify_sample_measures_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """`verify_sample` on the one pass: the encoder embeds the same trimmed samples, and the
    result and what adaptation keeps (net speech, SNR, clipping) equal the separate path's."""
    from unit.voice.test_voice_verifier import PRINTS, ROLES, THRESHOLDS

    import purchase_guard.voice.verifier as verifier_mod

    pcm = _pcm(voice_pcm("low", 3.0, lead_s=0.5, tail_s=0.5, seed=99).samples + 0.002)
    one_enc, sep_enc = _Recording(), _Recording()
    one = VoiceVerifier(one_enc, THRESHOLDS)
    result, heard = one.verify_sample(pcm, PRINTS, ROLES)
    # The separate path, as for any other VAD: the verifier's check for the energy VAD fails.
    monkeypatch.setattr(verifier_mod, "EnergyVad", type("SomeOtherVad", (), {}))
    sep = VoiceVerifier(sep_enc, THRESHOLDS, vad=EnergyVad())
    result_sep, heard_sep = sep.verify_sample(pcm, PRINTS, ROLES)
    assert result == result_sep
    assert heard == heard_sep
    assert heard is not None
    assert heard.snr_db == old_snr_db(pcm)
    assert heard.net_speech_s == old_speech_seconds(pcm)
    assert len(one_enc.seen) == len(sep_enc.seen) == 1
    assert np.array_equal(one_enc.seen[0], old_trim_silence(pcm).samples)
    assert np.array_equal(one_enc.seen[0], sep_enc.seen[0])
    assert result.member_id == "mum"
    assert result.role is Role.ADULT
