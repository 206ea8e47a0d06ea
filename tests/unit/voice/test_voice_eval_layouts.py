"""`eval speakers` on folders laid out like the shared corpora (so QA can point it at new recordings)."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf
from unit.voice.voice_synth import RATE, synth_voice

from purchase_guard.voice.evaluation import discover_corpora, main

VOICES = ("low", "high", "mid", "low")


def _write(path: Path, voice: str, seconds: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, synth_voice(voice, seconds, seed=seed, lead_s=0.05, tail_s=0.05), RATE, format="FLAC")


def _fsdd(folder: Path) -> Path:
    for s, voice in enumerate(VOICES):
        for digit in range(3):
            for take in range(5):
                _write(folder / f"{digit}_spk{s}_{take}.flac", voice, 0.45, seed=100 * s + 10 * digit + take)
    return folder


def test_layouts_are_recognised(tmp_path: Path) -> None:
    """FSDD-, LibriSpeech- and speechocean762-style folders are each found with the right kind."""
    _fsdd(tmp_path / "digits")
    for s in range(2):
        for k in range(4):
            _write(tmp_path / "readers" / f"r{s}" / f"c1-{k}.flac", VOICES[s], 0.5, seed=k)
    so = tmp_path / "ocean"
    (so / "spk2age").parent.mkdir(parents=True)
    (so / "spk2age").write_text("a1 30\nk1 8\n")
    (so / "utterances.tsv").write_text("utterance\tspeaker\tpath\ttext\nu1\ta1\taudio/a1/u1.flac\tONE\n")
    _write(so / "audio" / "a1" / "u1.flac", "low", 0.5, seed=1)
    kinds = {c.name: c.kind for c in discover_corpora(tmp_path)}
    assert kinds == {"digits-pin": "fsdd", "readers": "speaker-folders", "ocean": "speechocean"}
    assert [c.kind for c in discover_corpora(tmp_path / "digits")] == ["fsdd"]


def test_eval_on_a_new_fsdd_style_folder_writes_json_and_det_plot(tmp_path: Path) -> None:
    """With no calibrated thresholds for the encoder, figures use fit-split thresholds and say so."""
    data = _fsdd(tmp_path / "new-recordings")
    out = tmp_path / "out"
    args = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--encoder",
        "fake",
        "--utterance",
        "pin",
        "--pin-joins",
        "8",
    ]
    assert main(args) == 0
    report = json.loads((out / "speaker_eval.json").read_text())
    assert report["bands"] == ["pin"]
    assert report["thresholds_source"].startswith("fitted in this run")
    rows = [r for r in report["rows"] if r["split"] == "report" and r["dataset"] == "new-recordings-pin"]
    assert rows
    assert {"eer", "min_dcf", "frr_at_threshold", "frr_at_fmr_1e-3"} <= rows[0].keys()
    assert report["child_detector"]["available"] is False
    assert (out / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_folder_without_any_corpus_is_refused(tmp_path: Path) -> None:
    """A folder with nothing recognisable exits with status 2 instead of reporting empty figures."""
    (tmp_path / "notes.txt").write_text("nothing here")
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--encoder", "fake"]) == 2
