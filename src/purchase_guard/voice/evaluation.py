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
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
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


def fsdd_pin_joins(data: Path, joins_per_speaker: int = 80, n_enrollments: int = 6) -> list[SpeakerSet]:
    """FSDD 4-digit "PIN" joins: 4 takes of one speaker with 0.15-0.3 s silent gaps.

    Takes 0-9 of each digit feed the enrollment joins and takes 10-49 the test joins, so an
    enrollment never contains a recording that is also in a test.
    """
    rec = data / "fsdd" / "recordings"
    speakers = sorted({p.stem.split("_")[1] for p in rec.glob("*.flac")})
    out: list[SpeakerSet] = []
    for idx, spk in enumerate(speakers):
        rng = _rng("fsdd", spk)
        cache: dict[tuple[int, int], np.ndarray[Any, np.dtype[np.float32]]] = {}

        def take(digit: int, n: int, spk: str = spk, cache: dict[Any, Any] = cache) -> Any:
            key = (digit, n)
            if key not in cache:
                cache[key] = _load(rec / f"{digit}_{spk}_{n}.flac").samples
            return cache[key]

        def join(pool: range, tag: str, j: int, rng: np.random.Generator = rng, spk: str = spk) -> Utt:
            digits = rng.integers(0, 10, size=4)
            parts: list[Any] = []
            for k, d in enumerate(digits):
                if k:
                    gap = int(rng.uniform(0.15, 0.3) * TARGET_RATE_HZ)
                    parts.append(np.zeros(gap, dtype=np.float32))
                parts.append(take(int(d), int(rng.choice(pool))))
            samples = np.concatenate(parts).astype(np.float32)
            return Utt("fsdd-pin", spk, f"{tag}{j}", Pcm(samples=samples))

        enroll_pool, test_pool = range(10), range(10, 50)
        enrollments = tuple(
            tuple(join(enroll_pool, f"e{m}_", k) for k in range(3)) for m in range(n_enrollments)
        )
        tests = tuple(join(test_pool, "t", j) for j in range(joins_per_speaker))
        out.append(SpeakerSet("fsdd-pin", spk, _split_of(spk, idx), enrollments, tests))
    return out


def _speechocean_rows(data: Path) -> tuple[dict[str, list[tuple[str, Path]]], dict[str, int]]:
    root = data / "speechocean762-train"
    ages = {}
    for line in (root / "spk2age").read_text().splitlines():
        if line.strip():
            spk, age = line.split()
            ages[spk] = int(age)
    by_spk: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    lines = (root / "utterances.tsv").read_text().splitlines()[1:]
    for line in lines:
        utt, spk, rel, _text = line.split("\t", 3)
        by_spk[spk].append((utt, root / rel))
    return by_spk, ages


def speechocean_adults(data: Path, min_age: int = 18) -> tuple[list[SpeakerSet], list[Utt]]:
    """Adult speakers as SpeakerSets (3 enrollment + rest test) and every child utterance.

    Children (under 13) are returned separately: they are used only as impostors against the
    report-split adults, the case a parental guard exists for.
    """
    by_spk, ages = _speechocean_rows(data)
    adults = sorted(s for s in by_spk if ages.get(s, 0) >= min_age and len(by_spk[s]) >= 5)
    sets: list[SpeakerSet] = []
    for idx, spk in enumerate(adults):
        rows = sorted(by_spk[spk])
        order = _rng("so", spk).permutation(len(rows))
        utts = [Utt("speechocean-adult", spk, rows[k][0], _load(rows[k][1])) for k in order]
        sets.append(
            SpeakerSet("speechocean-adult", spk, _split_of(spk, idx), (tuple(utts[:3]),), tuple(utts[3:]))
        )
    children = [
        Utt("speechocean-child", spk, utt, _load(path))
        for spk in sorted(by_spk)
        if ages.get(spk, 99) <= 12
        for utt, path in sorted(by_spk[spk])
    ]
    return sets, children


def librispeech_test_other(data: Path) -> list[SpeakerSet]:
    """10 speakers x 10 utterances: 3 enroll, 7 test."""
    root = data / "librispeech" / "test-other"
    speakers = sorted(p.name for p in root.iterdir() if p.is_dir())
    sets = []
    for idx, spk in enumerate(speakers):
        files = sorted((root / spk).glob("*.flac"))
        order = _rng("lso", spk).permutation(len(files))
        utts = [Utt("libri-test-other", spk, files[k].stem, _load(files[k])) for k in order]
        sets.append(
            SpeakerSet("libri-test-other", spk, _split_of(spk, idx), (tuple(utts[:3]),), tuple(utts[3:]))
        )
    return sets


def librispeech_train_clean(data: Path, max_speakers: int = 260, chunk_s: float = 1.6) -> list[SpeakerSet]:
    """One utterance per speaker: enrollment = three 1.6 s chunks from its start, test = the rest.

    Enrollment and test come from the same recording session here, which flatters target
    scores compared with enrolling one day and buying another; docs/voice.md says so.
    """
    root = data / "librispeech" / "train-clean-100"
    files = sorted(root.glob("*.flac"))[:max_speakers]
    sets = []
    for idx, path in enumerate(files):
        spk = path.stem.split("-")[0]
        voiced = trim_silence(_load(path)).samples
        n = int(chunk_s * TARGET_RATE_HZ)
        if voiced.shape[0] < 3 * n + 3 * TARGET_RATE_HZ:
            continue  # too short to leave a test part of at least 3 s
        chunks = tuple(
            Utt("libri-train-clean", spk, f"{path.stem}:e{k}", Pcm(samples=voiced[k * n : (k + 1) * n]))
            for k in range(3)
        )
        test = Utt("libri-train-clean", spk, f"{path.stem}:t", Pcm(samples=voiced[3 * n :]))
        sets.append(SpeakerSet("libri-train-clean", spk, _split_of(spk, idx), (chunks,), (test,)))
    return sets


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
    extra_impostors: Sequence[Utt] = (),
    extra_impostors_for: str = "speechocean-adult",
) -> list[Trial]:
    """Score every test against every enrollment of the same corpus and split.

    `extra_impostors` (children) are scored against the report-split enrollments of the
    corpus `extra_impostors_for` only.
    """
    every = [u for s in sets for group in s.enrollments for u in group] + [u for s in sets for u in s.tests]
    cache.fill(every + list(extra_impostors))
    trials: list[Trial] = []
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
        if split == "report" and dataset == extra_impostors_for:
            probes += [(u, True) for u in extra_impostors]
        for u, foreign in probes:
            scores = centroids @ cache.emb(u).astype(np.float64)
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


def _speaker_counts(sets: Sequence[SpeakerSet], children: Sequence[Utt]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for s in sets:
        counts[(s.split, s.dataset)] += 1
    counts[("report", "speechocean-child")] = len({u.speaker for u in children})
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


def make_encoder(kind: str) -> SpeakerEncoder:
    if kind == "fake":
        return FakeEncoder()
    if kind == "ge2e":
        from purchase_guard.voice.ge2e import Ge2eEncoder

        return Ge2eEncoder()
    raise ValueError(f"unknown encoder {kind}")


def run(
    data: Path,
    out: Path,
    encoder: SpeakerEncoder,
    *,
    calibrate: bool,
    thresholds_path: Path | None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build trials, optionally fit thresholds, and write `out/speaker_eval.json`."""
    from purchase_guard.voice.verifier import Thresholds

    started = time.monotonic()
    log("loading corpora ...")
    sets = fsdd_pin_joins(data)
    so_sets, children = speechocean_adults(data)
    sets += so_sets + librispeech_test_other(data) + librispeech_train_clean(data)
    log(
        f"loaded {len(sets)} speakers, {len(children)} child utterances in {time.monotonic() - started:.0f} s"
    )
    cache = EmbeddingCache(encoder)
    trials = build_trials(sets, cache, extra_impostors=children)
    log(f"{len(trials)} trials scored in {time.monotonic() - started:.0f} s")

    fitted = fit_thresholds(trials)
    if calibrate:
        target = thresholds_path
        if target is None:
            target = Path(__file__).with_name("thresholds.json")
        previous = json.loads(target.read_text("utf-8")) if target.exists() else {}
        doc = thresholds_document(encoder.name, fitted, previous)
        target.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
        log(f"wrote {target}")
        configured = Thresholds.from_mapping(encoder.name, doc["encoders"][encoder.name])
    else:
        configured = Thresholds.load(encoder.name, thresholds_path)
    thr = {b.name: b.threshold for b in configured.bands}

    counts = _speaker_counts(sets, children)
    rows = report_rows(trials, thr, "report") + report_rows(trials, thr, "fit")
    for r in rows:
        r["speakers"] = (
            sum(v for (sp, _), v in counts.items() if sp == r["split"] and _ != "speechocean-child")
            if r["dataset"] == "all"
            else counts.get((r["split"], r["dataset"]), 0)
        )
    consistency = consistency_stats(trials)
    report: dict[str, Any] = {
        "encoder": encoder.name,
        "mode": "calibrate" if calibrate else "evaluate",
        "thresholds": thr,
        "fitted": fitted,
        "consistency": consistency,
        "rows": rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "speaker_eval.json").write_text(json.dumps(report, indent=2, default=float) + "\n", "utf-8")
    log(format_table(rows))
    log(f"consistency: {json.dumps({k: round(v, 3) for k, v in consistency.items()})}")
    log(f"report written to {out / 'speaker_eval.json'} ({report['seconds']} s)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `purchase-guard eval speakers` and scripts/calibrate_voice.py."""
    parser = argparse.ArgumentParser(prog="purchase-guard eval speakers", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for speaker_eval.json")
    parser.add_argument("--encoder", choices=["ge2e", "fake"], default="ge2e")
    parser.add_argument(
        "--calibrate", action="store_true", help="fit thresholds on the fit split and write thresholds.json"
    )
    parser.add_argument(
        "--thresholds", type=Path, default=None, help="thresholds.json to read or (calibrate) write"
    )
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"data folder {args.data} does not exist", file=sys.stderr)
        return 2
    run(
        args.data,
        args.out,
        make_encoder(args.encoder),
        calibrate=args.calibrate,
        thresholds_path=args.thresholds,
    )
    return 0
