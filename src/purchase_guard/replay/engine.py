"""Runs one scenario against a session: set the households up, play the steps, check each answer.

Every step yields a StepResult whatever happens (a gRPC error is an answer too, compared
with `expect.error`), so the report can show the whole decision trail of a failed scenario,
not only its first broken step. Audio, PINs and tokens never go into a result.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc

from purchase_guard.api.client import GuardClient
from purchase_guard.replay.audio import AudioRenderer, AudioSpec
from purchase_guard.replay.schema import (
    PLAIN_TEMPLATES,
    STEP_TEMPLATE,
    TEMPLATE,
    Expectation,
    HouseholdSpec,
    Scenario,
    Step,
)
from purchase_guard.replay.target import ReplayError, Session, Target

PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
INVALID = "invalid"


@dataclass(frozen=True)
class StepResult:
    index: int
    label: str
    action: str
    household: str  # household key ("" for a wait)
    expected: str  # "ALLOW", "error FAILED_PRECONDITION", "ok" or "" (nothing to compare)
    actual: str  # "ALLOW", "error NOT_FOUND", "ok", "advanced 2m"
    reasons: tuple[tuple[str, str], ...] = ()  # (code, message) as the guard sent them
    problems: tuple[str, ...] = ()
    score: float | None = None
    threshold: float | None = None
    verified: bool | None = None
    speaker: str = ""  # member key the guard named, "" when none
    voice: str = ""  # identity of the speaker in the audio, e.g. "fsdd/george"
    genuine: bool | None = None  # the audio's speaker is enrolled in this household (None: no voice check)
    latency_ms: float | None = None
    decision_id: str = ""
    decided_at: str = ""  # the guard's clock at the decision (ISO 8601, UTC)
    detail: str = ""  # challenge method, attempts left, digits asked...

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def decision(self) -> bool:
        return self.action in ("evaluate", "confirm")


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    path: str
    status: str  # passed | failed | skipped | invalid
    message: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    steps: tuple[StepResult, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class ChallengeRef:
    challenge_id: str
    method: str
    digits: str
    order: dict[str, Any]


@dataclass
class HouseholdState:
    spec: HouseholdSpec
    household_id: str
    client: GuardClient  # with the household's own admin token
    members: dict[str, str] = field(default_factory=dict)  # member key -> member id
    voices: set[str] = field(default_factory=set)  # speaker identities enrolled in the household
    latest: ChallengeRef | None = None
    challenges: dict[str, ChallengeRef] = field(default_factory=dict)  # evaluate step id -> challenge
    decisions: dict[str, str] = field(default_factory=dict)  # step id -> decision id
    parent_clients: dict[str, GuardClient] = field(default_factory=dict)  # member key -> own credential

    def member_key(self, member_id: str) -> str:
        return next((k for k, v in self.members.items() if v == member_id), member_id)


class StepFailed(Exception):
    """A step could not even be sent (no challenge to answer, a template without a value)."""


def run_scenario(scenario: Scenario, target: Target, renderer: AudioRenderer, run_id: str) -> ScenarioResult:
    started = time.perf_counter()

    def done(status: str, message: str, steps: tuple[StepResult, ...] = ()) -> ScenarioResult:
        return ScenarioResult(
            scenario.name,
            str(scenario.path),
            status,
            message,
            scenario.description,
            scenario.tags,
            steps,
            time.perf_counter() - started,
        )

    try:
        session = target.open(scenario.start)
    except (grpc.RpcError, ReplayError, OSError) as exc:
        return done(FAILED, f"could not start: {_describe(exc)}")
    try:
        missing = [cap for cap in scenario.requires if not session.can(cap)]
        if missing:
            return done(SKIPPED, f"needs {', '.join(missing)}, which this guard does not offer")
        runner = _ScenarioRun(scenario, session, renderer, run_id)
        try:
            runner.setup()
        except (grpc.RpcError, ReplayError, StepFailed, ValueError, OSError) as exc:
            return done(FAILED, f"setup: {runner.setup_stage}: {_describe(exc)}")
        results = runner.play()
    finally:
        session.close()
    failed = [r for r in results if not r.passed]
    if failed:
        first = failed[0]
        where = f"{first.label}" + (f" @ {first.household}" if first.household else "")
        return done(FAILED, f"{where}: {first.problems[0]}", results)
    return done(PASSED, "", results)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        return f"{code.name if code else 'UNKNOWN'}: {exc.details()}"
    return str(exc)


class _ScenarioRun:
    def __init__(self, scenario: Scenario, session: Session, renderer: AudioRenderer, run_id: str) -> None:
        self.scenario = scenario
        self.session = session
        self.renderer = renderer
        self.run_id = run_id
        self.households: dict[str, HouseholdState] = {}
        self.setup_stage = "households"
        self.counter = 0

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        client = self.session.client
        for spec in self.scenario.households:
            self.setup_stage = f"household {spec.key}"
            created = client.create_household(f"replay {spec.name}"[:100], spec.time_zone, spec.currency)
            hid = created["household"]["household_id"]
            state = HouseholdState(spec, hid, client.with_token(created["admin_token"]))
            self.households[spec.key] = state
            for member in spec.members:
                self.setup_stage = f"household {spec.key}: member {member.key}"
                added = state.client.add_member(hid, member.name, member.role, member.parent)
                state.members[member.key] = added["member"]["member_id"]
                if member.enroll:
                    resolve = self.resolver(state, None)
                    takes = [self.render(a, resolve) for a in member.enroll]
                    report = state.client.enroll(hid, state.members[member.key], takes)
                    if not report.get("member", {}).get("voice_enrolled"):
                        raise StepFailed("enrollment did not produce a voiceprint")
                    state.voices.update(a.identity() for a in member.enroll if a.identity())
                if member.digits:
                    self.setup_stage = f"household {spec.key}: member {member.key} digits"
                    resolve = self.resolver(state, None)
                    digit_takes = [(p, self.render(a, resolve)) for p, a in member.digits]
                    state.client.enroll_digits(hid, state.members[member.key], digit_takes)
            if spec.policy is not None:
                self.setup_stage = f"household {spec.key}: policy"
                state.client.set_policy(hid, dict(spec.policy))
            if spec.pin is not None:
                self.setup_stage = f"household {spec.key}: pin"
                state.client.set_pin(hid, spec.pin)
        for i, clip in enumerate(self.scenario.clips):
            self.setup_stage = f"broadcast_clips[{i}]"
            self.session.register_clip(clip.label, self.render(clip.audio, lambda s: s))

    def render(self, spec: AudioSpec, resolve: Callable[[str], str]) -> bytes:
        return self.renderer.render(spec.with_templates(resolve), self.scenario.path.parent)

    def resolver(self, state: HouseholdState, step: Step | None) -> Callable[[str], str]:
        def value(name: str) -> str:
            if name in ("DATA", "SCENARIO"):
                return "${" + name + "}"  # paths: the audio renderer expands these
            if name == "pin":
                if state.spec.pin is None:
                    raise StepFailed("${pin} is used but the household has no pin")
                return state.spec.pin
            if name == "household.key":
                return state.spec.key
            if name == "household.index":
                return str(state.spec.index)
            ref = state.latest
            m = STEP_TEMPLATE.match(name)
            if m:
                ref = state.challenges.get(m.group(1))
            if ref is None:
                raise StepFailed(f"${{{name}}}: no challenge was issued in household {state.spec.key}")
            if not ref.digits:
                raise StepFailed(f"${{{name}}}: the challenge ({ref.method}) asked for no digits")
            return ref.digits

        def resolve(text: str) -> str:
            def sub(m: Any) -> str:
                name = m.group(1)
                if name not in PLAIN_TEMPLATES and not STEP_TEMPLATE.match(name):
                    raise StepFailed(f"unknown template ${{{name}}}")
                return value(name)

            return TEMPLATE.sub(sub, text)

        return resolve

    # ------------------------------------------------------------------ steps
    def play(self) -> tuple[StepResult, ...]:
        out: list[StepResult] = []
        for step in self.scenario.steps:
            if step.after_s:
                try:
                    self.session.advance(timedelta(seconds=step.after_s))
                except (grpc.RpcError, ReplayError) as exc:
                    out.append(self.broken(step, "", f"after: {_describe(exc)}"))
                    continue
            if step.action == "wait":
                out.append(self.wait(step))
                continue
            for key in step.households:
                state = self.households[key]
                try:
                    out.append(self.one(step, state))
                except (StepFailed, ValueError, OSError) as exc:
                    out.append(self.broken(step, key, str(exc)))
        return tuple(out)

    def broken(self, step: Step, household: str, problem: str) -> StepResult:
        return StepResult(
            step.index,
            step.label,
            step.action,
            household,
            _expected(step.expect),
            "not sent",
            problems=(problem,),
        )

    def wait(self, step: Step) -> StepResult:
        label = _duration(step.wait_s)
        try:
            self.session.advance(timedelta(seconds=step.wait_s))
        except (grpc.RpcError, ReplayError) as exc:
            return StepResult(
                step.index, step.label, step.action, "", "", "not done", problems=(_describe(exc),)
            )
        return StepResult(step.index, step.label, step.action, "", "", f"advanced {label}")

    def request_id(self, step: Step, state: HouseholdState) -> str:
        if step.request_id is not None:
            # Namespaced by run so a rerun against a live guard never replays an older run's
            # decision; equal ids within the scenario stay equal (the idempotency cases).
            return f"{self.run_id}-{state.spec.key}-{step.request_id}"[:128]
        self.counter += 1
        return f"{self.run_id}-{state.spec.key}-{step.index}-{self.counter}"[:128]

    def one(self, step: Step, state: HouseholdState) -> StepResult:
        if step.action == "evaluate":
            return self.evaluate(step, state)
        if step.action == "confirm":
            return self.confirm(step, state)
        if step.action in ("approve", "reject"):
            return self.resolve_approval(step, state)
        return self.check(step, state)

    def evaluate(self, step: Step, state: HouseholdState) -> StepResult:
        # The schema requires both for an evaluate step.
        assert step.order is not None
        assert step.audio is not None
        resolve = self.resolver(state, step)
        order = step.order.to_request(state.spec.currency)
        audio = self.render(step.audio, resolve)
        rid = self.request_id(step, state)
        transcript = resolve(step.transcript)
        t0 = time.perf_counter()
        try:
            resp = self.session.client.evaluate(
                rid, state.household_id, step.device, order, audio, transcript
            )
        except grpc.RpcError as exc:
            return self.judge(step, state, None, exc, (time.perf_counter() - t0) * 1000)
        latency = (time.perf_counter() - t0) * 1000
        challenge = resp.get("challenge")
        if resp.get("outcome") == "CHALLENGE" and challenge:
            ref = ChallengeRef(
                challenge["challenge_id"],
                challenge.get("method", ""),
                challenge.get("digits_to_repeat", ""),
                order,
            )
            state.latest = ref
            if step.id is not None:
                state.challenges[step.id] = ref
        return self.judge(step, state, resp, None, latency)

    def confirm(self, step: Step, state: HouseholdState) -> StepResult:
        ref = state.challenges.get(step.challenge) if step.challenge else state.latest
        if ref is None:
            raise StepFailed(f"no challenge to answer in household {state.spec.key}")
        resolve = self.resolver(state, step)
        order = step.order.to_request(state.spec.currency) if step.order is not None else ref.order
        digits = resolve(step.digits)
        audio = self.render(step.audio, resolve) if step.audio is not None else None
        rid = self.request_id(step, state)
        t0 = time.perf_counter()
        try:
            resp = self.session.client.confirm(
                rid, state.household_id, ref.challenge_id, order, digits, audio, step.device
            )
        except grpc.RpcError as exc:
            return self.judge(step, state, None, exc, (time.perf_counter() - t0) * 1000)
        return self.judge(step, state, resp, None, (time.perf_counter() - t0) * 1000)

    @staticmethod
    def _as_member(state: HouseholdState, key: str) -> GuardClient:
        """The client a member resolves approvals with: a parent's own credential (issued once per
        scenario); anyone else has only the household's token, which the guard refuses."""
        spec = state.spec.member(key)
        if spec is None or not spec.parent:
            return state.client
        if key not in state.parent_clients:
            issued = state.client.issue_credential(
                state.household_id, "PARENT_CREDENTIAL", member_id=state.members[key], label=f"replay {key}"
            )
            state.parent_clients[key] = state.client.with_token(issued["token"])
        return state.parent_clients[key]

    def resolve_approval(self, step: Step, state: HouseholdState) -> StepResult:
        ref = state.challenges.get(step.challenge) if step.challenge else state.latest
        if ref is None:
            raise StepFailed(f"no challenge to {step.action} in household {state.spec.key}")
        assert step.as_member is not None
        parent = state.members.get(step.as_member)
        if parent is None:
            raise StepFailed(f"household {state.spec.key} has no member {step.as_member!r}")
        try:
            resp = self._as_member(state, step.as_member).resolve_approval(
                state.household_id, ref.challenge_id, "", step.action == "approve"
            )
            actual, detail = "ok", str(resp.get("state", ""))
        except grpc.RpcError as exc:
            actual, detail = f"error {_code(exc)}", exc.details() or ""
        expected = _expected(step.expect) or "ok"
        problems = () if actual == expected else (f"expected {expected}, got {actual} ({detail})",)
        return StepResult(
            step.index,
            step.label,
            step.action,
            state.spec.key,
            expected,
            actual,
            problems=problems,
            detail=detail,
        )

    def check(self, step: Step, state: HouseholdState) -> StepResult:
        assert step.check is not None
        spec = step.check
        hid = state.household_id
        problems: list[str] = []
        seen: list[str] = []
        try:
            if spec.notifications:
                kinds = [
                    n.get("kind", "") for n in state.client.list_notifications(hid).get("notifications", [])
                ]
                seen.append(f"notifications {sorted(kinds)}")
                problems += [f"no {k!r} notification" for k in spec.notifications if k not in kinds]
            if spec.decisions is not None:
                n = len(state.client.list_decisions(hid, limit=500).get("decisions", []))
                seen.append(f"{n} decisions")
                if n != spec.decisions:
                    problems.append(f"expected {spec.decisions} decisions, found {n}")
            if spec.pending_approvals is not None:
                n = len(state.client.pending_approvals(hid).get("approvals", []))
                seen.append(f"{n} pending approvals")
                if n != spec.pending_approvals:
                    problems.append(f"expected {spec.pending_approvals} pending approvals, found {n}")
            if spec.audit_ok:
                report = state.client.verify_audit(hid)
                seen.append(f"audit ok={bool(report.get('ok'))} entries={report.get('entries', 0)}")
                if not report.get("ok"):
                    problems.append(f"audit chain broken at seq {report.get('first_bad_seq')}")
        except grpc.RpcError as exc:
            problems.append(f"unexpected error {_describe(exc)}")
        return StepResult(
            step.index,
            step.label,
            step.action,
            state.spec.key,
            "ok",
            "ok" if not problems else "mismatch",
            problems=tuple(problems),
            detail="; ".join(seen),
        )

    # ------------------------------------------------------------------ judging
    def judge(
        self,
        step: Step,
        state: HouseholdState,
        resp: dict[str, Any] | None,
        error: grpc.RpcError | None,
        latency_ms: float,
    ) -> StepResult:
        e = step.expect
        voice = step.audio.identity() if step.audio is not None else ""
        if resp is None:
            assert error is not None
            actual = f"error {_code(error)}"
            problems = []
            if e.error is None:
                problems.append(f"expected {e.outcome}, got {actual}: {error.details()}")
            elif e.error != _code(error):
                problems.append(f"expected error {e.error}, got {actual}: {error.details()}")
            return StepResult(
                step.index,
                step.label,
                step.action,
                state.spec.key,
                _expected(e),
                actual,
                problems=tuple(problems),
                voice=voice,
                latency_ms=latency_ms,
                detail=error.details() or "",
            )

        outcome = str(resp.get("outcome", "OUTCOME_UNSPECIFIED"))
        reasons = tuple((str(r.get("code", "")), str(r.get("message", ""))) for r in resp.get("reasons", []))
        codes = {c for c, _ in reasons}
        speaker = resp.get("speaker") or {}
        challenge = resp.get("challenge") or {}
        member_id = str(speaker.get("member_id", ""))
        member_key = state.member_key(member_id) if member_id else ""
        problems = _compare(e, outcome, codes, challenge, member_key, speaker)
        decision_id = str(resp.get("decision_id", ""))
        if e.same_decision_as is not None:
            earlier = state.decisions.get(e.same_decision_as)
            if earlier != decision_id:
                problems.append(
                    f"decision {decision_id} is not the decision of step {e.same_decision_as} ({earlier})"
                )
        if step.id is not None:
            state.decisions[step.id] = decision_id
        # Only a step whose speaker was actually scored counts for the genuine/impostor plot;
        # a parent-approval poll has no audio and an unusable clip has no score.
        has_score = "score" in speaker and "threshold" in speaker and step.audio is not None
        genuine = (voice in state.voices) if has_score and voice else None
        detail = ""
        if challenge:
            detail = f"{challenge.get('method', '')}, {challenge.get('attempts_left', 0)} attempts left"
            if challenge.get("digits_to_repeat"):
                detail += f", digits asked {challenge['digits_to_repeat']}"
        return StepResult(
            index=step.index,
            label=step.label,
            action=step.action,
            household=state.spec.key,
            expected=_expected(e),
            actual=outcome,
            reasons=reasons,
            problems=tuple(problems),
            score=float(speaker.get("score", 0.0)) if has_score else None,
            threshold=float(speaker.get("threshold", 0.0)) if has_score else None,
            verified=bool(speaker.get("verified", False)) if has_score else None,
            speaker=member_key,
            voice=voice,
            genuine=genuine,
            latency_ms=latency_ms,
            decision_id=decision_id,
            decided_at=str(resp.get("decided_at", "")),
            detail=detail,
        )


def _compare(
    e: Expectation,
    outcome: str,
    codes: set[str],
    challenge: dict[str, Any],
    member_key: str,
    speaker: dict[str, Any],
) -> list[str]:
    problems: list[str] = []
    if e.error is not None:
        problems.append(f"expected error {e.error}, got {outcome}")
        return problems
    if outcome != e.outcome:
        problems.append(f"expected {e.outcome}, got {outcome} [{', '.join(sorted(codes)) or 'no reasons'}]")
    missing = [c for c in e.reasons if c not in codes]
    if missing:
        problems.append(f"missing reasons {', '.join(missing)} (got {', '.join(sorted(codes)) or 'none'})")
    present = [c for c in e.forbidden_reasons if c in codes]
    if present:
        problems.append(f"forbidden reasons present: {', '.join(present)}")
    if e.challenge is not None and challenge.get("method") != e.challenge:
        problems.append(f"expected a {e.challenge} challenge, got {challenge.get('method') or 'none'}")
    if e.attempts_left is not None and int(challenge.get("attempts_left", 0)) != e.attempts_left:
        problems.append(f"expected {e.attempts_left} attempts left, got {challenge.get('attempts_left', 0)}")
    if e.speaker is not None:
        verified = bool(speaker.get("verified", False))
        if e.speaker == "unknown":
            if verified:
                problems.append(f"expected an unknown speaker, the guard verified {member_key}")
        elif member_key != e.speaker:
            problems.append(f"expected speaker {e.speaker}, got {member_key or 'unknown'}")
    return problems


def _expected(e: Expectation) -> str:
    if e.error is not None:
        return f"error {e.error}"
    return e.outcome or ""


def _code(exc: grpc.RpcError) -> str:
    code = exc.code()
    return code.name if code is not None else "UNKNOWN"


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def new_run_id() -> str:
    """Short, unique per run: request ids against a live guard must never repeat across runs."""
    return "rp" + time.strftime("%m%d%H%M") + secrets.token_hex(3)


__all__ = ["FAILED", "INVALID", "PASSED", "SKIPPED", "ScenarioResult", "StepResult", "Target", "run_scenario"]
