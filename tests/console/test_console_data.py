"""Members after an encoder change, export and erase, through the browser."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from console.console_world import OPERATOR, Family, console_settings, make_family, shoot, sign_in, start_guard
from playwright.sync_api import BrowserContext, Page, expect
from support.rpc import BACKEND

from purchase_guard.api.client import GuardClient
from purchase_guard.console.server import RunningConsole, start_console
from purchase_guard.privacy.export import read_archive
from purchase_guard.voice.encoder import FakeEncoder


class NextEncoder(FakeEncoder):
    """The same fake model under a new name: what an encoder upgrade looks like to stored voiceprints."""

    name = "fake-spectral/2"


def test_members_page_asks_for_re_enrollment_after_an_encoder_change(
    tmp_path: Path, new_context: Callable[..., BrowserContext]
) -> None:
    """Voiceprints made by the guard's previous encoder get a "re-enrollment needed" prompt naming both
    encoders as soon as the guard runs another one (the guard says which encoder it runs)."""
    first = start_guard(tmp_path)
    operator = GuardClient(f"127.0.0.1:{first.port}", OPERATOR, timeout=30, backend_token=BACKEND)
    family = make_family(operator, "The Lees")
    operator.close()
    first.stop(grace=0)

    upgraded = start_guard(tmp_path, encoder=NextEncoder())
    target = f"127.0.0.1:{upgraded.port}"
    console = start_console(console_settings(target))
    guard = GuardClient(target, family.token, timeout=30, backend_token=BACKEND)
    try:
        page = new_context().new_page()
        sign_in(page, console.url, family.household_id, family.parent_token)
        page.goto(console.url + "/members")
        expect(page.locator("main")).to_contain_text("fake-spectral/2")
        rows = page.locator("tbody tr")
        expect(rows.filter(has_text="Re-enrollment needed")).to_have_count(2)
        prompt = page.locator("p.flash").filter(has_text="Ann's voiceprint")
        expect(prompt).to_contain_text("made by fake-spectral/1 and the guard now uses fake-spectral/2")
        expect(prompt).to_contain_text(f"--member {family.parent_id}")
        shoot(page, "members-reenroll")
    finally:
        guard.close()
        console.stop()
        upgraded.stop(grace=0)


def test_export_downloads_json_and_the_zip_archive(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """Export gives one JSON document (manifest and every part, checked against their sha256) or the
    guard's ZIP archive itself; both hold this household's records and no PIN hash."""
    family.ask("low", 2500)
    sign_in(page, console.url, family.household_id, family.parent_token)
    page.get_by_role("link", name="Export & erase").click()
    shoot(page, "data")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download as JSON").click()
    download = info.value
    assert re.fullmatch(
        rf"household-{family.household_id}-\d{{8}}T\d{{6}}Z\.json", download.suggested_filename
    )
    text = Path(download.path()).read_text()
    document = json.loads(text)
    assert document["household_id"] == family.household_id
    assert document["format"] == "purchase-guard/household-export/v1"
    names = {m["display_name"] for m in document["parts"]["members.json"]}
    assert names == {"Ann", "Tim"}
    assert {p["name"] for p in document["manifest"]["parts"]} == set(document["parts"])
    assert "pin_hash" not in text

    with page.expect_download() as info:
        page.get_by_role("button", name="Download the ZIP archive").click()
    archive = Path(info.value.path()).read_bytes()
    assert zipfile.is_zipfile(io.BytesIO(archive))
    assert read_archive(archive)["manifest.json"]["household_id"] == family.household_id


def test_erase_needs_the_typed_household_id_then_ends_the_session(
    page: Page, console: RunningConsole, family: Family, operator: GuardClient
) -> None:
    """Erase with the wrong confirmation erases nothing; with the household id typed it erases the
    household at the guard, ends the session and the credential stops working."""
    url = console.url
    sign_in(page, url, family.household_id, family.parent_token)
    page.goto(url + "/data")
    page.get_by_label(re.compile("^To confirm, type the household ID")).fill("erase it")
    page.get_by_role("button", name="Erase household data permanently").click()
    expect(page.get_by_role("alert")).to_contain_text("Nothing was erased")
    assert operator.get_household(family.household_id)["household"]["name"] == family.name

    page.get_by_label(re.compile("^To confirm, type the household ID")).fill(family.household_id)
    page.get_by_role("button", name="Erase household data permanently").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"{family.name} was erased")
    assert [c["name"] for c in page.context.cookies()] == []
    page.goto(url + "/approvals")
    expect(page).to_have_url(re.compile(r"/signin$"))
    with pytest.raises(grpc.RpcError) as info:
        operator.get_household(family.household_id)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_sign_in_while_the_guard_is_down_says_so_and_counts_no_failure(page: Page) -> None:
    """With no guard at the target, sign-in answers 503 "not reachable" (not "wrong credential"), and
    those attempts do not count towards the throttle."""
    running = start_console(console_settings("127.0.0.1:1", signin_max_failures=1, signin_delay_seconds=0.0))
    try:
        for _ in range(2):
            with page.expect_response(
                lambda r: r.url.endswith("/signin") and r.request.method == "POST"
            ) as info:
                sign_in(page, running.url, "hh_anything", "pgh_some-credential-xxxxxxxx")
            assert info.value.status == 503
            expect(page.get_by_role("alert")).to_contain_text("The guard is not reachable")
    finally:
        running.stop()
