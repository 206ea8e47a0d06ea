"""The Deliveries page: a parent sees the webhook's dead letters and delivers them again, in the
browser, against a real receiver (http.server)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from console.console_world import Family, shoot, sign_in
from events.receiver import Receiver
from playwright.sync_api import Page, expect

from purchase_guard.console.server import RunningConsole


@pytest.fixture
def refusing() -> Iterator[Receiver]:
    receiver = Receiver(410)  # refuses the first delivery: a dead letter; takes everything after
    yield receiver
    receiver.close()


def _wait(predicate: object, timeout_s: float = 20.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_dead_letter_is_shown_and_delivered_again(
    page: Page, console: RunningConsole, family: Family, refusing: Receiver
) -> None:
    """The receiver answers 410 to a purchase's event: the Deliveries page lists it with the status;
    "Deliver again" (by keyboard) sends the same event id to the receiver and empties the list."""
    family.guard.set_webhook(family.household_id, refusing.url)
    assert family.ask("low", 2500)["outcome"] == "ALLOW"
    assert _wait(lambda: len(refusing.received) == 1)
    sign_in(page, console.url, family.household_id, family.parent_token)
    page.get_by_role("link", name="Deliveries").click()
    expect(page).to_have_url(re.compile(r"/deliveries$"))
    expect(page.get_by_text(refusing.url)).to_be_visible()
    rows = page.locator("table.dead-letters tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("HTTP 410")
    expect(rows.first).to_contain_text("purchase_allowed")
    shoot(page, "deliveries")
    event_id = refusing.ids()[0]
    button = page.get_by_role("button", name=f"Deliver event {event_id} again")
    button.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_text("1 event(s) will be delivered again.")).to_be_visible()
    assert _wait(lambda: refusing.ids() == [event_id, event_id])
    page.reload()
    expect(page.get_by_text("None: every event was taken by the receiver.")).to_be_visible()


def test_replay_without_a_csrf_token_is_refused(page: Page, console: RunningConsole, family: Family) -> None:
    """A POST to /deliveries/replay without the session's CSRF token is refused (403)."""
    sign_in(page, console.url, family.household_id, family.parent_token)
    response = page.request.post(console.url + "/deliveries/replay", form={"event_id": "1"})
    assert response.status == 403
