"""End-to-end household benchmark: simulated families through a real guard over gRPC (issue 19).

    python scripts/eval_households.py [--data ../shared/data] [--out reports/households]
        [--households 60] [--folds-run 0,1,2,3,4] [--cache-dir build/voice-cache] [--shipped]

Prints a table and writes <out>/households.json. The protocol is PROTOCOL below and in
docs/voice.md ("Households, end to end"). Every request is what the voice backend sends
(GuardClient.evaluate / confirm with the backend credential) to a server built by
build_app + build_server on a local port; household set-up goes through the admin API.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile as sf
from script_paths import ROOT, default_data_dir

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import build_server
from purchase_guard.app import build_app
from purchase_guard.challenge.pin import PinHasher, validate_pin
from purchase_guard.clock import FrozenClock
from purchase_guard.config import Settings
from purchase_guard.errors import WeakPin
from purchase_guard.logs import configure_logging
from purchase_guard.voice.audio import TARGET_RATE_HZ
from purchase_guard.voice.digits import ENROLLMENT_PROMPTS, TemplateDigitChecker, load_digit_checker
from purchase_guard.voice.digits.corpus import fsdd_join
from purchase_guard.voice.encoder import Embedding, Samples, SpeakerEncoder
from purchase_guard.voice.households import Attempt, Ledger, band_of, format_table, summarise, targets
from purchase_guard.voice.units import SpeakerInfo, Unit, assign_folds

K = 5
OP = "op-" + "h" * 40
BK = "pgb_households-" + "b" * 32
T0 = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)  # 10:00 in Los Angeles
PARENT_CORPORA = ("speechocean", "libri-test-other", "fsdd-pin")
GENUINE_GAP = timedelta(days=5)  # keeps a parent's orders inside the daily and monthly caps
ATTACK_GAP = timedelta(minutes=21)  # at most 2 unrecognised voices an hour: the limit never decides
CHILDREN_PER_HOUSEHOLD = 20
TEENS_PER_HOUSEHOLD = 3
STRANGERS_PER_HOUSEHOLD = 36
REPLAYS_PER_HOUSEHOLD = 2
FSDD_REQUESTS = 8
ANSWER_TAKES = range(3, 10)  # FSDD takes for spoken answers; requests use the test joins (10-49)

PROTOCOL = (
    "k-fold over speakers (K=5, the folds of `make eval`: units.assign_folds, stratified by corpus x "
    "age group x gender). For each fold, the verification thresholds and the child detector are refitted "
    "on the other four folds' speakers with the shipped fitting code (voice/fitting.py, the shipped system "
    "and child spec) and written to files the fold's server loads (thresholds_file, child_detector_file); "
    "every household of that fold is built only from the held-out fold's speakers, so no reported speaker "
    "was used to fit the thresholds or the child detector. Not refitted: the GE2E encoder (pretrained "
    "elsewhere) and the digit content check (voice/digits, fitted on FSDD and speechocean762 digit strings, "
    "so its speakers overlap the FSDD parents and children). Server: build_app + build_server on a local "
    "port, default policy, SQLite, broadcast check off (recordings are reused across households, which the "
    "fleet check would rightly flag), rate limits off, replay check on; calls as the voice backend makes "
    "them (GuardClient with the backend credential). Households: one parent per household (an adult of "
    "speechocean762, LibriSpeech test-other or FSDD in the fold) enrolled from their 3 enrollment units "
    "(the units of voice/corpora.py), a PIN, for FSDD parents digit templates by guided enrollment "
    "(ENROLLMENT_PROMPTS from takes 0-2); every other household also has a child member (a fold child "
    "enrolled as CHILD from 3 utterances). Genuine requests: the parent's test units (FSDD: 5 test joins "
    "and 3 pairs of joins), every third an over-limit order (101-150 USD, over the adults' 100), the rest "
    "5-60 USD, 5 days apart. A challenge is answered once: SPOKEN_PIN/RANDOM_DIGITS by the parent with a "
    "new recording of the asked digits (FSDD takes 3-9, never used in a request; other corpora have no "
    "digit recordings, so such a challenge counts as refused), PARENT_APPROVAL approved by the parent "
    "(the simulated parent approves their own requests; counted apart as friction). Completed = ALLOW, "
    "or ALLOW after that one challenge. Attacks, 21 min apart between the parent's requests, 5-60 USD: "
    "the enrolled child's other utterances; other fold children (not enrolled here); fold teens; "
    "strangers (every other fold adult's units: LibriSpeech train-clean chunks, test-other, speechocean "
    "adults, FSDD joins); the parent's own earlier request sent again bit for bit (replay). An attack "
    "succeeds only on ALLOW; a PARENT_APPROVAL it triggers is refused by the parent (reported as sent to a "
    "parent); a PIN challenge is not answered (the attacker does not know the PIN). No recording is sent "
    "twice to one household except in the replay attack. Bands: net speech of the request (energy VAD) "
    "against the band edges of the fold's thresholds file. 95 % intervals: Wilson over attempts, and a "
    "speaker bootstrap (1000 replicates; attempts by one speaker are not independent)."
)


# ------------------------------------------------------------------- recordings


@dataclass(frozen=True)
class Take:
    """One recording as the backend would send it (16-bit WAV), with its net speech."""

    speaker: str
    wav: bytes = field(repr=False)
    speech_s: float

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.wav, usedforsecurity=False).hexdigest()


def wav_bytes(samples: np.ndarray[Any, Any], rate: int = TARGET_RATE_HZ) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1, 1).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class Speaker:
    info: SpeakerInfo
    enroll: list[Take]  # the first enrollment set (model 0)
    tests: list[Take]

    @property
    def key(self) -> str:
        return self.info.key

    @property
    def corpus(self) -> str:
        return self.info.corpus


def speakers_from(
    units: Sequence[Unit], infos: dict[str, SpeakerInfo], speech_s: Sequence[float]
) -> dict[str, Speaker]:
    out: dict[str, Speaker] = {}
    for u, s in zip(units, speech_s, strict=True):
        if u.model > 0:
            continue  # FSDD's other enrollment sets: one household per speaker needs one
        sp = out.setdefault(u.speaker_key, Speaker(infos[u.speaker_key], [], []))
        take = Take(u.speaker_key, wav_bytes(u.pcm.samples), float(s))
        (sp.enroll if u.model == 0 else sp.tests).append(take)
    return out


# ------------------------------------------------------------------- encoder memo


class MemoEncoder:
    """The encoder with its answers kept by a hash of the samples (and saved beside the voice
    eval's cache): an embedding is a function of its input, so a rerun computes only new audio.
    The guard still decodes, trims, fingerprints and scores every request itself."""

    def __init__(self, inner: SpeakerEncoder, cache_dir: Path | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in inner.name)
        self.path = None if cache_dir is None else cache_dir / f"households-emb-{safe}.npz"
        self.rows: dict[str, np.ndarray[Any, Any]] = {}
        self.hits = self.misses = 0
        if self.path is not None and self.path.is_file():
            z = np.load(self.path, allow_pickle=False)
            self.rows = {
                str(k): np.asarray(e, dtype=np.float32) for k, e in zip(z["keys"], z["emb"], strict=True)
            }

    @staticmethod
    def _key(x: Samples) -> str:
        data = np.ascontiguousarray(x, dtype=np.float32).tobytes()
        return hashlib.sha1(data, usedforsecurity=False).hexdigest()

    def embed(self, samples_16k: Samples) -> Embedding:
        k = self._key(samples_16k)
        if k in self.rows:
            self.hits += 1
            return np.asarray(self.rows[k], dtype=np.float32)
        self.misses += 1
        e = self.inner.embed(samples_16k)
        self.rows[k] = np.asarray(e, dtype=np.float32)
        return e

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        return [self.embed(x) for x in batch]

    def save(self) -> None:
        if self.path is None or not self.rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.rows)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), emb=np.stack([self.rows[k] for k in keys]))
        tmp.replace(self.path)


# ------------------------------------------------------------------- the guard


def order(total: int) -> dict[str, Any]:
    money = {"minor_units": str(total), "currency": "USD"}
    return {
        "items": [
            {"sku": "sku-1", "title": "Thing", "category": "household", "quantity": 1, "unit_price": money}
        ],
        "total": money,
        "merchant": "example-shop",
    }


def first_reason(resp: dict[str, Any]) -> str:
    reasons = resp.get("reasons") or []
    return str(reasons[0]["code"]) if reasons else "-"


class Lab:
    """One fold's guard: a real server on a local port and the clients the backend and parents use."""

    def __init__(
        self,
        folder: Path,
        encoder: SpeakerEncoder,
        digits: TemplateDigitChecker,
        thresholds_file: Path | None,
        child_file: Path | None,
    ) -> None:
        self.clock = FrozenClock(T0)
        settings = Settings(
            listen="127.0.0.1:0",
            metrics_port=0,
            sqlite_path=folder / "guard.db",
            operator_token=OP,
            operator_token_file=folder / "op-token",
            backend_token=BK,
            backend_token_file=folder / "backend-token",
            master_key_file=folder / "master-key",
            broadcast_enabled=False,
            rate_limits_enabled=False,
            thresholds_file=thresholds_file,
            child_detector_file=child_file,
            log_level="warning",
        ).validated()
        app = build_app(
            settings,
            encoder=encoder,
            clock=self.clock,
            pins=PinHasher(time_cost=1, memory_cost=1024),
            digits=digits,
        )
        self.running = build_server(app)
        self.op = GuardClient(
            f"127.0.0.1:{self.running.port}", OP, timeout=120, backend_token=app.backend_token
        )
        self.n = 0

    def close(self) -> None:
        self.op.close()
        self.running.stop(grace=0)

    def rid(self, kind: str) -> str:
        self.n += 1
        return f"{kind}-{self.n}"

    def tick(self, by: timedelta = timedelta(seconds=5)) -> None:
        self.clock.advance(by)


@contextmanager
def lab_for(*args: Any) -> Iterator[Lab]:
    lab = Lab(*args)
    try:
        yield lab
    finally:
        lab.close()


def pin_of(rng: random.Random) -> str:
    while True:
        pin = "".join(rng.choice("0123456789") for _ in range(4))
        try:
            validate_pin(pin)
        except WeakPin:
            continue
        return pin


@dataclass
class Home:
    """A simulated household: its ids, the parent, and what it has already heard."""

    hid: str
    admin: GuardClient
    parent_phone: GuardClient
    parent: Speaker
    pin: str
    fold: int
    data: Path
    rng: random.Random
    bands: Sequence[tuple[str, float | None]]
    heard: set[str] = field(default_factory=set)
    answer_takes: set[tuple[str, int]] = field(default_factory=set)
    sent_genuine: list[Take] = field(default_factory=list)
    child: Speaker | None = None
    requests: list[Take] = field(default_factory=list)  # the parent's test takes not used to enroll
    child_attempts: list[Take] = field(default_factory=list)
    enroll_extra: int = 0
    digit_templates: bool = False
    child_refused: bool = False

    @property
    def speaks_digits(self) -> bool:
        return self.parent.corpus.startswith("fsdd")

    def answer(self, digits: str) -> bytes | None:
        """A fresh recording of the parent saying `digits` (FSDD only), from takes never sent here."""
        if not self.speaks_digits:
            return None
        takes = []
        for d in digits:
            free = [t for t in ANSWER_TAKES if (d, t) not in self.answer_takes]
            t = self.rng.choice(free or list(ANSWER_TAKES))
            self.answer_takes.add((d, t))
            takes.append(t)
        pcm, _ = fsdd_join(self.data, self.parent.info.speaker, digits, takes, self.rng)
        return wav_bytes(pcm.samples)


class EnrollmentRefused(Exception):
    """The guard's enrollment gate refused every set of takes tried."""


def enroll(admin: GuardClient, hid: str, member: str, speaker: Speaker, extra: int = 2) -> list[Take]:
    """Enroll from the speaker's 3 enrollment takes; when the gate refuses them (a take too
    short, or not like the others), add the next test take, as the app would ask for another
    take, up to `extra` more. Returns the test takes used, which are then never requests."""
    used: list[Take] = []
    while True:
        try:
            admin.enroll(hid, member, [t.wav for t in (*speaker.enroll[:3], *used)])
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.INVALID_ARGUMENT or len(used) >= extra:
                raise EnrollmentRefused(str(exc.details())) from exc
            spare = [t for t in speaker.tests if t not in used]
            if len(spare) <= 2:
                raise EnrollmentRefused(str(exc.details())) from exc
            used.append(spare[0])
        else:
            return used


def make_home(
    lab: Lab, parent: Speaker, child: Speaker | None, fold: int, data: Path, seed: str, bands: Any
) -> Home:
    rng = random.Random(seed)
    hh = lab.op.create_household(f"Home {parent.key}", "America/Los_Angeles", "USD")
    hid = hh["household"]["household_id"]
    admin = lab.op.with_token(hh["admin_token"])
    pid = admin.add_member(hid, "Parent", "ADULT", True)["member"]["member_id"]
    extra_parent = enroll(admin, hid, pid, parent)
    pin = pin_of(rng)
    admin.set_pin(hid, pin)
    if parent.corpus.startswith("fsdd"):
        guided = []
        seen: dict[str, int] = {}
        for prompt in ENROLLMENT_PROMPTS:
            takes = []
            for d in prompt:
                takes.append(seen.get(d, 0) % 3)
                seen[d] = seen.get(d, 0) + 1
            pcm, _ = fsdd_join(data, parent.info.speaker, prompt, takes, rng)
            guided.append((prompt, wav_bytes(pcm.samples)))
        try:
            admin.enroll_digits(hid, pid, guided)
            digit_templates = True
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.INVALID_ARGUMENT:
                raise
            digit_templates = False
    else:
        digit_templates = False
    phone = lab.op.with_token(
        admin.issue_credential(hid, "PARENT_CREDENTIAL", member_id=pid, label="phone")["token"]
    )
    home = Home(hid, admin, phone, parent, pin, fold, data, rng, bands, digit_templates=digit_templates)
    home.enroll_extra = len(extra_parent)
    home.requests = [t for t in parent.tests if t not in extra_parent]
    if child is not None:
        cid = admin.add_member(hid, "Kid", "CHILD")["member"]["member_id"]
        try:
            extra_child = enroll(admin, hid, cid, child)
            home.child = child
            home.child_attempts = [t for t in child.tests if t not in extra_child]
        except EnrollmentRefused:
            admin.remove_member(hid, cid)
            home.child_refused = True
    return home


def evaluate(lab: Lab, home: Home, take: Take, total: int) -> dict[str, Any]:
    """The backend's Evaluate; a request the guard rejects as bad input (INVALID_ARGUMENT, e.g.
    audio it cannot use) is a refusal, reported under its status code."""
    lab.tick()
    home.heard.add(take.digest)
    try:
        return lab.op.evaluate(lab.rid("ev"), home.hid, "kitchen", order(total), take.wav)
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.INVALID_ARGUMENT:
            raise
        return {"outcome": "REJECTED", "reasons": [{"code": f"GRPC_{exc.code().name}"}]}


def genuine_request(lab: Lab, home: Home, take: Take, total: int, over: bool) -> Attempt:
    resp = evaluate(lab, home, take, total)
    home.sent_genuine.append(take)
    band = band_of(take.speech_s, home.bands)

    def done(outcome: str, method: str = "none", why: dict[str, Any] | None = None) -> Attempt:
        return Attempt(
            "genuine",
            outcome,
            band,
            take.speaker,
            home.hid,
            home.fold,
            method,
            first_reason(why if why is not None else resp),
            "over_limit" if over else "in_limit",
        )

    if resp["outcome"] == "ALLOW":
        return done("allow")
    if resp["outcome"] != "CHALLENGE":
        return done("refused")
    ch = resp["challenge"]
    method = ch["method"]
    lab.tick()
    if method == "PARENT_APPROVAL":
        home.parent_phone.resolve_approval(home.hid, ch["challenge_id"], "", approve=True)
        final = lab.op.confirm(lab.rid("cf"), home.hid, ch["challenge_id"], order(total), "", None)
        return done("passed_approval" if final["outcome"] == "ALLOW" else "refused", method, final)
    digits = ch.get("digits_to_repeat") or home.pin
    audio = home.answer(digits)
    if audio is None:
        return done("refused", method, {"reasons": [{"code": "NO_SPOKEN_DIGITS_IN_CORPUS"}]})
    final = lab.op.confirm(lab.rid("cf"), home.hid, ch["challenge_id"], order(total), digits, audio)
    return done("passed_answer" if final["outcome"] == "ALLOW" else "refused", method, final)


def attack_request(lab: Lab, home: Home, kind: str, take: Take, total: int) -> Attempt:
    resp = evaluate(lab, home, take, total)
    band = band_of(take.speech_s, home.bands)
    method = "none"
    if resp["outcome"] == "ALLOW":
        outcome = "allow"
    elif resp["outcome"] == "CHALLENGE":
        ch = resp["challenge"]
        method = ch["method"]
        if method == "PARENT_APPROVAL":
            # The parent did not ask for this: they refuse, and the backend's Confirm must not pass.
            lab.tick()
            home.parent_phone.resolve_approval(home.hid, ch["challenge_id"], "", approve=False)
            final = lab.op.confirm(lab.rid("cf"), home.hid, ch["challenge_id"], order(total), "", None)
            outcome = "allow" if final["outcome"] == "ALLOW" else "to_parent"
        else:
            outcome = "unanswerable_challenge"
    else:
        outcome = "refused"
    return Attempt(kind, outcome, band, take.speaker, home.hid, home.fold, method, first_reason(resp))


# ------------------------------------------------------------------- plan


@dataclass
class Pools:
    """The held-out fold's speakers by role, each role's recordings in a fixed shuffled order, and
    round-robin cursors so that successive households hear different recordings."""

    parents: list[Speaker]
    children: list[Speaker]
    teens: list[Speaker]
    adults: list[Speaker]
    takes: dict[str, list[Take]] = field(default_factory=dict)
    cursor: dict[str, int] = field(default_factory=dict)

    def draw(self, name: str, n: int, home: Home, exclude: set[str]) -> list[Take]:
        """n of role `name`'s recordings, none this household has heard or spoken by `exclude`,
        starting where the last household stopped."""
        takes = self.takes.get(name, [])
        out: list[Take] = []
        start = self.cursor.get(name, 0)
        for i in range(len(takes)):
            t = takes[(start + i) % len(takes)]
            if t.digest in home.heard or t.speaker in exclude or any(o.digest == t.digest for o in out):
                continue
            out.append(t)
            if len(out) == n:
                self.cursor[name] = (start + i + 1) % len(takes)
                break
        return out


def pools_for(speakers: dict[str, Speaker], fold_of: dict[str, int], fold: int, rng: random.Random) -> Pools:
    held = [s for k, s in sorted(speakers.items()) if fold_of.get(k) == fold]
    parents = [
        s
        for s in held
        if s.info.group == "adult" and s.corpus in PARENT_CORPORA and len(s.enroll) >= 3 and len(s.tests) >= 2
    ]
    rng.shuffle(parents)
    pools = Pools(
        parents,
        [s for s in held if s.info.group == "child" and len(s.enroll) >= 3],
        [s for s in held if s.info.group == "teen"],
        [s for s in held if s.info.group == "adult"],
    )
    for name, group in (("child", pools.children), ("teen", pools.teens), ("stranger", pools.adults)):
        takes = [t for sp in group for t in (*sp.tests, *sp.enroll)]
        rng.shuffle(takes)
        pools.takes[name] = takes
    return pools


def interleave(rng: random.Random, pools: dict[str, list[Take]]) -> list[tuple[str, Take]]:
    rows = [(k, t) for k, ts in pools.items() for t in ts]
    rng.shuffle(rows)
    return rows


def fsdd_requests(parent: Speaker, tests: Sequence[Take], rng: random.Random) -> list[Take]:
    """5 single test joins (PIN-length) and 3 pairs of joins (command-length) of an FSDD parent."""
    joins = list(tests)
    rng.shuffle(joins)
    out = joins[:5]
    for a, b in zip(joins[5:11:2], joins[6:12:2], strict=True):
        x, _ = sf.read(io.BytesIO(a.wav), dtype="float32")
        y, _ = sf.read(io.BytesIO(b.wav), dtype="float32")
        out.append(Take(parent.key, wav_bytes(np.concatenate([x, y])), a.speech_s + b.speech_s))
    return out


def run_home(lab: Lab, home: Home, pools: Pools, rng: random.Random) -> list[Attempt]:
    parent = home.parent
    requests = (
        fsdd_requests(parent, home.requests, rng) if parent.corpus.startswith("fsdd") else list(home.requests)
    )
    attacks: dict[str, list[Take]] = {}
    n_child = CHILDREN_PER_HOUSEHOLD
    if home.child is not None:
        attacks["child_enrolled"] = home.child_attempts[:n_child]
        n_child -= len(attacks["child_enrolled"])
    enrolled = {home.child.key} if home.child is not None else set()
    attacks["child_unenrolled"] = pools.draw("child", n_child, home, enrolled)
    attacks["teen"] = pools.draw("teen", TEENS_PER_HOUSEHOLD, home, set())
    attacks["stranger"] = pools.draw("stranger", STRANGERS_PER_HOUSEHOLD, home, {parent.key})
    queue = interleave(rng, attacks)
    out: list[Attempt] = []
    per_gap = -(-len(queue) // max(1, len(requests)))
    replay_after = {1, 3} if len(requests) > 3 else {len(requests) - 1}
    for i, take in enumerate(requests):
        over = i % 3 == 2
        total = rng.randint(10_100, 15_000) if over else rng.randint(500, 6_000)
        out.append(genuine_request(lab, home, take, total, over))
        if i in replay_after and len([a for a in out if a.kind == "replay"]) < REPLAYS_PER_HOUSEHOLD:
            lab.tick(ATTACK_GAP)
            again = home.sent_genuine[rng.randrange(len(home.sent_genuine))]
            out.append(attack_request(lab, home, "replay", again, rng.randint(500, 6_000)))
        for kind, t in queue[i * per_gap : (i + 1) * per_gap]:
            lab.tick(ATTACK_GAP)
            out.append(attack_request(lab, home, kind, t, rng.randint(500, 6_000)))
        lab.tick(GENUINE_GAP)
    return out


# ------------------------------------------------------------------- fitting per fold


def fold_files(
    table: Any, used: set[str], folder: Path, log: Callable[[str], None]
) -> tuple[Path, Path, dict[str, Any]]:
    """Thresholds and child detector fitted on `used` only, as the shipped scripts fit them."""
    from purchase_guard.voice.eval_kfold import CHILD_SPECS, SYSTEMS, git_commit, shipped_choice
    from purchase_guard.voice.fitting import fit_shipped_child, fit_shipped_system, write_json

    choice = shipped_choice(table.encoder)
    spec = SYSTEMS[choice["system"]]
    if spec.backend != "raw":
        raise SystemExit(f"system {spec.name} has a fitted back-end; the benchmark only refits raw systems")
    commit = git_commit(ROOT)
    entry, _ = fit_shipped_system(table, spec, commit, log=log, used=used)
    thr = folder / "thresholds.json"
    write_json(thr, {"version": 2, "encoders": {table.encoder: entry}})
    det = fit_shipped_child(table, CHILD_SPECS[choice["child"]], commit, log=log, used=used)
    child = folder / "child.json"
    write_json(child, det.to_mapping())
    info = {
        "system": spec.name,
        "child_spec": choice["child"],
        "thresholds": {b["name"]: b["threshold"] for b in entry["bands"]},
        "child_operating_points": dict(det.operating_points),
        "fitted_speakers": len(used),
    }
    return thr, child, info


def bands_of(thresholds_file: Path | None, encoder: str) -> list[tuple[str, float | None]]:
    from importlib import resources

    if thresholds_file is None:
        doc = json.loads(
            resources.files("purchase_guard.voice").joinpath("thresholds.json").read_text("utf-8")
        )
    else:
        doc = json.loads(thresholds_file.read_text("utf-8"))
    return [(b["name"], b["max_speech_s"]) for b in doc["encoders"][encoder]["bands"]]


# ------------------------------------------------------------------- run


def run(
    data: Path,
    *,
    households: int,
    cache_dir: Path | None,
    seed: int = 19,
    shipped: bool = False,
    folds_run: Sequence[int] = tuple(range(K)),
    corpora: Sequence[str] | None = None,
    encoder: SpeakerEncoder | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The benchmark; `shipped` uses the packaged thresholds and detector instead of per-fold fits
    (a smoke run: its speakers overlap what those files were fitted on, and the report says so)."""
    from purchase_guard.voice.eval_kfold import load_table, vad_by_name
    from purchase_guard.voice.evaluation import discover_corpora

    started = time.monotonic()
    if encoder is None:
        from purchase_guard.voice.ge2e import Ge2eEncoder

        encoder = Ge2eEncoder()
    memo = MemoEncoder(encoder, cache_dir)
    vad = vad_by_name("energy")
    table: Any = None
    if shipped:
        from purchase_guard.voice.corpora import load_units

        specs = [s for s in discover_corpora(data) if corpora is None or s.name in corpora]
        infos, units = load_units(specs)
        speech = [vad.speech_and_trim(u.pcm)[0] for u in units]
    else:
        table = load_table(data, encoder, vad, cache_dir, log=log)
        infos, units, speech = table.speakers, table.units, list(table.speech_s)
    speakers = speakers_from(units, infos, speech)
    fold_of = assign_folds(infos.values(), K)
    digits = load_digit_checker()
    rng = random.Random(seed)
    ledger = Ledger()
    folds_info: list[dict[str, Any]] = []
    per_fold = -(-households // len(folds_run))
    for fold in folds_run:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="pg-households-") as tmp:
            folder = Path(tmp)
            if shipped:
                thr: Path | None = None
                child: Path | None = None
                info: dict[str, Any] = {"fitted": "shipped files (not k-fold)"}
            else:
                used = {k for k, f in fold_of.items() if f != fold}
                thr, child, info = fold_files(table, used, folder, log)
            bands = bands_of(thr, encoder.name)
            pools = pools_for(speakers, fold_of, fold, random.Random(f"{seed}-{fold}"))
            chosen: list[Speaker] = []
            refused: list[dict[str, str]] = []
            extra = children_refused = digits_refused = 0
            with lab_for(folder, memo, digits, thr, child) as lab:
                for h, parent in enumerate(pools.parents):
                    if len(chosen) == per_fold:
                        break
                    kid = (
                        pools.children[len(chosen) // 2 % len(pools.children)]
                        if len(chosen) % 2 == 1 and pools.children
                        else None
                    )
                    try:
                        home = make_home(lab, parent, kid, fold, data, f"{seed}-{fold}-{h}", bands)
                    except EnrollmentRefused as exc:
                        # Reported: a parent the guard would not enroll is a parent it fails.
                        refused.append({"speaker": parent.key, "why": str(exc)})
                        continue
                    chosen.append(parent)
                    extra += home.enroll_extra
                    children_refused += home.child_refused
                    digits_refused += home.speaks_digits and not home.digit_templates
                    ledger.extend(run_home(lab, home, pools, rng))
                    log(f"  fold {fold} household {len(chosen)}: {len(ledger.attempts)} attempts so far")
            memo.save()
        info.update(
            {
                "fold": fold,
                "households": len(chosen),
                "parents_by_corpus": _count(p.corpus for p in chosen),
                "parents_available": len(pools.parents),
                "parents_enrollment_refused": refused,
                "parents_needing_extra_enrollment_takes": extra,
                "children_enrollment_refused": children_refused,
                "fsdd_digit_enrollment_refused": digits_refused,
                "children": len(pools.children),
                "teens": len(pools.teens),
                "adults": len(pools.adults),
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
        folds_info.append(info)
        log(f"fold {fold}: {len(chosen)} households, {info['seconds']} s")
    summary = summarise(ledger)
    return {
        "protocol": ("SMOKE (shipped thresholds and detector, not k-fold): " if shipped else "") + PROTOCOL,
        "k_fold": not shipped,
        "seed": seed,
        "households_requested": households,
        "folds": folds_info,
        "attempts": len(ledger.attempts),
        "summary": summary,
        "targets": targets(summary),
        "embedding_memo": {"hits": memo.hits, "misses": memo.misses},
        "seconds": round(time.monotonic() - started, 1),
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "households")
    parser.add_argument("--households", type=int, default=60, help="households in all (split over the folds)")
    parser.add_argument("--folds-run", default=",".join(str(k) for k in range(K)), help="which folds to run")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "build" / "voice-cache")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--shipped", action="store_true", help="smoke run on the shipped files (not k-fold)")
    args = parser.parse_args()
    configure_logging("warning")  # a log line per decision would bury the table
    folds = [int(x) for x in args.folds_run.split(",") if x.strip()]
    report = run(
        args.data,
        households=args.households,
        cache_dir=args.cache_dir,
        seed=args.seed,
        shipped=args.shipped,
        folds_run=folds,
    )
    print(format_table(report["summary"]))
    for t in report["targets"]:
        rest = {k: v for k, v in t.items() if k not in ("target", "met")}
        print(f"target: {t['target']}: {'met' if t['met'] else 'NOT met'} {json.dumps(rest)}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "households.json").write_text(json.dumps(report, indent=1) + "\n", "utf-8")
    (args.out / "households.md").write_text(format_table(report["summary"]) + "\n", "utf-8")
    print(f"wrote {args.out / 'households.json'} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
