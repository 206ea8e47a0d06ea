"""Property: no export, history listing or error message ever shows one household another's data.

Hypothesis builds several households with interleaved activity through the real services (members,
voice enrollment with the FakeEncoder, evaluations that allow, deny or ask a parent, approvals,
removals, erasure) on a sealed SQLite store. Every household's name and member names carry a
marker no other household's text can contain, and every id is unique, so "another household's
data" is a plain substring search over everything a household is shown:

- its export archive (all parts, parsed and re-serialised),
- its history listings: decisions, members (with voiceprint encoder), notifications, pending
  approvals, its voiceprints as the store returns them to the verifier,
- the error messages of every probe it can make at other households: their household id with
  its own token, their member and challenge ids inside its own household. A message may repeat
  the id the caller sent (it is the caller's input) but must otherwise be word for word the one
  for an id that never existed, so it can neither leak nor confirm that the id exists.

It also checks that each export is complete (every decision, member and challenge the model
saw for that household) and that every audit chain verifies, erased households' included.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from privacy.privacy_world import OPERATOR, World, build_world, order, voice_wav

from purchase_guard.domain import AudioInput, Role
from purchase_guard.errors import GuardError
from purchase_guard.household.principals import Principal, PrincipalKind
from purchase_guard.pipeline.guard import ConfirmInput, EvaluateInput
from purchase_guard.privacy.export import read_archive
from purchase_guard.store import codec

MADE_UP = "zz_never_existed_0"
# Letters (Latin, Greek, Cyrillic, CJK) without the marker brackets, so a marker never occurs by chance.
NAME_ALPHABET = st.characters(categories=("Lu", "Ll", "Lo"), exclude_characters="⟪⟫")
ROLE_VOICE = {Role.ADULT: "low", Role.CHILD: "high", Role.TEEN: "mid"}

OPS = (
    "add_adult",
    "add_child",
    "add_teen",
    "enroll",
    "buy_adult",
    "buy_child",
    "buy_stranger",
    "approve",
    "reject",
    "remove",
)


@dataclass
class Home:
    index: int
    tag: str  # unique marker inside the household's name and its members' names
    household_id: str
    token: str
    members: dict[str, Role] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    decisions: set[str] = field(default_factory=set)
    challenges: set[str] = field(default_factory=set)
    request_ids: set[str] = field(default_factory=set)
    prints: dict[str, bytes] = field(default_factory=dict)  # member -> packed float32 embedding
    erased: bool = False
    counter: int = 0

    def secrets(self) -> set[str]:
        """What nobody but this household may be shown."""
        ids = {self.household_id, *self.members, *self.removed, *self.decisions, *self.challenges}
        return ids | self.names | self.request_ids

    def voice_blobs(self) -> set[str]:
        return {blob.hex() for blob in self.prints.values()}


@dataclass
class Tally:
    examples: int = 0
    households: int = 0
    operations: int = 0
    texts_checked: int = 0
    probes: int = 0
    leaks: list[str] = field(default_factory=list)


@st.composite
def scripts(draw: st.DrawFn) -> tuple[list[str], list[tuple[int, str, int]], set[int]]:
    count = draw(st.integers(2, 4))
    names = [draw(st.text(NAME_ALPHABET, min_size=2, max_size=8)) for _ in range(count)]
    ops = draw(
        st.lists(
            st.tuples(st.integers(0, count - 1), st.sampled_from(OPS), st.integers(0, 999)),
            min_size=6,
            max_size=24,
        )
    )
    erased = draw(st.sets(st.integers(0, count - 1), max_size=1))
    return names, ops, erased


def _takes(voice: str, home: Home) -> list[AudioInput]:
    # Seeds per household: every household's prints differ, so a foreign print is recognisable.
    return [AudioInput(encoded=voice_wav(voice, 100 * home.index + k)) for k in range(3)]


def _live(home: Home) -> list[str]:
    return sorted(home.members)


class Run:
    def __init__(self, world: World, tally: Tally) -> None:
        self.world = world
        self.svc = world.app.households
        self.tally = tally
        self.homes: list[Home] = []

    def me(self, home: Home) -> Principal:
        return self.svc.authenticate(home.token)

    # --- building households -------------------------------------------------------------

    def create(self, index: int, name: str) -> None:
        tag = f"⟪{index}⟫{name}"
        household, token = self.svc.create_household(
            self.svc.authenticate(OPERATOR), f"Home {tag}", "America/Los_Angeles", "USD", False
        )
        home = Home(index, tag, household.household_id, token)
        home.names.add(f"Home {tag}")
        self.homes.append(home)
        self.add_member(home, Role.ADULT)  # every household has a parent to approve with

    def add_member(self, home: Home, role: Role) -> None:
        name = f"{tag_name(home, role)}"
        member = self.svc.add_member(self.me(home), home.household_id, name, role, role is Role.ADULT)
        home.members[member.member_id] = role
        home.names.add(name)

    def apply(self, home: Home, op: str, n: int) -> None:
        self.tally.operations += 1
        live = _live(home)
        if op.startswith("add_"):
            self.add_member(
                home, {"add_adult": Role.ADULT, "add_child": Role.CHILD, "add_teen": Role.TEEN}[op]
            )
        elif op == "enroll" and live:
            member_id = live[n % len(live)]
            self.svc.enroll_voice(
                self.me(home), home.household_id, member_id, _takes(ROLE_VOICE[home.members[member_id]], home)
            )
            (vp,) = [
                v for v in self.world.store.list_voiceprints(home.household_id) if v.member_id == member_id
            ]
            home.prints[member_id] = struct.pack(f"<{len(vp.embedding)}f", *vp.embedding)
        elif op.startswith("buy_"):
            voice = {"buy_adult": "low", "buy_child": "high", "buy_stranger": "mid"}[op]
            home.counter += 1
            request_id = f"q{home.index}-req-{home.counter}"  # ids are ASCII; the marker is in names
            home.request_ids.add(request_id)
            seed = 100 * home.index + 50 + n % 5
            decision = self.world.app.guard.evaluate(
                EvaluateInput(
                    request_id,
                    home.household_id,
                    "kitchen",
                    order(200 + n * 10, title=f"{home.tag} item"),
                    AudioInput(encoded=voice_wav(voice, seed)),
                )
            )
            home.decisions.add(decision.decision_id)
            if decision.challenge is not None:
                home.challenges.add(decision.challenge.challenge_id)
        elif op in ("approve", "reject"):
            pending = self.svc.pending_approvals(self.me(home), home.household_id)
            parents = [m for m, role in home.members.items() if role is Role.ADULT]
            if pending and parents:
                # Approving takes a parent's own credential (the trust issue), not the household token.
                parent = Principal(
                    PrincipalKind.PARENT, f"parent:{parents[0]}", home.household_id, member_id=parents[0]
                )
                self.svc.resolve_approval(
                    parent, home.household_id, pending[0].challenge_id, parents[0], op == "approve"
                )
                home.decisions.update(
                    d.decision_id for d in self.svc.list_decisions(self.me(home), home.household_id, 500)
                )
        elif op == "remove" and len(live) > 1:
            member_id = live[n % len(live)]
            self.svc.remove_member(self.me(home), home.household_id, member_id)
            home.removed.add(member_id)
            del home.members[member_id]
            home.prints.pop(member_id, None)

    # --- the checks ------------------------------------------------------------------------

    def check_text(self, viewer: Home, what: str, text: str) -> None:
        """Nothing of any other household may appear in `text`, shown to `viewer`."""
        self.tally.texts_checked += 1
        for other in self.homes:
            if other is viewer:
                continue
            for secret in other.secrets() | other.voice_blobs():
                if secret in text:
                    self.tally.leaks.append(
                        f"{what} of household {viewer.index} shows {secret!r} of {other.index}"
                    )

    def check_error(
        self, viewer: Home, what: str, call: Callable[[str], object], foreign_ids: Iterable[str]
    ) -> None:
        """`call(id)` with another household's id must fail exactly like with an id that never existed."""
        expected = _outcome(call, MADE_UP)
        for foreign in foreign_ids:
            self.tally.probes += 1
            got = _outcome(call, foreign)
            if got.replace(foreign, "<id>") != expected.replace(MADE_UP, "<id>"):
                self.tally.leaks.append(f"{what}: {got!r} differs from {expected!r}")
            self.check_text(viewer, what, got.replace(foreign, "<id>"))

    def probe(self, home: Home) -> None:
        me = self.me(home)
        hid = home.household_id
        others = [o for o in self.homes if o is not home]
        other_households = [o.household_id for o in others]
        other_members = [m for o in others for m in (*o.members, *o.removed)]
        other_challenges = [c for o in others for c in o.challenges]
        parent = next((m for m, role in home.members.items() if role is Role.ADULT), MADE_UP)
        privacy = self.world.privacy
        self.check_error(home, "get_household", lambda x: self.svc.get_household(me, x), other_households)
        self.check_error(
            home, "list_decisions", lambda x: self.svc.list_decisions(me, x, 10), other_households
        )
        self.check_error(home, "export", lambda x: privacy.export(me, x), other_households)
        self.check_error(home, "erase", lambda x: privacy.erase(me, x, x), other_households)
        self.check_error(home, "remove_member", lambda x: self.svc.remove_member(me, hid, x), other_members)
        self.check_error(
            home,
            "enroll_voice",
            lambda x: self.svc.enroll_voice(me, hid, x, _takes("low", home)),
            other_members,
        )
        self.check_error(
            home,
            "resolve_approval",
            lambda x: self.svc.resolve_approval(me, hid, x, parent, approve=True),
            other_challenges,
        )
        self.check_error(
            home,
            "confirm",
            lambda x: self.world.app.guard.confirm(
                ConfirmInput(
                    f"{home.tag}-probe-{x}",
                    hid,
                    x,
                    order(500),
                    "1234",
                    AudioInput(encoded=voice_wav("low", 1)),
                )
            ),
            other_challenges,
        )

    def check_views(self, home: Home) -> None:
        me = self.me(home)
        hid = home.household_id
        parts = read_archive(self.world.privacy.export(me, hid).data)
        self.check_text(home, "export", json.dumps(parts, ensure_ascii=False))
        self.check_text(home, "export (raw)", _raw_archive(self.world, hid))
        decisions = self.svc.list_decisions(me, hid, 500)
        self.check_text(
            home, "decisions", json.dumps([codec.decision_to_dict(d) for d in decisions], ensure_ascii=False)
        )
        members = self.svc.list_members(me, hid)
        self.check_text(home, "members", repr([(m, None if vp is None else vp.encoder) for m, vp in members]))
        self.check_text(home, "notifications", repr(self.svc.list_notifications(me, hid)))
        self.check_text(home, "approvals", repr(self.svc.pending_approvals(me, hid)))
        prints = self.world.store.list_voiceprints(hid)
        self.check_text(
            home, "voiceprints", repr(prints) + "".join(_packed(v.embedding).hex() for v in prints)
        )
        # Completeness: the export holds everything this household did, and only that.
        exported = {d["decision_id"] for d in parts["decisions.json"]}
        if not home.decisions <= exported or exported != {d.decision_id for d in decisions}:
            self.tally.leaks.append(f"export of {home.index} is incomplete or has extra decisions")
        if {m["member_id"] for m in parts["members.json"]} != set(home.members):
            self.tally.leaks.append(f"export of {home.index} has the wrong members")
        if not {c["challenge_id"] for c in parts["challenges.json"]} <= home.challenges | set():
            self.tally.leaks.append(f"export of {home.index} has a challenge it never made")
        if {_packed(v.embedding).hex() for v in prints} != home.voice_blobs():
            self.tally.leaks.append(f"voiceprints of {home.index} are not the ones it enrolled")


def tag_name(home: Home, role: Role) -> str:
    return f"{home.tag} {role.value.title()} {len(home.names)}"


def _packed(values: tuple[float, ...]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def _outcome(call: Callable[[str], object], ident: str) -> str:
    try:
        result = call(ident)
    except GuardError as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"returned {result!r}"


def _raw_archive(world: World, household_id: str) -> str:
    data = world.privacy.export(world.app.households.authenticate(OPERATOR), household_id).data
    return data.decode("latin-1")


@pytest.mark.slow
def test_no_household_is_ever_shown_another_households_data(
    record_property: Callable[[str, Any], None],
) -> None:
    """Across many households with interleaved activity, no export, listing or error message of one
    household contains another's ids, names, decisions or voice data; exports are complete; every
    audit chain verifies, erased ones included."""
    tally = Tally()

    # No shrinking: each example builds whole households, so shrinking a failure would outlast the
    # test timeout; the failing script is printed as drawn, which is enough to replay it.
    @settings(
        max_examples=20,
        deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(script=scripts())
    def run(script: tuple[list[str], list[tuple[int, str, int]], set[int]]) -> None:
        names, ops, erased = script
        with tempfile.TemporaryDirectory() as folder:
            world = build_world(Path(folder))
            try:
                state = Run(world, tally)
                for index, name in enumerate(names):
                    state.create(index, name)
                for index, op, n in ops:
                    state.apply(state.homes[index], op, n)
                op_principal = world.app.households.authenticate(OPERATOR)
                for index in erased:
                    home = state.homes[index]
                    world.privacy.erase(op_principal, home.household_id, home.household_id)
                    home.erased = True
                live = [h for h in state.homes if not h.erased]
                for home in live:
                    state.probe(home)
                    state.check_views(home)
                for home in state.homes:
                    if not world.privacy.verify_audit(op_principal, home.household_id).ok:
                        tally.leaks.append(f"audit chain of {home.index} does not verify")
                tally.examples += 1
                tally.households += len(state.homes)
                assert tally.leaks == [], tally.leaks[:5]
            finally:
                world.store.close()

    run()
    record_property("examples", tally.examples)
    record_property("households", tally.households)
    record_property("operations", tally.operations)
    record_property("texts_checked", tally.texts_checked)
    record_property("probes", tally.probes)
    record_property("leaks", len(tally.leaks))
    print(  # the figures the isolation report quotes; shown with `pytest -s` or in the junit XML
        f"isolation: {tally.examples} examples, {tally.households} households, {tally.operations} operations,"
        f" {tally.texts_checked} texts and {tally.probes} probes checked, {len(tally.leaks)} leaks"
    )
    assert tally.examples > 0
    assert tally.leaks == []


def test_the_leak_check_sees_a_planted_leak(tmp_path: Path) -> None:
    """The checker itself: another household's name, id or voice bytes in a text are reported, and
    an error that differs from the one for a made-up id is reported too (so the property can fail)."""
    world = build_world(tmp_path)
    try:
        tally = Tally()
        run = Run(world, tally)
        run.create(0, "Ab")
        run.create(1, "Cd")
        run.apply(run.homes[1], "enroll", 0)
        mine, theirs = run.homes
        run.check_text(mine, "clean", f"Home {mine.tag} {mine.household_id}")
        assert tally.leaks == []
        for planted in (f"Home {theirs.tag}", theirs.household_id, next(iter(theirs.voice_blobs()))):
            run.check_text(mine, "planted", f"ok {planted} ok")
        assert len(tally.leaks) == 3
        run.check_error(
            mine, "oracle", lambda x: "yes" if x == theirs.household_id else "no", [theirs.household_id]
        )
        assert len(tally.leaks) == 4
    finally:
        world.store.close()
