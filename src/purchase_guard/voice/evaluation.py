"""Speaker-verification metrics and the shared corpora's loaders; `purchase-guard eval speakers`.

Pure metric functions first (EER, minDCF, FRR/FMR at a threshold, threshold for a target
FMR), then the loaders that read FSDD-, LibriSpeech- and speechocean762-style folders
(voice/corpora.py turns them into enrollment/test units), then `main`, the CLI entry
point. The evaluation protocol itself (k-fold over speakers, intervals) is in
voice/kfold.py and voice/eval_kfold.py.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm, decode_audio
from purchase_guard.voice.encoder import SpeakerEncoder

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

# Net-speech band edges (seconds). A spoken 4-digit PIN is 1.5-2.5 s of speech; a purchase
# command ("order more dog food") 2.5-6 s; anything longer is conversational.
BAND_EDGES: tuple[tuple[str, float], ...] = (("pin", 2.5), ("command", 6.0), ("long", math.inf))
BAND_NAMES: tuple[str, ...] = tuple(name for name, _ in BAND_EDGES)
TARGET_FMR = 1e-3
P_TARGET = 0.01
SEED = 20240611


# --------------------------------------------------------------------------- metrics


def _arrays(target: Iterable[float], impostor: Iterable[float]) -> tuple[FloatArray, FloatArray]:
    t = np.asarray(list(target), dtype=np.float64)
    i = np.asarray(list(impostor), dtype=np.float64)
    if t.size == 0 or i.size == 0:
        raise ValueError("need at least one target and one impostor score")
    return t, i


def frr_at(target: Iterable[float], threshold: float) -> float:
    """Fraction of target scores below `threshold` (accept is score >= threshold)."""
    t = np.asarray(list(target), dtype=np.float64)
    return float(np.mean(t < threshold)) if t.size else math.nan


def fmr_at(impostor: Iterable[float], threshold: float) -> float:
    """Fraction of impostor scores at or above `threshold`."""
    i = np.asarray(list(impostor), dtype=np.float64)
    return float(np.mean(i >= threshold)) if i.size else math.nan


def _sweep(t: FloatArray, i: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """FRR and FMR when the threshold is placed at each distinct score (plus +inf)."""
    thresholds = np.unique(np.concatenate((t, i, [np.inf])))
    t_sorted = np.sort(t)
    i_sorted = np.sort(i)
    frr = np.searchsorted(t_sorted, thresholds, side="left") / t.size
    fmr = 1.0 - np.searchsorted(i_sorted, thresholds, side="left") / i.size
    return thresholds, frr, fmr


def eer(target: Iterable[float], impostor: Iterable[float]) -> tuple[float, float]:
    """(equal error rate, threshold where it occurs); interpolated between sweep points."""
    t, i = _arrays(target, impostor)
    thr, frr, fmr = _sweep(t, i)
    k = int(np.argmin(np.abs(frr - fmr)))
    return float((frr[k] + fmr[k]) / 2.0), float(thr[k])


def min_dcf(target: Iterable[float], impostor: Iterable[float], p_target: float = P_TARGET) -> float:
    """Normalised minimum detection cost with C_miss = C_fa = 1."""
    t, i = _arrays(target, impostor)
    _, frr, fmr = _sweep(t, i)
    cost = p_target * frr + (1.0 - p_target) * fmr
    return float(cost.min() / min(p_target, 1.0 - p_target))


def threshold_at_fmr(impostor: Iterable[float], target_fmr: float = TARGET_FMR) -> float:
    """Lowest threshold whose FMR on these impostor scores is <= target_fmr.

    With N impostor scores, floor(target_fmr * N) of them may lie at or above the threshold;
    when that is 0 the threshold sits just above the highest impostor score.
    """
    i = np.sort(np.asarray(list(impostor), dtype=np.float64))[::-1]
    if i.size == 0:
        raise ValueError("need impostor scores")
    allowed = math.floor(target_fmr * i.size)
    if allowed >= i.size:
        return float(i[-1])
    return float(np.nextafter(i[allowed], np.inf))


def frr_at_fmr(target: Iterable[float], impostor: Iterable[float], target_fmr: float = TARGET_FMR) -> float:
    return frr_at(target, threshold_at_fmr(impostor, target_fmr))


def band_of(net_speech_s: float) -> str:
    for name, edge in BAND_EDGES:
        if net_speech_s <= edge:
            return name
    return BAND_EDGES[-1][0]


# --------------------------------------------------------------------------- corpora


@dataclass(frozen=True)
class Utt:
    """One test or enrollment unit: trimmed audio of one speaker."""

    dataset: str
    speaker: str
    utt_id: str
    pcm: Pcm = field(repr=False)


@dataclass(frozen=True)
class SpeakerSet:
    """A speaker's enrollment sets (each 3 utterances) and test utterances; nothing shared."""

    dataset: str
    speaker: str
    enrollments: tuple[tuple[Utt, ...], ...]
    tests: tuple[Utt, ...]


def _load(path: Path) -> Pcm:
    return decode_audio(encoded=path.read_bytes(), max_seconds=60.0, max_bytes=50_000_000)


def _rng(*parts: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32("/".join(parts).encode())])


AUDIO_SUFFIXES = (".flac", ".wav")
_FSDD_NAME = re.compile(r"^(\d)_(.+)_(\d+)$")


def _audio_files(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def fsdd_pin_joins(
    rec: Path, joins_per_speaker: int = 80, n_enrollments: int = 6, dataset: str = "fsdd-pin"
) -> list[SpeakerSet]:
    """FSDD-style 4-digit "PIN" joins: 4 takes of one speaker with 0.15-0.3 s silent gaps.

    `rec` holds `{digit}_{speaker}_{index}.flac|wav`. Per speaker and digit, the first fifth
    of the takes (by index; takes 0-9 of FSDD's 50) feed the enrollment joins and the rest
    the test joins, so an enrollment never contains a recording that is also in a test.
    """
    takes: dict[str, dict[int, dict[int, Path]]] = defaultdict(lambda: defaultdict(dict))
    for p in _audio_files(rec):
        m = _FSDD_NAME.match(p.stem)
        if m:
            takes[m.group(2)][int(m.group(1))][int(m.group(3))] = p
    out: list[SpeakerSet] = []
    for spk in sorted(takes):
        pools: dict[int, tuple[list[int], list[int]]] = {}
        for digit, by_index in takes[spk].items():
            order = sorted(by_index)
            cut = max(1, len(order) // 5)
            if len(order) >= 2:
                pools[digit] = (order[:cut], order[cut:])
        if not pools:
            continue
        digits = sorted(pools)
        rng = _rng("fsdd", spk)
        cache: dict[tuple[int, int], np.ndarray[Any, np.dtype[np.float32]]] = {}

        def take(digit: int, n: int, spk: str = spk, cache: dict[Any, Any] = cache) -> Any:
            key = (digit, n)
            if key not in cache:
                cache[key] = _load(takes[spk][digit][n]).samples
            return cache[key]

        def join(
            which: int,
            tag: str,
            j: int,
            rng: np.random.Generator = rng,
            spk: str = spk,
            digits: list[int] = digits,
            pools: dict[int, tuple[list[int], list[int]]] = pools,
        ) -> Utt:
            picked = [digits[int(k)] for k in rng.integers(0, len(digits), size=4)]
            parts: list[Any] = []
            for k, d in enumerate(picked):
                if k:
                    gap = int(rng.uniform(0.15, 0.3) * TARGET_RATE_HZ)
                    parts.append(np.zeros(gap, dtype=np.float32))
                parts.append(take(d, int(rng.choice(pools[d][which]))))
            samples = np.concatenate(parts).astype(np.float32)
            return Utt(dataset, spk, f"{tag}{j}", Pcm(samples=samples))

        enrollments = tuple(tuple(join(0, f"e{m}_", k) for k in range(3)) for m in range(n_enrollments))
        tests = tuple(join(1, "t", j) for j in range(joins_per_speaker))
        out.append(SpeakerSet(dataset, spk, enrollments, tests))
    return out


def speechocean_rows(root: Path) -> tuple[dict[str, list[tuple[str, Path]]], dict[str, int]]:
    """speaker -> [(utterance id, audio path)] and speaker -> age, from a speechocean762-style folder."""
    ages = {}
    for line in (root / "spk2age").read_text().splitlines():
        if line.strip():
            spk, age = line.split()
            ages[spk] = int(age)
    by_spk: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    lines = (root / "utterances.tsv").read_text().splitlines()[1:]
    for line in lines:
        if not line.strip():
            continue
        utt, spk, rel, _text = line.split("\t", 3)
        by_spk[spk].append((utt, root / rel))
    return by_spk, ages


def librispeech_test_other(root: Path, dataset: str = "libri-test-other") -> list[SpeakerSet]:
    """One folder per speaker (nested chapters allowed): 3 enroll, the rest test (>= 4 utterances)."""
    speakers = sorted(p.name for p in root.iterdir() if p.is_dir())
    sets = []
    idx = 0
    for spk in speakers:
        files = _audio_files(root / spk, recursive=True)
        if len(files) < 4:
            continue
        order = _rng("lso", spk).permutation(len(files))
        utts = [Utt(dataset, spk, files[k].stem, _load(files[k])) for k in order]
        sets.append(SpeakerSet(dataset, spk, (tuple(utts[:3]),), tuple(utts[3:])))
        idx += 1
    return sets


@dataclass(frozen=True)
class CorpusSpec:
    """A folder and how to read it: kind is fsdd | speechocean | speaker-folders | one-per-speaker."""

    kind: str
    name: str
    root: Path


def _looks_like(folder: Path) -> str | None:
    if (folder / "utterances.tsv").is_file() and (folder / "spk2age").is_file():
        return "speechocean"
    files = _audio_files(folder)
    if files and sum(1 for p in files if _FSDD_NAME.match(p.stem)) >= 0.9 * len(files):
        return "fsdd"
    if files and all("-" in p.stem for p in files):
        return "one-per-speaker"
    subdirs = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    if subdirs and sum(1 for d in subdirs if len(_audio_files(d, recursive=True)) >= 4) >= 2:
        return "speaker-folders"
    return None


_SHARED = (
    ("fsdd", "fsdd-pin", ("fsdd", "recordings")),
    ("speechocean", "speechocean", ("speechocean762-train",)),
    ("speaker-folders", "libri-test-other", ("librispeech", "test-other")),
    ("one-per-speaker", "libri-train-clean", ("librispeech", "train-clean-100")),
)


def discover_corpora(data: Path) -> list[CorpusSpec]:
    """The corpora under `data`: the shared-data layout, else `data` itself or its sub-folders.

    Any folder laid out like FSDD (`{digit}_{speaker}_{n}.flac`), LibriSpeech test-other
    (a folder per speaker), LibriSpeech train-clean (flat `{speaker}-...flac`) or
    speechocean762 (`utterances.tsv` + `spk2age`) is picked up, so QA can point the command
    at new recordings.
    """
    found = [
        CorpusSpec(kind, name, data.joinpath(*parts))
        for kind, name, parts in _SHARED
        if data.joinpath(*parts).is_dir() and _looks_like(data.joinpath(*parts)) == kind
    ]
    if found:
        return found
    kind = _looks_like(data)
    if kind is not None and kind != "speaker-folders":
        return [CorpusSpec(kind, f"{data.name}-pin" if kind == "fsdd" else data.name, data)]
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        sub = _looks_like(folder)
        if sub is not None:
            found.append(CorpusSpec(sub, f"{folder.name}-pin" if sub == "fsdd" else folder.name, folder))
    if not found and kind == "speaker-folders":
        found.append(CorpusSpec(kind, data.name, data))
    return found


EncoderFactory = Callable[[str, Path | None], SpeakerEncoder]


def main(argv: Sequence[str] | None, make_encoder: EncoderFactory) -> int:
    """Entry point for `purchase-guard eval speakers` (k-fold over speakers; voice/eval_kfold.py).

    `make_encoder(kind, ecapa_model_dir)` is the composition root's (`app.encoder_for`): this
    module measures encoders, it does not choose them."""
    from purchase_guard.voice import eval_kfold

    parser = argparse.ArgumentParser(prog="purchase-guard eval speakers", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the shared data folder, or any FSDD/LibriSpeech/speechocean762-style folder",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for speaker_eval.json and .md")
    parser.add_argument("--encoder", choices=["ge2e", "ecapa", "fake"], default="ge2e")
    parser.add_argument(
        "--ecapa-model-dir", type=Path, default=None, help="local spkrec-ecapa-voxceleb folder"
    )
    parser.add_argument(
        "--vad",
        choices=["shipped", "energy", "silero", "both"],
        default="shipped",
        help="VAD(s) to evaluate (default: the one the shipped thresholds name)",
    )
    parser.add_argument(
        "--system",
        action="append",
        default=None,
        choices=sorted(eval_kfold.SYSTEMS),
        help="verification system(s) to evaluate (default: the shipped one); repeatable",
    )
    parser.add_argument(
        "--child",
        action="append",
        default=None,
        choices=sorted(eval_kfold.CHILD_SPECS),
        help="child detector variant(s) to evaluate (default: the shipped one); repeatable",
    )
    parser.add_argument("--compare", action="store_true", help="evaluate every system and child variant")
    parser.add_argument("--no-child", action="store_true", help="skip the child detector")
    parser.add_argument("--no-systems", action="store_true", help="skip speaker verification")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder (default: none)")
    parser.add_argument(
        "--pin-joins", type=int, default=80, help="test PIN joins per FSDD-style speaker (default 80)"
    )
    parser.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates (default 1000)")
    parser.add_argument("--no-loco", action="store_true", help="skip the leave-one-corpus-out checks")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"data folder {args.data} does not exist", file=sys.stderr)
        return 2
    try:
        encoder = make_encoder(args.encoder, args.ecapa_model_dir)
        shipped = eval_kfold.shipped_choice(encoder.name)
        vad_names = {"shipped": [shipped["vad"]], "energy": ["energy"], "silero": ["silero"]}.get(
            args.vad, ["energy", "silero"]
        )
        systems = sorted(eval_kfold.SYSTEMS) if args.compare else (args.system or [shipped["system"]])
        child = sorted(eval_kfold.CHILD_SPECS) if args.compare else (args.child or [shipped["child"]])
        if args.no_child:
            child = []
        if args.no_systems:
            systems = []
        eval_kfold.run(
            args.data,
            args.out,
            encoder,
            vads=[eval_kfold.vad_by_name(v) for v in vad_names],
            systems=systems,
            child_specs=child,
            cache_dir=args.cache_dir,
            pin_joins=args.pin_joins,
            replicates=args.replicates,
            loco=not args.no_loco,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
