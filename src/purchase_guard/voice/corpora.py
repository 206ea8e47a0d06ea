"""The shared corpora (or folders laid out like them) as speakers and enrollment/test units.

Per corpus (docs/voice.md, "Trials"):
- speechocean762: every speaker with >= 5 utterances, children and teens included (a
  household enrolls its children too): 3 random utterances enroll, the rest are tests.
- FSDD-style digits: 6 enrollment sets of three 4-digit joins from takes 0-9, 80 test
  joins from the other takes.
- LibriSpeech test-other-style (a folder per speaker): 3 utterances enroll, the rest test.
- LibriSpeech train-clean-style (one long utterance per speaker): three 1.6 s chunks
  enroll; the next 2.0 s is a PIN-length test and the remainder (>= 1.5 s) another test.
  Same session on both sides, which flatters target scores; the docs say so.
Ages and genders come from spk2age / spk2gender, LibriSpeech's SPEAKERS.TXT and FSDD's
speakers.tsv where present.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm
from purchase_guard.voice.evaluation import (
    CorpusSpec,
    _audio_files,
    _load,
    _rng,
    fsdd_pin_joins,
    librispeech_test_other,
    speechocean_rows,
)
from purchase_guard.voice.units import SpeakerInfo, Unit
from purchase_guard.voice.vad import trim_silence


def _librispeech_genders(folder: Path) -> dict[str, str]:
    for candidate in (folder / "SPEAKERS.TXT", folder.parent / "SPEAKERS.TXT"):
        if candidate.is_file():
            out = {}
            for line in candidate.read_text("utf-8", errors="replace").splitlines():
                if line.startswith(";") or "|" not in line:
                    continue
                parts = [p.strip() for p in line.split("|")]
                if len(parts) >= 2 and parts[1] in ("F", "M"):
                    out[parts[0]] = parts[1].lower()
            return out
    return {}


def _fsdd_genders(folder: Path) -> dict[str, str]:
    for candidate in (folder / "speakers.tsv", folder.parent / "speakers.tsv"):
        if candidate.is_file():
            lines = candidate.read_text("utf-8").splitlines()
            head = lines[0].split("\t")
            if "speaker" in head and "gender" in head:
                si, gi = head.index("speaker"), head.index("gender")
                return {
                    p[si]: p[gi][0].lower()
                    for p in (ln.split("\t") for ln in lines[1:])
                    if len(p) > gi and p[gi]
                }
    return {}


def _speechocean(spec: CorpusSpec) -> tuple[list[SpeakerInfo], list[Unit]]:
    by_spk, ages = speechocean_rows(spec.root)
    genders: dict[str, str] = {}
    g = spec.root / "spk2gender"
    if g.is_file():
        for line in g.read_text().splitlines():
            if line.strip():
                spk, sex = line.split()
                genders[spk] = sex.lower()[0]
    speakers, units = [], []
    for spk in sorted(by_spk):
        rows = sorted(by_spk[spk])
        if len(rows) < 5 or spk not in ages:
            continue
        speakers.append(SpeakerInfo(spec.name, spk, ages[spk], genders.get(spk)))
        order = _rng("so", spk).permutation(len(rows))
        for rank, k in enumerate(order):
            units.append(Unit(spec.name, spk, rows[k][0], 0 if rank < 3 else -1, _load(rows[k][1])))
    return speakers, units


def _fsdd(spec: CorpusSpec, pin_joins: int) -> tuple[list[SpeakerInfo], list[Unit]]:
    genders = _fsdd_genders(spec.root)
    speakers, units = [], []
    for s in fsdd_pin_joins(spec.root, joins_per_speaker=pin_joins, dataset=spec.name):
        speakers.append(SpeakerInfo(spec.name, s.speaker, None, genders.get(s.speaker)))
        for m, group in enumerate(s.enrollments):
            units += [Unit(spec.name, s.speaker, u.utt_id, m, u.pcm) for u in group]
        units += [Unit(spec.name, s.speaker, u.utt_id, -1, u.pcm) for u in s.tests]
    return speakers, units


def _folders(spec: CorpusSpec) -> tuple[list[SpeakerInfo], list[Unit]]:
    genders = _librispeech_genders(spec.root)
    speakers, units = [], []
    for s in librispeech_test_other(spec.root, dataset=spec.name):
        speakers.append(SpeakerInfo(spec.name, s.speaker, None, genders.get(s.speaker)))
        units += [Unit(spec.name, s.speaker, u.utt_id, 0, u.pcm) for u in s.enrollments[0]]
        units += [Unit(spec.name, s.speaker, u.utt_id, -1, u.pcm) for u in s.tests]
    return speakers, units


def _one_per_speaker(
    spec: CorpusSpec, chunk_s: float = 1.6, pin_s: float = 2.0, min_rest_s: float = 1.5
) -> tuple[list[SpeakerInfo], list[Unit]]:
    genders = _librispeech_genders(spec.root)
    speakers, units = [], []
    seen: set[str] = set()
    for path in _audio_files(spec.root):
        spk = path.stem.split("-")[0]
        if spk in seen:
            continue  # one utterance per speaker: the layout's contract
        voiced = trim_silence(_load(path)).samples
        n, p = int(chunk_s * TARGET_RATE_HZ), int(pin_s * TARGET_RATE_HZ)
        if voiced.shape[0] < 3 * n + p:
            continue
        seen.add(spk)
        speakers.append(SpeakerInfo(spec.name, spk, None, genders.get(spk)))
        for k in range(3):
            units.append(
                Unit(spec.name, spk, f"{path.stem}:e{k}", 0, Pcm(samples=voiced[k * n : (k + 1) * n]))
            )
        units.append(Unit(spec.name, spk, f"{path.stem}:pin", -1, Pcm(samples=voiced[3 * n : 3 * n + p])))
        rest = voiced[3 * n + p :]
        if rest.shape[0] >= min_rest_s * TARGET_RATE_HZ:
            units.append(
                Unit(spec.name, spk, f"{path.stem}:rest", -1, Pcm(samples=np.ascontiguousarray(rest)))
            )
    return speakers, units


def load_units(specs: Sequence[CorpusSpec], pin_joins: int = 80) -> tuple[dict[str, SpeakerInfo], list[Unit]]:
    """Speakers (by key) and units of every corpus in `specs`."""
    speakers: dict[str, SpeakerInfo] = {}
    units: list[Unit] = []
    for spec in specs:
        if spec.kind == "speechocean":
            sp, un = _speechocean(spec)
        elif spec.kind == "fsdd":
            sp, un = _fsdd(spec, pin_joins)
        elif spec.kind == "speaker-folders":
            sp, un = _folders(spec)
        elif spec.kind == "one-per-speaker":
            sp, un = _one_per_speaker(spec)
        else:
            continue
        speakers.update({s.key: s for s in sp})
        units += un
    return speakers, units
