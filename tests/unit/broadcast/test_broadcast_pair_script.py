"""scripts/broadcast_pair.py: two recordings compared as the broadcast check compares them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from unit.broadcast.broadcast_synth import hear, programme, wav

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import broadcast_pair


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_copy_is_reported_as_a_match_and_other_audio_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two homes' copies of one programme print "match"; another programme prints "no match"."""
    a = _write(tmp_path / "a.wav", wav(hear(programme(3), seed=1)))
    copy = _write(tmp_path / "copy.wav", wav(hear(programme(3), seed=2)))
    other = _write(tmp_path / "other.wav", wav(hear(programme(4), seed=3)))
    assert broadcast_pair.main([str(a), str(copy)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(": match")
    assert broadcast_pair.main([str(a), str(other)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no match")


def test_undecodable_audio_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not audio stops with exit status 2 and says why on stderr."""
    a = _write(tmp_path / "a.wav", wav(hear(programme(3), seed=1)))
    junk = _write(tmp_path / "junk.wav", b"not audio at all")
    assert broadcast_pair.main([str(a), str(junk)]) == 2
    assert "cannot read the audio" in capsys.readouterr().err
