"""The backends the decision pipeline talks to, as small protocols (real ones live in their domains)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from purchase_guard.broadcast.fingerprint import Fingerprint
from purchase_guard.domain import BroadcastCheck, Role, SpeakerResult, Voiceprint
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.encoder import SpeakerEncoder
from purchase_guard.voice.verifier import Heard


class SpeakerVerifier(Protocol):
    @property
    def encoder(self) -> SpeakerEncoder: ...

    def verify(
        self, pcm: Pcm, voiceprints: Sequence[Voiceprint], roles: Mapping[str, Role]
    ) -> SpeakerResult: ...

    def verify_sample(
        self, pcm: Pcm, voiceprints: Sequence[Voiceprint], roles: Mapping[str, Role]
    ) -> tuple[SpeakerResult, Heard | None]:
        """`verify`, and what a voiceprint adaptation needs of the utterance (voice/adaptation.py)."""
        ...

    def enrollment_score(
        self, embedding: Sequence[float], net_speech_s: float, snr: float, vp: Voiceprint
    ) -> float:
        """The score of `embedding` against `vp`'s original enrollment alone (no adapted rows),
        comparable with the band threshold (voice/adaptation.py's margin)."""
        ...

    def verify_against(
        self,
        pcm: Pcm,
        voiceprints: Sequence[Voiceprint],
        roles: Mapping[str, Role],
        allowed_member_ids: Collection[str] | None,
    ) -> SpeakerResult:
        """`verify` among `allowed_member_ids` only (None: everyone)."""
        ...

    def verify_digits(
        self,
        pcm: Pcm,
        voiceprint: Voiceprint,
        roles: Mapping[str, Role],
        digit_takes: Sequence[Sequence[float]],
        takes_encoder: str,
    ) -> SpeakerResult:
        """Is this spoken-digits audio `voiceprint`'s member, also scored against the member's
        digit-enrollment takes where calibrated?"""
        ...


class BroadcastDefence(Protocol):
    def check(
        self,
        household_id: str,
        device_id: str,
        decision_id: str,
        pcm: Pcm,
        now: datetime,
        *,
        caller_id: str,
        fp: Fingerprint | None = None,
    ) -> BroadcastCheck:
        """Match the utterance against known clips and the fleet window; also records it in the window.

        `caller_id` is the authenticated caller (api layer), "" for calls made in process: the
        window counts sources by caller and device, never by the household a request names.
        `fp` is the utterance's print with the default parameters when the caller has made it
        already (the pipeline's replay check needs the same one); None: the check makes its own."""
        ...


class NoBroadcastDefence:
    """Used when broadcast defence is switched off in settings; reports nothing."""

    def check(
        self,
        household_id: str,
        device_id: str,
        decision_id: str,
        pcm: Pcm,
        now: datetime,
        *,
        caller_id: str,
        fp: Fingerprint | None = None,
    ) -> BroadcastCheck:
        return BroadcastCheck()
