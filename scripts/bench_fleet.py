"""A simulated national broadcast against the fleet window: rates from real prints, scale simulated.

    python scripts/bench_fleet.py --data ../shared/data [--sizes 10000,100000,1000000] [--quick]

Real fingerprints of real speech decide every rate (the test split of scripts/eval_broadcast.py:
LibriSpeech, JFK and FSDD broadcasts heard by several homes through their own rooms at 5 dB
SNR; a pool of unrelated utterances including speechocean762's read prompts said by many
people, FSDD digit strings said by six speakers, and homes sharing background noise):

- per-pair detection at 5 dB through the inverted index, and through the scanning index on
  the same pairs (the ratio says what the index loses);
- broadcast households flagged once 3 have been seen (a real BroadcastGuard on the indexed
  window, each home a distinct device of one backend, the window pre-loaded with the pool);
- false matches per pair in the pool, and false verdicts when the whole pool arrives within
  one search span (every utterance a distinct source): both with the cluster rule and
  counting the queries the rule without consistency would have refused (two or more
  matched sources).

- the closure of chance matches (`triangles`): for a ladder of rules, how often two chance
  matches of one query also match each other where a cluster needs, on the real pool;
- the denylist with 10,000 clips (`denylist_scale`): real recordings for the rates, plus
  bit-scrambled copies for the count and the search time, through its index and through the
  coarse scan the index replaced, with refusals and challenges (the graded denylist) apart;
  `--deny-sweep tune` sweeps the refusal rule on the tuning split, where it was chosen, and
  models the false refusals' tail (`tail_model`). `--only denylist [--split tune]
  [--deny-keys k=v,...]...` runs this measure alone (a few minutes), one row per index
  setting and one for the scan, in one run: how the index's settings were chosen on tune.

Simulated, because the machine holds no million real utterances: a window of N utterances
in 10 minutes is a steady stream of N per 600 s; a query reads (and an in-process replica
holds) the buckets within the search span, 35 s of it. For the latency, memory and the
detection among them those are bit-scrambled copies of the pool's prints (each XORed with
its own random word: real bit statistics, unrelated content), and the false-verdict rate at
N is computed from the pool's measured per-pair rate p and the closure c: at most
(n p)^2 / 2 * c for n in the span, with c measured (its 95 % bound) or modelled
(`closure_estimate`).

Prints the table and writes reports/bench/fleet.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import eval_broadcast as eb  # the evaluation's material: rooms, programmes, the pool
import numpy as np
from script_paths import default_data_dir

from purchase_guard.broadcast._kernels import warm_up
from purchase_guard.broadcast.denylist import (
    DENYLIST_KEYS,
    DENYLIST_MATCH,
    DENYLIST_REFUSE,
    REGISTERED,
    Clip,
    ClipMatch,
    Denylist,
    MemoryClipStore,
    RefusalRule,
)
from purchase_guard.broadcast.fingerprint import Fingerprint
from purchase_guard.broadcast.guard import CLOSURE_FRAMES, BroadcastGuard, find_cluster
from purchase_guard.broadcast.index import DEFAULT_KEYS, IndexedWindow, KeyParams, MemoryPostings
from purchase_guard.broadcast.match import DEFAULT_MATCH, FineMatch, MatchParams, PrintIndex, best_offset
from purchase_guard.broadcast.window import MemoryWindow, WindowEntry, trim_for_window
from purchase_guard.clock import SequentialIds
from purchase_guard.config import Settings
from purchase_guard.domain import ReasonCode
from purchase_guard.voice.audio import Pcm

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
WINDOW_S = 600.0
SETTINGS = Settings()
SPAN = timedelta(seconds=SETTINGS.broadcast_max_spread_seconds)
NEED = SETTINGS.broadcast_min_sources - 1  # matched other sources a verdict needs


def entry(name: str, fp: Fingerprint, at: datetime) -> WindowEntry:
    return WindowEntry(name, f"hh-{name}", "d", f"dec-{name}", at, fp, f"backend\x1fhh-{name}\x1fd")


def material(
    data: Path, quick: bool, seed: int, homes: int, split: str = "test"
) -> tuple[dict[tuple[int, int], Fingerprint], list[Any], list[Any]]:
    audio = eb.Audio(data)
    rng = np.random.default_rng(seed)
    progs = eb.programs(audio, split, rng, quick)
    copies: dict[tuple[int, int], Fingerprint] = {}
    for p, prog in enumerate(progs):
        for h in range(homes):
            room = eb.random_room(rng, audio, 5.0)
            fp = eb.print_of(eb.play(audio, prog.samples, prog.start_s, prog.end_s, room))
            if fp.voiced_seconds >= 1.0:
                copies[(p, h)] = fp
    return copies, eb.negatives(audio, split, rng, quick), progs


def per_pair(
    copies: dict[tuple[int, int], Fingerprint], pool: list[Fingerprint], homes: int
) -> dict[str, Any]:
    indexed = IndexedWindow(MemoryPostings(), search_span=SPAN)
    scan = MemoryWindow()
    for k, fp in enumerate(pool):
        for w in (indexed, scan):
            w.add(entry(f"n{k}", fp, T0))
    for (p, h), fp in copies.items():
        for w in (indexed, scan):
            w.add(entry(f"c{p}-{h}", fp, T0))
    counts = {"index": 0, "scan": 0}
    pairs = 0
    for (p, h), fp in copies.items():
        q = entry(f"c{p}-{h}", fp, T0)
        found_i = {m.entry.entry_id for m in indexed.match(q)}
        found_s = {m.entry.entry_id for m in scan._local.match(q)}
        for h2 in range(homes):
            if h2 == h or (p, h2) not in copies:
                continue
            pairs += 1
            counts["index"] += f"c{p}-{h2}" in found_i
            counts["scan"] += f"c{p}-{h2}" in found_s
    return {
        "pairs": pairs,
        "index": counts["index"] / max(pairs, 1),
        "scan": counts["scan"] / max(pairs, 1),
        "index_over_scan": counts["index"] / max(counts["scan"], 1),
    }


def events(copies: dict[tuple[int, int], Fingerprint], pool: list[Fingerprint], homes: int) -> dict[str, Any]:
    flagged = seen = 0
    programmes = sorted({p for p, _ in copies})
    postings = MemoryPostings()
    window = IndexedWindow(postings, search_span=SPAN)
    for k, fp in enumerate(pool):
        window.add(entry(f"n{k}", fp, T0))
    guard = BroadcastGuard(window, Denylist(MemoryClipStore()), SequentialIds(), promote_for=timedelta(0))
    for p in programmes:
        order = [h for h in range(homes) if (p, h) in copies]
        decided: dict[str, bool] = {}
        for i, h in enumerate(order):
            check = guard.check(
                f"hh-{p}-{h}",
                f"d{h}",
                f"dec-{p}-{h}",
                _pcm_free(copies[(p, h)]),
                T0 + timedelta(seconds=i),
                caller_id="backend",
            )
            decided[f"dec-{p}-{h}"] = ReasonCode.BROADCAST_MATCH in [r.code for r in check.reasons]
            for _, dec in check.cluster_decisions:
                decided[dec] = True  # the late catch
        # From the third home on every home counts; the first two count through the late catch.
        if len(order) >= 3:
            seen += len(order)
            flagged += sum(decided.values())
    return {"homes": seen, "flagged": flagged / max(seen, 1)}


def _lead(n: int, max_in_span: int) -> timedelta:
    """How much traffic before the query a stream of n per 10 minutes must hold: two spans,
    or with the cap, twice the time its entries take to arrive (plus two buckets) when shorter."""
    lead = 2 * SPAN
    if max_in_span:
        bucket = timedelta(seconds=DEFAULT_KEYS.bucket_seconds)
        lead = min(lead, timedelta(seconds=2 * max_in_span * WINDOW_S / n) + 2 * bucket)
    return lead


def events_at_scale(
    copies: dict[tuple[int, int], Fingerprint],
    pool: list[Fingerprint],
    n: int,
    homes: int,
    jitter_s: float,
    max_in_span: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Households flagged once 3 seen, live at the traffic of a window of `n`: a steady stream
    of n per 10 minutes (bit-scrambled pool prints, added as they arrive) with the broadcasts'
    copies among it. Programme p's homes hear it at start + p seconds (the programmes overlap,
    as many broadcasts do) and call Evaluate each after its own delay, uniform over
    `jitter_s` (end-of-speech detection and intent parsing differ by home); each copy is
    checked by a real guard when it arrives, so the span's cap sees the traffic it would."""
    rate = n / WINDOW_S
    lead = _lead(n, max_in_span)
    window = IndexedWindow(
        MemoryPostings(), window=timedelta(seconds=WINDOW_S), search_span=SPAN, max_in_span=max_in_span
    )
    guard = BroadcastGuard(window, Denylist(MemoryClipStore()), SequentialIds(), promote_for=timedelta(0))
    programmes = sorted({p for p, _ in copies})
    start = T0 + lead
    arrivals = sorted(
        (start + timedelta(seconds=i + float(rng.uniform(0, jitter_s))), p, h)
        for i, p in enumerate(programmes)
        for h in range(homes)
        if (p, h) in copies
    )
    decided: dict[str, bool] = {}
    k = 0
    t0 = time.perf_counter()
    for at, p, h in arrivals:
        while T0 + timedelta(seconds=k / rate) < at:  # the stream up to this arrival
            window.add(entry(f"s{k}", _scrambled(pool[k % len(pool)], rng), T0 + timedelta(seconds=k / rate)))
            k += 1
        check = guard.check(
            f"hh-{p}-{h}", f"d{h}", f"dec-{p}-{h}", _pcm_free(copies[(p, h)]), at, caller_id="backend"
        )
        decided.setdefault(f"dec-{p}-{h}", False)
        if ReasonCode.BROADCAST_MATCH in [r.code for r in check.reasons]:
            decided[f"dec-{p}-{h}"] = True
        for _, dec in check.cluster_decisions:
            decided[dec] = True  # the late catch
    counted = [p for p in programmes if sum((p, h) in copies for h in range(homes)) >= 3]
    keys = [f"dec-{p}-{h}" for p in counted for h in range(homes) if (p, h) in copies]
    return {
        "window": n,
        "jitter_s": jitter_s,
        "max_in_span": max_in_span,
        "homes": len(keys),
        "flagged": sum(decided[key] for key in keys) / max(len(keys), 1),
        "stream_added": k,
        "held_at_end": len(window),
        "seconds": round(time.perf_counter() - t0, 1),
    }


class _PrintedPcm:
    """The guard takes audio; the bench has prints. A stand-in the patched fingerprint reads."""

    def __init__(self, fp: Fingerprint) -> None:
        self.fp = fp
        self.samples = np.zeros(16, dtype=np.float32)


def _pcm_free(fp: Fingerprint) -> Any:
    return _PrintedPcm(fp)


def false_rates(pool: list[Fingerprint]) -> dict[str, Any]:
    """Every pool utterance queried against the rest, all inside one search span."""
    window = IndexedWindow(MemoryPostings(), search_span=SPAN)
    entries = [entry(f"n{k}", fp, T0 + timedelta(seconds=0.001 * k)) for k, fp in enumerate(pool)]
    for e in entries:
        window.add(e)
    matched_pairs = two_or_more = verdicts = 0
    for e in entries:
        found = [m for m in window.match(e) if m.entry.entry_id != e.entry_id]
        matched_pairs += len(found)
        if len({m.entry.source for m in found}) >= NEED:
            two_or_more += 1
            verdicts += bool(find_cluster(e, found))
    n = len(pool)
    p = matched_pairs / max(n * (n - 1), 1)
    # Each false pair is usually found from both ends: the bound counts unordered pairs.
    unordered = math.ceil(matched_pairs / 2)
    p_upper = clopper_pearson_upper(unordered, n * (n - 1) // 2)
    c_obs = verdicts / two_or_more if two_or_more else 0.0
    # No consistent triple seen: the 95 % upper bound on the share (rule of three), if any
    # query had two matches; else the bound stays 1 (the rule is not credited).
    c_upper = (verdicts + 3) / two_or_more if two_or_more else 1.0
    return {
        "pool": n,
        "false_matches_per_pair": p,
        "false_pairs_unordered": unordered,
        "false_matches_per_pair_upper95": p_upper,
        "queries_with_2_sources": two_or_more,
        "false_verdicts_in_span": verdicts,
        "consistent_share": c_obs,
        "consistent_share_upper95": min(1.0, c_upper),
    }


# The ladder of rules the closure is measured at: the configured rule's shape (slack against
# effective bits, same minimum of bits) with looser limits, so that chance matches are common
# enough to form many wedges, down to the configured limit.
LADDER = (0.35, 0.33, 0.31, 0.29, 0.27, DEFAULT_MATCH.ber_limit)
LOOSE = replace(DEFAULT_MATCH, ber_limit=0.35, ber_slack=0.0)  # contains every ladder rule


def clopper_pearson_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided upper bound on a binomial rate (3/n for k = 0, the rule of three)."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(conf, k + 1, n - k))


def prompt_of(negs: list[Any], data: Path) -> list[str]:
    """What each pool utterance says, where the material says it: speechocean762's prompt,
    FSDD's digit string; '' otherwise (LibriSpeech segments are all different text)."""
    tsv = data / "speechocean762-train" / "utterances.tsv"
    text = {}
    if tsv.exists():
        for line in tsv.read_text().splitlines()[1:]:
            cols = line.split("\t")
            text[cols[0]] = cols[3]
    out = []
    for n in negs:
        if n.name.startswith("so:"):
            out.append("so:" + text.get(n.name[3:], n.name))
        elif n.group.startswith("fsdd:"):
            out.append("fsdd:" + n.group.split(":")[1])
        else:
            out.append("")
    return out


def triangles(pool: list[Fingerprint], prompts: list[str]) -> dict[str, Any]:
    """How often two chance matches of one query also match each other where a cluster needs.

    Every pool pair is searched once (the scanning search, with a loose rule that every
    ladder rule is stricter than). For each rule of the ladder: its matches (edges), and every
    *wedge*, a query A with two matches B and C under the rule; the wedge *closes* when B and C
    match under the same rule within CLOSURE_FRAMES of the offset their matches with A imply,
    which is what `guard.find_cluster` asks of two members. closure = closed / wedges, and its
    lift over the per-pair rate (closure / p) says how far chance matches are from independent:
    1 would be unrelated pairs, thousands would be groups of mutually similar utterances (the
    same prompt said by many people)."""
    index: PrintIndex[int] = PrintIndex(LOOSE)
    trimmed = [trim_for_window(fp) for fp in pool]
    edges: list[tuple[int, int, FineMatch]] = []
    for k, t in enumerate(trimmed):
        if t is None:
            continue
        edges.extend((k, cand.item, fine) for cand, fine in index.matches(*t))
        index.add(k, *t)
    n = sum(t is not None for t in trimmed)
    pairs = n * (n - 1) // 2
    rows = []
    for limit in LADDER:
        rule = replace(DEFAULT_MATCH, ber_limit=limit)
        adj: dict[int, dict[int, int]] = {}
        kept = 0
        for a, b, fine in edges:
            if rule.accepts(fine):
                kept += 1
                adj.setdefault(a, {})[b] = fine.offset  # b's frame = a's frame + offset
                adj.setdefault(b, {})[a] = -fine.offset
        wedges = closed = same_prompt = closed_same_prompt = 0
        for nbrs in adj.values():
            items = sorted(nbrs.items())
            for i, (b, off_b) in enumerate(items):
                for c, off_c in items[i + 1 :]:
                    wedges += 1
                    alike = bool(prompts[b]) and prompts[b] == prompts[c]
                    same_prompt += alike
                    fb, fc = trimmed[b], trimmed[c]
                    assert fb is not None
                    assert fc is not None
                    expected = off_c - off_b
                    r = CLOSURE_FRAMES
                    third = best_offset(fb[0], fc[0], range(expected - r, expected + r + 1), rule)
                    if third is not None and rule.accepts(third):
                        closed += 1
                        closed_same_prompt += alike
        p = kept / max(pairs, 1)
        share = closed / wedges if wedges else 0.0
        upper = clopper_pearson_upper(closed, wedges)
        rows.append(
            {
                "ber_limit": limit,
                "matches": kept,
                "per_pair": p,
                "wedges": wedges,
                "closed": closed,
                "closure": share,
                "closure_upper95": upper,
                "lift": share / p if p else 0.0,
                "lift_upper95": upper / p if p else 0.0,
                "wedges_same_prompt": same_prompt,
                "closed_same_prompt": closed_same_prompt,
            }
        )
    return {"pool": n, "pairs": pairs, "ladder": rows}


def closure_estimate(tri: dict[str, Any], min_wedges: int = 30) -> dict[str, Any]:
    """The closure the configured rule is credited with.

    Measured: the configured rule's own wedges (closed / wedges, upper 95 % bound; 1 when the
    pool has none). Modelled: the configured per-pair rate times the highest upper-95 % lift
    of the ladder rules with at least `min_wedges` wedges; an assumption (that chance matches
    are no more transitive at the configured limit than at the looser ones measured), which the
    ladder's trend is there to judge."""
    ladder = tri["ladder"]
    own = ladder[-1]
    measured = own["closure_upper95"] if own["wedges"] else 1.0
    usable = [r for r in ladder if r["wedges"] >= min_wedges]
    lift = max((r["lift_upper95"] for r in usable), default=float("inf"))
    modelled = min(1.0, lift * own["per_pair"]) if usable else 1.0
    return {"measured_upper95": measured, "lift_upper95": lift, "modelled": modelled}


def _scrambled(fp: Fingerprint, rng: np.random.Generator) -> Fingerprint:
    return Fingerprint(fp.bits ^ np.uint32(rng.integers(1, 2**32)), fp.mask, fp.hop_s)


def _clip(clip_id: str, fp: Fingerprint) -> Clip:
    return Clip(clip_id, clip_id, REGISTERED, T0, None, fp)


def denylist_scale(
    progs: list[Any],
    copies: dict[tuple[int, int], Fingerprint],
    pool: list[Fingerprint],
    clips: int,
    queries: int,
    rng: np.random.Generator,
    rule: MatchParams = DENYLIST_MATCH,
    search: Literal["index", "scan"] = "index",
    keys: KeyParams = DENYLIST_KEYS,
) -> dict[str, Any]:
    """False refusals per Evaluate with `clips` registered, searched by `search` (the service's
    index, or the coarse scan it replaced).

    Rates from real prints: the split's programme recordings registered whole (one clip per
    source recording, as an operator registers an ad), against the 5 dB home copies
    (detection) and the unrelated pool (false refusals per utterance and clip pair); and the
    pool's own utterances registered as 3.5 s clips of real speech, each queried by all the
    others (more real pairs). The count: the real clips plus bit-scrambled copies (each XORed
    with its own random word) up to `clips`, for the search time and what chance alone adds."""
    by_source = _real_clips(progs)
    real = MemoryClipStore()
    for name, fp in by_source.items():
        real.put(_clip(name, fp))
    deny = Denylist(real, rule, keys=keys, search=search)
    detected = detected_refused = 0
    for (p, _), fp in copies.items():
        own_clip = [m for m in deny.match(fp, T0) if m.clip.clip_id == progs[p].source]
        detected += bool(own_clip)
        detected_refused += any(m.refuses for m in own_clip)
    refused = matched = matched_pairs = refused_pairs = 0
    for fp in pool:
        found = deny.match(fp, T0)
        matched += bool(found)
        refused += any(m.refuses for m in found)
        matched_pairs += len(found)
        refused_pairs += sum(m.refuses for m in found)
    own = MemoryClipStore()
    for k, fp in enumerate(pool):
        own.put(_clip(f"n{k}", fp))
    own_deny = Denylist(own, rule, keys=keys, search=search)
    own_pairs = own_matched = own_refused = 0
    for k, fp in enumerate(pool):
        others = [m for m in own_deny.match(fp, T0) if m.clip.clip_id != f"n{k}"]
        own_matched += len(others)
        own_refused += sum(m.refuses for m in others)
        own_pairs += len(pool) - 1
    # The count: real clips plus scrambled copies of them up to `clips`.
    many = MemoryClipStore()
    fps = list(by_source.values())
    for name, fp in by_source.items():
        many.put(_clip(name, fp))
    for k in range(max(0, clips - len(fps)) if queries else 0):
        many.put(_clip(f"s{k}", _scrambled(fps[k % len(fps)], rng)))
    big = Denylist(many, rule, keys=keys, search=search)
    t_build = time.thread_time()
    big.match(pool[0], T0)  # builds the index
    build_s = time.thread_time() - t_build
    times: list[float] = []
    big_matched = 0
    for _ in range(queries):
        fp = pool[int(rng.integers(0, len(pool)))]
        t0 = time.thread_time()
        found = big.match(fp, T0)
        times.append((time.thread_time() - t0) * 1000)
        big_matched += any(m.clip.clip_id.startswith("s") for m in found)
    registration = registration_wait(many, big, pool, rule, keys) if queries and search == "index" else {}
    n_real = len(by_source)
    pair_rate = matched_pairs / max(len(pool) * n_real, 1)
    pair_upper = clopper_pearson_upper(matched_pairs, len(pool) * n_real)
    own_rate = own_matched / max(own_pairs, 1)
    own_upper = clopper_pearson_upper(own_matched, own_pairs)
    return {
        "search": search,
        "keys": {
            "max_flips": keys.max_flips,
            "min_votes": keys.min_votes,
            "max_candidates": keys.max_candidates,
        }
        if search == "index"
        else None,
        "rule": {"ber_limit": rule.ber_limit, "ber_slack": rule.ber_slack, "min_bits": rule.min_bits},
        "real_clips": n_real,
        # Matched: refused or challenged (the graded denylist); refused: by the refusal rule.
        "detection_5db": detected / max(len(copies), 1),
        "refused_5db": detected_refused / max(len(copies), 1),
        "copies": len(copies),
        "pool": len(pool),
        "pool_matched_by_real_clips": matched,
        "pool_refused_by_real_clips": refused,
        "per_clip_pair_rate": pair_rate,
        "per_clip_pair_upper95": pair_upper,
        "refused_pairs_by_real_clips": refused_pairs,
        "refused_per_clip_pair_upper95": clopper_pearson_upper(refused_pairs, len(pool) * n_real),
        "pool_as_clips_pairs": own_pairs,
        "pool_as_clips_matches": own_matched,
        "pool_as_clips_refusals": own_refused,
        "pool_as_clips_rate": own_rate,
        "pool_as_clips_upper95": own_upper,
        "pool_as_clips_refused_upper95": clopper_pearson_upper(own_refused, own_pairs),
        "clips": clips,
        "false_matches_per_evaluate": 1 - (1 - pair_rate) ** clips,
        "false_matches_per_evaluate_upper95": 1 - (1 - pair_upper) ** clips,
        "false_matches_per_evaluate_pool_clips": 1 - (1 - own_rate) ** clips,
        "false_refusals_per_evaluate_upper95": per_evaluate(
            clopper_pearson_upper(refused_pairs + own_refused, len(pool) * n_real + own_pairs), clips
        ),
        "scrambled_queries": queries,
        "scrambled_matches": big_matched,
        "match_ms_cpu_p50": round(float(np.percentile(times, 50)), 1) if times else 0.0,
        "match_ms_cpu_p99": round(float(np.percentile(times, 99)), 1) if times else 0.0,
        "build_s_cpu": round(build_s, 1) if queries else 0.0,
        "registration": registration,
    }


def _wait(deny: Denylist, fp: Fingerprint) -> tuple[float, float, bool]:
    """(wall ms, CPU ms, matched the clip registered from `fp`) of one match."""
    t_wall, t_cpu = time.perf_counter(), time.thread_time()
    found = deny.match(fp, T0)
    return (time.perf_counter() - t_wall) * 1000, (time.thread_time() - t_cpu) * 1000, bool(found)


def registration_wait(
    many: MemoryClipStore,
    live: Denylist,
    pool: list[Fingerprint],
    rule: MatchParams,
    keys: KeyParams,
) -> dict[str, Any]:
    """What an Evaluate's match waits right after a registration, with the store's clips
    indexed: the service's incremental refresh (`live`, already built) against the whole
    rebuild before it (`refresh="rebuild"`, built here on the same store), in one run. The
    registered clip is a pool utterance's print, and the timed query is that print, so each
    wait also says whether the new clip matched at once. Then, for the incremental denylist, a
    compaction forced in the background and the wall time of the matches made meanwhile. Its
    own generator, so the draws of the measures after it are those of the runs before."""
    rng = np.random.default_rng(len(pool))
    new = [pool[int(k)] for k in rng.choice(len(pool), 2, replace=False)]
    many.put(_clip("r0", new[0]))
    inc_wall, inc_cpu, inc_found = _wait(live, new[0])
    idle: list[float] = []  # the same matches' wall time with no compaction running: the baseline
    for _ in range(30):
        t0 = time.perf_counter()
        live.match(pool[int(rng.integers(0, len(pool)))], T0)
        idle.append((time.perf_counter() - t0) * 1000)
    t_compact = time.perf_counter()
    live.compact()
    during: list[float] = []
    while not live.wait_compacted(0):
        t0 = time.perf_counter()
        live.match(pool[int(rng.integers(0, len(pool)))], T0)
        during.append((time.perf_counter() - t0) * 1000)
    compact_s = time.perf_counter() - t_compact
    before = Denylist(many, rule, keys=keys, refresh="rebuild")
    before.match(pool[0], T0)  # its first build, untimed, as the service's was
    many.put(_clip("r1", new[1]))
    reb_wall, reb_cpu, reb_found = _wait(before, new[1])
    return {
        "clips": len(many.all()),
        "incremental_wait_ms_wall": round(inc_wall, 1),
        "incremental_wait_ms_cpu": round(inc_cpu, 1),
        "incremental_new_clip_matched": inc_found,
        "rebuild_wait_ms_wall": round(reb_wall, 1),
        "rebuild_wait_ms_cpu": round(reb_cpu, 1),
        "rebuild_new_clip_matched": reb_found,
        "incremental_over_rebuild_wall": round(inc_wall / max(reb_wall, 1e-9), 4),
        "compaction_s_wall": round(compact_s, 2),
        "compactions": live.compactions,
        "match_ms_wall_idle_p50": round(float(np.percentile(idle, 50)), 1),
        "match_ms_wall_idle_p99": round(float(np.percentile(idle, 99)), 1),
        "matches_during_compaction": len(during),
        "match_ms_wall_during_compaction_p50": round(float(np.percentile(during, 50)), 1) if during else 0.0,
        "match_ms_wall_during_compaction_p99": round(float(np.percentile(during, 99)), 1) if during else 0.0,
        "match_ms_wall_during_compaction_max": round(max(during), 1) if during else 0.0,
    }


DENY_LOOSE = replace(DENYLIST_MATCH, ber_limit=0.30)  # every swept rule is stricter
# The refusal rules swept (`--deny-sweep`): a match this strong is refused, a weaker one that
# still passes DENYLIST_MATCH is challenged.
FORBID_LIMITS = tuple(round(0.10 + 0.01 * k, 2) for k in range(14))  # 0.10 .. 0.23
FORBID_BITS = (300, 400, 600)
FORBID_COVERAGE = (0.0, 0.4, 0.5, 0.6)
FORBID_TARGET = 1e-5  # false refusals per Evaluate at `clips` registered (issue 18)
BOOTSTRAPS = 1000
# A query's clip matches, each with the share of the query's reliable bits it compares.
Hits = list[tuple[FineMatch, float]]


def _real_clips(progs: list[Any]) -> dict[str, Fingerprint]:
    """One clip per source recording, printed whole (as an operator registers an ad)."""
    out: dict[str, Fingerprint] = {}
    for prog in progs:
        if prog.source not in out:
            out[prog.source] = eb.print_of(Pcm(prog.samples.astype(np.float32)))
    return out


def _score(m: FineMatch, slack: float = DENYLIST_MATCH.ber_slack) -> float:
    """The lowest `ber_limit` at which the match passes (for its effective bits)."""
    return m.ber + slack / math.sqrt(max(m.effective_bits, 1.0))


def _hits(matches: list[ClipMatch], fp: Fingerprint) -> Hits:
    bits = max(fp.reliable_bits, 1)
    return [(m.match, m.match.bits / bits) for m in matches]


def _refuses(rule: RefusalRule, hit: tuple[FineMatch, float]) -> bool:
    return rule.match.accepts(hit[0]) and hit[1] >= rule.min_coverage


def tail_model(
    false: list[Hits],
    pairs: int,
    loose: float,
    limits: tuple[float, ...],
    min_bits: int,
    min_coverage: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The per-pair false-match rate at each limit, modelled from the false pairs' tail.

    Each false pair (with at least `min_bits` compared, covering at least `min_coverage` of the
    query) has a score t, the lowest limit it passes at. Below the loose search's limit U the
    scores are fitted by an exponential tail, N(L) = n exp(-b (U - L)), whose maximum-likelihood
    rate is b = 1 / mean(U - t): the false matches halve every ln 2 / b of limit. That
    extrapolates to limits where a few million pairs show none; the 95 % interval is a
    bootstrap over the query utterances (their pairs are not independent: one speaker's re-takes
    of the same words match together). `observed` beside `modelled` shows how well it fits."""

    def kept(rows: list[Hits]) -> list[float]:
        return [_score(m) for hs in rows for m, cov in hs if m.bits >= min_bits and cov >= min_coverage]

    def fit(rows: list[Hits]) -> tuple[int, float]:
        gaps = [loose - t for t in kept(rows) if t <= loose]
        return len(gaps), (1.0 / max(float(np.mean(gaps)), 1e-9) if len(gaps) >= 2 else math.nan)

    def rates(n: int, b: float) -> list[float]:
        # Fewer than two false pairs fit no tail: then the rate at the loose limit stands.
        return [
            (n * math.exp(-b * (loose - lim)) if not math.isnan(b) else max(n, 1)) / pairs for lim in limits
        ]

    n, b = fit(false)
    boots = np.asarray(
        [rates(*fit([false[i] for i in rng.integers(0, len(false), len(false))])) for _ in range(BOOTSTRAPS)]
    )
    scores = kept(false)
    modelled = rates(n, b)
    return {
        "min_bits": min_bits,
        "min_coverage": min_coverage,
        "false_pairs_at_loose": n,
        "halving_limit": math.log(2) / b if not math.isnan(b) and b > 0 else None,
        "limits": list(limits),
        "observed": [sum(t <= lim for t in scores) for lim in limits],
        "modelled_pairs": [r * pairs for r in modelled],
        "modelled_rate": modelled,
        "modelled_rate_lower95": [float(x) for x in np.percentile(boots, 2.5, axis=0)],
        "modelled_rate_upper95": [float(x) for x in np.percentile(boots, 97.5, axis=0)],
    }


def per_evaluate(rate: float, clips: int) -> float:
    return 1 - (1 - min(rate, 1.0)) ** clips


def denylist_sweep(
    progs: list[Any],
    copies: dict[tuple[int, int], Fingerprint],
    pool: list[Fingerprint],
    clips: int,
    seed: int,
) -> dict[str, Any]:
    """The graded denylist's refusal rule, swept on one split's material from one loose search.

    For each (limit, min bits, min coverage): copies of the real clips at 5 dB refused (the
    rule) and refused or challenged (DENYLIST_MATCH, or the rule); false pairs of the pool
    against the real clips and of the pool's utterances registered as clips, queried by the
    others; and the modelled rate of false refusals (`tail_model`, fitted on both kinds of
    false pair) per pair and per Evaluate at `clips` registered, with its bootstrap 95 %
    upper bound."""
    real = MemoryClipStore()
    for name, fp in _real_clips(progs).items():
        real.put(_clip(name, fp))
    loose = Denylist(real, DENY_LOOSE, refuse=RefusalRule(DENY_LOOSE))
    hits = [
        _hits([m for m in loose.match(fp, T0) if m.clip.clip_id == progs[p].source], fp)
        for (p, _), fp in copies.items()
    ]
    real_false = [_hits(loose.match(fp, T0), fp) for fp in pool]
    own = MemoryClipStore()
    for k, fp in enumerate(pool):
        own.put(_clip(f"n{k}", fp))
    own_deny = Denylist(own, DENY_LOOSE, refuse=RefusalRule(DENY_LOOSE))
    pool_false = [
        _hits([m for m in own_deny.match(fp, T0) if m.clip.clip_id != f"n{k}"], fp)
        for k, fp in enumerate(pool)
    ]
    real_pairs = len(pool) * len(real.all())
    own_pairs = len(pool) * (len(pool) - 1)
    # One row per query utterance: its false pairs of both kinds (the bootstrap's unit).
    false = [a + b for a, b in zip(real_false, pool_false, strict=True)]
    pairs = real_pairs + own_pairs
    rng = np.random.default_rng(seed)
    n_copies = max(len(hits), 1)
    challenged = sum(any(DENYLIST_MATCH.accepts(m) for m, _ in hs) for hs in hits) / n_copies
    rows = []
    tails = []
    for bits in FORBID_BITS:
        for coverage in FORBID_COVERAGE:
            model = tail_model(false, pairs, DENY_LOOSE.ber_limit, FORBID_LIMITS, bits, coverage, rng)
            tails.append(model)
            for i, limit in enumerate(FORBID_LIMITS):
                rule = RefusalRule(replace(DENYLIST_MATCH, ber_limit=limit, min_bits=bits), coverage)
                refused = sum(any(_refuses(rule, h) for h in hs) for hs in hits) / n_copies
                rate, upper = model["modelled_rate"][i], model["modelled_rate_upper95"][i]
                real_refused = sum(_refuses(rule, h) for hs in real_false for h in hs)
                pool_refused = sum(_refuses(rule, h) for hs in pool_false for h in hs)
                rows.append(
                    {
                        "ber_limit": limit,
                        "min_bits": bits,
                        "min_coverage": coverage,
                        "refused_5db": refused,
                        "challenged_5db": challenged - refused,
                        "real_clip_false_pairs": real_refused,
                        "pool_clip_false_pairs": pool_refused,
                        "observed_upper95_per_pair": clopper_pearson_upper(
                            real_refused + pool_refused, pairs
                        ),
                        "modelled_per_pair": rate,
                        "modelled_per_pair_upper95": upper,
                        "modelled_per_evaluate": per_evaluate(rate, clips),
                        "modelled_per_evaluate_upper95": per_evaluate(upper, clips),
                    }
                )
    # The upper bounds rest on a handful of false pairs (no swept rule's reaches the target on
    # the tuning split): the choice goes by the fit itself, and both are reported.
    # How much of the query a match covers: each copy's best match (its lowest score) against
    # the strongest false pairs.
    best_cov = [min(hs, key=lambda h: _score(h[0]))[1] for hs in hits if hs]
    strongest = sorted((_score(m), cov) for hs in false for m, cov in hs)[:5]
    coverage = {
        "copies_p5": float(np.percentile(best_cov, 5)) if best_cov else None,
        "copies_median": float(np.median(best_cov)) if best_cov else None,
        "strongest_false_pairs": [{"score": round(t, 3), "coverage": round(c, 2)} for t, c in strongest],
    }
    meets = [r for r in rows if r["modelled_per_evaluate"] <= FORBID_TARGET]
    chosen = max(meets, key=lambda r: (r["refused_5db"], -r["modelled_per_evaluate"]), default=None)
    return {
        "copies": len(hits),
        "pool": len(pool),
        "real_clips": len(real.all()),
        "real_clip_pairs": real_pairs,
        "pool_clip_pairs": own_pairs,
        "clips": clips,
        "refused_or_challenged_5db": challenged,
        "configured_false_pairs": sum(DENYLIST_MATCH.accepts(m) for hs in false for m, _ in hs),
        "coverage": coverage,
        "tails": tails,
        "rows": rows,
        "chosen": chosen,
        "choice": "of the swept rules whose modelled false refusals per Evaluate at "
        f"{clips:,} clips are <= {FORBID_TARGET:g}, the one refusing the most 5 dB copies, then the "
        "lower modelled rate",
    }


def print_sweep(sweep: dict[str, Any], split: str) -> None:
    print(
        f"Denylist refusal rules on the {split} split ({sweep['copies']} copies at 5 dB, "
        f"{sweep['pool']} pool; {sweep['real_clip_pairs']:,} pool x real-clip pairs, "
        f"{sweep['pool_clip_pairs']:,} pool-as-clips pairs). Configured rule (challenge above the "
        f"refusal rule): {sweep['refused_or_challenged_5db']:.3f} of copies, "
        f"{sweep['configured_false_pairs']} false pairs."
    )
    cov = sweep["coverage"]
    if cov["copies_median"] is not None:
        print(
            f"Share of the query a match covers: 5 dB copies' best match p5 {cov['copies_p5']:.2f}, median "
            f"{cov['copies_median']:.2f}; the strongest false pairs (score, coverage): "
            + ", ".join(f"{p['score']:.3f} / {p['coverage']:.2f}" for p in cov["strongest_false_pairs"])
        )
    print("Tail fit (false pairs by the lowest limit they pass at), observed / modelled:")
    for t in sweep["tails"]:
        shown = [
            f"{lim:.2f}: {o} / {m:.1f}"
            for lim, o, m in zip(t["limits"], t["observed"], t["modelled_pairs"], strict=True)
            if m is not None and (o or m >= 0.5)
        ]
        half = f"{t['halving_limit']:.4f}" if t["halving_limit"] else "-"
        print(
            f"  >= {t['min_bits']} bits, coverage >= {t['min_coverage']}: "
            f"{t['false_pairs_at_loose']} at the loose limit, halving every {half}; " + "; ".join(shown)
        )
    print(
        "| limit / min bits / coverage | refused at 5 dB | challenged | false pairs (real / pool) "
        f"| modelled per pair (95 % upper) | modelled refusals per Evaluate at {sweep['clips']:,} (upper) |"
    )
    print("|---|---|---|---|---|---|")
    for r in sweep["rows"]:
        print(
            f"| {r['ber_limit']:.2f} / {r['min_bits']} / {r['min_coverage']} | {r['refused_5db']:.3f} "
            f"| {r['challenged_5db']:.3f} "
            f"| {r['real_clip_false_pairs']} / {r['pool_clip_false_pairs']} "
            f"| {r['modelled_per_pair']:.2g} ({r['modelled_per_pair_upper95']:.2g}) "
            f"| {r['modelled_per_evaluate']:.2g} ({r['modelled_per_evaluate_upper95']:.2g}) |"
        )
    conf = [
        r
        for r in sweep["rows"]
        if (r["ber_limit"], r["min_bits"], r["min_coverage"])
        == (DENYLIST_REFUSE.match.ber_limit, DENYLIST_REFUSE.match.min_bits, DENYLIST_REFUSE.min_coverage)
    ]
    for r in conf:
        print(
            f"Configured refusal rule (DENYLIST_REFUSE, {r['ber_limit']:.2f} over {r['min_bits']} bits "
            f"covering {r['min_coverage']} of the query): refused {r['refused_5db']:.3f}, challenged "
            f"{r['challenged_5db']:.3f} of 5 dB copies; false refusals {r['real_clip_false_pairs']} / "
            f"{r['pool_clip_false_pairs']} (real / pool; observed 95 % upper per pair "
            f"{r['observed_upper95_per_pair']:.1e}); modelled per Evaluate at {sweep['clips']:,} clips "
            f"{r['modelled_per_evaluate']:.1e} (95 % upper {r['modelled_per_evaluate_upper95']:.1e})"
        )
    c = sweep["chosen"]
    print(
        f"Chosen ({sweep['choice']}): "
        + (
            f"{c['ber_limit']:.2f} over {c['min_bits']} bits, refusing {c['refused_5db']:.3f}"
            if c
            else "none"
        )
    )


def poisson_at_least(lam: float, k: int) -> float:
    return 1.0 - sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(k))


def scale(
    pool: list[Fingerprint],
    n: int,
    queries: int,
    rng: np.random.Generator,
    redis_url: str = "",
    copies: dict[tuple[int, int], Fingerprint] | None = None,
    homes: int = 5,
    buckets_per_key: int | None = None,
    max_in_span: int = 0,
    keys: KeyParams = DEFAULT_KEYS,
) -> dict[str, Any]:
    in_span = max(1, round(n * SPAN.total_seconds() / WINDOW_S))
    postings: Any = MemoryPostings()
    reference: IndexedWindow | None = None
    if redis_url:
        import uuid

        import redis

        from purchase_guard.broadcast.postings_redis import RedisPostings

        client = redis.Redis.from_url(redis_url)
        prefix = f"pg-bench-fleet:{uuid.uuid4().hex}"
        postings = RedisPostings(client, prefix, SPAN, buckets_per_key=buckets_per_key)
        # The same postings read as before the bitmaps (every looked-up key, one MGET per (epoch, shard)),
        # timed in turn with it on the same queries, and their matches compared.
        mget = RedisPostings(client, prefix, SPAN, buckets_per_key=buckets_per_key, reads="mget")
        reference = IndexedWindow(
            mget, window=timedelta(seconds=WINDOW_S), search_span=SPAN, keys=keys, max_in_span=max_in_span
        )
    window = IndexedWindow(
        postings, window=timedelta(seconds=WINDOW_S), search_span=SPAN, keys=keys, max_in_span=max_in_span
    )
    # A steady stream at n per 10 minutes over the two spans before the query (or, with the
    # cap, twice the time the cap's entries take to arrive, when that is shorter), which
    # arrives in the middle of a bucket (the average case): after expiry the replica holds,
    # and the query reads, the span (or the cap) plus up to a bucket.
    bucket = timedelta(seconds=DEFAULT_KEYS.bucket_seconds)
    at = T0 + 2 * SPAN + bucket / 2
    lead = _lead(n, max_in_span)
    stream = max(1, round(n * lead.total_seconds() / WINDOW_S))
    t = time.perf_counter()
    for k in range(stream):
        window.add(entry(f"s{k}", _scrambled(pool[k % len(pool)], rng), at - lead + lead * k / stream))
    window.expire(at)
    load_s = time.perf_counter() - t
    held = len(window)
    read = window.span_buckets(at)
    counted = sum(postings.counts(read))  # entries a query at `at` counts matches among
    horizon_s = (at - window.horizon(at, read)).total_seconds()
    prints_bytes = posting_bytes = 0
    if not redis_url:  # with Redis the replica keeps no entries at all
        for b in postings._buckets.values():
            prints_bytes += sum(e.fp.bits.nbytes + e.fp.mask.nbytes for e in b.entries.values())
        posting_bytes = postings.postings() * 10 + postings.table_bytes()
    timed = [window] if reference is None else [window, reference]
    times: list[list[float]] = [[] for _ in timed]
    cpu: list[list[float]] = [[] for _ in timed]
    differing = 0
    for k in range(queries):
        fp = pool[int(rng.integers(0, len(pool)))]
        q = entry(f"q{k}", fp, at)
        found: list[list[str]] = [[] for _ in timed]
        for i in np.roll(np.arange(len(timed)), k).tolist():  # in turn
            t0 = time.perf_counter()
            found[i] = [m.entry.entry_id for m in timed[i].match(q)]
            times[i].append((time.perf_counter() - t0) * 1000)
        differing += any(f != found[0] for f in found)
    for k in range(min(queries, 50)):  # CPU time, the figure the scanning index reports
        fp = pool[int(rng.integers(0, len(pool)))]
        for i in np.roll(np.arange(len(timed)), k).tolist():
            c0 = time.thread_time()
            timed[i].match(entry(f"c{k}", fp, at))
            cpu[i].append((time.thread_time() - c0) * 1000)
    keys_timed = postings.keys_read if redis_url else 0
    detection: float | None = None
    if copies is not None:
        # The broadcast's copies arrive among the N-in-span others: per-pair detection there,
        # where chance votes compete with the copies' for the fine-checked candidates.
        for (p, h), fp in copies.items():
            window.add(entry(f"b{p}-{h}", fp, at))
        hit = total = 0
        for (p, h), fp in copies.items():
            found = {m.entry.entry_id for m in window.match(entry(f"qb{p}-{h}", fp, at))}
            for h2 in range(homes):
                if h2 != h and (p, h2) in copies:
                    total += 1
                    hit += f"b{p}-{h2}" in found
        detection = hit / max(total, 1)
    mget_reads: dict[str, Any] = {}
    if redis_url:
        for key in client.scan_iter(match=prefix + "*", count=10_000):
            client.delete(key)
        mget_reads = {
            "mget_query_ms_p50": round(float(np.percentile(times[1], 50)), 2),
            "mget_query_ms_p99": round(float(np.percentile(times[1], 99)), 2),
            "mget_query_ms_cpu_p50": round(float(np.percentile(cpu[1], 50)), 2),
            "mget_query_ms_cpu_p99": round(float(np.percentile(cpu[1], 99)), 2),
            "queries_matching_otherwise_than_mget": differing,
            # Posting keys each reads per timed query: the bitmaps' saving.
            "keys_read_per_query": round(keys_timed / (queries + len(cpu[0]))),
            "mget_keys_read_per_query": round(mget.keys_read / (queries + len(cpu[1]))),
        }
    return {
        "postings": "redis" if redis_url else "memory",
        "window": n,
        "in_span": in_span,
        "held_and_read": held,
        "max_in_span": max_in_span,
        "counted": counted,
        "horizon_seconds": round(horizon_s, 2),
        "load_s": round(load_s, 1),
        "query_ms_p50": round(float(np.percentile(times[0], 50)), 2),
        "query_ms_p99": round(float(np.percentile(times[0], 99)), 2),
        "query_ms_cpu_p50": round(float(np.percentile(cpu[0], 50)), 2),
        "query_ms_cpu_p99": round(float(np.percentile(cpu[0], 99)), 2),
        **mget_reads,
        "per_pair_5db_among_span": detection,
        "replica_memory_mib_in_process": round((posting_bytes + prints_bytes) / 2**20, 1),
        "bytes_per_entry": round((posting_bytes + prints_bytes) / max(held, 1)),
    }


def _loadavg() -> list[str]:
    path = Path("/proc/loadavg")
    return path.read_text().split()[:3] if path.exists() else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--homes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--redis", default="", help="also time the Redis postings at the smallest size")
    ap.add_argument(
        "--redis-buckets-per-key",
        type=int,
        default=None,
        help="buckets per Redis key (default: 60 s)",
    )
    ap.add_argument("--clips", type=int, default=10_000, help="registered clips for the denylist measure")
    ap.add_argument(
        "--deny-sweep", default="", metavar="SPLIT", help="only sweep denylist rules on this split (tune)"
    )
    ap.add_argument(
        "--only",
        choices=["denylist", "fleet"],
        default="",
        help="only the denylist measure (the index and the scan it replaced, in one run), or all but it",
    )
    ap.add_argument(
        "--split",
        default="test",
        help="material (tune to choose the span's cap, the denylist index)",
    )
    ap.add_argument(
        "--max-in-span",
        default=str(SETTINGS.broadcast_max_in_span),
        help="the span's cap (BROADCAST_MAX_IN_SPAN; 0: none), or several, comma-separated; each size "
        "is also run without it",
    )
    ap.add_argument("--jitters", default="1,2,5", help="per-home delay spreads (s) for the live events")
    ap.add_argument("--event-sizes", default="", help="sizes for the live events (default: the largest)")
    ap.add_argument(
        "--rates-only",
        action="store_true",
        help="only the pool's rates, the closure and the largest cap meeting 1e-5 false verdicts (tune)",
    )
    ap.add_argument(
        "--deny-keys",
        action="append",
        default=[],
        metavar="K=V,...",
        help="KeyParams fields over DENYLIST_KEYS for the denylist's index, e.g. max_flips=2,max_shift=160; "
        "repeat to measure several in one --only denylist run (to compare on tune)",
    )
    ap.add_argument(
        "--fleet-keys",
        action="append",
        default=[],
        metavar="K=V,...",
        help="KeyParams fields over DEFAULT_KEYS for the fleet window in the scale rows, e.g. "
        "max_candidates=32; repeat to measure several in one run (to compare on tune)",
    )
    args = ap.parse_args(argv)
    import logging

    import structlog

    import purchase_guard.broadcast.guard as guard_module

    # Each cluster logs a warning; thousands of them would bury the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    # Events run the real guard on prints made once (fingerprinting is measured elsewhere).
    patched: dict[str, Any] = vars(guard_module)
    patched["fingerprint"] = lambda pcm, params=None: pcm.fp
    patched["clipped_fraction"] = lambda pcm: 0.0

    t = time.time()
    if args.deny_sweep:
        copies, negs, progs = material(args.data, args.quick, args.seed, args.homes, args.deny_sweep)
        sweep = denylist_sweep(progs, copies, [n.fp for n in negs], args.clips, args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"denylist-sweep-{args.deny_sweep}.json").write_text(json.dumps(sweep, indent=2))
        print_sweep(sweep, args.deny_sweep)
        return 0
    if args.only == "denylist":
        return denylist_only(args, argv)
    deny_keys = _deny_keys(args.deny_keys[0] if args.deny_keys else "")
    copies, negs, progs = material(args.data, args.quick, args.seed, args.homes, args.split)
    pool = [n.fp for n in negs]
    print(
        f"material ({args.split}): {len(copies)} broadcast copies, {len(pool)} pool prints "
        f"({time.time() - t:.0f} s)",
        flush=True,
    )
    if args.rates_only:
        return rates_only(args, argv, negs, pool)
    pairs = per_pair(copies, pool, args.homes)
    print(
        f"per-pair 5 dB: index {pairs['index']:.3f}, scan {pairs['scan']:.3f} ({pairs['pairs']} pairs)",
        flush=True,
    )
    ev = events(copies, pool, args.homes)
    print(f"households flagged once 3 seen: {ev['flagged']:.3f} of {ev['homes']}", flush=True)
    fr = false_rates(pool)
    print(f"pool: {fr}", flush=True)
    tri = triangles(pool, prompt_of(negs, args.data))
    closure = closure_estimate(tri)
    print(f"closure: {json.dumps(closure)}", flush=True)
    caps_allowed = largest_cap(fr, closure)
    print(f"largest span cap for <= 1e-5 false verdicts: {json.dumps(caps_allowed)}", flush=True)
    rng = np.random.default_rng(args.seed)
    warm_up()  # compile the search loops before anything is timed, as the server does at start
    deny: dict[str, Any] = {}
    deny_scan: dict[str, Any] = {}
    if args.only != "fleet":
        deny = denylist_scale(progs, copies, pool, args.clips, min(args.queries, 50), rng, keys=deny_keys)
        print(f"denylist: {json.dumps(deny)}", flush=True)
        deny_scan = denylist_scale(progs, copies, pool, args.clips, min(args.queries, 50), rng, search="scan")
        print(f"denylist, scan: {json.dumps(deny_scan)}", flush=True)
    rows = []
    sizes = [int(s) for s in args.sizes.split(",") if s]
    caps = [int(c) for c in args.max_in_span.split(",") if int(c)] + [0]
    runs = [(spec, n, cap) for spec in args.fleet_keys or [""] for n in sizes for cap in caps]
    for spec, n, cap in runs:
        row = scale(
            pool,
            n,
            args.queries,
            rng,
            copies=copies,
            homes=args.homes,
            max_in_span=cap,
            keys=_fleet_keys(spec),
        )
        row["fleet_keys"] = spec
        # A verdict needs two matched others that also match each other: the expected
        # number of pairs among the chance matches, E[K(K-1)/2] = lam^2 / 2 for
        # K ~ Poisson(lam), times the share of such pairs that close (a union bound, above
        # P(K >= 2) * closure). With the cap, lam counts the entries the query counts.
        counted = min(row["in_span"], row["counted"]) if cap else row["in_span"]
        lam = counted * fr["false_matches_per_pair"]
        wedges = lam * lam / 2
        row["false_verdicts_without_consistency"] = poisson_at_least(lam, NEED)
        row["chance_match_pairs_per_evaluate"] = wedges
        row["false_verdicts_per_evaluate_measured_upper95"] = min(1.0, wedges * closure["measured_upper95"])
        row["false_verdicts_per_evaluate_modelled"] = min(1.0, wedges * closure["modelled"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    live = []
    event_sizes = [int(s) for s in args.event_sizes.split(",") if s] or [max(sizes)]
    for n in event_sizes:
        for jitter in [float(j) for j in args.jitters.split(",") if j]:
            for cap in caps:
                r = events_at_scale(
                    copies, pool, n, args.homes, jitter, cap, np.random.default_rng(args.seed)
                )
                live.append(r)
                print(f"live events: {json.dumps(r)}", flush=True)
    if args.redis:
        smallest = min(int(s) for s in args.sizes.split(",") if s)
        # The same copies among the same span: detection must not depend on the store.
        row = scale(
            pool,
            smallest,
            args.queries,
            rng,
            args.redis,
            copies=copies,
            homes=args.homes,
            buckets_per_key=args.redis_buckets_per_key,
            max_in_span=caps[0],
        )
        row["redis_buckets_per_key"] = args.redis_buckets_per_key
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "command": "python scripts/bench_fleet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": platform.platform(),
        "load_average": _loadavg(),
        "split": args.split,
        "span_seconds": SPAN.total_seconds(),
        "bucket_seconds": DEFAULT_KEYS.bucket_seconds,
        "max_in_span": caps[0],
        "window_seconds": WINDOW_S,
        "min_sources": SETTINGS.broadcast_min_sources,
        "per_pair_5db": pairs,
        "events_5db": ev,
        "pool": fr,
        "closure": {**tri, "estimate": closure},
        "largest_cap": caps_allowed,
        "denylist": deny,
        "denylist_scan": deny_scan,
        "scale": rows,
        "events_live": live,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "fleet.json" if args.split == "test" else f"fleet-{args.split}.json"
    (args.out / name).write_text(json.dumps(report, indent=2))
    print()
    print("Closure of chance matches (pool pairs searched once; wedge = a query with two matches):")
    print(
        "| BER limit | matches | per pair | wedges (same prompt) | closed (same prompt) "
        "| closure (95 % upper) | lift (95 % upper) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in tri["ladder"]:
        print(
            f"| {r['ber_limit']:.2f} | {r['matches']} | {r['per_pair']:.1e} "
            f"| {r['wedges']} ({r['wedges_same_prompt']}) "
            f"| {r['closed']} ({r['closed_same_prompt']}) | {r['closure']:.2e} ({r['closure_upper95']:.2e}) "
            f"| {r['lift']:.0f} ({r['lift_upper95']:.0f}) |"
        )
    print()
    print(
        "| window (10 min) | cap | in span (held, read; horizon s) | false verdicts / Evaluate: measured "
        "(95 % upper) | modelled "
        "| without consistency | per-pair 5 dB among span | query p50 / p99 ms (CPU p99) "
        "| replica MiB (in process) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['query_ms_p50']} / {r['query_ms_p99']} ({r['query_ms_cpu_p99']})"
        if r["postings"] == "redis":
            print(
                f"| {r['window']:,} (Redis postings) | {r['in_span']:,} | | | "
                f"| {r['per_pair_5db_among_span']:.3f} | {ms} | 0 (none kept) |"
            )
            print(
                f"| {r['window']:,} (Redis, MGET reads) | | | | | "
                f"| {r['mget_query_ms_p50']} / {r['mget_query_ms_p99']} ({r['mget_query_ms_cpu_p99']}); "
                f"{r['queries_matching_otherwise_than_mget']} queries matched otherwise | |"
            )
            continue
        cap_text = f"{r['max_in_span']:,}" if r["max_in_span"] else "none"
        if r.get("fleet_keys"):
            cap_text += f" ({r['fleet_keys']})"
        print(
            f"| {r['window']:,} | {cap_text} "
            f"| {r['in_span']:,} ({r['held_and_read']:,}; {r['horizon_seconds']}) "
            f"| {r['false_verdicts_per_evaluate_measured_upper95']:.1e} "
            f"| {r['false_verdicts_per_evaluate_modelled']:.1e} "
            f"| {r['false_verdicts_without_consistency']:.1e} | {r['per_pair_5db_among_span']:.3f} "
            f"| {ms} | {r['replica_memory_mib_in_process']} |"
        )
    print()
    print("Live events: households flagged once 3 seen, copies among the stream (5 dB):")
    print("| window (10 min) | per-home delay spread | cap | flagged | homes |")
    print("|---|---|---|---|---|")
    for r in live:
        cap_text = f"{r['max_in_span']:,}" if r["max_in_span"] else "none"
        print(f"| {r['window']:,} | {r['jitter_s']:g} s | {cap_text} | {r['flagged']:.3f} | {r['homes']} |")
    if not deny:
        return 0
    print()
    d = deny
    print(f"Denylist ({d['clips']:,} clips: {d['real_clips']} real recordings plus bit-scrambled copies):")
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| 5 dB copies of the real clips matched (refused or challenged) / refused "
        f"| {d['detection_5db']:.3f} / {d['refused_5db']:.3f} of {d['copies']} |"
    )
    print(
        f"| pool utterances matched / refused by the real clips | {d['pool_matched_by_real_clips']} / "
        f"{d['pool_refused_by_real_clips']} of {d['pool']} (matches per utterance and clip "
        f"{d['per_clip_pair_rate']:.1e}, 95 % upper {d['per_clip_pair_upper95']:.1e}) |"
    )
    print(
        f"| pool utterances as 3.5 s clips, queried by the others: matches / refusals | "
        f"{d['pool_as_clips_matches']} / {d['pool_as_clips_refusals']} of {d['pool_as_clips_pairs']:,} pairs "
        f"(matches {d['pool_as_clips_rate']:.1e}, upper {d['pool_as_clips_upper95']:.1e}) |"
    )
    print(
        f"| false matches (challenges) / Evaluate at {d['clips']:,} clips, real-clip rate (upper); "
        f"pool-as-clips rate | {d['false_matches_per_evaluate']:.1e} "
        f"({d['false_matches_per_evaluate_upper95']:.1e}); {d['false_matches_per_evaluate_pool_clips']:.1e} |"
    )
    print(
        f"| false refusals / Evaluate at {d['clips']:,} clips, 95 % upper from the pairs seen "
        f"(`--deny-sweep` models the tail) | {d['false_refusals_per_evaluate_upper95']:.1e} |"
    )
    print(f"| matched by a scrambled clip | {d['scrambled_matches']} of {d['scrambled_queries']} queries |")
    print(
        f"| denylist match CPU p50 / p99 at {d['clips']:,} clips, index (scan) "
        f"| {d['match_ms_cpu_p50']} / {d['match_ms_cpu_p99']} ms "
        f"({deny_scan['match_ms_cpu_p50']} / {deny_scan['match_ms_cpu_p99']} ms) |"
    )
    return 0


def rates_only(
    args: argparse.Namespace, argv: list[str] | None, negs: list[Any], pool: list[Fingerprint]
) -> int:
    """The pool's per-pair rate and the closure of chance matches, and from them the largest
    span cap whose false verdicts per Evaluate stay within 1e-5 as modelled (and as the
    measured bound allows): (n p)^2 / 2 * c <= 1e-5, n = sqrt(2e-5 / c) / p. Run on tune to
    choose BROADCAST_MAX_IN_SPAN."""
    fr = false_rates(pool)
    print(f"pool: {fr}", flush=True)
    tri = triangles(pool, prompt_of(negs, args.data))
    closure = closure_estimate(tri)
    cap = largest_cap(fr, closure)

    out = {
        "command": "python scripts/bench_fleet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "split": args.split,
        "load_average": _loadavg(),
        "pool": fr,
        "closure": {**tri, "estimate": closure},
        **cap,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"fleet-rates-{args.split}.json").write_text(json.dumps(out, indent=2))
    print(f"closure: {json.dumps(closure)}")
    print(f"largest span cap for <= 1e-5 false verdicts per Evaluate ({args.split}): {json.dumps(cap)}")
    return 0


def largest_cap(fr: dict[str, Any], closure: dict[str, Any]) -> dict[str, float]:
    """The most entries a query may count with (n p)^2 / 2 * c <= 1e-5: n = sqrt(2e-5 / c) / p,
    at the pool's per-pair rate and at its upper 95 % bound, for the modelled closure and the
    measured bound. The rule for choosing BROADCAST_MAX_IN_SPAN on tune takes the upper rate
    and the modelled closure (docs/broadcast.md "Fleet scale")."""

    def n(p: float, c: float) -> float:
        return math.sqrt(2e-5 / c) / p if p and c else math.inf

    p, p_up = fr["false_matches_per_pair"], fr["false_matches_per_pair_upper95"]
    return {
        "largest_cap_modelled": n(p, closure["modelled"]),
        "largest_cap_modelled_upper_rate": n(p_up, closure["modelled"]),
        "largest_cap_measured_upper95": n(p, closure["measured_upper95"]),
    }


def _keys(base: KeyParams, spec: str) -> KeyParams:
    """`base` with the fields of "k=v,..." replaced (integers)."""
    fields = dict(kv.split("=") for kv in spec.split(",") if kv)
    return replace(base, **{k: int(v) for k, v in fields.items()})


def _fleet_keys(spec: str) -> KeyParams:
    return _keys(DEFAULT_KEYS, spec)


def _deny_keys(spec: str) -> KeyParams:
    return _keys(DENYLIST_KEYS, spec)


def denylist_only(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The denylist measure alone, through the index (each --deny-keys setting, or the
    configured one) and through the scan in one run: same material, same queries (each
    search draws them from its own generator seeded alike)."""
    t = time.time()
    copies, negs, progs = material(args.data, args.quick, args.seed, args.homes, args.split)
    pool = [n.fp for n in negs]
    print(
        f"material ({args.split}): {len(copies)} copies, {len(pool)} pool ({time.time() - t:.0f} s)",
        flush=True,
    )
    warm_up()
    load_start = _loadavg()
    queries = min(args.queries, 50)
    runs: dict[str, dict[str, Any]] = {}
    for spec in args.deny_keys or [""]:
        name = f"index {spec}" if spec else "index"
        rng = np.random.default_rng(args.seed)
        runs[name] = denylist_scale(progs, copies, pool, args.clips, queries, rng, keys=_deny_keys(spec))
        print(f"denylist, {name}: {json.dumps(runs[name])}", flush=True)
    rng = np.random.default_rng(args.seed)
    runs["scan"] = denylist_scale(progs, copies, pool, args.clips, queries, rng, search="scan")
    print(f"denylist, scan: {json.dumps(runs['scan'])}", flush=True)
    report = {
        "command": "python scripts/bench_fleet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": platform.platform(),
        "split": args.split,
        "load_average_start": load_start,
        "load_average_end": _loadavg(),
        "denylist": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"denylist-{args.split}.json").write_text(json.dumps(report, indent=2))
    any_run = runs["scan"]
    print()
    print(
        f"Denylist at {args.clips:,} clips ({args.split} split, {any_run['copies']} copies at 5 dB, "
        f"{any_run['pool']} pool; load {' '.join(load_start)} -> {' '.join(_loadavg())}):"
    )
    print(
        "| search | 5 dB copies matched / refused | pool matched / refused by the "
        f"{any_run['real_clips']} real clips | pool as clips: matches / refusals of "
        f"{any_run['pool_as_clips_pairs']:,} | matched by a scrambled clip, of {queries} "
        "| match CPU p50 / p99 ms | / scan, p50 | build CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    scan_p50 = max(runs["scan"]["match_ms_cpu_p50"], 1e-9)
    for name, r in runs.items():
        print(
            f"| {name} | {r['detection_5db']:.3f} / {r['refused_5db']:.3f} "
            f"| {r['pool_matched_by_real_clips']} / {r['pool_refused_by_real_clips']} "
            f"| {r['pool_as_clips_matches']} / {r['pool_as_clips_refusals']} | {r['scrambled_matches']} "
            f"| {r['match_ms_cpu_p50']} / {r['match_ms_cpu_p99']} | {r['match_ms_cpu_p50'] / scan_p50:.3f} "
            f"| {r['build_s_cpu']} |"
        )
    reg = runs[next(iter(runs))]["registration"]
    if reg:
        print()
        print(
            f"After a registration at {reg['clips']:,} clips, the next match waits (wall / CPU ms; "
            "new clip matched): "
            f"incremental {reg['incremental_wait_ms_wall']} / {reg['incremental_wait_ms_cpu']} "
            f"({reg['incremental_new_clip_matched']}), whole rebuild (before) {reg['rebuild_wait_ms_wall']} "
            f"/ {reg['rebuild_wait_ms_cpu']} ({reg['rebuild_new_clip_matched']}); "
            f"ratio {reg['incremental_over_rebuild_wall']}. "
            f"Background compaction {reg['compaction_s_wall']} s wall; "
            f"{reg['matches_during_compaction']} matches meanwhile, wall p50 / p99 / max "
            f"{reg['match_ms_wall_during_compaction_p50']} / {reg['match_ms_wall_during_compaction_p99']} "
            f"/ {reg['match_ms_wall_during_compaction_max']} ms (without a compaction: p50 / p99 "
            f"{reg['match_ms_wall_idle_p50']} / {reg['match_ms_wall_idle_p99']} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
