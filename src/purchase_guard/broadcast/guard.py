"""`BroadcastGuard`: the pipeline's broadcast check (known clips, then the fleet window).

For each Evaluate utterance: fingerprint the voiced part; refuse it as KNOWN_BROADCAST when
it holds part of a registered clip by the denylist's refusal rule, or ask for a step-up
(SUSPECTED_BROADCAST) when it matches one only by the looser match rule (the graded denylist:
`denylist.DENYLIST_REFUSE`); refuse it as BROADCAST_MATCH for a clip promoted from an earlier
cluster; then search the fleet window. An utterance is a broadcast when it and the window
utterances it matches form a *cluster* (`find_cluster`): at least `min_sources` distinct
sources in all, counting its own; each source an authenticated caller and the device it
names (`source_of`), so one device credential is one source whatever households its
requests name; no two of them naming the same household (the devices of one home hearing the same
person are not a broadcast); every member within `max_spread` of it in time; and the
members matching each other at the offsets their matches with it imply. Then:
BROADCAST_MATCH, the cluster is promoted to the denylist for `promote_for`, and the
decisions of the earlier members are returned so the pipeline cancels the challenges they
were issued.

Why the extra conditions (docs/broadcast.md, `make bench-fleet`): with a per-pair false
match rate p and N utterances in the window, an utterance meets two chance matches with
probability about (Np)^2 / 2, which a national broadcast filling the window makes common.
Copies of one broadcast agree with each other as well as with the query, at offsets that add
up, and they arrive together; two chance matches of a query almost never do both.

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
from purchase_guard.broadcast.fingerprint import DEFAULT_PARAMS, Fingerprint, FingerprintParams, fingerprint
from purchase_guard.broadcast.match import DEFAULT_MATCH, FineMatch, MatchParams, best_offset
from purchase_guard.broadcast.window import FleetWindow, WindowEntry, WindowMatch
from purchase_guard.clock import IdSource
from purchase_guard.domain import BroadcastCheck, Effect, Reason, ReasonCode
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

# Frames (8 ms) by which a member pair's offset may miss the one its matches with the query
# imply: each of the three offsets is found to within a frame or so.
CLOSURE_FRAMES = 4
_SEP = "\x1f"  # never in a validated id
DEVICE_CALLER = "device:"


def source_of(caller_id: str, household_id: str, device_id: str) -> str:
    """The source an utterance is counted as, from who authenticated rather than what it names.

    A device credential (caller id "device:<credential id>", household/service.py) speaks for
    one device of one household, so it is one source whatever ids its requests carry. A
    backend speaks for a fleet whose device ids are unique only within a household, so its
    source is the device it names in that household (its own claim: a backend is trusted to
    name devices, and BROADCAST_MIN_CALLERS can require more than one backend). Calls made
    in process have no caller ("") and count like a backend's."""
    if caller_id.startswith(DEVICE_CALLER):
        return caller_id
    return _SEP.join((caller_id, household_id, device_id))


def caller_of_source(source: str) -> str:
    return source.partition(_SEP)[0]


@dataclass(frozen=True, slots=True)
class ClusterRule:
    min_sources: int = 3  # counting the query's own
    min_callers: int = 1  # distinct authenticated callers among them
    max_spread: timedelta = timedelta(seconds=30)
    match: MatchParams = DEFAULT_MATCH
    closure_frames: int = CLOSURE_FRAMES


DEFAULT_CLUSTER = ClusterRule()


def _consistent(a: WindowMatch, b: WindowMatch, rule: ClusterRule) -> bool:
    """Whether members a and b are copies of each other at the offset their matches with the
    query imply (b's frame = a's frame + b.offset - a.offset)."""
    expected = b.match.offset - a.match.offset
    r = rule.closure_frames
    fine = best_offset(a.entry.fp, b.entry.fp, range(expected - r, expected + r + 1), rule.match)
    return fine is not None and rule.match.accepts(fine)


def find_cluster(
    query: WindowEntry, matches: list[WindowMatch], rule: ClusterRule = DEFAULT_CLUSTER
) -> list[WindowMatch]:
    """The members of a cluster around `query`, or [] when its matches do not make one.

    A member is a match from another source and another household within `max_spread` of
    the query. The verdict needs `min_sources - 1` members of distinct sources and distinct
    households (and `min_callers` callers with the query's), pairwise consistent; greedily
    built from each of the best few matches in turn. Returned: every match consistent with
    the seed that made it (the earlier decisions the late catch cancels), so a stranger's
    chance match is not cancelled with them."""
    near = [
        m
        for m in matches
        if m.entry.source != query.source
        and m.entry.household_id != query.household_id
        and abs(m.entry.at - query.at) <= rule.max_spread
    ]
    if len({m.entry.source for m in near}) < rule.min_sources - 1:
        return []
    pairs: dict[tuple[int, int], bool] = {}

    def linked(i: int, j: int) -> bool:
        key = (min(i, j), max(i, j))
        if key not in pairs:
            pairs[key] = _consistent(near[key[0]], near[key[1]], rule)
        return pairs[key]

    for seed in range(min(len(near), 4)):
        chosen = [seed]
        for k in range(len(near)):
            taken = {near[c].entry.source for c in chosen} | {near[c].entry.household_id for c in chosen}
            if k == seed or near[k].entry.source in taken or near[k].entry.household_id in taken:
                continue
            if all(linked(c, k) for c in chosen):
                chosen.append(k)
            if len(chosen) >= rule.min_sources - 1:
                break
        callers = {caller_of_source(query.source)} | {caller_of_source(near[c].entry.source) for c in chosen}
        if len(chosen) >= rule.min_sources - 1 and len(callers) >= rule.min_callers:
            return [m for k, m in enumerate(near) if k == seed or k in chosen or linked(seed, k)]
    return []


def _strength(match: FineMatch) -> tuple[tuple[str, str], ...]:
    """A reason's match strength: the error rate over that many compared bits, and what those
    bits are worth as independent evidence (the count the threshold is set against)."""
    return (
        ("ber", f"{match.ber:.3f}"),
        ("bits", str(match.bits)),
        ("effective_bits", f"{match.effective_bits:.0f}"),
    )


def _known_clip(hit: ClipMatch) -> Reason:
    """A registered clip's match: refused when it passes the denylist's refusal rule, else a
    step-up (the graded denylist, `denylist.DENYLIST_REFUSE`)."""
    detail = (("clip_id", hit.clip.clip_id), *_strength(hit.match), ("source", REGISTERED))
    if hit.refuses:
        return Reason(
            ReasonCode.KNOWN_BROADCAST,
            "The audio contains a known broadcast clip.",
            detail,
            Effect.FORBID,
            "broadcast.denylist",
        )
    return Reason(
        ReasonCode.SUSPECTED_BROADCAST,
        "The audio resembles a known broadcast clip: the purchase must be confirmed.",
        detail,
        Effect.CHALLENGE,
        "broadcast.denylist",
    )


class BroadcastGuard:
    """Satisfies `pipeline.ports.BroadcastDefence`. Thread-safe (the window and denylist lock)."""

    def __init__(
        self,
        window: FleetWindow,
        denylist: Denylist,
        ids: IdSource,
        *,
        cluster: ClusterRule = DEFAULT_CLUSTER,
        promote_for: timedelta = timedelta(hours=48),
        gate: AudioGate = DEFAULT_GATE,
        params: FingerprintParams = DEFAULT_PARAMS,
    ) -> None:
        if cluster.min_sources < 2:
            raise ValueError("a cluster needs at least 2 sources")
        self._window = window
        self._denylist = denylist
        self._ids = ids
        self._cluster = cluster
        self._promote_for = promote_for
        self._gate = gate
        self._params = params
        self._promote_lock = threading.Lock()

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
        # The pipeline's print (made once for this check and the replay check) is the default
        # parameters'; a guard built with other parameters makes its own.
        if fp is None or self._params != DEFAULT_PARAMS:
            fp = fingerprint(pcm, self._params)
        if fp.voiced_seconds < self._gate.min_voiced_seconds:
            return BroadcastCheck()
        reasons: list[Reason] = []
        known = self._denylist.match(fp, now)
        promoted_hit: ClipMatch | None = None
        for hit in known:
            if hit.clip.source == REGISTERED:
                reasons.append(_known_clip(hit))
            elif promoted_hit is None:
                promoted_hit = hit

        if clipped_fraction(pcm) > self._gate.max_clipped_fraction:
            return self._finish(reasons, promoted_hit, [])

        source = source_of(caller_id, household_id, device_id)
        entry = WindowEntry(self._ids.new_id("bw"), household_id, device_id, decision_id, now, fp, source)
        matches = self._window.match_and_add(entry)
        members = find_cluster(entry, matches, self._cluster)
        if not members:
            # Known broadcast audio: whoever matched it in the window heard the broadcast too.
            # Not for a clip match too weak to refuse: that is not known to be the broadcast.
            refused = promoted_hit is not None or any(r.effect is Effect.FORBID for r in reasons)
            return self._finish(reasons, promoted_hit, matches if refused else [])

        sources = len({m.entry.source for m in members})
        best = min((m.match for m in members), key=lambda f: f.ber)
        cluster_id = (
            promoted_hit.clip.clip_id if promoted_hit is not None else self._promote(entry, sources, now)
        )
        reasons.append(
            Reason(
                ReasonCode.BROADCAST_MATCH,
                "The same audio was heard by devices in other households at the same time: a broadcast.",
                (
                    ("cluster_id", cluster_id),
                    *_strength(best),
                    ("matched_sources", str(sources)),
                ),
            )
        )
        log.warning("broadcast_cluster", cluster_id=cluster_id, matched_sources=sources)
        return BroadcastCheck(reasons=tuple(reasons), cluster_decisions=_decisions(members))

    def _finish(
        self,
        reasons: list[Reason],
        promoted_hit: ClipMatch | None,
        matches: list[WindowMatch],
    ) -> BroadcastCheck:
        if promoted_hit is not None:
            reasons.append(
                Reason(
                    ReasonCode.BROADCAST_MATCH,
                    "The audio matches a broadcast recently heard across many households.",
                    (
                        ("cluster_id", promoted_hit.clip.clip_id),
                        *_strength(promoted_hit.match),
                        ("matched_sources", str(promoted_hit.clip.households)),
                        ("source", PROMOTED),
                    ),
                )
            )
        if not reasons:
            return BroadcastCheck()
        return BroadcastCheck(reasons=tuple(reasons), cluster_decisions=_decisions(matches))

    def _promote(self, entry: WindowEntry, sources: int, now: datetime) -> str:
        with self._promote_lock:
            clip = Clip(
                clip_id=self._ids.new_id("bcl"),
                label=f"fleet cluster ({sources + 1} sources)",
                source=PROMOTED,
                created_at=now,
                expires_at=now + self._promote_for,
                fp=entry.fp,
                households=sources + 1,
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
