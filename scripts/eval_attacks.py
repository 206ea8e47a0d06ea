"""The answer attacks of docs/challenges.md, tried end to end against the real guard.

    python scripts/eval_attacks.py [--data ../shared/data] [--out reports/answers] [--tries 17]

Prints a table and writes <out>/attacks.json. Each try is a whole exchange with the guard as
the voice backend drives it (Evaluate, then Confirm with the attacker's answer), through the
composed app (`build_app`: real GE2E, the shipped digit checker, child detector and thresholds,
SQLite store), in process rather than over a socket: the transport adds nothing to what decides.
An attack succeeds only on ALLOW. Protocol and data: PROTOCOL below.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve
from script_paths import ROOT, default_data_dir

from purchase_guard.app import App, build_app
from purchase_guard.challenge.pin import PinHasher, validate_pin
from purchase_guard.clock import FrozenClock
from purchase_guard.config import Settings
from purchase_guard.domain import (
    AudioInput,
    ChallengeMethod,
    CredentialKind,
    Decision,
    LineItem,
    Money,
    Order,
    Outcome,
    Role,
)
from purchase_guard.errors import EnrollmentRejected, WeakPin
from purchase_guard.household.principals import Principal
from purchase_guard.limits import pin_gate
from purchase_guard.logs import configure_logging
from purchase_guard.pipeline.guard import ConfirmInput, EvaluateInput
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.bootstrap import wilson
from purchase_guard.voice.digits import ENROLLMENT_PROMPTS, load_digit_checker
from purchase_guard.voice.digits.corpus import (
    FSDD_SPEAKERS,
    fsdd_join,
    load_flac,
    speechocean_ages,
    speechocean_utterances,
)
from purchase_guard.voice.ge2e import Ge2eEncoder

PROTOCOL = (
    "Every try is Evaluate (a 150.00 order, over the adults' 100.00 maximum, so a challenge is needed) "
    "then Confirm with the attacker's answer, against the composed guard (real GE2E, shipped digit "
    "checker, child detector and thresholds; SQLite). Parents are the 6 FSDD speakers (adult men): "
    "voice enrolled from three 4-digit joins of takes 0-2, digits by guided enrollment "
    "(ENROLLMENT_PROMPTS from takes 0-2); requests are 8-digit joins of takes 3-19, answers joins of "
    "takes 20-49, so nothing is both enrolled and answered. The shipped digit bank and thresholds were "
    "built with these speakers among others, so these are the shipped service's rates on them; the "
    "content check's held-out figures are eval_answers' (same report folder). Children are "
    "speechocean762-train speakers aged 6-12 with a digit string: voice enrolled as ADULT from five of "
    "their sentences (the rest are requests), digit templates from their other digit strings (as if "
    "they had done guided enrollment), the PIN set to the digit string they answer with, their own "
    "recording of it. 'child verifies as parent' is that child enrolled as the household's parent with "
    "the role confirmed by a parent credential (where the request verifies, as for the 10-year-old of "
    "issue 17, the child likelihood of the audio is what is left to stop it; request_voice_verified "
    "counts those tries). Replayed copies: digital, or through a room (a SpeechBrain RIR) with noise at"
    " 15 dB SNR. The broadcast check is off (one speaker's recordings are reused across households); "
    "the replay check is on. 95 % intervals are Wilson intervals over tries."
)
OP = "op-" + "e" * 40
BK = "bk-" + "e" * 40
T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
RATE = 16_000


def wav(samples: np.ndarray, rate: int = RATE) -> AudioInput:
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1, 1).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return AudioInput(encoded=buf.getvalue())


def order(total: int = 15000) -> Order:
    money = Money(total, "USD")
    return Order((LineItem("sku-1", "Thing", "household", 1, money),), money, "example-shop")


@dataclass
class Tally:
    name: str
    what: str
    tries: int = 0
    allowed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)  # the challenge the attacker was given
    reasons: dict[str, int] = field(default_factory=dict)  # the final decision's first reason
    verified: int = 0  # tries whose request verified as the member the attack speaks as

    def add(self, final: Decision, method: ChallengeMethod | None, request: Decision | None = None) -> None:
        self.tries += 1
        first_seen = request or final
        self.verified += bool(first_seen.speaker is not None and first_seen.speaker.verified)
        self.allowed += final.outcome is Outcome.ALLOW
        self.outcomes[final.outcome.value] = self.outcomes.get(final.outcome.value, 0) + 1
        m = "none" if method is None else method.value
        self.methods[m] = self.methods.get(m, 0) + 1
        first = final.reasons[0].code.value if final.reasons else "-"
        self.reasons[first] = self.reasons.get(first, 0) + 1

    def row(self) -> dict[str, Any]:
        lo, hi = wilson(self.allowed, self.tries)
        return {
            "attack": self.name,
            "what": self.what,
            "tries": self.tries,
            "allowed": self.allowed,
            "request_voice_verified": self.verified,
            "rate": self.allowed / self.tries if self.tries else None,
            "ci95": [lo, hi],
            "outcomes": self.outcomes,
            "challenge_given": self.methods,
            "first_reason": self.reasons,
        }


class Lab:
    """One composed guard and the households built on it."""

    def __init__(self, data: Path, folder: Path) -> None:
        self.data = data
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
        ).validated()
        self.app: App = build_app(
            settings, encoder=Ge2eEncoder(), clock=self.clock, pins=PinHasher(time_cost=1, memory_cost=1024)
        )
        self.svc = self.app.households
        self.op = self.svc.authenticate(OP)
        self.n = 0
        self.chain_paused = 0  # pin-chain tries that reached a paused PIN before the last challenge

    def tick(self, seconds: float = 5.0) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    def rid(self, kind: str) -> str:
        self.n += 1
        return f"{kind}-{self.n}"

    def household(self, tag: str) -> tuple[str, Principal]:
        hh, token = self.svc.create_household(self.op, f"Home {tag}", "America/Los_Angeles", "USD", False)
        return hh.household_id, self.svc.authenticate(token)

    def evaluate(self, hid: str, audio: AudioInput) -> Decision:
        self.tick()
        return self.app.guard.evaluate(EvaluateInput(self.rid("ev"), hid, "kitchen", order(), audio))

    def confirm(self, hid: str, decision: Decision, audio: AudioInput, typed: str) -> Decision:
        assert decision.challenge is not None
        self.tick()
        return self.app.guard.confirm(
            ConfirmInput(self.rid("cf"), hid, decision.challenge.challenge_id, order(), typed, audio)
        )


# ---------------------------------------------------------------- FSDD parents


def fsdd(lab: Lab, speaker: str, digits: str, rng: random.Random, lo: int, hi: int) -> Pcm:
    pcm, _ = fsdd_join(lab.data, speaker, digits, [rng.randrange(lo, hi) for _ in digits], rng)
    return pcm


def digits_of(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def pin_of(rng: random.Random) -> str:
    """A 4-digit PIN the guard accepts (no repeated digit, no run, nothing on its weak list)."""
    while True:
        pin = digits_of(rng, 4)
        try:
            validate_pin(pin)
        except WeakPin:
            continue
        return pin


def fsdd_parent_home(
    lab: Lab, speaker: str, pin: str, rng: random.Random, method: ChallengeMethod
) -> tuple[str, Principal]:
    hid, me = lab.household(f"{speaker}-{lab.rid('h')}")
    parent = lab.svc.add_member(me, hid, speaker.title(), Role.ADULT, True)
    for attempt in range(5):
        takes = [wav(fsdd(lab, speaker, d, rng, 0, 3).samples) for d in ("3817", "5092", "6641")]
        try:
            lab.svc.enroll_voice(me, hid, parent.member_id, takes)
            break
        except EnrollmentRejected:  # the app asks for the takes again; so does this
            if attempt == 4:
                raise
    guided = []
    seen: dict[str, int] = {}
    for prompt in ENROLLMENT_PROMPTS:
        takes_for = []
        for d in prompt:
            takes_for.append(seen.get(d, 0) % 3)
            seen[d] = seen.get(d, 0) + 1
        pcm, _ = fsdd_join(lab.data, speaker, prompt, takes_for, rng)
        guided.append((wav(pcm.samples), prompt))
    lab.svc.enroll_digits(me, hid, parent.member_id, guided)
    lab.svc.set_pin(me, hid, pin)
    if method is not ChallengeMethod.SPOKEN_PIN:
        policy = lab.svc.get_policy(me, hid)
        rules = tuple(
            replace(r, challenge_method=method) if r.role is Role.ADULT else r for r in policy.rules
        )
        lab.svc.set_policy(me, hid, replace(policy, rules=rules))
    return hid, me


def request_audio(
    lab: Lab, speaker: str, rng: random.Random
) -> tuple[AudioInput, list[tuple[str, np.ndarray]]]:
    """An 8-digit request from takes 3-19, and its digits cut out (what an eavesdropper could keep)."""
    digits = digits_of(rng, 8)
    pcm, bounds = fsdd_join(lab.data, speaker, digits, [rng.randrange(3, 20) for _ in digits], rng)
    pieces = [
        (d, pcm.samples[int(a * RATE) : int(b * RATE)]) for d, (a, b) in zip(digits, bounds, strict=True)
    ]
    return wav(pcm.samples), pieces


def expected(decision: Decision, pin: str) -> str:
    assert decision.challenge is not None
    return decision.challenge.digits_to_repeat or pin


class Room:
    """A speaker-and-microphone path for replayed copies: a real RIR and real noise at 15 dB."""

    def __init__(self, data: Path) -> None:
        def read(p: Path) -> np.ndarray:
            x, rate = sf.read(p, dtype="float32")
            assert rate == RATE, p
            return np.asarray(x if x.ndim == 1 else x.mean(axis=1), dtype=np.float32)

        self.rirs = [read(p) for p in sorted((data / "noise" / "rir").glob("*.flac"))]
        self.noises = [read(p) for p in sorted((data / "noise").glob("*.flac"))]

    def copy(self, audio: AudioInput, rng: random.Random, snr_db: float = 15.0) -> AudioInput:
        assert audio.encoded is not None
        x, rate = sf.read(io.BytesIO(audio.encoded), dtype="float32")
        rir = self.rirs[rng.randrange(len(self.rirs))]
        y = fftconvolve(x, rir / (np.max(np.abs(rir)) + 1e-9))[: x.shape[0]]
        y = y / (np.max(np.abs(y)) + 1e-9) * 0.5
        noise = self.noises[rng.randrange(len(self.noises))]
        start = rng.randrange(max(1, noise.shape[0] - y.shape[0]))
        n = np.resize(noise[start : start + y.shape[0]], y.shape[0])
        gain = np.sqrt(np.mean(y**2) / (np.mean(n**2) + 1e-12) / 10 ** (snr_db / 10))
        return wav((y + gain * n).astype(np.float32), rate)


def attack_other_words(lab: Lab, rng: random.Random, tries: int, genuine: Tally) -> Tally:
    t = Tally(
        "other_words_typed",
        "the parent's recording of other digits, the expected digits typed in spoken_digits",
    )
    for speaker in FSDD_SPEAKERS:
        for method in (ChallengeMethod.RANDOM_DIGITS, ChallengeMethod.SPOKEN_PIN):
            pin = pin_of(rng)
            hid, me = fsdd_parent_home(lab, speaker, pin, rng, method)
            for i in range(tries // 2):
                if method is ChallengeMethod.SPOKEN_PIN:
                    lab.svc.set_pin(me, hid, pin)  # a fresh budget: each try is the attack's first guess
                ev, _ = request_audio(lab, speaker, rng)
                d = lab.evaluate(hid, ev)
                if d.outcome is not Outcome.CHALLENGE or d.challenge is None:
                    t.add(d, None)
                    continue
                want = expected(d, pin)
                if i % 4 == 0:  # now and then the genuine answer, so the exchange is known to work
                    g = lab.confirm(hid, d, wav(fsdd(lab, speaker, want, rng, 20, 50).samples), want)
                    genuine.add(g, d.challenge.method)
                    continue
                other = digits_of(rng, len(want))
                while other == want:
                    other = digits_of(rng, len(want))
                answer = wav(fsdd(lab, speaker, other, rng, 20, 50).samples)
                t.add(lab.confirm(hid, d, answer, want), d.challenge.method)
    return t


def attack_replay(
    lab: Lab, rng: random.Random, tries: int, room: Room, genuine: Tally
) -> tuple[Tally, Tally]:
    digital = Tally(
        "replayed_answer_digital", "a genuine PIN answer sent again, bit for bit, to a new challenge"
    )
    played = Tally("replayed_answer_room", "the same answer played through a room (RIR, 15 dB noise)")
    for speaker in FSDD_SPEAKERS:
        pin = pin_of(rng)
        hid, me = fsdd_parent_home(lab, speaker, pin, rng, ChallengeMethod.SPOKEN_PIN)
        for i in range(tries):
            lab.svc.set_pin(me, hid, pin)
            ev, _ = request_audio(lab, speaker, rng)
            first = lab.evaluate(hid, ev)
            if first.challenge is None:
                continue
            answer = wav(fsdd(lab, speaker, pin, rng, 20, 50).samples)
            genuine.add(lab.confirm(hid, first, answer, pin), first.challenge.method)
            ev2, _ = request_audio(lab, speaker, rng)
            second = lab.evaluate(hid, ev2)
            if second.challenge is None:
                (digital if i % 2 == 0 else played).add(second, None)
                continue
            tally, copy = (digital, answer) if i % 2 == 0 else (played, room.copy(answer, rng))
            tally.add(lab.confirm(hid, second, copy, pin), second.challenge.method)
    return digital, played


def attack_pin_chain(lab: Lab, rng: random.Random, tries: int) -> Tally:
    """Issue 17's chain: an attacker without the PIN (but with recordings of the parent) answers
    wrongly until the PIN is paused, then answers the next challenge as best they can: random
    digits with the parent's voice saying them, a PIN with one more guess, a parent's approval
    with whatever they have."""
    t = Tally(
        "pin_bypass_chain",
        "wrong PINs until the PIN is paused, then the next challenge answered as best an attacker can",
    )
    for speaker in FSDD_SPEAKERS:
        pin = pin_of(rng)
        hid, me = fsdd_parent_home(lab, speaker, pin, rng, ChallengeMethod.SPOKEN_PIN)
        for _ in range(tries):
            lab.svc.set_pin(me, hid, pin)
            d: Decision | None = None
            for _ in range(12):  # wrong answers until the store says the PIN is paused
                state = lab.app.store.get_pin(hid)
                if state is not None and pin_gate(state, lab.clock.now()) is not None:
                    break
                if d is None or d.challenge is None:
                    ev, _ = request_audio(lab, speaker, rng)
                    d = lab.evaluate(hid, ev)
                    if d.challenge is None:
                        continue
                wrong = wrong_pin(rng, pin)
                r = lab.confirm(hid, d, wav(fsdd(lab, speaker, wrong, rng, 20, 50).samples), wrong)
                if r.challenge is None or r.outcome is not Outcome.CHALLENGE:
                    d = None  # locked or closed: the next wrong answer needs a new challenge
            state = lab.app.store.get_pin(hid)
            lab.chain_paused += bool(state is not None and pin_gate(state, lab.clock.now()) is not None)
            ev2, _ = request_audio(lab, speaker, rng)
            d2 = lab.evaluate(hid, ev2)
            if d2.challenge is None:
                t.add(d2, None)
                continue
            if d2.challenge.method is ChallengeMethod.RANDOM_DIGITS:
                said = d2.challenge.digits_to_repeat  # the parent's voice saying exactly these
            else:
                said = wrong_pin(rng, pin)  # without the PIN, one more guess
            answer = wav(fsdd(lab, speaker, said, rng, 20, 50).samples)
            t.add(lab.confirm(hid, d2, answer, said), d2.challenge.method)
    return t


def wrong_pin(rng: random.Random, pin: str) -> str:
    while True:
        guess = digits_of(rng, len(pin))
        if guess != pin:
            return guess


def attack_spliced(lab: Lab, rng: random.Random, tries: int) -> Tally:
    t = Tally(
        "spliced_from_requests",
        "the PIN spliced from single digits cut out of the parent's earlier requests to this household",
    )
    for speaker in FSDD_SPEAKERS:
        pin = pin_of(rng)
        hid, me = fsdd_parent_home(lab, speaker, pin, rng, ChallengeMethod.SPOKEN_PIN)
        heard: dict[str, list[np.ndarray]] = {}
        done = 0
        for _ in range(tries * 10):  # bounded: a request always has 8 digits, so this ends early
            if done == tries:
                break
            lab.svc.set_pin(me, hid, pin)
            ev, pieces = request_audio(lab, speaker, rng)
            d = lab.evaluate(hid, ev)
            for digit, samples in pieces:
                heard.setdefault(digit, []).append(samples)
            if d.challenge is None or not all(c in heard for c in pin):
                continue
            parts: list[np.ndarray] = [np.zeros(int(0.2 * RATE), np.float32)]
            for c in pin:
                parts += [rng.choice(heard[c]), np.zeros(int(rng.uniform(0.15, 0.3) * RATE), np.float32)]
            t.add(lab.confirm(hid, d, wav(np.concatenate(parts)), pin), d.challenge.method)
            done += 1
    return t


# ---------------------------------------------------------------- children


# Sentences a child's voice is enrolled from (the rest are their requests): five, the most the
# children here can spare, so their requests verify as often as the data allows.
ENROLL = 5


@dataclass(frozen=True)
class Child:
    speaker: str
    age: int
    sentences: tuple[Path, ...]
    strings: tuple[tuple[str, Path], ...]


def children(data: Path) -> list[Child]:
    ages = speechocean_ages(data)
    by: dict[str, list[Any]] = {}
    for u in speechocean_utterances(data):
        by.setdefault(u.speaker, []).append(u)
    out = []
    for spk, utts in sorted(by.items()):
        if not 6 <= ages.get(spk, 99) <= 12:
            continue
        sentences = tuple(u.path for u in utts if not u.digits)
        strings = tuple((u.digits, u.path) for u in utts if u.digits and 4 <= len(u.digits) <= 8)
        if len(sentences) > ENROLL and strings:
            out.append(Child(spk, ages[spk], sentences, strings))
    return out


def kid_home(
    lab: Lab, kid: Child, variant: str, rng: random.Random
) -> tuple[str, Principal, tuple[str, bool]]:
    """A household with a grown-up parent and the child enrolled as an ADULT (`variant` "parent":
    as the household's parent, role confirmed by the grown-up's own credential)."""
    hid, me = lab.household(f"{kid.speaker}-{lab.rid('h')}")
    grown = lab.svc.add_member(me, hid, "Grown-up", Role.ADULT, True)
    lab.svc.enroll_voice(
        me,
        hid,
        grown.member_id,
        [wav(fsdd(lab, "george", d, rng, 0, 3).samples) for d in ("3817", "5092", "6641")],
    )
    kid_member = lab.svc.add_member(me, hid, "Kid", Role.ADULT, variant == "parent")
    takes = [AudioInput(encoded=p.read_bytes()) for p in kid.sentences[:ENROLL]]
    report = lab.svc.enroll_voice(me, hid, kid_member.member_id, takes)
    if variant == "parent":
        _, token = lab.svc.issue_credential(me, hid, CredentialKind.PARENT, grown.member_id, "", "phone")
        lab.svc.confirm_voice_role(lab.svc.authenticate(token), hid, kid_member.member_id)
    return hid, me, (kid_member.member_id, bool(report.warnings))


def attack_children(lab: Lab, data: Path, rng: random.Random) -> tuple[Tally, Tally, dict[str, Any]]:
    unconfirmed = Tally(
        "child_enrolled_as_adult",
        "a child enrolled as ADULT (no role confirmation) answering with the PIN in their own voice",
    )
    as_parent = Tally(
        "child_verifies_as_parent",
        "a child whose voice verifies as the parent (role confirmed) answering with the PIN",
    )
    kids = children(data)
    checker = load_digit_checker()  # the shipped content check, as the guard loads it
    enroll_warned = 0
    homes = 0
    for kid in kids:
        answers = []
        for answer_digits, answer_path in kid.strings:
            try:
                validate_pin(answer_digits)  # the string must be a PIN a parent could set
            except WeakPin:
                continue
            answers.append((answer_digits, answer_path))
        if not answers:
            continue
        for variant, tally in (("adult", unconfirmed), ("parent", as_parent)):
            requests = kid.sentences[ENROLL:]
            for k, (answer_digits, answer_path) in enumerate(answers):
                if k % len(requests) == 0:
                    # A household of its own for each run through the child's requests: every
                    # request and answer recording is sent once, so the replay check does not
                    # stand in for the defences measured here.
                    hid, me, kid_member = kid_home(lab, kid, variant, rng)
                    homes += 1
                    enroll_warned += kid_member[1]
                others = [(load_flac(p), d) for d, p in kid.strings if p != answer_path]
                if others:
                    try:
                        templates = checker.build_templates(others, require_every_digit=False)
                        store = lab.app.store
                        at = lab.clock.now()
                        store.put_digit_templates(
                            hid, kid_member[0], templates.features, templates.to_bytes(), at, None
                        )
                    except EnrollmentRejected:  # strings the check cannot cut give no templates
                        pass
                lab.svc.set_pin(me, hid, answer_digits)
                sentence = requests[k % len(requests)]
                d = lab.evaluate(hid, AudioInput(encoded=sentence.read_bytes()))
                if d.challenge is None:
                    tally.add(d, None, d)
                    continue
                final = lab.confirm(hid, d, AudioInput(encoded=answer_path.read_bytes()), answer_digits)
                tally.add(final, d.challenge.method, d)
    info = {"children": len(kids), "households": homes, "enrollments_warned_child_like": enroll_warned}
    return unconfirmed, as_parent, info


def print_rows(rows: Sequence[dict[str, Any]]) -> None:
    print(f"{'attack':<26} {'ALLOW':>9} {'rate':>7}  {'95 % CI':<16} challenge given / first reason")
    for r in rows:
        lo, hi = r["ci95"]
        rate = 0.0 if r["rate"] is None else 100 * r["rate"]
        given = ", ".join(f"{k} {v}" for k, v in sorted(r["challenge_given"].items()))
        first = ", ".join(f"{k} {v}" for k, v in sorted(r["first_reason"].items(), key=lambda kv: -kv[1])[:3])
        print(
            f"{r['attack']:<26} {r['allowed']:>4}/{r['tries']:<4} {rate:6.1f}%  "
            f"[{100 * lo:4.1f}, {100 * hi:5.1f}] %  {given} / {first} / "
            f"request verified {r['request_voice_verified']}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "answers")
    parser.add_argument("--tries", type=int, default=17, help="tries per FSDD parent and attack")
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--skip-children", action="store_true")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated steps to run (other-words,replay,pin-chain,spliced,children)",
    )
    args = parser.parse_args()
    configure_logging("error")  # a decision log line per try would bury the table
    started = time.monotonic()
    print("protocol:", PROTOCOL)
    rng = random.Random(args.seed)
    room = Room(args.data)
    steps: list[tuple[str, Callable[[Lab], list[Tally]]]] = []
    genuine = Tally(
        "genuine_answer", "the parent answering the challenge with the right digits (not an attack)"
    )
    # other-words spends a quarter of its exchanges on genuine answers: 24 tries per parent give
    # 9 attacks per challenge method and parent, 108 in all.
    steps.append(("other-words", lambda lab: [attack_other_words(lab, rng, args.tries + 7, genuine)]))
    steps.append(("replay", lambda lab: list(attack_replay(lab, rng, args.tries, room, genuine))))
    steps.append(("pin-chain", lambda lab: [attack_pin_chain(lab, rng, args.tries)]))
    steps.append(("spliced", lambda lab: [attack_spliced(lab, rng, args.tries)]))
    only = {s for s in args.only.split(",") if s}
    steps = [(name, step) for name, step in steps if not only or name in only]
    run_children = not args.skip_children and (not only or "children" in only)
    info: dict[str, Any] = {}
    tallies: list[Tally] = []
    lab_ref: list[Lab] = []
    args.out.mkdir(parents=True, exist_ok=True)

    def write(final: bool) -> list[dict[str, Any]]:
        rows = [t.row() for t in tallies] + [genuine.row()]
        out = {
            "protocol": PROTOCOL,
            "seed": args.seed,
            "tries_per_parent": args.tries,
            "complete": final,
            "children_info": info,
            "pin_chain_tries_that_paused_the_pin": lab_ref[0].chain_paused if lab_ref else None,
            "attacks": rows,
            "seconds": round(time.monotonic() - started, 1),
        }
        (args.out / "attacks.json").write_text(json.dumps(out, indent=2) + "\n")
        return rows

    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(args.data, Path(tmp))
        lab_ref.append(lab)
        for name, step in steps:
            t0 = time.monotonic()
            tallies += step(lab)
            print(f"  {name}: {time.monotonic() - t0:.0f} s", flush=True)
            write(final=False)  # a long run keeps what it measured so far
        if run_children:
            t0 = time.monotonic()
            a, b, info = attack_children(lab, args.data, rng)
            tallies += [a, b]
            print(f"  children: {time.monotonic() - t0:.0f} s", flush=True)
    print_rows(write(final=True))
    print(f"wrote {args.out / 'attacks.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
