"""Speakers, enrollment/test units and their measured features, for fitting and evaluation.

One table holds, per unit (an utterance, a 4-digit FSDD join or a LibriSpeech chunk), the
speaker embedding of its VAD-trimmed audio, its net speech, SNR and the acoustic measures
of voice/acoustic.py. The back-end, the thresholds and the child detector are all fitted
and evaluated from this table, so every script sees the same units.

Embedding a unit costs ~60 ms of CPU per 3 s with GE2E, so the table is cached on disk,
keyed by a hash of the unit's samples, the VAD's name and the encoder's name: changing
any of them recomputes; nothing else does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.voice import acoustic
from purchase_guard.voice.audio import TARGET_RATE_HZ, Pcm
from purchase_guard.voice.encoder import SpeakerEncoder
from purchase_guard.voice.vad import SpeechDetector, snr_db

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
CHILD_MAX_AGE = 12
ADULT_MIN_AGE = 16  # 13-15 are "teens" (speechocean762 has 6); nobody 16-18 is in the data
CACHE_VERSION = 1


def age_group(age: int | None) -> str:
    """child (<= 12) / teen (13-15) / adult; a corpus without ages is read speech by adults."""
    if age is None or age >= ADULT_MIN_AGE:
        return "adult"
    return "child" if age <= CHILD_MAX_AGE else "teen"


@dataclass(frozen=True)
class SpeakerInfo:
    corpus: str
    speaker: str
    age: int | None
    gender: str | None  # "f" | "m" | None when unknown

    @property
    def key(self) -> str:
        return f"{self.corpus}/{self.speaker}"

    @property
    def group(self) -> str:
        return age_group(self.age)


@dataclass(frozen=True)
class Unit:
    """Audio of one speaker: an enrollment take (model >= 0: which enrollment set) or a test."""

    corpus: str
    speaker: str
    unit_id: str
    model: int  # -1 for a test unit
    pcm: Pcm = field(repr=False)

    @property
    def speaker_key(self) -> str:
        return f"{self.corpus}/{self.speaker}"


@dataclass
class Table:
    """Column arrays over units (row i describes units[i])."""

    units: list[Unit]
    speakers: dict[str, SpeakerInfo]
    emb: FloatArray  # (n, dim), unit length
    speech_s: FloatArray
    snr_db: FloatArray
    acoustic: FloatArray  # (n, acoustic.N_FEATURES), nan where unmeasurable
    encoder: str
    vad: str

    def __post_init__(self) -> None:
        self.speaker_of = np.array([u.speaker_key for u in self.units])
        self.corpus_of = np.array([u.corpus for u in self.units])
        self.model_of = np.array([u.model for u in self.units])

    def select(self, mask: np.ndarray[Any, np.dtype[np.bool_]]) -> Table:
        idx = np.flatnonzero(mask)
        return Table(
            [self.units[i] for i in idx],
            self.speakers,
            self.emb[idx],
            self.speech_s[idx],
            self.snr_db[idx],
            self.acoustic[idx],
            self.encoder,
            self.vad,
        )


def _digest(samples: np.ndarray[Any, Any]) -> str:
    # A cache key, not a security measure.
    data = np.ascontiguousarray(samples, dtype=np.float32).tobytes()
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


class FeatureCache:
    """npz file of per-unit features keyed by sample hash; one file per encoder and VAD."""

    def __init__(self, folder: Path | None, encoder: str, vad: str) -> None:
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in f"{encoder}__{vad}")
        self.path = None if folder is None else folder / f"units-v{CACHE_VERSION}-{safe}.npz"
        self.rows: dict[str, tuple[FloatArray, float, float, FloatArray]] = {}
        if self.path is not None and self.path.is_file():
            z = np.load(self.path, allow_pickle=False)
            for k, e, s, n, a in zip(z["keys"], z["emb"], z["speech"], z["snr"], z["acoustic"], strict=True):
                self.rows[str(k)] = (np.asarray(e, dtype=np.float64), float(s), float(n), np.asarray(a))

    def save(self) -> None:
        if self.path is None or not self.rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.rows)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            keys=np.array(keys),
            emb=np.stack([self.rows[k][0] for k in keys]),
            speech=np.array([self.rows[k][1] for k in keys]),
            snr=np.array([self.rows[k][2] for k in keys]),
            acoustic=np.stack([self.rows[k][3] for k in keys]),
        )
        tmp.replace(self.path)


def measure(
    units: Sequence[Unit],
    speakers: dict[str, SpeakerInfo],
    encoder: SpeakerEncoder,
    vad: SpeechDetector,
    cache_dir: Path | None = None,
    batch: int = 32,
    log: Callable[[str], None] = print,
) -> Table:
    """Embed and measure every unit (from the cache where possible)."""
    cache = FeatureCache(cache_dir, encoder.name, vad.name)
    keys = [_digest(u.pcm.samples) for u in units]
    todo = [i for i, k in enumerate(keys) if k not in cache.rows]
    if todo:
        log(f"measuring {len(todo)} of {len(units)} units with {encoder.name} / {vad.name}")
    for start in range(0, len(todo), batch):
        part = todo[start : start + batch]
        trimmed, speech = [], []
        for i in part:
            net, cut = vad.speech_and_trim(units[i].pcm)
            speech.append(net)
            # A unit the VAD finds (nearly) empty is still embedded whole, so trials are not
            # silently dropped; the verifier itself would refuse it as unusable.
            trimmed.append(
                cut.samples if cut.samples.shape[0] >= TARGET_RATE_HZ // 4 else units[i].pcm.samples
            )
        embs = encoder.embed_batch(trimmed)
        for i, s, t, e in zip(part, speech, trimmed, embs, strict=True):
            cache.rows[keys[i]] = (
                np.asarray(e, dtype=np.float64),
                s,
                snr_db(units[i].pcm),
                acoustic.features(t),
            )
        if (start // batch) % 20 == 19:
            cache.save()
            log(f"  {start + len(part)} / {len(todo)}")
    cache.save()
    rows = [cache.rows[k] for k in keys]
    return Table(
        list(units),
        speakers,
        np.stack([r[0] for r in rows]) if rows else np.zeros((0, encoder.dim)),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
        np.stack([r[3] for r in rows]) if rows else np.zeros((0, acoustic.N_FEATURES)),
        encoder.name,
        vad.name,
    )


def assign_folds(speakers: Iterable[SpeakerInfo], k: int, seed: str = "pg-folds-1") -> dict[str, int]:
    """speaker key -> fold in 0..k-1, dealt round-robin within each corpus x age group x gender.

    The order within a stratum is a hash of the speaker key, so folds do not depend on
    which other speakers are present and every fold gets children, adults, women and men
    of every corpus in proportion.
    """
    strata: dict[tuple[str, str, str], list[str]] = {}
    for s in speakers:
        strata.setdefault((s.corpus, s.group, s.gender or "?"), []).append(s.key)
    out: dict[str, int] = {}
    offset = 0
    for stratum in sorted(strata):
        keys = sorted(strata[stratum], key=lambda key: hashlib.sha256(f"{seed}/{key}".encode()).hexdigest())
        for i, key in enumerate(keys):
            out[key] = (offset + i) % k
        # Continue dealing where the last stratum stopped, so small strata do not all land in fold 0.
        offset = (offset + len(keys)) % k
    return out


def band_counts(speech: FloatArray, edges: Sequence[tuple[str, float]]) -> dict[str, int]:
    out: dict[str, int] = {}
    lo = -math.inf
    for name, hi in edges:
        out[name] = int(np.sum((speech > lo) & (speech <= hi)))
        lo = hi
    return out
