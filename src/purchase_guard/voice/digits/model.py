"""The packaged digit model: a bank of digit templates from many speakers, and its settings.

Written by scripts/train_digits.py from ../shared/data (FSDD single digits, speechocean762-train
digit strings); `digits_model.json` records what it was fitted on, the DTW settings, the
thresholds and the SHA-256 of `digits_bank.npz`, so a damaged or swapped bank is refused at
load instead of silently scoring answers against the wrong frames.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from purchase_guard.errors import Unavailable
from purchase_guard.voice.digits.dtw import FEATURES, DtwParams, Template
from purchase_guard.voice.digits.features import DIM
from purchase_guard.voice.digits.templates import DIGITS

MODEL_FORMAT = "purchase-guard/digit-model"
MODEL_VERSION = 1
META_FILE = "digits_model.json"
BANK_FILE = "digits_bank.npz"


@dataclass(frozen=True)
class DigitModel:
    name: str
    params: DtwParams
    bank: tuple[Template, ...]
    fitted_on: dict[str, Any]


def bank_to_npz(bank: list[Template]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        frames=np.concatenate([t.frames for t in bank]).astype(np.float16),
        lengths=np.asarray([t.frames.shape[0] for t in bank], dtype=np.int32),
        labels=np.asarray([t.label for t in bank]),
    )
    return buf.getvalue()


def _bank_from_npz(data: bytes) -> tuple[Template, ...]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        frames = np.asarray(z["frames"], dtype=np.float32)
        lengths = np.asarray(z["lengths"], dtype=np.int64)
        labels = [str(x) for x in z["labels"]]
    if frames.ndim != 2 or frames.shape[1] != DIM or int(lengths.sum()) != frames.shape[0]:
        raise ValueError("bank frames do not match their lengths")
    if len(labels) != lengths.shape[0] or not set(labels) <= set(DIGITS) or set(labels) != set(DIGITS):
        raise ValueError("bank must hold templates of every digit and nothing else")
    if not np.all(np.isfinite(frames)):
        raise ValueError("bank holds non-finite frames")
    out = []
    offset = 0
    for label, n in zip(labels, lengths, strict=True):
        f = np.ascontiguousarray(frames[offset : offset + int(n)])
        f.setflags(write=False)
        out.append(Template(label, f))
        offset += int(n)
    return tuple(out)


def _read(directory: Path | None, name: str) -> bytes:
    if directory is None:
        return resources.files("purchase_guard.voice.digits").joinpath(name).read_bytes()
    return (directory / name).read_bytes()


def load_model(directory: Path | None = None) -> DigitModel:
    """The model in `directory` (default: packaged); Unavailable if missing, damaged or mismatched."""
    try:
        meta = json.loads(_read(directory, META_FILE).decode("utf-8"))
        bank_bytes = _read(directory, BANK_FILE)
    except (OSError, ValueError) as exc:
        raise Unavailable(f"digit model could not be read: {exc}") from exc
    if not isinstance(meta, dict):
        raise Unavailable(f"digit model {META_FILE} is not a JSON object")
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        raise Unavailable(
            f"digit model has unsupported format {meta.get('format')!r} version {meta.get('version')!r}"
        )
    if meta.get("features") != FEATURES:
        raise Unavailable(f"digit model was made with features {meta.get('features')!r}, not {FEATURES}")
    if hashlib.sha256(bank_bytes).hexdigest() != meta.get("bank_sha256"):
        raise Unavailable(f"digit model: {BANK_FILE} does not match the SHA-256 recorded in {META_FILE}")
    try:
        p = meta["params"]
        params = DtwParams(
            filler_cost=float(p["filler_cost"]),
            stay_penalty=float(p["stay_penalty"]),
            threshold_member=float(p["threshold_member"]),
            threshold_generic=float(p["threshold_generic"]),
            threshold_enroll=float(p["threshold_enroll"]),
            threshold_enroll_generic=float(p["threshold_enroll_generic"]),
        )
        bank = _bank_from_npz(bank_bytes)
        name = str(meta["name"])
    except Exception as exc:  # a damaged file can fail in json, numpy or key lookups
        raise Unavailable(f"digit model is damaged or inconsistent: {exc}") from exc
    return DigitModel(name=name, params=params, bank=bank, fitted_on=dict(meta.get("fitted_on", {})))
