"""Shared by the console tests (imported as `console.console_world`): guard, console, Chromium.

The guard is the whole app (SQLite store sealed under a master key, policy engine, challenges)
with the FakeEncoder and synthetic voices ("low" is the parent, "high" the child), so the suite
needs no recordings and no model. Its broadcast check is off: every household here speaks the
same synthetic audio, which the fleet-wide check would rightly take for a broadcast.

Chromium is Debian's /usr/bin/chromium (installed by `make venv`), driven by Playwright; the
suite never downloads a browser. One browser for the session, a fresh context (no cookies) per
test. Screenshots go to reports/console/; `make console-screenshots` copies them to docs/console/.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import Page
from support.server import fast_pins, local_settings
from support.takes import new_take
from unit.voice.voice_synth import RATE, encode, synth_voice

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer, build_server
from purchase_guard.app import build_app
from purchase_guard.clock import FrozenClock
from purchase_guard.console.settings import ConsoleSettings
from purchase_guard.voice.encoder import FakeEncoder

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "reports" / "console"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATOR = "op-" + "c" * 40
PIN = "7391"
# A Wednesday noon in Los Angeles: outside any quiet hours.
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
_requests = itertools.count(1)


def thresholds_file(folder: Path, *encoders: str) -> Path:
    path = folder / "fake-thresholds.json"
    bands = [{"name": "all", "max_speech_s": None, "threshold": 0.95}]
    path.write_text(json.dumps({"version": 1, "encoders": {e: {"bands": bands} for e in encoders}}))
    return path


def start_guard(folder: Path, encoder: FakeEncoder | None = None, **overrides: Any) -> RunningServer:
    """A real guard on a free port with its store, master key and thresholds in `folder`."""
    encoder = encoder or FakeEncoder()
    settings = local_settings(
        folder,
        OPERATOR,
        encoder="fake",
        test_mode=True,
        thresholds_file=thresholds_file(folder, "fake-spectral/1", "fake-spectral/2"),
        master_key_file=folder / "master-key",
        broadcast_enabled=False,
        **overrides,
    )
    app = build_app(settings, encoder=encoder, clock=FrozenClock(NOW), pins=fast_pins(memory_cost=8))
    return build_server(app)


def console_settings(target: str, **overrides: Any) -> ConsoleSettings:
    values: dict[str, Any] = {"listen": "127.0.0.1:0", "target": target, "rpc_timeout_seconds": 10.0}
    values.update(overrides)
    return ConsoleSettings(**values).validated()


@functools.cache
def voice(name: str, seed: int) -> bytes:
    return encode(synth_voice(name, 1.8, seed=seed), RATE)


def order(amount: int, title: str = "Batteries", category: str = "household") -> dict[str, Any]:
    money = {"minor_units": str(amount), "currency": "USD"}
    return {
        "items": [
            {
                "sku": f"sku-{title.lower()}",
                "title": title,
                "category": category,
                "quantity": 1,
                "unit_price": money,
            }
        ],
        "total": money,
        "merchant": "toy-shop",
    }


def codes(reply: dict[str, Any]) -> set[str]:
    return {r["code"] for r in reply.get("reasons", [])}


@dataclass
class Family:
    household_id: str
    name: str
    token: str  # the household's admin token (setup)
    parent_id: str
    child_id: str
    guard: GuardClient
    parent_token: str = ""  # the parent's own credential: what a parent signs in to the console with

    def ask(
        self, voice_name: str, amount: int, title: str = "Batteries", category: str = "household"
    ) -> dict[str, Any]:
        """A real Evaluate, as the voice backend sends it: a new take each time, since the guard
        refuses a request whose audio repeats one it heard before (REPLAYED_AUDIO)."""
        return self.guard.evaluate(
            f"req-{next(_requests)}",
            self.household_id,
            "kitchen",
            order(amount, title, category),
            new_take(voice_name),
        )

    def confirm(self, challenge_id: str, amount: int, title: str, category: str) -> dict[str, Any]:
        return self.guard.confirm(
            f"conf-{next(_requests)}",
            self.household_id,
            challenge_id,
            order(amount, title, category),
            "",
            None,
        )

    def pending(self) -> list[str]:
        return [
            a["challenge_id"] for a in self.guard.pending_approvals(self.household_id).get("approvals", [])
        ]


def make_family(operator: GuardClient, name: str, parent: str = "Ann", child: str = "Tim") -> Family:
    """A household with an enrolled parent and child, a PIN, and a policy under which a child may ask
    a parent for up to 200.00 (the default stops children at 30.00, before a parent is asked)."""
    hh = operator.create_household(name, "America/Los_Angeles", "USD")
    hid, token = hh["household"]["household_id"], hh["admin_token"]
    me = operator.with_token(token)
    parent_id = me.add_member(hid, parent, "ADULT", True)["member"]["member_id"]
    child_id = me.add_member(hid, child, "CHILD")["member"]["member_id"]
    me.enroll(hid, parent_id, [voice("low", s) for s in range(3)])
    me.enroll(hid, child_id, [voice("high", s) for s in range(3)])
    me.set_pin(hid, PIN)
    policy = me.get_policy(hid)["policy"]
    policy.pop("revision", None)
    for rule in policy["rules"]:
        if rule["role"] == "CHILD":
            rule["max_order_minor"] = "20000"
    me.set_policy(hid, policy)
    parent_token = me.issue_credential(hid, "PARENT_CREDENTIAL", member_id=parent_id, label="phone")["token"]
    return Family(hid, name, token, parent_id, child_id, me, parent_token)


def sign_in(page: Page, base_url: str, household_id: str, credential: str) -> None:
    page.goto(base_url + "/signin")
    page.get_by_label("Household ID").fill(household_id)
    page.get_by_label("Credential").fill(credential)
    page.get_by_role("button", name="Sign in").click()


def shoot(page: Page, name: str) -> None:
    """A full-page screenshot for docs/console (copied there by `make console-screenshots`)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
