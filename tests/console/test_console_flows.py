"""A parent's work in the console, in real Chromium against a real guard: approve, reject, set limits."""

from __future__ import annotations

import re

from console.console_world import Family, codes, shoot, sign_in
from playwright.sync_api import Page, expect

from purchase_guard.console.server import RunningConsole

DOLLHOUSE = ("Dollhouse", "toys")


def test_signed_in_parent_sees_household_and_every_page(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """Sign-in lands on the approvals page as "household X"; every page renders that household's data."""
    family.ask("high", 1700, "Crayons", "toys")  # a notification and a pending approval
    family.ask("low", 2500)  # an ALLOW decision
    page.goto(console.url + "/")
    expect(page).to_have_url(re.compile(r"/signin$"))
    shoot(page, "signin")
    sign_in(page, console.url, family.household_id, family.parent_token)
    expect(page).to_have_url(re.compile(r"/approvals$"))
    expect(page.get_by_text(f"Signed in as parent Ann of {family.name}")).to_be_visible()

    page.get_by_role("link", name="Decisions").click()
    expect(page.get_by_role("heading", name="Decision history")).to_be_visible()
    expect(page.locator("table.decisions tbody tr")).to_have_count(2)
    expect(page.get_by_text("ALLOW", exact=True)).to_be_visible()

    page.get_by_role("link", name="Members").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    ann = rows.filter(has_text="Ann")
    expect(ann.get_by_role("cell").nth(2)).to_have_text("yes")  # parent
    expect(ann.get_by_role("cell").nth(3)).to_have_text("enrolled")
    expect(ann.get_by_role("cell").nth(4)).to_have_text("fake-spectral/1")
    expect(rows.filter(has_text="Tim").get_by_role("cell").nth(1)).to_have_text("child")
    expect(page.get_by_text("Re-enrollment needed")).to_have_count(0)
    shoot(page, "members")

    page.get_by_role("link", name="Notifications").click()
    expect(page.locator("ul.notifications li")).to_have_count(1)
    expect(page.locator("ul.notifications")).to_contain_text("approval_requested")
    shoot(page, "notifications")

    page.get_by_role("link", name="Export & erase").click()
    expect(page.get_by_role("button", name="Download as JSON")).to_be_visible()


def test_dollhouse_approved_with_keyboard_only_then_confirm_allows(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """A child's 170.00 dollhouse waits for a parent; Tab and Enter alone approve it in the browser, and
    the voice backend's next Confirm for that challenge gets ALLOW (APPROVAL_GRANTED)."""
    asked = family.ask("high", 17000, *DOLLHOUSE)
    assert asked["outcome"] == "CHALLENGE", asked
    challenge = asked["challenge"]
    assert challenge["method"] == "PARENT_APPROVAL"
    waiting = family.confirm(challenge["challenge_id"], 17000, *DOLLHOUSE)
    assert waiting["outcome"] == "CHALLENGE"

    sign_in(page, console.url, family.household_id, family.parent_token)
    card = page.locator("article.approval")
    expect(card).to_have_count(1)
    expect(card.get_by_role("heading", level=2)).to_have_text("Dollhouse (170.00 USD)")
    expect(card).to_contain_text("Tim")  # who asked
    expect(card).to_contain_text("toy-shop")
    expect(card).to_contain_text("SPEAKER_CHILD")  # the reason, by code
    expect(card.locator("li.determining").first).to_contain_text("decided it")  # a CHALLENGE's step-ups
    expect(card).to_contain_text("Voice score")
    expect(card).to_contain_text("Expires")
    shoot(page, "approvals")

    approve = page.get_by_role("button", name="Approve Dollhouse (170.00 USD)")
    for _ in range(40):
        if approve.evaluate("b => b === document.activeElement"):
            break
        page.keyboard.press("Tab")
    else:
        raise AssertionError("Tab never reached the Approve button")
    page.keyboard.press("Enter")

    expect(page.get_by_role("status")).to_contain_text("Approved: Dollhouse (170.00 USD)")
    expect(page.locator("article.approval")).to_have_count(0)
    assert family.pending() == []
    done = family.confirm(challenge["challenge_id"], 17000, *DOLLHOUSE)
    assert done["outcome"] == "ALLOW", done
    assert "APPROVAL_GRANTED" in codes(done)

    page.get_by_role("link", name="Decisions").click()
    rows = page.locator("table.decisions tbody tr")
    expect(rows.filter(has_text="Parent Ann approved the purchase.")).to_contain_text("APPROVAL_GRANTED")
    expect(rows.filter(has_text="confirm").filter(has_text="ALLOW")).to_have_count(1)
    shoot(page, "decisions")


def test_rejected_in_browser_then_confirm_denies(page: Page, console: RunningConsole, family: Family) -> None:
    """Reject (by mouse) makes the backend's Confirm a DENY with APPROVAL_REJECTED."""
    challenge_id = family.ask("high", 17000, *DOLLHOUSE)["challenge"]["challenge_id"]
    sign_in(page, console.url, family.household_id, family.parent_token)
    page.get_by_role("button", name=re.compile("^Reject Dollhouse")).click()
    expect(page.get_by_role("status")).to_contain_text("Rejected: Dollhouse (170.00 USD)")
    denied = family.confirm(challenge_id, 17000, *DOLLHOUSE)
    assert denied["outcome"] == "DENY"
    assert "APPROVAL_REJECTED" in codes(denied)


def test_lowered_cap_is_followed_by_the_next_decision(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """A 50.00 order the parent's voice could buy outright needs the PIN once the adults' per-order
    maximum is lowered to 40.00 in the policy editor (AMOUNT_OVER_LIMIT)."""
    before = family.ask("low", 5000)
    assert before["outcome"] == "ALLOW", before

    sign_in(page, console.url, family.household_id, family.parent_token)
    page.get_by_role("link", name="Policy").click()
    adults = page.get_by_role("group", name="Adults")
    field = adults.get_by_label("Per-order maximum (USD)")
    expect(field).to_have_value("100.00")
    shoot(page, "policy")
    field.fill("40")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("status")).to_contain_text("Policy saved")
    expect(page.get_by_role("group", name="Adults").get_by_label("Per-order maximum (USD)")).to_have_value(
        "40.00"
    )

    stored = family.guard.get_policy(family.household_id)["policy"]
    adult = next(r for r in stored["rules"] if r["role"] == "ADULT")
    assert int(adult["max_order_minor"]) == 4000
    after = family.ask("low", 5000)
    assert after["outcome"] == "CHALLENGE", after
    assert "AMOUNT_OVER_LIMIT" in codes(after)


def test_policy_editor_shows_the_guards_validation_messages(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """A value the guard refuses is not saved, and the guard's own message appears next to the field
    it names; a value that is not an amount at all is caught by the console with its own message."""
    revision = family.guard.get_policy(family.household_id)["policy"]["revision"]
    sign_in(page, console.url, family.household_id, family.parent_token)
    page.goto(console.url + "/policy")

    children = page.get_by_role("group", name=re.compile("^Children"))
    children.get_by_label("Per-order maximum (USD)").fill("-5")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("alert")).to_contain_text("The policy was not saved")
    error = page.locator("#f-CHILD-max_order-err")
    expect(error).to_have_text("rules[2].max_order_minor must be >= 0")
    expect(page.get_by_role("alert")).to_contain_text("Children (under 13): Per-order maximum: rules[2]")
    box = page.get_by_role("group", name=re.compile("^Children")).get_by_label("Per-order maximum (USD)")
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_have_value("-5")  # what the parent typed is kept for them to correct
    shoot(page, "policy-errors")

    box.fill("30")
    exemption = page.get_by_role("group", name="Low-value exemption")
    exemption.get_by_label("Small orders may skip the challenge").check()
    exemption.get_by_label("Per-order limit (USD)").fill("50")
    exemption.get_by_label("Total since the last challenge (USD)").fill("20")
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("#f-exemption-per_order-err")).to_contain_text(
        "low_value_exemption.per_order_max_minor must be <= low_value_exemption.cumulative_max_minor"
    )

    page.get_by_role("group", name="Whole household").get_by_label("Household daily cap (24 h) (USD)").fill(
        "lots"
    )
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("#f-household-daily_cap-err")).to_contain_text("enter an amount in USD")

    assert family.guard.get_policy(family.household_id)["policy"]["revision"] == revision


def test_a_parent_resets_a_members_voice_adaptation_from_the_members_page(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """The members page has a reset button for each enrolled adult (none for the child); pressing
    Ann's posts with the session's CSRF token, the guard drops her adapted samples (none here: this
    guard has no drift floor, so nothing adapts) and the page says so by name; a member id that is
    not the household's is refused by the guard and said as an error, the session lives on."""
    sign_in(page, console.url, family.household_id, family.parent_token)
    page.get_by_role("link", name="Members").click()
    expect(page.get_by_role("button", name="Reset Tim's voice adaptation")).to_have_count(0)
    page.get_by_role("button", name="Reset Ann's voice adaptation").click()
    expect(page).to_have_url(re.compile(r"/members$"))
    expect(
        page.get_by_role("status").filter(has_text="Ann's voiceprint is back to the enrollment")
    ).to_contain_text("0 voice sample(s)")
    shoot(page, "members-reset")
    token = page.locator(
        "form[action='/members/reset-adaptation'] input[name=csrf_token]"
    ).first.input_value()
    response = page.request.post(
        console.url + "/members/reset-adaptation", form={"csrf_token": token, "member_id": "mem_not_here"}
    )
    assert response.status == 200
    assert "The guard refused" in response.text()
    assert "NOT_FOUND" in response.text()
