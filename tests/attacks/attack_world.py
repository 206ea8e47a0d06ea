"""The attack suite's world: a real guard on 127.0.0.1 over real gRPC, built as `make run` builds
it (`build_app` then `build_server`: the gate with its default rate limits, the error mapping),
with the FakeEncoder and synthetic voices ("low" the parent, "mid" a second parent, "high" the
child) so most attacks need neither recordings nor a model.

Every Evaluate and Confirm sends a new take (`support.takes.new_take`): the guard refuses audio a
household sent before, and an attack that only "fails" because of that would prove nothing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from support.audio import fsdd_digit_takes, fsdd_wav
from support.server import fast_pins, local_settings
from support.takes import enrollment, new_take

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer, build_server
from purchase_guard.app import App, build_app
from purchase_guard.clock import FrozenClock
from purchase_guard.config import Settings
from purchase_guard.pipeline.ports import BroadcastDefence
from purchase_guard.store.protocol import Store
from purchase_guard.voice.encoder import FakeEncoder, SpeakerEncoder

OPERATOR = "op-" + "a" * 40
PIN = "7391"
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # a Wednesday noon in Los Angeles
TIMEOUT_S = 20.0
_requests = itertools.count(1)


def new_id(prefix: str = "req") -> str:
    return f"{prefix}-{next(_requests)}"


def thresholds_file(folder: Path) -> Path:
    path = folder / "fake-thresholds.json"
    bands = [{"name": "all", "max_speech_s": None, "threshold": 0.95}]
    path.write_text(json.dumps({"version": 1, "encoders": {FakeEncoder.name: {"bands": bands}}}))
    return path


def fake_settings(folder: Path, **overrides: Any) -> Settings:
    """Settings of a fake-encoder guard whose store, keys and tokens all live in `folder`.
    The broadcast check is off: every household here speaks the same synthetic voices, which
    the fleet-wide check would rightly take for a broadcast (that defence is tested elsewhere)."""
    values: dict[str, Any] = {
        "encoder": "fake",
        "test_mode": True,
        "master_key_file": folder / "master-key",
        "broadcast_enabled": False,
    }
    values.update(overrides)
    if "thresholds_file" not in values:
        values["thresholds_file"] = thresholds_file(folder)
    return local_settings(folder, OPERATOR, **values)


@dataclass
class World:
    """One running guard and an operator client (which also carries the backend credential)."""

    folder: Path
    app: App
    server: RunningServer
    clock: FrozenClock
    operator: GuardClient

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, token: str = "", backend_token: str = "") -> GuardClient:
        """A new client with exactly the credentials given (none: an anonymous caller)."""
        return GuardClient(self.target, token, timeout=TIMEOUT_S, backend_token=backend_token)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def stop(self) -> None:
        self.operator.close()
        self.server.stop(grace=0)


def start_world(
    folder: Path | None = None,
    *,
    encoder: SpeakerEncoder | None = None,
    clock: FrozenClock | None = None,
    store: Store | None = None,
    broadcast: BroadcastDefence | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> World:
    """A guard whose store is in `folder` (made 0700), or, with `settings`, wherever they say (no
    folder is made: the guard makes its own, as on a first start)."""
    clock = clock or FrozenClock(NOW)
    if settings is None:
        if folder is None:
            raise ValueError("start_world needs a folder or settings")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings = fake_settings(folder, **overrides)
    app = build_app(
        settings,
        store=store,
        encoder=encoder or FakeEncoder(),
        clock=clock,
        pins=fast_pins(memory_cost=8),
        broadcast=broadcast,
    )
    server = build_server(app)
    operator = GuardClient(
        f"127.0.0.1:{server.port}", app.operator_token, timeout=TIMEOUT_S, backend_token=app.backend_token
    )
    return World(Path(settings.sqlite_path).parent, app, server, clock, operator)


@contextmanager
def world_at(folder: Path, **kw: Any) -> Iterator[World]:
    w = start_world(folder, **kw)
    try:
        yield w
    finally:
        w.stop()


def order(amount: int, category: str = "household", title: str = "Batteries") -> dict[str, Any]:
    money = {"minor_units": str(amount), "currency": "USD"}
    return {
        "items": [{"sku": "sku-1", "title": title, "category": category, "quantity": 1, "unit_price": money}],
        "total": money,
        "merchant": "toy-shop",
    }


def codes(reply: dict[str, Any]) -> set[str]:
    return {r["code"] for r in reply.get("reasons", [])}


@dataclass
class Family:
    """A household: parents Ann ("low") and Bea ("mid"), child Tim ("high"), a PIN, a credential of
    each parent's own, and a guard client holding the household token (setup) and the backend
    credential (decisions)."""

    household_id: str
    token: str
    ann: str
    bea: str
    tim: str
    ann_token: str
    bea_token: str
    me: GuardClient  # household token + backend credential

    def ask(
        self,
        voice: str,
        amount: int,
        category: str = "household",
        *,
        request_id: str | None = None,
        audio: bytes | None = None,
        guard: GuardClient | None = None,
        device: str = "kitchen",
    ) -> dict[str, Any]:
        """A real Evaluate as the voice backend sends it, with a new take unless `audio` is given."""
        return (guard or self.me).evaluate(
            request_id or new_id(),
            self.household_id,
            device,
            order(amount, category),
            audio if audio is not None else new_take(voice),
        )

    def pending(self) -> list[str]:
        return [a["challenge_id"] for a in self.me.pending_approvals(self.household_id).get("approvals", [])]


def make_family(operator: GuardClient, name: str = "Family", *, pin: bool = True) -> Family:
    hh = operator.create_household(name, "America/Los_Angeles", "USD")
    hid, token = hh["household"]["household_id"], hh["admin_token"]
    me = operator.with_token(token)
    ann = me.add_member(hid, "Ann", "ADULT", True)["member"]["member_id"]
    bea = me.add_member(hid, "Bea", "ADULT", True)["member"]["member_id"]
    tim = me.add_member(hid, "Tim", "CHILD")["member"]["member_id"]
    me.enroll(hid, ann, [enrollment("low", s) for s in range(3)])
    me.enroll(hid, bea, [enrollment("mid", s) for s in range(3)])
    me.enroll(hid, tim, [enrollment("high", s) for s in range(3)])
    if pin:
        me.set_pin(hid, PIN)
    ann_token = me.issue_credential(hid, "PARENT_CREDENTIAL", member_id=ann, label="ann")["token"]
    bea_token = me.issue_credential(hid, "PARENT_CREDENTIAL", member_id=bea, label="bea")["token"]
    return Family(hid, token, ann, bea, tim, ann_token, bea_token, me)


def set_policy(family: Family, **changes: Any) -> dict[str, Any]:
    """The household's policy with top-level fields changed (proto JSON names)."""
    policy = family.me.get_policy(family.household_id)["policy"]
    policy.pop("revision", None)
    policy.update(changes)
    return family.me.set_policy(family.household_id, policy)


def rpc_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The RpcError `fn(*args, **kwargs)` must raise."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{getattr(fn, '__name__', fn)} succeeded; it had to fail")


# ------------------------------------------------------------------ PIN attacks (GE2E, FSDD)
def ge2e_settings(folder: Path, **overrides: Any) -> Settings:
    """A GE2E guard whose answers are judged as in production: the shipped thresholds, the
    packaged child detector and the real digit checker (what an answer says is heard in its audio,
    so a PIN guess only counts when the audio says it). Broadcast off: one household, FSDD audio."""
    values: dict[str, Any] = {
        "master_key_file": folder / "master-key",
        "broadcast_enabled": False,
        "max_message_bytes": 2 * 1024 * 1024,
    }
    values.update(overrides)
    return local_settings(folder, OPERATOR, **values)


WRONG_PIN = "9157"
# FSDD takes (of 50 per digit) of George saying WRONG_PIN and PIN that the content check hears
# with his templates (screened once: it misses 9157 in takes 23, 25, 28, 30, 31 and 7391 in 11,
# 14, 16, 17, 31). A miss is no PIN guess (nothing was compared), so the budget tests answer only
# with heard takes; a change of checker that stops hearing them shows as a missing PIN_INCORRECT.
WRONG_TAKES = (*range(32, 50), *range(3, 23), 24, 26, 27, 29)
RIGHT_TAKES = (20, 21, 22, 24, 26, 27)


@dataclass
class PinFamily:
    """A household whose parent George (FSDD speaker "george") enrolled voice and digits, with a PIN.
    Orders over the adult's 100.00 get a SPOKEN_PIN challenge."""

    household_id: str
    token: str
    george: str
    data: Path
    me: GuardClient
    _evaluate_takes: Iterator[int]
    _wrong_takes: Iterator[int]
    _right_takes: Iterator[int]

    def over_limit(self) -> dict[str, Any]:
        """An Evaluate of 150.00 in George's voice (a new recording each time)."""
        take = next(self._evaluate_takes)
        return self.me.evaluate(
            new_id(), self.household_id, "kitchen", order(15_000), fsdd_wav(self.data, "george", "7305", take)
        )

    def answer(self, challenge_id: str, digits: str = WRONG_PIN) -> dict[str, Any]:
        """George saying `digits` to the challenge, in a recording not sent before."""
        n = next(self._wrong_takes if digits == WRONG_PIN else self._right_takes)
        return self.me.confirm(
            new_id("answer"),
            self.household_id,
            challenge_id,
            order(15_000),
            digits,
            fsdd_wav(self.data, "george", digits, n),
        )

    def using(self, client: GuardClient) -> PinFamily:
        """The same household through another server's client (same store)."""
        return replace(self, me=client.with_token(self.token))


def make_pin_family(operator: GuardClient, data: Path, name: str = "Pins") -> PinFamily:
    hh = operator.create_household(name, "America/Los_Angeles", "USD")
    hid, token = hh["household"]["household_id"], hh["admin_token"]
    me = operator.with_token(token)
    george = me.add_member(hid, "George", "ADULT", True)["member"]["member_id"]
    me.enroll(
        hid, george, [fsdd_wav(data, "george", d, t) for d, t in (("3817", 0), ("5092", 1), ("6641", 2))]
    )
    me.set_pin(hid, PIN)
    me.enroll_digits(hid, george, fsdd_digit_takes(data, "george"))
    return PinFamily(hid, token, george, data, me, itertools.count(10), iter(WRONG_TAKES), iter(RIGHT_TAKES))
