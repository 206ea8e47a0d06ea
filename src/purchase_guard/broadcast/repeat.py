"""Replays: audio a household sent before, sent again (a recorded answer, a request sent twice).

The random-digit challenge is meant to defeat a recording of a parent; a spoken PIN is the same
digits every time, so a saved answer would pass every PIN challenge, and a saved request would
buy again and again. Every Evaluate's and every answer's audio is fingerprinted (the broadcast
fingerprint: band-energy differences, never audio) and compared with the household's own prints
of the last `window`; a match is a replay. Household-scoped: another home's audio is the fleet
window's business (broadcast/guard.py), not this one's.

The rule is the broadcast fine check's, made stricter (`REPLAY_MATCH`): a replay is the same
recording, played digitally or through a speaker into the same kind of microphone, so it agrees
more closely than two rooms' copies of one broadcast; and the same person saying the same words
again must not be taken for a recording of themselves. Both sides are measured by
`make eval-answers` (docs/challenges.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from purchase_guard.broadcast.fingerprint import N_BITS, Fingerprint
from purchase_guard.broadcast.match import MatchParams, PrintIndex, anchor

# Far stricter than the fleet rule (ber_limit 0.25): at 400 effective bits a replay must agree
# to within 0.045. The same speaker saying the same digits again came no closer than 0.039 (and
# mostly 0.15 or more); a digital copy agrees to under 0.01, a copy through 10 dB of room noise
# mostly under 0.04. The two sides are measured by `make eval-answers`.
REPLAY_MATCH = MatchParams(ber_limit=0.06, ber_slack=0.3, min_bits=300)
# Too little voiced audio to tell a recording apart from a new utterance of the same words.
MIN_VOICED_SECONDS = 0.8


@dataclass(frozen=True, slots=True)
class EarlierAudio:
    print_id: str
    decision_id: str
    kind: str  # "evaluate" | "confirm"
    fp: Fingerprint


@dataclass(frozen=True, slots=True)
class Replay:
    """The earlier audio this audio replays, and how closely (for the reason's detail)."""

    decision_id: str
    kind: str
    ber: float
    effective_bits: float


def find_replay(
    fp: Fingerprint, earlier: Sequence[EarlierAudio], params: MatchParams = REPLAY_MATCH
) -> Replay | None:
    """The closest earlier audio that `fp` is a copy of, or None (also for audio too short to tell
    apart from a new utterance of the same words, unless it is a bit-exact copy)."""
    if not earlier or fp.voiced_frames == 0:
        return None
    exact = _exact_copy(fp, earlier)
    if exact is not None:
        return exact
    start = anchor(fp)
    if start is None or fp.voiced_seconds < MIN_VOICED_SECONDS:
        return None
    index: PrintIndex[EarlierAudio] = PrintIndex(params, capacity=max(16, len(earlier)))
    for item in earlier:
        first = anchor(item.fp)
        if first is not None:
            index.add(item, item.fp, first)
    found = index.matches(fp, start)
    if not found:
        return None
    candidate, fine = found[0]
    return Replay(candidate.item.decision_id, candidate.item.kind, fine.ber, fine.effective_bits)


def _voiced_span(fp: Fingerprint) -> bytes:
    """The sub-prints from the first voiced frame to the last, with their masks, as bytes."""
    voiced = np.flatnonzero(fp.mask)
    a, b = int(voiced[0]), int(voiced[-1]) + 1
    return np.stack([fp.bits[a:b], fp.mask[a:b]], axis=1).astype("<u4").tobytes()


def _exact_copy(fp: Fingerprint, earlier: Sequence[EarlierAudio]) -> Replay | None:
    """Earlier audio whose voiced stretch is this audio's, bit for bit: the same recording sent
    again. Checked whatever the length, since a short answer (a quick PIN) has too few bits for
    the tolerant rule, and no person says anything twice with the same sub-prints, however short.
    (A copy re-cut or re-encoded changes the edges and the masks: that is the tolerant rule's.)"""
    mine = _voiced_span(fp)
    for item in earlier:
        if item.fp.voiced_frames == 0:
            continue
        theirs = _voiced_span(item.fp)
        at = theirs.find(mine)
        while at >= 0 and at % 8:  # only whole frames (8 bytes: sub-print and mask)
            at = theirs.find(mine, at + 1)
        if at >= 0:
            return Replay(item.decision_id, item.kind, 0.0, float(fp.voiced_frames * N_BITS))
    return None
