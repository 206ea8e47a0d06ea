"""The console's defences, attacked from a real browser: cookies, CSRF, other sites, other households,
sign-in guessing, and a TLS deployment."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from console.console_world import OPERATOR, Family, console_settings, make_family, sign_in, start_guard
from playwright.sync_api import BrowserContext, Page, expect
from support.rpc import BACKEND

# Imported at collection, not in a fixture: Hypothesis (elsewhere in the suite) reads constants from
# every local module loaded, and a module first loaded mid-session changes that set.
from trust.test_trust_tls import mint_ca, mint_leaf

from purchase_guard.api.client import ClientTls, GuardClient
from purchase_guard.api.server import RunningServer
from purchase_guard.console.server import RunningConsole, start_console

DOLLHOUSE = ("Dollhouse", "toys")


def csrf_of(page: Page) -> str:
    value = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert value
    return value


def test_session_cookie_is_httponly_strict_and_the_credential_never_leaves_the_console(
    page: Page, console: RunningConsole, family: Family, capfd: pytest.CaptureFixture[str]
) -> None:
    """The only cookies are HttpOnly, SameSite=Strict random ids; the credential appears in no cookie,
    no URL, no page and no log line; every page carries the security headers and is not cached."""
    family.ask("high", 17000, *DOLLHOUSE)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(console.url + "/signin")
    pre = page.context.cookies()
    assert [c["name"] for c in pre] == ["pg_signin"]
    sign_in(page, console.url, family.household_id, family.parent_token)
    expect(page).to_have_url(re.compile(r"/approvals$"))

    cookies = {c["name"]: c for c in page.context.cookies()}
    assert set(cookies) == {"pg_console"}  # the sign-in cookie is dropped once used
    session = cookies["pg_console"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["secure"] is False  # plain HTTP on loopback; the TLS test checks Secure
    assert session["value"] != family.parent_token
    assert len(session["value"]) >= 43  # 256 random bits

    pages = []
    for path in ("/approvals", "/decisions", "/policy", "/members", "/notifications", "/data"):
        response = page.goto(console.url + path)
        assert response is not None
        assert response.status == 200
        headers = response.headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "script-src 'none'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert "server" not in headers
        pages.append(page.content())
    assert page.locator("script").count() == 0
    logs = capfd.readouterr()
    assert family.parent_token not in logs.out + logs.err
    assert all(family.parent_token not in html for html in pages)
    assert all(family.parent_token not in url for url in urls)
    assert "console_signin" in logs.err  # the sign-in itself was logged, without the credential


def test_posts_without_or_with_a_wrong_csrf_token_change_nothing(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """Every state-changing form refuses a missing or wrong CSRF token with 403, and nothing changes:
    the approval stays pending, the policy keeps its revision, the household and the session live on."""
    challenge_id = family.ask("high", 17000, *DOLLHOUSE)["challenge"]["challenge_id"]
    revision = family.guard.get_policy(family.household_id)["policy"]["revision"]
    sign_in(page, console.url, family.household_id, family.parent_token)
    good = csrf_of(page)
    forms = {
        "/approvals/resolve": {
            "challenge_id": challenge_id,
            "decision": "approve",
            "parent_member_id": family.parent_id,
        },
        "/policy": {"revision": str(revision), "ADULT.mode": "PURCHASE_ALLOWED"},
        "/data/erase": {"confirm": family.household_id},
        "/data/export": {"format": "json"},
        "/members/reset-adaptation": {"member_id": family.parent_id},
        "/signout": {},
    }
    for path, fields in forms.items():
        for token in (None, "", good[:-2] + "xx", "a" * 500):
            data = dict(fields)
            if token is not None:
                data["csrf_token"] = token
            response = page.request.post(console.url + path, form=data, max_redirects=0)
            assert response.status == 403, (path, token, response.status)
            assert "did not come from this console page" in response.text()
    assert family.pending() == [challenge_id]
    assert family.guard.get_policy(family.household_id)["policy"]["revision"] == revision
    assert family.guard.get_household(family.household_id)["household"]["household_id"] == family.household_id
    assert page.goto(console.url + "/approvals").url.endswith("/approvals")  # still signed in


def test_a_post_from_another_origin_is_refused_even_with_the_right_token(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """Origin and Sec-Fetch-Site saying "another site" refuse the request on their own (defence in depth)."""
    challenge_id = family.ask("high", 17000, *DOLLHOUSE)["challenge"]["challenge_id"]
    sign_in(page, console.url, family.household_id, family.parent_token)
    data = {
        "csrf_token": csrf_of(page),
        "challenge_id": challenge_id,
        "decision": "approve",
        "parent_member_id": family.parent_id,
    }
    for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
        response = page.request.post(
            console.url + "/approvals/resolve", form=data, headers=headers, max_redirects=0
        )
        assert response.status == 403
    assert family.pending() == [challenge_id]


@pytest.fixture
def attacker_site(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A page on another site (http://localhost:PORT, while the console is http://127.0.0.1:PORT)."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def publish(html: str) -> str:
        pages["/prize"] = html
        return f"http://localhost:{server.server_address[1]}/prize"

    yield publish
    server.shutdown()
    server.server_close()


def test_a_form_on_another_site_reaches_the_console_without_the_session(
    page: Page, console: RunningConsole, family: Family, attacker_site: Callable[[str], str]
) -> None:
    """A signed-in parent who clicks a button on another site's page that posts to the console: the
    browser sends no session cookie (SameSite=Strict), so the console asks for a sign-in and the child's
    purchase stays unapproved."""
    challenge_id = family.ask("high", 17000, *DOLLHOUSE)["challenge"]["challenge_id"]
    sign_in(page, console.url, family.household_id, family.parent_token)
    expect(page).to_have_url(re.compile(r"/approvals$"))
    url = attacker_site(
        f"""<!doctype html><title>You won</title>
        <form method="post" action="{console.url}/approvals/resolve">
          <input type="hidden" name="challenge_id" value="{challenge_id}">
          <input type="hidden" name="decision" value="approve">
          <input type="hidden" name="parent_member_id" value="{family.parent_id}">
          <input type="hidden" name="csrf_token" value="guessed">
          <button>Claim your prize</button>
        </form>"""
    )
    page.goto(url)
    page.get_by_role("button", name="Claim your prize").click()
    expect(page).to_have_url(re.compile(r"/signin$"))  # no cookie came with it: a plain sign-in page
    assert family.pending() == [challenge_id]


def test_sign_in_form_needs_its_own_token(page: Page, console: RunningConsole, family: Family) -> None:
    """A sign-in posted without the sign-in page's token (login CSRF: signing a parent into a household
    someone else controls) is refused with 403 and creates no session."""
    page.goto(console.url + "/signin")  # the browser holds this page's sign-in cookie
    for form in (
        {"household_id": family.household_id, "credential": family.parent_token},
        {"household_id": family.household_id, "credential": family.parent_token, "csrf_token": "0" * 64},
    ):
        response = page.request.post(console.url + "/signin", form=form, max_redirects=0)
        assert response.status == 403
    assert [c["name"] for c in page.context.cookies()] == ["pg_signin"]


def test_another_households_credential_cannot_see_or_act_on_the_first(
    page: Page, console: RunningConsole, family: Family, operator: GuardClient
) -> None:
    """Household B's parent sees none of household A's approvals or decisions, cannot approve A's pending
    purchase even by naming its challenge (and A's household id) in the form, and cannot sign in to A."""
    a = family
    a_challenge = a.ask("high", 17000, "Secret Dollhouse", "toys")["challenge"]["challenge_id"]
    a_decisions = [d["decision_id"] for d in a.guard.list_decisions(a.household_id)["decisions"]]
    b = make_family(operator, "The Joneses", parent="Bea", child="Bo")

    sign_in(page, console.url, a.household_id, b.parent_token)  # A's id with B's credential
    expect(page.get_by_role("alert")).to_contain_text("do not match")
    expect(page).to_have_url(re.compile(r"/signin$"))

    sign_in(page, console.url, b.household_id, b.parent_token)
    expect(page.get_by_text("Nothing is waiting for a parent.")).to_be_visible()
    assert "Secret Dollhouse" not in page.content()
    assert a_challenge not in page.content()
    page.goto(console.url + "/decisions")
    assert all(d not in page.content() for d in a_decisions)
    assert a.household_id not in page.content()

    response = page.request.post(
        console.url + "/approvals/resolve",
        form={
            "csrf_token": csrf_of(page),
            "challenge_id": a_challenge,
            "decision": "approve",
            "parent_member_id": b.parent_id,
            "household_id": a.household_id,  # never read: the household is the session's
        },
    )
    assert response.ok
    assert "The guard refused" in response.text()
    assert "NOT_FOUND" in response.text()
    assert a.pending() == [a_challenge]


def test_operator_credential_is_refused_at_sign_in(
    page: Page, console: RunningConsole, family: Family
) -> None:
    """The operator's credential opens every household; the console does not accept it."""
    sign_in(page, console.url, family.household_id, OPERATOR)
    expect(page.get_by_role("alert")).to_contain_text("operator credential")
    assert [c["name"] for c in page.context.cookies()] == ["pg_signin"]


def test_signed_out_session_cannot_be_replayed(
    page: Page, console: RunningConsole, family: Family, new_context: Callable[..., BrowserContext]
) -> None:
    """Sign-out deletes the session on the server: the old cookie, replayed, opens nothing."""
    sign_in(page, console.url, family.household_id, family.parent_token)
    old = next(c for c in page.context.cookies() if c["name"] == "pg_console")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out.")
    replay = new_context()
    replay.add_cookies([old])
    other = replay.new_page()
    other.goto(console.url + "/approvals")
    expect(other).to_have_url(re.compile(r"/signin\?reason=expired$"))


@pytest.fixture
def strict_console(target: str) -> Iterator[RunningConsole]:
    running = start_console(console_settings(target, signin_max_failures=5, signin_delay_seconds=0.0))
    yield running
    running.stop()


def _attempt(page: Page, url: str, household_id: str, credential: str) -> int:
    with page.expect_response(lambda r: r.url.endswith("/signin") and r.request.method == "POST") as info:
        sign_in(page, url, household_id, credential)
    return info.value.status


def test_sign_in_is_locked_after_five_wrong_credentials(
    page: Page, strict_console: RunningConsole, family: Family
) -> None:
    """Five wrong credentials from one address lock it out for the window: the sixth attempt is refused
    with 429 and Retry-After before the guard is asked, even with the right credential."""
    for i in range(5):
        assert (
            _attempt(page, strict_console.url, family.household_id, f"pgh_wrong-guess-{i:02d}-xxxxxxxx")
            == 401
        )
        expect(page.get_by_role("alert")).to_contain_text("do not match")
    with page.expect_response(lambda r: r.url.endswith("/signin") and r.request.method == "POST") as info:
        sign_in(page, strict_console.url, family.household_id, family.parent_token)
    assert info.value.status == 429
    assert 800 <= int(info.value.headers["retry-after"]) <= 900
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")
    assert [c["name"] for c in page.context.cookies()] == ["pg_signin"]


def test_each_failure_grows_the_wait_before_the_next_attempt(page: Page, target: str, family: Family) -> None:
    """With a 20 s base delay, one wrong credential makes an immediate retry wait about 20 s."""
    running = start_console(console_settings(target, signin_delay_seconds=20.0))
    try:
        assert _attempt(page, running.url, family.household_id, "pgh_wrong-guess-xxxxxxxxxx") == 401
        with page.expect_response(lambda r: r.url.endswith("/signin") and r.request.method == "POST") as info:
            sign_in(page, running.url, family.household_id, family.parent_token)
        assert info.value.status == 429
        assert 15 <= int(info.value.headers["retry-after"]) <= 20
    finally:
        running.stop()


@pytest.fixture
def tls_world(tmp_path: Path) -> Iterator[tuple[RunningServer, RunningConsole, GuardClient]]:
    """A guard requiring mutual TLS, and a console that reaches it with a client certificate and serves
    HTTPS itself."""
    ca, ca_cert, ca_key = mint_ca(tmp_path, "ca")
    guard_pair = mint_leaf(tmp_path, "guard", ca_cert, ca_key, server=True)
    client_pair = mint_leaf(tmp_path, "console-client", ca_cert, ca_key, server=False)
    web_pair = mint_leaf(tmp_path, "console-web", ca_cert, ca_key, server=True)
    (tmp_path / "g").mkdir(mode=0o700)  # the store refuses a folder others may enter
    guard = start_guard(
        tmp_path / "g", tls_cert_file=guard_pair.cert, tls_key_file=guard_pair.key, tls_client_ca_file=ca.cert
    )
    target = f"127.0.0.1:{guard.port}"
    tls = ClientTls(ca.cert, client_pair.cert, client_pair.key, "localhost")
    console = start_console(
        console_settings(
            target,
            guard_tls_ca_file=ca.cert,
            guard_tls_cert_file=client_pair.cert,
            guard_tls_key_file=client_pair.key,
            guard_tls_server_name="localhost",
            tls_cert_file=web_pair.cert,
            tls_key_file=web_pair.key,
        )
    )
    operator = GuardClient(target, OPERATOR, timeout=30, tls=tls, backend_token=BACKEND)
    yield guard, console, operator
    operator.close()
    console.stop()
    guard.stop(grace=0)


def test_https_console_over_mtls_guard_marks_cookies_secure(
    tls_world: tuple[RunningServer, RunningConsole, GuardClient], new_context: Callable[..., BrowserContext]
) -> None:
    """Served over HTTPS, the session cookie is Secure with the __Host- prefix and HSTS is sent; the
    console signs in through a guard that requires the console's client certificate."""
    _, console, operator = tls_world
    family = make_family(operator, "The Garcias")
    assert console.url.startswith("https://")
    page = new_context(ignore_https_errors=True).new_page()
    sign_in(page, console.url, family.household_id, family.parent_token)
    expect(page.get_by_text("Signed in as parent Ann of The Garcias")).to_be_visible()
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert set(cookies) == {"__Host-pg_console"}
    cookie = cookies["__Host-pg_console"]
    assert cookie["secure"] is True
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    response = page.goto(console.url + "/members")
    assert response is not None
    assert response.headers["strict-transport-security"].startswith("max-age=")
    expect(page.locator("tbody tr")).to_have_count(2)
