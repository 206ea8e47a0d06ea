"""Audio specs: how a scenario names the recordings a step plays, and turning them into bytes.

A spec never holds audio, only a recipe over files under the data root (../shared/data), so
the corpus stays data and the recordings are never copied into the repository. Specs:

    {fsdd: {speaker: george, digits: "3817", take: 0}}   single-digit takes joined into a PIN
    {file: librispeech/test-other/1688/1688-142285-0000.flac}
    {concat: [spec, spec, ...]}                            one after the other, with a short gap

Any spec may also carry `gain_db`, `start_s` / `max_s` (crop), `noise: {file, snr_db}` (a room:
the noise segment is chosen from the spec's `noise_seed`, so each household of a fleet case can
hear the same broadcast through a different room) and `speaker` (who is speaking, when it cannot
be told from the path). The speaker identity lets the report split scores into genuine and
impostor attempts.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
from scipy.signal import resample_poly

Samples = npt.NDArray[np.float32]

# Same gap and take rotation as tests/support/audio.py, so a scenario and an integration test
# naming the same speaker, digits and take hear the same recording.
FSDD_GAP_S = 0.2
FSDD_TAKES = 50
CONCAT_GAP_S = 0.3
MIX_RATE_HZ = 16_000


@dataclass(frozen=True)
class FsddSource:
    speaker: str
    digits: str  # may hold a template such as ${challenge.digits}, resolved before rendering
    take: int = 0


@dataclass(frozen=True)
class FileSource:
    path: str  # relative to the data root, or with ${DATA} / ${SCENARIO}


@dataclass(frozen=True)
class NoiseMix:
    path: str
    snr_db: float


@dataclass(frozen=True)
class AudioSpec:
    """One recipe; exactly one of fsdd, file, parts is set."""

    fsdd: FsddSource | None = None
    file: FileSource | None = None
    parts: tuple[AudioSpec, ...] = ()
    gain_db: float = 0.0
    start_s: float = 0.0
    max_s: float = 0.0  # 0: to the end
    noise: NoiseMix | None = None
    noise_seed: str = ""
    speaker: str = ""  # explicit identity; otherwise inferred from the source

    def with_templates(self, resolve: Any) -> AudioSpec:
        """A copy whose template strings went through `resolve(str) -> str`."""
        fsdd = self.fsdd
        if fsdd is not None:
            fsdd = FsddSource(fsdd.speaker, resolve(fsdd.digits), fsdd.take)
        parts = tuple(p.with_templates(resolve) for p in self.parts)
        return AudioSpec(
            fsdd,
            self.file,
            parts,
            self.gain_db,
            self.start_s,
            self.max_s,
            self.noise,
            resolve(self.noise_seed),
            self.speaker,
        )

    def identity(self) -> str:
        """Who speaks in this audio, e.g. "fsdd/george", "librispeech/1688", "" when unknown."""
        if self.speaker:
            return self.speaker
        if self.fsdd is not None:
            return f"fsdd/{self.fsdd.speaker}"
        if self.file is not None:
            return identity_from_path(self.file.path)
        ids = {p.identity() for p in self.parts}
        return ids.pop() if len(ids) == 1 else ""


_LIBRI = re.compile(r"librispeech/(?:test-other/(\d+)/|train-clean-100/(\d+)-)")
_OCEAN = re.compile(r"speechocean762-train/audio/(\d+)/")
_BROADCAST = re.compile(r"broadcast/([^/]+)\.\w+$")


def identity_from_path(path: str) -> str:
    text = path.replace("\\", "/")
    if m := _LIBRI.search(text):
        return f"librispeech/{m.group(1) or m.group(2)}"
    if m := _OCEAN.search(text):
        return f"speechocean/{m.group(1)}"
    if m := _BROADCAST.search(text):
        return f"broadcast/{m.group(1)}"
    return ""


@dataclass
class AudioRenderer:
    """Renders specs to WAV bytes. Decoded source files are cached: a corpus reuses them a lot."""

    data_root: Path
    _cache: dict[Path, tuple[Samples, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve_path(self, raw: str, scenario_dir: Path | None = None) -> Path:
        text = raw.replace("${DATA}", str(self.data_root))
        if scenario_dir is not None:
            text = text.replace("${SCENARIO}", str(scenario_dir))
        path = Path(text)
        return path if path.is_absolute() else self.data_root / path

    def fsdd_path(self, speaker: str, digit: str, take: int) -> Path:
        return self.data_root / "fsdd" / "recordings" / f"{digit}_{speaker}_{take % FSDD_TAKES}.flac"

    def missing_files(self, spec: AudioSpec, scenario_dir: Path | None = None) -> list[Path]:
        """Files the spec needs that do not exist (FSDD digits only when they are literal)."""
        out: list[Path] = []
        if spec.file is not None:
            path = self.resolve_path(spec.file.path, scenario_dir)
            if not path.is_file():
                out.append(path)
        if spec.fsdd is not None and "${" not in spec.fsdd.digits:
            for i, d in enumerate(spec.fsdd.digits):
                path = self.fsdd_path(spec.fsdd.speaker, d, spec.fsdd.take + i * 7)
                if not path.is_file():
                    out.append(path)
        if spec.noise is not None:
            path = self.resolve_path(spec.noise.path, scenario_dir)
            if not path.is_file():
                out.append(path)
        for part in spec.parts:
            out.extend(self.missing_files(part, scenario_dir))
        return out

    def render(self, spec: AudioSpec, scenario_dir: Path | None = None) -> bytes:
        samples, rate = self.samples(spec, scenario_dir)
        buf = io.BytesIO()
        sf.write(buf, samples, rate, subtype="PCM_16", format="WAV")
        return buf.getvalue()

    def samples(self, spec: AudioSpec, scenario_dir: Path | None = None) -> tuple[Samples, int]:
        if spec.fsdd is not None:
            samples, rate = self._fsdd(spec.fsdd)
        elif spec.file is not None:
            samples, rate = self._read(self.resolve_path(spec.file.path, scenario_dir))
        else:
            samples, rate = self._concat(spec.parts, scenario_dir)
        if spec.start_s or spec.max_s:
            start = int(spec.start_s * rate)
            stop = start + int(spec.max_s * rate) if spec.max_s else samples.shape[0]
            samples = samples[start:stop]
        if spec.noise is not None:
            noise, noise_rate = self._read(self.resolve_path(spec.noise.path, scenario_dir))
            samples = mix_noise(samples, rate, noise, noise_rate, spec.noise.snr_db, spec.noise_seed)
        if spec.gain_db:
            samples = (samples * np.float32(10 ** (spec.gain_db / 20))).astype(np.float32)
        return np.clip(samples, -1.0, 1.0).astype(np.float32), rate

    def _fsdd(self, src: FsddSource) -> tuple[Samples, int]:
        if not src.digits.isdigit():
            raise ValueError(f"fsdd digits must be digits, got {src.digits!r}")
        parts: list[Samples] = []
        rate = 8000
        for i, d in enumerate(src.digits):
            samples, rate = self._read(self.fsdd_path(src.speaker, d, src.take + i * 7))
            parts.append(samples)
            parts.append(np.zeros(int(FSDD_GAP_S * rate), dtype=np.float32))
        return np.concatenate(parts), rate

    def _concat(self, specs: tuple[AudioSpec, ...], scenario_dir: Path | None) -> tuple[Samples, int]:
        rendered = [self.samples(p, scenario_dir) for p in specs]
        rates = {r for _, r in rendered}
        rate = rates.pop() if len(rates) == 1 else MIX_RATE_HZ
        out: list[Samples] = []
        for samples, r in rendered:
            out.append(resample(samples, r, rate))
            out.append(np.zeros(int(CONCAT_GAP_S * rate), dtype=np.float32))
        return np.concatenate(out), rate

    def _read(self, path: Path) -> tuple[Samples, int]:
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None:
            return hit
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        mono: Samples = data.mean(axis=1).astype(np.float32)
        with self._lock:
            self._cache[path] = (mono, int(rate))
        return mono, int(rate)


def resample(samples: Samples, rate: int, target: int) -> Samples:
    if rate == target:
        return samples
    g = int(np.gcd(rate, target))
    out: Samples = resample_poly(samples, target // g, rate // g).astype(np.float32)
    return out


def mix_noise(
    samples: Samples, rate: int, noise: Samples, noise_rate: int, snr_db: float, seed: str
) -> Samples:
    """Add looped noise at `snr_db` below the signal's power, starting at a seed-chosen offset."""
    noise = resample(noise, noise_rate, rate)
    if noise.size == 0 or samples.size == 0:
        return samples
    offset = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % noise.size
    reps = (samples.size + offset) // noise.size + 1
    segment = np.tile(noise, reps)[offset : offset + samples.size]
    p_sig = float(np.mean(samples.astype(np.float64) ** 2))
    p_noise = float(np.mean(segment.astype(np.float64) ** 2))
    if p_noise <= 0 or p_sig <= 0:
        return samples
    scale = np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (samples + segment * np.float32(scale)).astype(np.float32)


def spec_from_mapping(raw: Mapping[str, Any]) -> AudioSpec:
    """Build a spec from already validated YAML (schema.py reports errors with their field)."""
    fsdd = file = None
    parts: tuple[AudioSpec, ...] = ()
    if "fsdd" in raw:
        f = raw["fsdd"]
        fsdd = FsddSource(str(f["speaker"]), str(f["digits"]), int(f.get("take", 0)))
    elif "file" in raw:
        file = FileSource(str(raw["file"]))
    else:
        parts = tuple(spec_from_mapping(p) for p in raw["concat"])
    noise = None
    if "noise" in raw:
        noise = NoiseMix(str(raw["noise"]["file"]), float(raw["noise"].get("snr_db", 20.0)))
    return AudioSpec(
        fsdd=fsdd,
        file=file,
        parts=parts,
        gain_db=float(raw.get("gain_db", 0.0)),
        start_s=float(raw.get("start_s", 0.0)),
        max_s=float(raw.get("max_s", 0.0)),
        noise=noise,
        noise_seed=str(raw.get("noise_seed", "")),
        speaker=str(raw.get("speaker", "")),
    )
