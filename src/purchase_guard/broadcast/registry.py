"""Operators' registry of known broadcast clips: register, list, remove (no gRPC here).

A clip's print is stored with its audio (16 kHz PCM16): operators' ad and news material, kept
so the clip can be re-printed when the print method changes (`denylist`). The caller (the gRPC
servicer) checks the operator credential; this service validates the clip itself.
"""

from __future__ import annotations

from datetime import datetime

from purchase_guard.broadcast.denylist import PROMOTED, REGISTERED, Clip, ClipStore
from purchase_guard.broadcast.fingerprint import DEFAULT_PARAMS, FingerprintParams, fingerprint
from purchase_guard.clock import Clock, IdSource
from purchase_guard.domain import AudioInput
from purchase_guard.errors import AudioError, InvalidArgument, NotFound
from purchase_guard.logs import get_logger
from purchase_guard.voice.audio import decode_audio, to_pcm16

log = get_logger("purchase_guard.broadcast.registry")

MAX_LABEL = 200


class ClipRegistry:
    def __init__(
        self,
        store: ClipStore,
        clock: Clock,
        ids: IdSource,
        *,
        max_clip_seconds: float = 120.0,
        max_clip_bytes: int = 16_000_000,
        min_voiced_seconds: float = 1.0,
        params: FingerprintParams = DEFAULT_PARAMS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ids = ids
        self._max_seconds = max_clip_seconds
        self._max_bytes = max_clip_bytes
        self._min_voiced = min_voiced_seconds
        self._params = params

    def register(self, label: str, audio: AudioInput) -> Clip:
        label = label.strip()
        if not label or len(label) > MAX_LABEL:
            raise InvalidArgument(f"label is required and at most {MAX_LABEL} characters")
        if not audio.present:
            raise AudioError("audio is required: send the clip as WAV or FLAC bytes, or PCM16 with its rate")
        pcm = decode_audio(
            encoded=audio.encoded,
            pcm16=audio.pcm16,
            sample_rate_hz=audio.sample_rate_hz,
            max_seconds=self._max_seconds,
            max_bytes=self._max_bytes,
        )
        fp = fingerprint(pcm, self._params)
        if fp.voiced_seconds < self._min_voiced:
            raise AudioError(
                f"the clip has {fp.voiced_seconds:.2f} s of usable sound; "
                f"at least {self._min_voiced:g} s is needed"
            )
        now = self._clock.now()
        clip = Clip(self._ids.new_id("clip"), label, REGISTERED, now, None, fp, audio_kept=True)
        self._store.put(clip, to_pcm16(pcm))
        log.info(
            "broadcast_clip_registered", clip_id=clip.clip_id, voiced_seconds=round(clip.voiced_seconds, 2)
        )
        return clip

    def list(self, include_promoted: bool = False, now: datetime | None = None) -> list[Clip]:
        """Live clips, newest first; promoted ones only when asked for."""
        when = now or self._clock.now()
        clips = [c for c in self._store.all() if c.live(when) and (include_promoted or c.source != PROMOTED)]
        return sorted(clips, key=lambda c: (c.created_at, c.clip_id), reverse=True)

    def remove(self, clip_id: str) -> None:
        if not clip_id or len(clip_id) > 100:
            raise InvalidArgument("clip_id is required and at most 100 characters")
        if not self._store.delete(clip_id):
            raise NotFound(f"no broadcast clip {clip_id!r}")
        log.info("broadcast_clip_removed", clip_id=clip_id)
