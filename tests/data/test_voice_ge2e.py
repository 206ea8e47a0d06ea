"""GE2E on real speech: the model loads, and FSDD spoken-PIN joins verify end to end."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from purchase_guard.domain import Role, Voiceprint
from purchase_guard.errors import Unavailable
from purchase_guard.voice.audio import Pcm, decode_audio
from purchase_guard.voice.ge2e import Ge2eEncoder, partial_slices
from purchase_guard.voice.quality import assess_enrollment
from purchase_guard.voice.verifier import build_verifier

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def encoder() -> Ge2eEncoder:
    return Ge2eEncoder()


def pin_join(data: Path, speaker: str, digits: str, take: int) -> Pcm:
    """Four FSDD takes of one speaker joined with 0.2 s gaps, sent through decode_audio as WAV."""
    parts = []
    for i, d in enumerate(digits):
        x, rate = sf.read(data / "fsdd" / "recordings" / f"{d}_{speaker}_{(take + 7 * i) % 50}.flac")
        parts += [x, np.zeros(int(0.2 * rate))]
    buf = io.BytesIO()
    sf.write(buf, np.concatenate(parts), rate, format="WAV", subtype="PCM_16")
    return decode_audio(encoded=buf.getvalue())


def test_partial_slices_follow_resemblyzer() -> None:
    """Short audio gets one 160-frame partial; longer audio a partial every 77 frames (1.3/s).

    For 5 s the sixth partial would be only 72% covered (< 75%) and is dropped, as in Resemblyzer.
    """
    assert partial_slices(8_000) == [slice(0, 160)]
    slices = partial_slices(5 * 16_000)
    assert all(s.stop - s.start == 160 for s in slices)
    assert [s.start for s in slices] == [0, 77, 154, 231, 308]


def test_missing_or_corrupt_weights_are_unavailable(tmp_path: Path) -> None:
    """A missing or damaged weights file raises Unavailable naming the path."""
    with pytest.raises(Unavailable, match="not found"):
        Ge2eEncoder(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(Unavailable, match="could not be loaded"):
        Ge2eEncoder(bad)


def test_ge2e_gives_256_dim_unit_vectors(shared_data: Path, encoder: Ge2eEncoder) -> None:
    """Embeddings are 256-dim float32, unit length, non-negative (ReLU output), and batch == single."""
    a = pin_join(shared_data, "jackson", "1234", 20).samples
    b = pin_join(shared_data, "theo", "5678", 20).samples
    batch = encoder.embed_batch([a, b])
    for e in batch:
        assert e.shape == (256,)
        assert e.dtype == np.float32
        assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
        assert (e >= 0).all()
    assert np.allclose(batch[0], encoder.embed(a), atol=1e-5)
    assert encoder.name == "ge2e-resemblyzer/0.1.4"


def _voiceprint(member: str, centroid: np.ndarray, name: str, templates: tuple = ()) -> Voiceprint:
    return Voiceprint(
        member_id=member,
        household_id="h",
        encoder=name,
        embedding=tuple(float(v) for v in centroid),
        n_utterances=3,
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        templates=tuple(tuple(float(v) for v in t) for t in templates),
    )


def test_pin_joins_verify_end_to_end(shared_data: Path, encoder: Ge2eEncoder) -> None:
    """Enrolled speakers' held-out PINs verify as themselves; an unenrolled speaker's PIN is rejected."""
    verifier = build_verifier(encoder)
    prints = []
    for speaker in ("jackson", "george", "lucas"):
        takes = [
            pin_join(shared_data, speaker, digits, t) for digits, t in (("0417", 0), ("2958", 2), ("6301", 4))
        ]
        enrolled = assess_enrollment(takes, encoder, vad=verifier.vad)
        assert enrolled.n_accepted == 3
        prints.append(_voiceprint(speaker, enrolled.centroid, encoder.name, enrolled.templates))
    roles = {"jackson": Role.ADULT, "george": Role.ADULT, "lucas": Role.TEEN}

    for speaker in ("jackson", "george", "lucas"):
        result = verifier.verify(pin_join(shared_data, speaker, "8526", 30), prints, roles)
        assert result.usable
        assert (
            result.threshold
            == verifier.thresholds.band_for(
                verifier.vad.speech_seconds(pin_join(shared_data, speaker, "8526", 30))
            ).threshold
        )
        assert result.verified, (speaker, result.score, result.threshold)
        assert result.member_id == speaker
        assert result.role is roles[speaker]

    for stranger in ("theo", "nicolas", "yweweler"):
        result = verifier.verify(pin_join(shared_data, stranger, "8526", 30), prints, roles)
        assert not result.verified, (stranger, result.score, result.threshold)
        assert result.member_id is None
