"""Speaker-verification evaluation and threshold calibration on the shared data sets.

Pure metric functions first (EER, minDCF, FRR/FMR at a threshold, threshold for a target
FMR), then loaders that turn the shared corpora into enrollment/test trials, then `main`,
which the CLI calls as `purchase-guard eval speakers --data DIR --out DIR [--encoder ge2e]`.

Thresholds are *chosen* on the "fit" half of every corpus's speakers and *reported* on the
other half, so the reported error rates are for voices the thresholds never saw. Trials:
a test utterance is scored against the centroid of 3 other utterances of a speaker
(target trial when it is the same speaker, impostor trial otherwise), and falls into the
length band of its own net speech.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm, decode_audio
from purchase_guard.voice.encoder import Embedding, FakeEncoder, SpeakerEncoder, l2_normalise
from purchase_guard.voice.vad import speech_seconds, trim_silence

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
    split: str  # "fit" | "report"
    enrollments: tuple[tuple[Utt, ...], ...]
    tests: tuple[Utt, ...]


@dataclass(frozen=True)
class Trial:
    dataset: str
    split: str
    band: str
    target: bool
    score: float
    speech_s: float


def _load(path: Path) -> Pcm:
    return decode_audio(encoded=path.read_bytes(), max_seconds=60.0, max_bytes=50_000_000)


def _split_of(speaker: str, index: int) -> str:
    # Alternate over the sorted speaker list: deterministic and balanced for small corpora.
    del speaker
    return "fit" if index % 2 == 0 else "report"


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
    for idx, spk in enumerate(sorted(takes)):
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
        out.append(SpeakerSet(dataset, spk, _split_of(spk, idx), enrollments, tests))
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


@dataclass(frozen=True)
class AgedCorpus:
    """A speechocean-style corpus: adult SpeakerSets, and child/teen utterances with ages."""

    sets: list[SpeakerSet]
    children: list[Utt]
    teens: list[Utt]
    ages: dict[str, int]


def speechocean_adults(root: Path, min_age: int = 18, name: str = "speechocean") -> AgedCorpus:
    """Adult speakers as SpeakerSets (3 enrollment + rest test) and every child utterance.

    Children (under 13) are returned separately: they are used only as impostors against the
    report-split adults, the case a parental guard exists for. 13-17 year olds are kept
    apart for the child-detector figures only.
    """
    by_spk, ages = speechocean_rows(root)
    adults = sorted(s for s in by_spk if ages.get(s, 0) >= min_age and len(by_spk[s]) >= 5)
    sets: list[SpeakerSet] = []
    for idx, spk in enumerate(adults):
        rows = sorted(by_spk[spk])
        order = _rng("so", spk).permutation(len(rows))
        utts = [Utt(f"{name}-adult", spk, rows[k][0], _load(rows[k][1])) for k in order]
        sets.append(
            SpeakerSet(f"{name}-adult", spk, _split_of(spk, idx), (tuple(utts[:3]),), tuple(utts[3:]))
        )

    def utts_of(lo: int, hi: int, tag: str) -> list[Utt]:
        return [
            Utt(f"{name}-{tag}", spk, utt, _load(path))
            for spk in sorted(by_spk)
            if lo <= ages.get(spk, -1) <= hi
            for utt, path in sorted(by_spk[spk])
        ]

    return AgedCorpus(sets, utts_of(0, 12, "child"), utts_of(13, min_age - 1, "teen"), dict(ages))


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
        sets.append(SpeakerSet(dataset, spk, _split_of(spk, idx), (tuple(utts[:3]),), tuple(utts[3:])))
        idx += 1
    return sets


def librispeech_train_clean(
    root: Path, max_speakers: int = 260, chunk_s: float = 1.6, dataset: str = "libri-train-clean"
) -> list[SpeakerSet]:
    """One utterance per speaker: enrollment = three 1.6 s chunks from its start, test = the rest.

    Enrollment and test come from the same recording session here, which flatters target
    scores compared with enrolling one day and buying another; docs/voice.md says so.
    """
    files = _audio_files(root)[:max_speakers]
    sets = []
    for idx, path in enumerate(files):
        spk = path.stem.split("-")[0]
        voiced = trim_silence(_load(path)).samples
        n = int(chunk_s * TARGET_RATE_HZ)
        if voiced.shape[0] < 3 * n + 3 * TARGET_RATE_HZ:
            continue  # too short to leave a test part of at least 3 s
        chunks = tuple(
            Utt(dataset, spk, f"{path.stem}:e{k}", Pcm(samples=voiced[k * n : (k + 1) * n])) for k in range(3)
        )
        test = Utt(dataset, spk, f"{path.stem}:t", Pcm(samples=voiced[3 * n :]))
        sets.append(SpeakerSet(dataset, spk, _split_of(spk, idx), (chunks,), (test,)))
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


@dataclass(frozen=True)
class Corpora:
    sets: list[SpeakerSet]
    # dataset of adult sets -> utterances scored only as impostors against its report half
    impostors_for: dict[str, list[Utt]]
    aged: list[AgedCorpus]


def load_corpora(specs: Sequence[CorpusSpec], pin_joins: int = 80) -> Corpora:
    sets: list[SpeakerSet] = []
    impostors: dict[str, list[Utt]] = {}
    aged: list[AgedCorpus] = []
    for spec in specs:
        if spec.kind == "fsdd":
            sets += fsdd_pin_joins(spec.root, joins_per_speaker=pin_joins, dataset=spec.name)
        elif spec.kind == "speechocean":
            corpus = speechocean_adults(spec.root, name=spec.name)
            sets += corpus.sets
            impostors[f"{spec.name}-adult"] = corpus.children
            aged.append(corpus)
        elif spec.kind == "speaker-folders":
            sets += librispeech_test_other(spec.root, dataset=spec.name)
        elif spec.kind == "one-per-speaker":
            sets += librispeech_train_clean(spec.root, dataset=spec.name)
    return Corpora(sets, impostors, aged)


# --------------------------------------------------------------------------- scoring


class EmbeddingCache:
    """Embeds each Utt once per run (VAD-trimmed, as the verifier does) and remembers speech length."""

    def __init__(self, encoder: SpeakerEncoder, batch: int = 32) -> None:
        self.encoder = encoder
        self.batch = batch
        self._emb: dict[tuple[str, str, str], Embedding] = {}
        self._speech: dict[tuple[str, str, str], float] = {}

    @staticmethod
    def key(u: Utt) -> tuple[str, str, str]:
        return (u.dataset, u.speaker, u.utt_id)

    def fill(self, utts: Sequence[Utt]) -> None:
        todo = [u for u in utts if self.key(u) not in self._emb]
        for start in range(0, len(todo), self.batch):
            part = todo[start : start + self.batch]
            trimmed = []
            for u in part:
                self._speech[self.key(u)] = speech_seconds(u.pcm)
                t = trim_silence(u.pcm).samples
                # A take the VAD finds empty is still embedded whole, so trials are not
                # silently dropped; the verifier itself would have refused it as unusable.
                trimmed.append(t if t.shape[0] >= TARGET_RATE_HZ // 4 else u.pcm.samples)
            for u, e in zip(part, self.encoder.embed_batch(trimmed), strict=True):
                self._emb[self.key(u)] = e

    def emb(self, u: Utt) -> Embedding:
        return self._emb[self.key(u)]

    def speech(self, u: Utt) -> float:
        return self._speech[self.key(u)]


def build_trials(
    sets: Sequence[SpeakerSet],
    cache: EmbeddingCache,
    impostors_for: Mapping[str, Sequence[Utt]] | None = None,
    cohort: FloatArray | None = None,
    cohort_top_k: int = 200,
) -> list[Trial]:
    """Score every test against every enrollment of the same corpus and split.

    `impostors_for[dataset]` (children) are scored against the report-split enrollments of
    that dataset only. With a `cohort` (rows: unit embeddings of speakers in none of the
    sets), scores are adaptive-s-normalised: each side is z-normalised against the mean and
    standard deviation of its `cohort_top_k` highest cohort scores, and the two averaged.
    """
    extra = impostors_for or {}
    every = [u for s in sets for group in s.enrollments for u in group] + [u for s in sets for u in s.tests]
    cache.fill(every + [u for utts in extra.values() for u in utts])
    trials: list[Trial] = []

    def cohort_stats(vectors: FloatArray) -> tuple[FloatArray, FloatArray]:
        assert cohort is not None
        k = min(cohort_top_k, cohort.shape[0])
        top = -np.sort(-(vectors @ cohort.T), axis=1)[:, :k]
        return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-6)

    # Impostors come from the same corpus only: across corpora the channel alone separates
    # speakers, which would make the impostor side look easier than a household is.
    by_group: dict[tuple[str, str], list[SpeakerSet]] = defaultdict(list)
    for s in sets:
        by_group[(s.dataset, s.split)].append(s)
    for (dataset, split), group in by_group.items():
        models = [
            (s.speaker, l2_normalise(np.mean([cache.emb(u) for u in enr], axis=0)))
            for s in group
            for enr in s.enrollments
        ]
        centroids = np.stack([m for _, m in models]).astype(np.float64)
        owners = [spk for spk, _ in models]
        probes = [(u, False) for s in group for u in s.tests]
        if split == "report" and dataset in extra:
            probes += [(u, True) for u in extra[dataset]]
        if not probes:
            continue
        probe_emb = np.stack([cache.emb(u) for u, _ in probes]).astype(np.float64)
        matrix = probe_emb @ centroids.T
        if cohort is not None:
            mu_e, sd_e = cohort_stats(centroids)
            mu_t, sd_t = cohort_stats(probe_emb)
            matrix = 0.5 * (
                (matrix - mu_e[None, :]) / sd_e[None, :] + (matrix - mu_t[:, None]) / sd_t[:, None]
            )
        for (u, foreign), scores in zip(probes, matrix, strict=True):
            sp = cache.speech(u)
            for owner, score in zip(owners, scores, strict=True):
                trials.append(
                    Trial(
                        dataset=u.dataset,
                        split=split,
                        band=band_of(sp),
                        target=(owner == u.speaker and not foreign),
                        score=float(score),
                        speech_s=sp,
                    )
                )
    return trials


# --------------------------------------------------------------------------- calibration and report


def fit_thresholds(trials: Sequence[Trial]) -> dict[str, dict[str, float]]:
    """Per band, on fit-split trials of all corpora pooled: threshold at FMR <= 1e-3, and the EER point."""
    out: dict[str, dict[str, float]] = {}
    for band, _ in BAND_EDGES:
        tgt = [t.score for t in trials if t.split == "fit" and t.band == band and t.target]
        imp = [t.score for t in trials if t.split == "fit" and t.band == band and not t.target]
        if not tgt or not imp:
            continue
        e, e_thr = eer(tgt, imp)
        thr = threshold_at_fmr(imp)
        out[band] = {
            "threshold": thr,
            "eer_threshold": e_thr,
            "fit_eer": e,
            "fit_frr_at_threshold": frr_at(tgt, thr),
            "fit_targets": len(tgt),
            "fit_impostors": len(imp),
        }
    return out


def thresholds_document(
    encoder: str, fitted: dict[str, dict[str, float]], previous: dict[str, Any]
) -> dict[str, Any]:
    bands = []
    for name, edge in BAND_EDGES:
        if name not in fitted:
            raise ValueError(f"no fit trials fell into band {name}; cannot calibrate it")
        bands.append(
            {
                "name": name,
                "max_speech_s": None if math.isinf(edge) else edge,
                "threshold": round(fitted[name]["threshold"], 4),
                "eer_threshold": round(fitted[name]["eer_threshold"], 4),
                "fit_eer": round(fitted[name]["fit_eer"], 4),
                "fit_frr_at_threshold": round(fitted[name]["fit_frr_at_threshold"], 4),
                "fit_trials": {
                    "target": fitted[name]["fit_targets"],
                    "impostor": fitted[name]["fit_impostors"],
                },
            }
        )
    doc = dict(previous)
    doc["version"] = 1
    doc.pop("note", None)
    encoders = dict(doc.get("encoders", {}))
    encoders[encoder] = {
        "rule": f"per band: lowest threshold with FMR <= {TARGET_FMR:g} on fit-split speakers",
        "fitted_on": "fit half (alternate speakers) of fsdd PIN joins, speechocean762 adults, "
        "LibriSpeech test-other and train-clean-100",
        "bands": bands,
    }
    doc["encoders"] = encoders
    return doc


def report_rows(trials: Sequence[Trial], thresholds: dict[str, float], split: str) -> list[dict[str, Any]]:
    rows = []
    datasets = sorted({t.dataset for t in trials if t.split == split})
    for band, _ in BAND_EDGES:
        if band not in thresholds:
            continue  # no fit trials fell into this band, so it has no operating point
        for ds in [*datasets, "all"]:
            sel = [t for t in trials if t.split == split and t.band == band and (ds in ("all", t.dataset))]
            tgt = [t.score for t in sel if t.target]
            imp = [t.score for t in sel if not t.target]
            if not imp:
                continue
            thr = thresholds[band]
            row: dict[str, Any] = {
                "split": split,
                "band": band,
                "dataset": ds,
                "speakers": 0,  # filled in by run(), which knows the speaker sets
                "target_trials": len(tgt),
                "impostor_trials": len(imp),
                "threshold": thr,
                "fmr_at_threshold": fmr_at(imp, thr),
                "frr_at_threshold": frr_at(tgt, thr) if tgt else math.nan,
                "eer": eer(tgt, imp)[0] if tgt else math.nan,
                "min_dcf": min_dcf(tgt, imp) if tgt else math.nan,
                "frr_at_fmr_1e-3": frr_at_fmr(tgt, imp) if tgt else math.nan,
            }
            rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "   -  " if math.isnan(v) else f"{v:6.3f}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    cols = [
        ("split", 6),
        ("band", 8),
        ("dataset", 18),
        ("speakers", 5),
        ("target_trials", 7),
        ("impostor_trials", 8),
        ("threshold", 6),
        ("eer", 6),
        ("min_dcf", 6),
        ("frr_at_threshold", 6),
        ("fmr_at_threshold", 6),
        ("frr_at_fmr_1e-3", 6),
    ]
    heads = [
        "split",
        "band",
        "dataset",
        "spk",
        "tgt",
        "imp",
        "thr",
        "EER",
        "minDCF",
        "FRR@t",
        "FMR@t",
        "FRR@1e-3",
    ]
    lines = ["  ".join(h.ljust(w) for h, (_, w) in zip(heads, cols, strict=True))]
    for r in rows:
        lines.append("  ".join(_fmt(r[c]).ljust(w) for c, w in cols))
    return "\n".join(lines)


def _speaker_counts(
    sets: Sequence[SpeakerSet], impostors_for: Mapping[str, Sequence[Utt]]
) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for s in sets:
        counts[(s.split, s.dataset)] += 1
    for utts in impostors_for.values():
        for u in utts:
            counts[("report", u.dataset)] = len({v.speaker for v in utts})
    return counts


def consistency_stats(trials: Sequence[Trial]) -> dict[str, float]:
    """Similarity of a take to the centroid of 3 other takes: same speaker vs another adult.

    This is what the enrollment consistency gate sees, measured on enrollment-length
    utterances (command band, speechocean adults and LibriSpeech) of fit-split speakers.
    """
    sel = [t for t in trials if t.split == "fit" and t.dataset in {"speechocean-adult", "libri-test-other"}]
    same = np.array([t.score for t in sel if t.target])
    other = np.array([t.score for t in sel if not t.target])
    if same.size == 0 or other.size == 0:
        return {}
    return {
        "same_speaker_p01": float(np.percentile(same, 1)),
        "same_speaker_p05": float(np.percentile(same, 5)),
        "same_speaker_median": float(np.median(same)),
        "other_speaker_median": float(np.median(other)),
        "other_speaker_p90": float(np.percentile(other, 90)),
        "other_speaker_p99": float(np.percentile(other, 99)),
        "n_same": float(same.size),
        "n_other": float(other.size),
    }


def make_encoder(kind: str, ecapa_model_dir: Path | None = None) -> SpeakerEncoder:
    if kind == "fake":
        return FakeEncoder()
    if kind == "ge2e":
        from purchase_guard.voice.ge2e import Ge2eEncoder

        return Ge2eEncoder()
    if kind == "ecapa":
        from purchase_guard.voice.ecapa import EcapaEncoder

        if ecapa_model_dir is None:
            raise ValueError("--encoder ecapa needs --ecapa-model-dir")
        return EcapaEncoder(ecapa_model_dir)
    raise ValueError(f"unknown encoder {kind}")


def child_accuracy(
    cache: EmbeddingCache, corpora: Corpora, encoder_name: str, detector_path: Path | None = None
) -> dict[str, Any]:
    """Child-detector flag rates per corpus, on speakers the detector was not trained on.

    Aged corpora (speechocean layout): children <= 12 vs adults >= 19, 13-17 reported apart.
    Corpora without ages (FSDD, LibriSpeech) are read speech by adults: only their
    "adults flagged" rate is reported.
    """
    from purchase_guard.voice.child import child_detector_for
    from purchase_guard.voice.child_training import Sample, measure

    det = child_detector_for(encoder_name, detector_path)
    if det is None:
        return {"available": False, "why": f"no child detector trained for encoder {encoder_name}"}
    trained = set(det.meta.get("training_utterances", []))
    out: dict[str, Any] = {"available": True, "encoder": det.encoder, "datasets": {}}
    for corpus in corpora.aged:
        utts = [u for s in corpus.sets for g in s.enrollments for u in g] + [
            u for s in corpus.sets for u in s.tests
        ]
        utts += corpus.children + corpus.teens
        cache.fill(utts)
        # Speaker-disjoint: drop every speaker with any utterance in the training set.
        seen = {u.speaker for u in utts if u.utt_id in trained}
        samples = [
            Sample(
                u.speaker, u.utt_id, corpus.ages[u.speaker], cache.speech(u), cache.emb(u).astype(np.float64)
            )
            for u in utts
            if u.speaker not in seen
        ]
        name = corpus.sets[0].dataset.removesuffix("-adult") if corpus.sets else "aged"
        result = measure(det, samples) if samples else {}
        result["excluded_training_speakers"] = len(seen)
        out["datasets"][name] = result
    aged_names = {s.dataset for c in corpora.aged for s in c.sets}
    unaged: dict[str, list[Utt]] = defaultdict(list)
    for s in corpora.sets:
        if s.dataset not in aged_names:
            unaged[s.dataset] += list(s.tests)
    for ds, utts in unaged.items():
        flags = [det.likelihood(cache.emb(u)) >= 0.5 for u in utts]
        out["datasets"][ds] = {
            "note": "no ages in corpus: all speakers assumed adult",
            "adults_flagged": float(np.mean(flags)),
            "n_adult": len(flags),
        }
    return out


def _probit(p: FloatArray) -> FloatArray:
    from scipy.stats import norm

    return np.asarray(norm.ppf(np.clip(p, 1e-5, 1 - 1e-5)), dtype=np.float64)


def plot_det(trials: Sequence[Trial], thresholds: dict[str, float], bands: Sequence[str], path: Path) -> None:
    """DET curves (FRR vs FMR on normal-deviate axes) of the report split, one panel per band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = np.array([1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5])
    fig, axes = plt.subplots(1, len(bands), figsize=(5.2 * len(bands), 5), squeeze=False)
    for ax, band in zip(axes[0], bands, strict=True):
        sel = [t for t in trials if t.split == "report" and t.band == band]
        datasets = sorted({t.dataset for t in sel if t.target})
        for ds in [*datasets, "all"]:
            tgt = np.array([t.score for t in sel if t.target and ds in ("all", t.dataset)])
            imp = np.array([t.score for t in sel if not t.target and ds in ("all", t.dataset)])
            if tgt.size == 0 or imp.size == 0:
                continue
            _, frr, fmr = _sweep(tgt, imp)
            style = {"color": "black", "linewidth": 2.0} if ds == "all" else {"linewidth": 1.2}
            # Error-free datasets lie off these log-like axes; the EER in the label says so.
            label = f"{ds} ({tgt.size}/{imp.size}) EER {100 * eer(tgt, imp)[0]:.2f}%"
            (line,) = ax.plot(_probit(fmr), _probit(frr), label=label, **style)
            if band in thresholds:
                thr = thresholds[band]
                point_x = _probit(np.array([fmr_at(imp, thr)]))
                point_y = _probit(np.array([frr_at(tgt, thr)]))
                ax.plot(point_x, point_y, "o", ms=5, color=line.get_color())
        ax.axvline(float(_probit(np.array([TARGET_FMR]))[0]), color="grey", linestyle=":", linewidth=1)
        ax.axhline(float(_probit(np.array([0.05]))[0]), color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(_probit(ticks), [f"{v:g}" for v in ticks])
        ax.set_yticks(_probit(ticks), [f"{v:g}" for v in ticks])
        ax.set_xlim(_probit(np.array([5e-5]))[0], _probit(np.array([0.5]))[0])
        ax.set_ylim(_probit(np.array([5e-5]))[0], _probit(np.array([0.5]))[0])
        ax.set_xlabel("false-match rate")
        ax.set_ylabel("false-reject rate")
        ax.set_title(f"{band} band, report-split speakers")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best", title="dataset (target/impostor)", title_fontsize=7)
    fig.suptitle("DET: dots = configured threshold; dotted = FMR 1e-3 and FRR 5 %", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cohort(data: Path | None, cache: EmbeddingCache, log: Callable[[str], None]) -> FloatArray | None:
    if data is None:
        return None
    files = _audio_files(data)
    if not files:
        raise ValueError(f"no audio files for the s-norm cohort in {data}")
    utts = [Utt("cohort", p.stem.split("-")[0], p.stem, _load(p)) for p in files]
    cache.fill(utts)
    log(f"s-norm cohort: {len(utts)} utterances from {data}")
    return np.stack([cache.emb(u) for u in utts]).astype(np.float64)


def run(
    data: Path,
    out: Path,
    encoder: SpeakerEncoder,
    *,
    calibrate: bool,
    thresholds_path: Path | None,
    bands: Sequence[str] = BAND_NAMES,
    snorm_cohort: Path | None = None,
    child_detector_path: Path | None = None,
    pin_joins: int = 80,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build trials, optionally fit thresholds, write `out/speaker_eval.json` and `out/det.png`."""
    from purchase_guard.errors import Unavailable
    from purchase_guard.voice.verifier import Thresholds

    started = time.monotonic()
    specs = discover_corpora(data)
    if not specs:
        raise ValueError(
            f"no corpus found in {data}: expected an FSDD, LibriSpeech or speechocean762-style folder"
        )
    if snorm_cohort is not None:
        # The cohort's speakers must not also be evaluated.
        specs = [s for s in specs if s.root.resolve() != snorm_cohort.resolve()]
    log("corpora: " + ", ".join(f"{s.name} ({s.kind}) at {s.root}" for s in specs))
    corpora = load_corpora(specs, pin_joins)
    n_children = sum(len(v) for v in corpora.impostors_for.values())
    log(
        f"loaded {len(corpora.sets)} speakers, {n_children} child utterances "
        f"in {time.monotonic() - started:.0f} s"
    )
    cache = EmbeddingCache(encoder)
    cohort = _cohort(snorm_cohort, cache, log)
    trials = build_trials(corpora.sets, cache, corpora.impostors_for, cohort=cohort)
    log(f"{len(trials)} trials scored in {time.monotonic() - started:.0f} s")

    fitted = fit_thresholds(trials)
    configured_source = "thresholds.json"
    if calibrate:
        if cohort is not None:
            raise ValueError("thresholds are calibrated on raw scores; drop --snorm-cohort")
        target = thresholds_path
        if target is None:
            target = Path(__file__).with_name("thresholds.json")
        previous = json.loads(target.read_text("utf-8")) if target.exists() else {}
        doc = thresholds_document(encoder.name, fitted, previous)
        target.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
        log(f"wrote {target}")
        thr = {
            b.name: b.threshold
            for b in Thresholds.from_mapping(encoder.name, doc["encoders"][encoder.name]).bands
        }
    else:
        try:
            if cohort is not None:
                # Configured thresholds are for raw cosine scores.
                raise Unavailable("s-normalised scores have their own scale")  # noqa: TRY301
            thr = {b.name: b.threshold for b in Thresholds.load(encoder.name, thresholds_path).bands}
        except Unavailable as exc:
            # No calibrated operating point for this encoder (or score scale): report at the
            # thresholds this run fits on its fit-split speakers, and say so.
            configured_source = f"fitted in this run on fit-split speakers ({exc})"
            thr = {band: v["threshold"] for band, v in fitted.items()}
            log(f"thresholds: {configured_source}")

    counts = _speaker_counts(corpora.sets, corpora.impostors_for)
    rows = [
        r
        for r in report_rows(trials, thr, "report") + report_rows(trials, thr, "fit")
        if r["band"] in bands and r["band"] in thr
    ]
    child_sets = {u.dataset for v in corpora.impostors_for.values() for u in v}
    for r in rows:
        r["speakers"] = (
            sum(v for (sp, ds), v in counts.items() if sp == r["split"] and ds not in child_sets)
            if r["dataset"] == "all"
            else counts.get((r["split"], r["dataset"]), 0)
        )
    consistency = consistency_stats(trials)
    children = child_accuracy(cache, corpora, encoder.name, child_detector_path)
    out.mkdir(parents=True, exist_ok=True)
    det_path = out / "det.png"
    plot_det(trials, thr, [b for b in bands if any(t.band == b for t in trials)], det_path)
    report: dict[str, Any] = {
        "encoder": encoder.name,
        "mode": "calibrate" if calibrate else "evaluate",
        "data": str(data),
        "corpora": [{"name": s.name, "kind": s.kind, "root": str(s.root)} for s in specs],
        "bands": list(bands),
        "score_normalisation": None
        if cohort is None
        else {"kind": "adaptive s-norm", "cohort": str(snorm_cohort)},
        "thresholds": thr,
        "thresholds_source": configured_source,
        "fitted": fitted,
        "consistency": consistency,
        "rows": rows,
        "child_detector": children,
        "det_png": str(det_path),
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "speaker_eval.json").write_text(json.dumps(report, indent=2, default=float) + "\n", "utf-8")
    log(format_table(rows))
    log(f"consistency: {json.dumps({k: round(v, 3) for k, v in consistency.items()})}")
    log("child detector: " + json.dumps(_child_summary(children)))
    log(f"report written to {out / 'speaker_eval.json'} and {det_path} ({report['seconds']} s)")
    return report


def _child_summary(children: Mapping[str, Any]) -> dict[str, Any]:
    if not children.get("available"):
        return dict(children)
    out: dict[str, Any] = {}
    for ds, r in children["datasets"].items():
        u = r.get("utterances", r)
        out[ds] = {
            k: round(float(u[k]), 3)
            for k in ("children_flagged", "adults_flagged")
            if k in u and u[k] == u[k]
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `purchase-guard eval speakers` (k-fold over speakers; voice/eval_kfold.py)."""
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
