"""`BroadcastGuard`: the pipeline's broadcast check (known clips, then the fleet window).

For each Evaluate utterance: fingerprint the voiced part; refuse it as KNOWN_BROADCAST when
it holds part of a registered clip (or BROADCAST_MATCH for a clip promoted from an earlier
cluster); then search the fleet window. An utterance that matches utterances from at least
`min_other_households` other households is a broadcast: BROADCAST_MATCH, the cluster is
promoted to the denylist for `promote_for`, and the decisions of the earlier matching
utterances are returned so the pipeline cancels the challenges they were issued.

Audio that cannot carry a reliable print (too little voiced speech, or hard clipping, whose
flat tops make every band difference alike) is neither searched in nor added to the window,
so it can never form or join a cluster by accident. It is still checked against the
denylist when long enough, where a match needs the same strong evidence as always.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from purchase_guard.broadcast.denylist import PROMOTED, REGISTERED, Clip, ClipMatch, Denylist
from purchase_guard.broadcast.fingerprint import DEFAULT_PARAMS, FingerprintParams, fingerprint
from purchase_guard.broadcast.match import FineMatch
from purchase_guard.broadcast.window import FleetWindow, WindowEntry, WindowMatch
from purchase_guard.clock import IdSource
from purchase_guard.domain import BroadcastCheck, Reason, ReasonCode
from purchase_guard.logs import get_logger
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.vad import clipped_fraction

log = get_logger("purchase_guard.broadcast")


@dataclass(frozen=True, slots=True)
class AudioGate:
    # Below this much voiced audio a print has too few reliable bits to be told apart from
    # other speech (the fine check needs MatchParams.min_bits of them).
    min_voiced_seconds: float = 1.0
    # Hard-clipped audio (the share of samples at full scale) is kept out of the window.
    max_clipped_fraction: float = 0.01


DEFAULT_GATE = AudioGate()


def _strength(match: FineMatch) -> tuple[tuple[str, str], ...]:
    """A reason's match strength: the error rate over that many compared bits, and what those
    bits are worth as independent evidence (the count the threshold is set against)."""
    return (
        ("ber", f"{match.ber:.3f}"),
        ("bits", str(match.bits)),
        ("effective_bits", f"{match.effective_bits:.0f}"),
    )


class BroadcastGuard:
    """Satisfies `pipeline.ports.BroadcastDefence`. Thread-safe (the window and denylist lock)."""

    def __init__(
        self,
        window: FleetWindow,
        denylist: Denylist,
        ids: IdSource,
        *,
        min_other_households: int = 2,
        promote_for: timedelta = timedelta(hours=48),
        gate: AudioGate = DEFAULT_GATE,
        params: FingerprintParams = DEFAULT_PARAMS,
    ) -> None:
        if min_other_households < 1:
            raise ValueError("min_other_households must be at least 1")
        self._window = window
        self._denylist = denylist
        self._ids = ids
        self._min_other = min_other_households
        self._promote_for = promote_for
        self._gate = gate
        self._params = params
        self._promote_lock = threading.Lock()

    def check(
        self, household_id: str, device_id: str, decision_id: str, pcm: Pcm, now: datetime
    ) -> BroadcastCheck:
        fp = fingerprint(pcm, self._params)
        if fp.voiced_seconds < self._gate.min_voiced_seconds:
            return BroadcastCheck()
        reasons: list[Reason] = []
        known = self._denylist.match(fp, now)
        promoted_hit: ClipMatch | None = None
        for hit in known:
            if hit.clip.source == REGISTERED:
                reasons.append(
                    Reason(
                        ReasonCode.KNOWN_BROADCAST,
                        "The audio contains a known broadcast clip.",
                        (
                            ("clip_id", hit.clip.clip_id),
                            *_strength(hit.match),
                            ("source", REGISTERED),
                        ),
                    )
                )
            elif promoted_hit is None:
                promoted_hit = hit

        if clipped_fraction(pcm) > self._gate.max_clipped_fraction:
            return self._finish(reasons, promoted_hit, [], household_id)

        entry = WindowEntry(self._ids.new_id("bw"), household_id, device_id, decision_id, now, fp)
        matches = self._window.match_and_add(entry)
        others = {m.entry.household_id for m in matches if m.entry.household_id != household_id}
        if len(others) < self._min_other:
            return self._finish(
                reasons, promoted_hit, matches if (reasons or promoted_hit) else [], household_id
            )

        best = min((m.match for m in matches if m.entry.household_id != household_id), key=lambda f: f.ber)
        cluster_id = (
            promoted_hit.clip.clip_id if promoted_hit is not None else self._promote(entry, len(others), now)
        )
        reasons.append(
            Reason(
                ReasonCode.BROADCAST_MATCH,
                "The same audio was heard by devices in other households at the same time: a broadcast.",
                (
                    ("cluster_id", cluster_id),
                    *_strength(best),
                    ("matched_households", str(len(others))),
                ),
            )
        )
        log.warning("broadcast_cluster", cluster_id=cluster_id, matched_households=len(others))
        return BroadcastCheck(reasons=tuple(reasons), cluster_decisions=_decisions(matches))

    def _finish(
        self,
        reasons: list[Reason],
        promoted_hit: ClipMatch | None,
        matches: list[WindowMatch],
        household_id: str,
    ) -> BroadcastCheck:
        if promoted_hit is not None:
            reasons.append(
                Reason(
                    ReasonCode.BROADCAST_MATCH,
                    "The audio matches a broadcast recently heard across many households.",
                    (
                        ("cluster_id", promoted_hit.clip.clip_id),
                        *_strength(promoted_hit.match),
                        ("matched_households", str(promoted_hit.clip.households)),
                        ("source", PROMOTED),
                    ),
                )
            )
        if not reasons:
            return BroadcastCheck()
        # Known broadcast audio: whoever matched it in the window heard the broadcast too.
        return BroadcastCheck(reasons=tuple(reasons), cluster_decisions=_decisions(matches))

    def _promote(self, entry: WindowEntry, households: int, now: datetime) -> str:
        with self._promote_lock:
            clip = Clip(
                clip_id=self._ids.new_id("bcl"),
                label=f"fleet cluster ({households + 1} households)",
                source=PROMOTED,
                created_at=now,
                expires_at=now + self._promote_for,
                fp=entry.fp,
                households=households + 1,
            )
            if self._promote_for > timedelta(0):
                store = self._denylist.store
                # Expired promotions are dropped here, the only place that adds them, so the
                # store holds no more than the clusters of the last promotion period.
                for old in store.all():
                    if old.source == PROMOTED and not old.live(now):
                        store.delete(old.clip_id)
                store.put(clip)
            return clip.clip_id


def _decisions(matches: Iterable[WindowMatch]) -> tuple[tuple[str, str], ...]:
    seen: dict[tuple[str, str], None] = {}
    for m in matches:
        seen.setdefault((m.entry.household_id, m.entry.decision_id), None)
    return tuple(seen)
