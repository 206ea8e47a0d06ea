"""Scenario files: YAML -> frozen values, validated on load (docs/replay.md is the reference).

A file that does not fit raises ScenarioError naming the file and the field at fault, e.g.
`tests/scenarios/pin.yaml: steps[3].confirm.audio.fsdd.speaker: required`, so QA can fix a
scenario without reading this code, and the runner can go on with the other files. Unknown
keys are errors too: a misspelt `expcet:` would otherwise silently turn a check off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from purchase_guard.domain import ChallengeMethod, Outcome, ReasonCode, Role
from purchase_guard.money import EXPONENTS
from purchase_guard.replay.audio import AudioRenderer, AudioSpec, spec_from_mapping
from purchase_guard.voice.digits import ENROLLMENT_PROMPTS

# Taken from the domain, so a new outcome, role or method is known to scenarios the day it exists.
OUTCOMES = tuple(o.value for o in Outcome)
ROLES = tuple(r.value for r in Role)
METHODS = tuple(m.value for m in ChallengeMethod)
ACTIONS = ("evaluate", "confirm", "approve", "reject", "wait", "check")
# gRPC status names a step may expect instead of a decision.
ERROR_CODES = (
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "UNIMPLEMENTED",
)
CAPABILITIES = ("broadcast", "clock")
# Every reason code the API can send (domain.ReasonCode mirrors common.proto one to one), so a
# typo in a scenario is caught on load instead of making a "must not appear" check vacuous.
REASON_CODES = frozenset(c.value for c in ReasonCode)
# Waits up to this long are done in real time against a guard without clock control.
REAL_WAIT_S = 10.0
KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# ${pin}, ${challenge.digits}, ${steps.<id>.challenge.digits}, ${household.key}, ${household.index}
TEMPLATE = re.compile(r"\$\{([^}]*)\}")
STEP_TEMPLATE = re.compile(r"^steps\.([a-z0-9][a-z0-9_-]*)\.challenge\.digits$")
PLAIN_TEMPLATES = frozenset(
    {"pin", "challenge.digits", "household.key", "household.index", "DATA", "SCENARIO"}
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s|ms)")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class ScenarioError(ValueError):
    """A scenario file that does not fit the schema: which file, which field, what is wrong."""

    def __init__(self, path: Path, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}" if field else f"{path}: {message}")
        self.path = path
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class MemberSpec:
    key: str
    name: str
    role: str
    parent: bool
    enroll: tuple[AudioSpec, ...]
    # Guided digit enrollment: (prompt, audio saying it) per take; empty: no digit templates, so
    # the member cannot answer a spoken challenge.
    digits: tuple[tuple[str, AudioSpec], ...] = ()


@dataclass(frozen=True)
class HouseholdSpec:
    key: str  # for a household with copies, one spec per copy: "home-1", "home-2", ...
    index: int  # 1-based copy number (1 when the household has no copies)
    name: str
    time_zone: str
    currency: str
    pin: str | None
    policy: Mapping[str, Any] | None  # proto JSON mapping of purchaseguard.v1.Policy; None: server default
    members: tuple[MemberSpec, ...]

    def member(self, key: str) -> MemberSpec | None:
        return next((m for m in self.members if m.key == key), None)


@dataclass(frozen=True)
class ItemSpec:
    sku: str
    title: str
    category: str
    quantity: int
    price: Decimal  # in the household currency's major unit, e.g. 170.00


@dataclass(frozen=True)
class OrderSpec:
    merchant: str
    items: tuple[ItemSpec, ...]
    total: Decimal | None  # None: the sum of the lines (a different total is a malformed order)

    def to_request(self, currency: str) -> dict[str, Any]:
        """The order as the proto JSON mapping GuardClient takes, in minor units of `currency`."""
        exp = EXPONENTS[currency]
        lines = []
        total = 0
        for item in self.items:
            unit = to_minor(item.price, exp)
            total += unit * item.quantity
            lines.append(
                {
                    "sku": item.sku,
                    "title": item.title,
                    "category": item.category,
                    "quantity": item.quantity,
                    "unit_price": {"minor_units": str(unit), "currency": currency},
                }
            )
        if self.total is not None:
            total = to_minor(self.total, exp)
        return {
            "items": lines,
            "total": {"minor_units": str(total), "currency": currency},
            "merchant": self.merchant,
        }


def to_minor(amount: Decimal, exponent: int) -> int:
    scaled = amount.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more decimals than the currency allows ({exponent})")
    return int(scaled)


@dataclass(frozen=True)
class Expectation:
    outcome: str | None = None
    error: str | None = None  # a gRPC status name instead of a decision
    reasons: tuple[str, ...] = ()  # must all appear
    forbidden_reasons: tuple[str, ...] = ()  # must not appear
    challenge: str | None = None  # the challenge method, when outcome is CHALLENGE
    attempts_left: int | None = None
    speaker: str | None = None  # member key, or "unknown" for an unverified voice
    same_decision_as: str | None = None  # step id: the same decision id (idempotent retry)


@dataclass(frozen=True)
class CheckSpec:
    notifications: tuple[str, ...] = ()  # kinds that must be present
    decisions: int | None = None  # how many decisions the household has
    pending_approvals: int | None = None
    audit_ok: bool = False  # the audit hash chain must verify


@dataclass(frozen=True)
class Step:
    index: int  # 0-based position in the file
    action: str
    id: str | None
    households: tuple[str, ...]  # the step runs once per household, in this order
    after_s: float  # advance the clock by this much before the step
    expect: Expectation
    device: str = "kitchen-speaker"
    order: OrderSpec | None = None  # evaluate; confirm (None: the challenged order)
    audio: AudioSpec | None = None
    transcript: str = ""
    request_id: str | None = None
    challenge: str | None = None  # step id whose challenge is meant; None: the latest one
    digits: str = ""
    as_member: str | None = None  # approve / reject: the parent's member key
    wait_s: float = 0.0
    check: CheckSpec | None = None

    @property
    def label(self) -> str:
        return f"steps[{self.index}] {self.action}" + (f" ({self.id})" if self.id else "")


@dataclass(frozen=True)
class ClipSpec:
    label: str
    audio: AudioSpec


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    tags: tuple[str, ...]
    requires: tuple[str, ...]
    start: datetime | None  # timezone-aware; None: the runner's default (in-process) or server time
    households: tuple[HouseholdSpec, ...]
    clips: tuple[ClipSpec, ...]
    steps: tuple[Step, ...]

    def household(self, key: str) -> HouseholdSpec:
        return next(h for h in self.households if h.key == key)


# --------------------------------------------------------------------------- reading
class _Node:
    """A mapping with its field path, so every error can name the field at fault."""

    def __init__(self, path: Path, where: str, raw: Any, allowed: Sequence[str]) -> None:
        self.path = path
        self.where = where
        if not isinstance(raw, Mapping):
            raise self.error("", f"must be a mapping, got {_kind(raw)}")
        self.raw: Mapping[str, Any] = raw
        unknown = sorted(str(k) for k in raw if k not in allowed)
        if unknown:
            raise self.error(unknown[0], f"unknown field (allowed: {', '.join(allowed)})")

    def field(self, key: str) -> str:
        if not key:
            return self.where
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(self.path, self.field(key), message)

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def child(self, key: str, allowed: Sequence[str]) -> _Node:
        if not self.has(key):
            raise self.error(key, "required")
        return _Node(self.path, self.field(key), self.raw[key], allowed)

    def text(self, key: str, default: str | None = None) -> str:
        if not self.has(key):
            if default is None:
                raise self.error(key, "required")
            return default
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(key, f"must be a string, got {_kind(value)}")
        return str(value)

    def key_name(self, key: str) -> str:
        value = self.text(key)
        if not KEY.match(value):
            raise self.error(key, f"{value!r} is not a key: use lower-case letters, digits, - and _")
        return value

    def integer(self, key: str, default: int | None = None, low: int = 0, high: int = 10**9) -> int:
        if not self.has(key):
            if default is None:
                raise self.error(key, "required")
            return default
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise self.error(key, f"must be {low}..{high}, got {value}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        if not self.has(key):
            return default
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {_kind(value)}")
        if not low <= float(value) <= high:
            raise self.error(key, f"must be {low:g}..{high:g}, got {value}")
        return float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        if not self.has(key):
            return default
        value = self.raw[key]
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {_kind(value)}")
        return value

    def choice(self, key: str, options: Sequence[str], default: str | None = None) -> str:
        value = self.text(key, default)
        if value not in options:
            raise self.error(key, f"{value!r} is not one of {', '.join(options)}")
        return value

    def items(self, key: str, required: bool = False) -> Iterator[tuple[str, Any]]:
        """(field path, element) for each element of a list field."""
        if not self.has(key):
            if required:
                raise self.error(key, "required")
            return
        value = self.raw[key]
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {_kind(value)}")
        if required and not value:
            raise self.error(key, "must not be empty")
        for i, element in enumerate(value):
            yield f"{key}[{i}]", element

    def codes(self, key: str, known: Sequence[str] | frozenset[str]) -> tuple[str, ...]:
        out = []
        for where, value in self.items(key):
            if not isinstance(value, str) or value not in known:
                raise self.error(where, f"{value!r} is not a known code")
            out.append(value)
        return tuple(out)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def parse_duration(value: Any) -> float:
    """Seconds from 90, "90s", "2m", "24h", "1h30m", "1d" (ValueError otherwise)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().replace(" ", "")
        pos = 0
        seconds = 0.0
        for m in _DURATION.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise ValueError(f"{value!r} is not a duration like 90s, 2m, 24h or 1h30m")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


# --------------------------------------------------------------------------- loading
EXPECT_FIELDS = (
    "outcome",
    "error",
    "reasons",
    "forbidden_reasons",
    "challenge",
    "attempts_left",
    "speaker",
    "same_decision_as",
)
SCENARIO_FIELDS = (
    "name",
    "description",
    "tags",
    "requires",
    "start",
    "household",
    "households",
    "orders",
    "broadcast_clips",
    "steps",
)


def load_scenario(path: Path, renderer: AudioRenderer) -> Scenario:
    """Read and validate one scenario file; ScenarioError names the field at fault."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(path, "", f"cannot be read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ScenarioError(path, where, f"is not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return _Loader(path, renderer).scenario(raw)


class _Loader:
    def __init__(self, path: Path, renderer: AudioRenderer) -> None:
        self.path = path
        self.renderer = renderer

    def scenario(self, raw: Any) -> Scenario:
        root = _Node(self.path, "", raw, SCENARIO_FIELDS)
        name = root.text("name", self.path.stem)
        households = self.households(root)
        if not households:
            raise root.error("households", "a scenario needs at least one household")
        currencies = {h.currency for h in households}
        orders = {}
        if root.has("orders"):
            node = root.raw["orders"]
            if not isinstance(node, Mapping):
                raise root.error("orders", f"must be a mapping of name to order, got {_kind(node)}")
            for key in node:
                orders[str(key)] = self.order(f"orders.{key}", node[key], currencies)
        clips = []
        for where, raw_clip in root.items("broadcast_clips"):
            clip = _Node(self.path, where, raw_clip, ("label", "audio"))
            clips.append(ClipSpec(clip.text("label"), self.audio(clip, "audio")))
        requires = root.codes("requires", CAPABILITIES)
        if clips and "broadcast" not in requires:
            requires = (*requires, "broadcast")
        steps = self.steps(root, households, orders, currencies)
        start = self.start(root, households[0].time_zone)
        # Moving a remote guard's clock needs its test-only TestControl service; short waits are
        # done in real time instead, so only a start or a long wait makes the clock a requirement.
        long_wait = any(s.wait_s > REAL_WAIT_S or s.after_s > REAL_WAIT_S for s in steps)
        if (start is not None or long_wait) and "clock" not in requires:
            requires = (*requires, "clock")
        return Scenario(
            path=self.path,
            name=name,
            description=root.text("description", ""),
            tags=tuple(str(t) for _, t in root.items("tags")),
            requires=requires,
            start=start,
            households=households,
            clips=tuple(clips),
            steps=steps,
        )

    def start(self, root: _Node, zone: str) -> datetime | None:
        if not root.has("start"):
            return None
        value = root.raw["start"]
        try:
            when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise root.error("start", f"{value!r} is not an ISO date and time (2026-11-25T23:30:00)") from exc
        if when.tzinfo is None:
            # A start without an offset is the first household's local time: what QA writes for
            # "half past eleven at night at home".
            when = when.replace(tzinfo=ZoneInfo(zone))
        return when

    # ----------------------------------------------------------------- households
    def households(self, root: _Node) -> tuple[HouseholdSpec, ...]:
        if root.has("household") and root.has("households"):
            raise root.error("household", "use either household or households, not both")
        raws: list[tuple[str, Any]]
        if root.has("household"):
            raws = [("household", root.raw["household"])]
        else:
            raws = list(root.items("households", required=True))
        out: list[HouseholdSpec] = []
        for where, raw in raws:
            out.extend(self.household(where, raw))
        seen: set[str] = set()
        for h in out:
            if h.key in seen:
                raise ScenarioError(self.path, "households", f"household key {h.key!r} is used twice")
            seen.add(h.key)
        return tuple(out)

    def household(self, where: str, raw: Any) -> list[HouseholdSpec]:
        fields = ("key", "name", "time_zone", "currency", "pin", "policy", "members", "copies")
        node = _Node(self.path, where, raw, fields)
        key = node.key_name("key") if node.has("key") else "home"
        zone = node.text("time_zone", "America/Los_Angeles")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise node.error("time_zone", f"{zone!r} is not an IANA time zone") from exc
        currency = node.text("currency", "USD")
        if currency not in EXPONENTS:
            raise node.error("currency", f"{currency!r} is not an ISO 4217 currency")
        pin = node.text("pin") if node.has("pin") else None
        if pin is not None and not pin.isdigit():
            raise node.error("pin", "must be digits (quote it in YAML so leading zeros stay)")
        policy = None
        if node.has("policy") and node.raw["policy"] != "default":
            policy = node.raw["policy"]
            if not isinstance(policy, Mapping):
                raise node.error(
                    "policy", "must be `default` or a policy mapping (proto JSON, see docs/api.md)"
                )
            problem = _policy_problem(policy)
            if problem:
                raise node.error("policy", problem)
        members = []
        for mwhere, mraw in node.items("members"):
            members.append(self.member(f"{where}.{mwhere}", mraw))
        keys = [m.key for m in members]
        if len(set(keys)) != len(keys):
            raise node.error("members", "member keys must be unique")
        copies = node.integer("copies", 0, 0, 200)
        name = node.text("name", key)
        if not copies:
            return [HouseholdSpec(key, 1, name, zone, currency, pin, policy, tuple(members))]
        return [
            HouseholdSpec(f"{key}-{i}", i, f"{name} {i}", zone, currency, pin, policy, tuple(members))
            for i in range(1, copies + 1)
        ]

    def member(self, where: str, raw: Any) -> MemberSpec:
        node = _Node(self.path, where, raw, ("key", "name", "role", "parent", "enroll", "digits"))
        key = node.key_name("key")
        role = node.choice("role", ROLES)
        parent = node.flag("parent")
        if parent and role != "ADULT":
            raise node.error("parent", "only an ADULT member can be a parent")
        enroll = []
        for ewhere, eraw in node.items("enroll"):
            enroll.append(self.audio_value(node.field(ewhere), eraw))
        if enroll and not 3 <= len(enroll) <= 10:
            raise node.error("enroll", f"enrollment takes 3 to 10 recordings, got {len(enroll)}")
        digits = self.digit_takes(node) if node.has("digits") else ()
        if digits and not enroll:
            raise node.error("digits", "digit templates need a voice enrollment (enroll) first")
        return MemberSpec(key, node.text("name", key.capitalize()), role, parent, tuple(enroll), digits)

    def digit_takes(self, node: _Node) -> tuple[tuple[str, AudioSpec], ...]:
        """`digits: {fsdd_guided: SPEAKER}` (the guided prompts, each digit read from the speaker's
        FSDD takes 0, 1, 2 in turn, as tests/support does: answers use takes 10 and up, so no
        recording is both a template and an answer) or a list of `{prompt: DIGITS, audio: SPEC}`."""
        raw = node.raw["digits"]
        if isinstance(raw, Mapping):
            guided = node.child("digits", ("fsdd_guided",))
            speaker = guided.text("fsdd_guided")
            seen: dict[str, int] = {}
            out = []
            for prompt in ENROLLMENT_PROMPTS:
                parts = []
                for d in prompt:
                    parts.append({"fsdd": {"speaker": speaker, "digits": d, "take": seen.get(d, 0)}})
                    seen[d] = seen.get(d, 0) + 1
                out.append((prompt, self.audio_value(guided.field("fsdd_guided"), {"concat": parts})))
            return tuple(out)
        takes = []
        for twhere, traw in node.items("digits", required=True):
            take = _Node(self.path, node.field(twhere), traw, ("prompt", "audio"))
            prompt = take.text("prompt")
            if not prompt.isascii() or not prompt.isdigit() or len(prompt) > 10:
                raise take.error("prompt", f"{prompt!r} must be 1 to 10 digits (quote it in YAML)")
            takes.append((prompt, self.audio(take, "audio")))
        if len(takes) > 2 * len(ENROLLMENT_PROMPTS):
            raise node.error(
                "digits", f"digit enrollment takes at most {2 * len(ENROLLMENT_PROMPTS)} prompts"
            )
        return tuple(takes)

    # ----------------------------------------------------------------- orders and audio
    def order(self, where: str, raw: Any, currencies: set[str]) -> OrderSpec:
        node = _Node(self.path, where, raw, ("merchant", "items", "total"))
        items = []
        for iwhere, iraw in node.items("items", required=True):
            item = _Node(
                self.path, node.field(iwhere), iraw, ("sku", "title", "category", "quantity", "price")
            )
            items.append(
                ItemSpec(
                    sku=item.text("sku"),
                    title=item.text("title", item.text("sku")),
                    category=item.text("category", "general"),
                    quantity=item.integer("quantity", 1, 1, 10_000),
                    price=self.amount(item, "price", currencies),
                )
            )
        total = self.amount(node, "total", currencies) if node.has("total") else None
        return OrderSpec(node.text("merchant", "example-shop"), tuple(items), total)

    def amount(self, node: _Node, key: str, currencies: set[str]) -> Decimal:
        raw = node.text(key)
        try:
            value = Decimal(raw)
        except InvalidOperation as exc:
            raise node.error(key, f"{raw!r} is not an amount like 17.99") from exc
        if value < 0:
            raise node.error(key, "must not be negative")
        for currency in currencies:
            try:
                to_minor(value, EXPONENTS[currency])
            except ValueError as exc:
                raise node.error(key, f"{exc} for {currency}") from exc
        return value

    def audio(self, node: _Node, key: str) -> AudioSpec:
        if not node.has(key):
            raise node.error(key, "required")
        return self.audio_value(node.field(key), node.raw[key])

    def audio_value(self, where: str, raw: Any) -> AudioSpec:
        extras = ("gain_db", "start_s", "max_s", "noise", "noise_seed", "speaker")
        node = _Node(self.path, where, raw, ("fsdd", "file", "concat", *extras))
        sources = [k for k in ("fsdd", "file", "concat") if node.has(k)]
        if len(sources) != 1:
            raise node.error("", "an audio spec needs exactly one of fsdd, file, concat")
        if node.has("fsdd"):
            f = node.child("fsdd", ("speaker", "digits", "take"))
            f.text("speaker")
            digits = f.text("digits")
            self.templates(f, "digits", digits)
            if "${" not in digits and not digits.isdigit():
                raise f.error("digits", f"{digits!r} must be digits (quote it in YAML)")
            f.integer("take", 0, 0, 10_000)
        if node.has("file"):
            for m in TEMPLATE.finditer(node.text("file")):
                if m.group(1) not in ("DATA", "SCENARIO"):
                    raise node.error("file", "a file path may only use ${DATA} and ${SCENARIO}")
        if node.has("concat"):
            parts = list(node.items("concat", required=True))
            for cwhere, craw in parts:
                self.audio_value(node.field(cwhere), craw)
        node.number("gain_db", 0.0, -60.0, 40.0)
        node.number("start_s", 0.0, 0.0, 600.0)
        node.number("max_s", 0.0, 0.0, 600.0)
        if node.has("noise"):
            noise = node.child("noise", ("file", "snr_db"))
            noise.text("file")
            noise.number("snr_db", 20.0, -10.0, 60.0)
        self.templates(node, "noise_seed", node.text("noise_seed", ""))
        spec = spec_from_mapping(node.raw)
        missing = self.renderer.missing_files(spec, self.path.parent)
        if missing:
            raise node.error("", f"audio file not found: {missing[0]}")
        return spec

    def checked_text(self, node: _Node, key: str) -> str:
        text = node.text(key, "")
        self.templates(node, key, text)
        return text

    def templates(self, node: _Node, key: str, text: str) -> None:
        for m in TEMPLATE.finditer(text):
            name = m.group(1)
            if name not in PLAIN_TEMPLATES and not STEP_TEMPLATE.match(name):
                raise node.error(key, f"unknown template ${{{name}}} (see docs/replay.md)")

    # ----------------------------------------------------------------- steps
    def steps(
        self,
        root: _Node,
        households: tuple[HouseholdSpec, ...],
        orders: Mapping[str, OrderSpec],
        currencies: set[str],
    ) -> tuple[Step, ...]:
        out: list[Step] = []
        ids: dict[str, str] = {}  # step id -> action
        keys = [h.key for h in households]
        for where, raw in root.items("steps", required=True):
            index = len(out)
            if not isinstance(raw, Mapping):
                raise ScenarioError(self.path, where, f"must be a mapping, got {_kind(raw)}")
            actions = [a for a in ACTIONS if a in raw]
            if len(actions) != 1:
                raise ScenarioError(self.path, where, f"a step needs exactly one of {', '.join(ACTIONS)}")
            action = actions[0]
            node = _Node(self.path, where, raw, (action, "id", "expect", "after"))
            step_id = node.key_name("id") if node.has("id") else None
            if step_id is not None and step_id in ids:
                raise node.error("id", f"step id {step_id!r} is used twice")
            after = 0.0
            if node.has("after"):
                try:
                    after = parse_duration(node.raw["after"])
                except ValueError as exc:
                    raise node.error("after", str(exc)) from exc
            step = self.step(node, action, index, step_id, after, keys, orders, currencies, ids)
            out.append(step)
            if step_id is not None:
                ids[step_id] = action
        return tuple(out)

    def step(
        self,
        node: _Node,
        action: str,
        index: int,
        step_id: str | None,
        after: float,
        keys: list[str],
        orders: Mapping[str, OrderSpec],
        currencies: set[str],
        ids: Mapping[str, str],
    ) -> Step:
        common = ("household", "households")
        if action == "wait":
            try:
                seconds = parse_duration(node.raw["wait"])
            except ValueError as exc:
                raise node.error("wait", str(exc)) from exc
            if node.has("expect"):
                raise node.error("expect", "a wait step has no outcome to expect")
            return Step(index, action, step_id, (), after, Expectation(), wait_s=seconds)
        fields = {
            "evaluate": (*common, "device", "order", "audio", "transcript", "request_id"),
            "confirm": (*common, "device", "order", "audio", "digits", "challenge", "request_id"),
            "approve": (*common, "challenge", "as"),
            "reject": (*common, "challenge", "as"),
            "check": (*common, "notifications", "decisions", "pending_approvals", "audit"),
        }[action]
        body = _Node(self.path, node.field(action), node.raw[action] or {}, fields)
        households = self.step_households(body, keys)
        expect = self.expectation(node, action, ids)
        challenge = None
        if body.has("challenge"):
            challenge = body.key_name("challenge")
            if ids.get(challenge) != "evaluate":
                raise body.error("challenge", f"{challenge!r} is not the id of an earlier evaluate step")
        request_id = body.text("request_id") if body.has("request_id") else None
        if action == "evaluate":
            return Step(
                index,
                action,
                step_id,
                households,
                after,
                expect,
                device=body.text("device", "kitchen-speaker"),
                order=self.step_order(body, orders, currencies, required=True),
                audio=self.audio(body, "audio"),
                transcript=self.checked_text(body, "transcript"),
                request_id=request_id,
            )
        if action == "confirm":
            digits = body.text("digits", "")
            self.templates(body, "digits", digits)
            return Step(
                index,
                action,
                step_id,
                households,
                after,
                expect,
                device=body.text("device", "kitchen-speaker"),
                order=self.step_order(body, orders, currencies, required=False),
                audio=self.audio(body, "audio") if body.has("audio") else None,
                digits=digits,
                challenge=challenge,
                request_id=request_id,
            )
        if action in ("approve", "reject"):
            parent = body.key_name("as")
            return Step(
                index, action, step_id, households, after, expect, challenge=challenge, as_member=parent
            )
        check = CheckSpec(
            notifications=tuple(str(v) for _, v in body.items("notifications")),
            decisions=body.integer("decisions") if body.has("decisions") else None,
            pending_approvals=body.integer("pending_approvals") if body.has("pending_approvals") else None,
            audit_ok=body.flag("audit"),
        )
        if check == CheckSpec():
            raise body.error("", "a check step needs notifications, decisions, pending_approvals or audit")
        return Step(index, action, step_id, households, after, expect, check=check)

    def step_households(self, body: _Node, keys: list[str]) -> tuple[str, ...]:
        if body.has("household") and body.has("households"):
            raise body.error("household", "use either household or households, not both")
        if body.has("household"):
            wanted = [(body.field("household"), body.text("household"))]
        elif body.has("households"):
            wanted = [(body.field(w), str(v)) for w, v in body.items("households", required=True)]
        else:
            if len(keys) > 1:
                raise body.error("household", "required when the scenario has several households")
            return (keys[0],)
        out: list[str] = []
        for where, text in wanted:
            expanded = expand_keys(text, keys)
            if not expanded:
                raise ScenarioError(
                    self.path, where, f"{text!r} names no household (known: {', '.join(keys)})"
                )
            out.extend(expanded)
        return tuple(out)

    def step_order(
        self, body: _Node, orders: Mapping[str, OrderSpec], currencies: set[str], required: bool
    ) -> OrderSpec | None:
        if not body.has("order"):
            if required:
                raise body.error("order", "required")
            return None
        raw = body.raw["order"]
        if isinstance(raw, str):
            if raw not in orders:
                raise body.error("order", f"no order named {raw!r} under orders:")
            return orders[raw]
        return self.order(body.field("order"), raw, currencies)

    def expectation(self, node: _Node, action: str, ids: Mapping[str, str]) -> Expectation:
        decision = action in ("evaluate", "confirm")
        if not node.has("expect"):
            if decision:
                raise node.error("expect", "required: every evaluate and confirm states its expected outcome")
            return Expectation()
        allowed: tuple[str, ...] = ("error",)
        if decision:
            allowed = EXPECT_FIELDS
        e = _Node(self.path, node.field("expect"), node.raw["expect"], allowed)
        error = e.choice("error", ERROR_CODES) if e.has("error") else None
        outcome = e.choice("outcome", OUTCOMES) if e.has("outcome") else None
        if decision and (outcome is None) == (error is None):
            raise e.error("outcome", "state exactly one of outcome or error")
        same = e.key_name("same_decision_as") if e.has("same_decision_as") else None
        if same is not None and ids.get(same) != action:
            raise e.error("same_decision_as", f"{same!r} is not the id of an earlier {action} step")
        return Expectation(
            outcome=outcome,
            error=error,
            reasons=e.codes("reasons", REASON_CODES),
            forbidden_reasons=e.codes("forbidden_reasons", REASON_CODES),
            challenge=e.choice("challenge", METHODS) if e.has("challenge") else None,
            attempts_left=e.integer("attempts_left", None, 0, 10) if e.has("attempts_left") else None,
            speaker=e.text("speaker") if e.has("speaker") else None,
            same_decision_as=same,
        )


def expand_keys(text: str, keys: Sequence[str]) -> list[str]:
    """A household key, `home-*` (every copy) or `home-3..20` (copies 3 to 20)."""
    if text in keys:
        return [text]
    if text.endswith("-*"):
        prefix = text[:-1]
        return [k for k in keys if k.startswith(prefix) and k[len(prefix) :].isdigit()]
    m = re.fullmatch(r"(.+)-(\d+)\.\.(\d+)", text)
    if m:
        wanted = [f"{m.group(1)}-{i}" for i in range(int(m.group(2)), int(m.group(3)) + 1)]
        return wanted if all(k in keys for k in wanted) else []
    return []


def _policy_problem(policy: Mapping[str, Any]) -> str:
    # The proto is the schema of a policy; the api layer owns the generated code, so ask it.
    from purchase_guard.api.testing_servicer import policy_mapping_problem

    return policy_mapping_problem(policy)


def discover(paths: Sequence[Path]) -> list[Path]:
    """Scenario files under the given folders (recursively, *.yaml / *.yml) and files, sorted."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            out.append(path)
    return out
