"""`eval speakers` on folders laid out like the shared corpora (so QA can point it at new recordings)."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf
from unit.voice.voice_synth import RATE, synth_voice

from purchase_guard.app import encoder_for
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


def test_eval_on_a_new_fsdd_style_folder_writes_kfold_json_and_markdown(tmp_path: Path) -> None:
    """A new FSDD-style folder gets k-fold rows per band with intervals; without children, no detector."""
    data = _fsdd(tmp_path / "new-recordings")
    out = tmp_path / "out"
    args = ["--data", str(data), "--out", str(out), "--encoder", "fake", "--pin-joins", "8"]
    assert main([*args, "--vad", "energy", "--replicates", "50", "--no-loco"], encoder_for) == 0
    report = json.loads((out / "speaker_eval.json").read_text())
    assert "k-fold over speakers, K=5" in report["protocol"]
    per_vad = report["vads"]["energy/1"]
    rows = next(iter(per_vad["systems"].values()))["rows"]
    pin = [
        r for r in rows if r["band"] == "pin" and r["dataset"] == "new-recordings-pin" and r["group"] == "all"
    ]
    assert pin
    assert {"frr", "frr_ci", "fmr", "fmr_ci", "frr_at_fmr_1e-3", "frr_at_fmr_1e-4"} <= pin[0].keys()
    assert per_vad["child"]["available"] is False
    assert "| band | dataset |" in (out / "speaker_eval.md").read_text()


def test_folder_without_any_corpus_is_refused(tmp_path: Path) -> None:
    """A folder with nothing recognisable exits with status 2 instead of reporting empty figures."""
    (tmp_path / "notes.txt").write_text("nothing here")
    assert (
        main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--encoder", "fake"], encoder_for) == 2
    )
