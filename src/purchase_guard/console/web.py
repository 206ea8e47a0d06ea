"""The console's pages and actions (Starlette, Jinja2 with autoescaping, no JavaScript).

Security model, in the order a request meets it (docs/console.md has the why):

1. Host check (DNS rebinding), then security headers on every response: a CSP that allows only
   this origin's stylesheet and no script at all, no framing, no referrer, no caching of pages.
2. The session cookie carries a random id; the credential stays in `SessionStore`. The cookie is
   HttpOnly, SameSite=Strict, and Secure (with the __Host- prefix) whenever the console is reached
   over HTTPS. Sessions end after 30 min idle or 12 h, at sign-out, or when the guard refuses them.
3. Every POST needs the session's CSRF token (constant-time compare; 403 without it), and is
   refused outright when the browser says it came from another site (Origin, Sec-Fetch-Site).
   Sign-in, which has no session yet, uses the pre-session token (sessions.PreSession).
4. Sign-in is throttled (throttle.py) before the guard is asked.
5. The household id is always the session's; a form names at most a challenge. Every read and
   action goes to the guard with the session's own credential, so the guard's PERMISSION_DENIED /
   NOT_FOUND stops anything aimed at another household even if the console had a bug.
"""

from __future__ import annotations

import math
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from purchase_guard.console import forms
from purchase_guard.console.guard_api import ConsoleGuard, GuardRefusal, WideCredential
from purchase_guard.console.sessions import PreSession, Session, SessionStore, csrf_ok
from purchase_guard.console.settings import ConsoleSettings
from purchase_guard.console.throttle import SignInThrottle, address_key, credential_key
from purchase_guard.logs import get_logger

log = get_logger("purchase_guard.console")

MAX_FORM_BYTES = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A credential is sent as gRPC metadata: printable ASCII without spaces.
_CREDENTIAL = re.compile(r"^[\x21-\x7e]{8,1024}$")
SIGNIN_REASONS = {
    "expired": "Your session expired; please sign in again.",
    "signed_out": "You are signed out.",
    "revoked": "The guard no longer accepts that credential; please sign in again.",
}
CSRF_REFUSED = (
    "This form did not come from this console page, or it is too old. Reload the page and try again."
)
CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; img-src 'self'; style-src 'self'"
)
NAV = (
    ("approvals", "/approvals", "Approvals"),
    ("decisions", "/decisions", "Decisions"),
    ("policy", "/policy", "Policy"),
    ("members", "/members", "Members"),
    ("notifications", "/notifications", "Notifications"),
    ("deliveries", "/deliveries", "Deliveries"),
    ("data", "/data", "Export & erase"),
)

Handler = Callable[[Request], Awaitable[Response]]


class SecurityHeaders:
    """Adds the security headers to every response, and logs each request (no query, no body)."""

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = str(scope.get("path", ""))
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                cache = b"public, max-age=3600" if path.startswith("/static/") else b"no-store"
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
                    (b"cache-control", cache),
                ]
                if self.hsts:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info(
                "console_request",
                method=scope.get("method"),
                path=path,
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )


class Console:
    """The console's state (sessions, throttle, the guard adapter) and its request handlers."""

    def __init__(
        self,
        settings: ConsoleSettings,
        guard: ConsoleGuard,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.sessions = SessionStore(
            settings.session_idle_seconds, settings.session_max_seconds, settings.max_sessions, clock
        )
        self.throttle = SignInThrottle(
            settings.signin_max_failures,
            settings.signin_window_seconds,
            settings.signin_delay_seconds,
            clock,
        )
        self.pre = PreSession()
        secure = settings.secure_cookies
        # __Host-: the browser accepts it only with Secure, Path=/ and no Domain, so no other
        # host (or a plain-HTTP page on this one) can plant or overwrite it.
        self.cookie = "__Host-pg_console" if secure else "pg_console"
        self.pre_cookie = "__Host-pg_signin" if secure else "pg_signin"
        self.templates = Environment(
            loader=PackageLoader("purchase_guard.console", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # ------------------------------------------------------------ plumbing
    def _set_cookie(self, response: Response, name: str, value: str) -> None:
        # SameSite=Strict: a link from a mail or another site arrives without the cookie (the
        # parent sees the sign-in page), so no cross-site request ever carries a session.
        response.set_cookie(
            name, value, path="/", secure=self.settings.secure_cookies, httponly=True, samesite="strict"
        )

    def _clear_cookie(self, response: Response, name: str) -> None:
        response.delete_cookie(
            name, path="/", secure=self.settings.secure_cookies, httponly=True, samesite="strict"
        )

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(self.cookie))

    def to_signin(self, request: Request) -> Response:
        """To the sign-in page; saying the session expired only to a browser that had one."""
        if request.cookies.get(self.cookie) is None:
            return RedirectResponse("/signin", status_code=303)
        response = RedirectResponse("/signin?reason=expired", status_code=303)
        self._clear_cookie(response, self.cookie)
        return response

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        session: Session | None = None,
        active: str = "",
        **context: Any,
    ) -> HTMLResponse:
        identity = session.identity if session else None
        tz = _zone(identity.time_zone if identity else "UTC")

        def when(value: datetime | None) -> str:
            if value is None:
                return ""
            local = value.astimezone(tz)
            return local.strftime("%a %d %b %Y, %H:%M %Z")

        html = self.templates.get_template(template).render(
            identity=identity,
            csrf=session.csrf if session else "",
            flashes=session.take_flashes() if session else [],
            nav=NAV if session else (),
            active=active,
            when=when,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def error_page(
        self, request: Request, session: Session | None, status: int, title: str, message: str
    ) -> HTMLResponse:
        return self.render(request, "error.html", status, session, title=title, message=message)

    async def form(self, request: Request) -> dict[str, str] | None:
        """The urlencoded body (first value per name), or None when it is not one or too large."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return None
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return None
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=400
            )
        except (UnicodeDecodeError, ValueError):
            return None
        out: dict[str, str] = {}
        for key, value in pairs:
            out.setdefault(key, value)
        return out

    def cross_site(self, request: Request) -> bool:
        """Whether the browser says this request was made by another site (defence in depth: the
        CSRF token is the check that must hold on its own)."""
        if request.headers.get("sec-fetch-site", "") == "cross-site":
            return True
        origin = request.headers.get("origin")
        # Under Referrer-Policy: no-referrer, Chromium sends "Origin: null" even for this page's own
        # forms; "null" tells nothing either way, so only a real other origin counts.
        if origin is None or origin == "null":
            return False
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        return origin.lower() != own.lower()

    async def checked_post(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """The session and form of a state-changing request, or the response that refuses it."""
        session = self.session(request)
        if session is None:
            return self.to_signin(request)
        form = await self.form(request)
        if form is None:
            return self.error_page(request, session, 400, "Bad request", "The form could not be read.")
        if self.cross_site(request) or not csrf_ok(session.csrf, form.get("csrf_token")):
            log.warning(
                "console_csrf_refused", path=request.url.path, household_id=session.identity.household_id
            )
            return self.error_page(request, session, 403, "Request refused", CSRF_REFUSED)
        return session, form

    def refused(self, request: Request, session: Session, exc: GuardRefusal) -> Response:
        """A guard refusal while showing a page."""
        if exc.code == "UNAUTHENTICATED":
            self.sessions.delete(request.cookies.get(self.cookie))
            response = RedirectResponse("/signin?reason=revoked", status_code=303)
            self._clear_cookie(response, self.cookie)
            return response
        if exc.unreachable:
            return self.error_page(
                request, session, 503, "The guard is not reachable", "Try again in a moment. " + exc.message
            )
        status = {"PERMISSION_DENIED": 403, "NOT_FOUND": 404, "INVALID_ARGUMENT": 400}.get(exc.code, 502)
        return self.render(
            request,
            "error.html",
            status,
            session,
            title="The guard refused",
            message=f"{exc.message} ({exc.code})",
            violations=exc.violations,
        )

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    # ------------------------------------------------------------ sign-in
    async def signin_page(self, request: Request) -> Response:
        if self.session(request) is not None:
            return RedirectResponse("/approvals", status_code=303)
        reason = SIGNIN_REASONS.get(request.query_params.get("reason", ""), "")
        return self._signin_form(request, 200, notice=reason)

    def _signin_form(
        self, request: Request, status: int, error: str = "", notice: str = "", household_id: str = ""
    ) -> Response:
        cookie = request.cookies.get(self.pre_cookie)
        fresh = not cookie or len(cookie) > 128
        if fresh:
            cookie = PreSession.new_cookie()
        assert cookie is not None
        response = self.render(
            request,
            "signin.html",
            status,
            signin_csrf=self.pre.token_for(cookie),
            error=error,
            notice=notice,
            household_id=household_id,
        )
        if fresh:
            self._set_cookie(response, self.pre_cookie, cookie)
        return response

    async def signin(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.error_page(request, None, 400, "Bad request", "The form could not be read.")
        pre_ok = self.pre.ok(request.cookies.get(self.pre_cookie), form.get("csrf_token"))
        if self.cross_site(request) or not pre_ok:
            log.warning("console_csrf_refused", path="/signin")
            return self.error_page(request, None, 403, "Request refused", CSRF_REFUSED)
        household_id = form.get("household_id", "").strip()
        credential = form.get("credential", "").strip()
        client = request.client.host if request.client else "unknown"
        keys = [address_key(client), credential_key(credential)]
        wait = self.throttle.wait_seconds(keys)
        if wait > 0:
            log.warning("console_signin_throttled", client=client, wait_s=round(wait, 1))
            response = self._signin_form(
                request,
                429,
                error=f"Too many failed sign-ins. Try again in {_duration(wait)}.",
                household_id=household_id,
            )
            response.headers["retry-after"] = str(math.ceil(wait))
            return response
        generic = "That household ID and credential do not match. Check both and try again."
        if not _ID.match(household_id) or not _CREDENTIAL.match(credential):
            self.throttle.failed(keys)
            log.info("console_signin_failed", client=client, why="malformed")
            return self._signin_form(request, 401, error=generic, household_id=household_id)
        try:
            identity = await self.call(self.guard.identify, credential, household_id)
        except WideCredential as exc:
            self.throttle.failed(keys)
            log.warning("console_signin_failed", client=client, why="not_household_scoped")
            return self._signin_form(request, 403, error=exc.message, household_id=household_id)
        except GuardRefusal as exc:
            if exc.unreachable:
                return self._signin_form(
                    request,
                    503,
                    error="The guard is not reachable; try again in a moment.",
                    household_id=household_id,
                )
            self.throttle.failed(keys)
            log.info("console_signin_failed", client=client, why=exc.code)
            return self._signin_form(request, 401, error=generic, household_id=household_id)
        self.throttle.succeeded(keys[1])
        session_id, _ = self.sessions.create(identity, credential)
        log.info(
            "console_signin",
            household_id=identity.household_id,
            parent_member_id=identity.parent_member_id or None,
            client=client,
        )
        response = RedirectResponse("/approvals", status_code=303)
        self._set_cookie(response, self.cookie, session_id)
        self._clear_cookie(response, self.pre_cookie)
        return response

    async def signout(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        self.sessions.delete(request.cookies.get(self.cookie))
        log.info("console_signout", household_id=session.identity.household_id)
        response = RedirectResponse("/signin?reason=signed_out", status_code=303)
        self._clear_cookie(response, self.cookie)
        return response

    # ------------------------------------------------------------ pages
    async def home(self, request: Request) -> Response:
        target = "/approvals" if self.session(request) else "/signin"
        return RedirectResponse(target, status_code=303)

    def page(self, name: str, loader: Callable[[Console, Session], Awaitable[dict[str, Any]]]) -> Handler:
        """A signed-in GET page: `loader` reads what it shows from the guard."""

        async def handler(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                return self.to_signin(request)
            try:
                context = await loader(self, session)
            except GuardRefusal as exc:
                return self.refused(request, session, exc)
            return self.render(request, f"{name}.html", 200, session, active=name, **context)

        return handler

    async def load_approvals(self, session: Session) -> dict[str, Any]:
        ident = session.identity
        approvals = await self.call(self.guard.pending_approvals, session.token, ident.household_id)
        parents = (
            ()
            if ident.parent_member_id
            else (await self.call(self.guard.members, session.token, ident.household_id)).parents
        )
        return {"approvals": approvals, "parents": parents}

    async def load_decisions(self, session: Session) -> dict[str, Any]:
        ident = session.identity
        return {"decisions": await self.call(self.guard.decisions, session.token, ident.household_id)}

    async def load_members(self, session: Session) -> dict[str, Any]:
        ident = session.identity
        view = await self.call(self.guard.members, session.token, ident.household_id)
        return {"view": view}

    async def load_notifications(self, session: Session) -> dict[str, Any]:
        ident = session.identity
        items = await self.call(self.guard.notifications, session.token, ident.household_id)
        return {"notifications": items}

    async def load_deliveries(self, session: Session) -> dict[str, Any]:
        ident = session.identity
        return {"view": await self.call(self.guard.deliveries, session.token, ident.household_id)}

    async def load_policy(self, session: Session) -> dict[str, Any]:
        ident = session.identity
        policy = await self.call(self.guard.policy, session.token, ident.household_id)
        return self.policy_context(forms.policy_to_form(policy, ident.currency), ident.currency)

    async def load_data(self, session: Session) -> dict[str, Any]:
        return {"error": ""}

    @staticmethod
    def policy_context(form: forms.PolicyForm, currency: str) -> dict[str, Any]:
        return {
            "form": form,
            "currency": currency,
            "roles": forms.ROLES,
            "role_labels": forms.ROLE_LABELS,
            "modes": forms.MODES,
            "limit_actions": forms.LIMIT_ACTIONS,
            "challenge_methods": forms.CHALLENGE_METHODS,
            "unknown_voice": forms.UNKNOWN_VOICE,
            "voice_adaptation": forms.VOICE_ADAPTATION,
            "field_label": forms.field_label,
        }

    # ------------------------------------------------------------ actions
    async def resolve(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        ident = session.identity
        approve = form.get("decision") == "approve"
        if form.get("decision") not in ("approve", "reject"):
            return self.error_page(request, session, 400, "Bad request", "Choose Approve or Reject.")
        challenge_id = form.get("challenge_id", "")
        # With a parent's own credential the guard knows who acts; with a household token the
        # parent picks their name (the guard checks that member is a parent of this household).
        parent = ident.parent_member_id or form.get("parent_member_id", "")
        redirect = RedirectResponse("/approvals", status_code=303)
        if not _ID.match(challenge_id) or not _ID.match(parent):
            session.flash("error", "Choose which parent you are, then Approve or Reject.")
            return redirect
        try:
            approvals = await self.call(self.guard.pending_approvals, session.token, ident.household_id)
            summary = next((a.summary for a in approvals if a.challenge_id == challenge_id), "the purchase")
            state = await self.call(
                self.guard.resolve, session.token, ident.household_id, challenge_id, parent, approve
            )
        except GuardRefusal as exc:
            if exc.code == "UNAUTHENTICATED" or exc.unreachable:
                return self.refused(request, session, exc)
            log.info("console_resolve_refused", household_id=ident.household_id, code=exc.code)
            session.flash("error", f"The guard refused: {exc.message} ({exc.code})")
            return redirect
        log.info("console_resolved", household_id=ident.household_id, challenge_id=challenge_id, state=state)
        if approve:
            session.flash("ok", f"Approved: {summary}. The voice assistant can now complete the purchase.")
        else:
            session.flash("ok", f"Rejected: {summary}. The purchase will not go through.")
        return redirect

    async def replay(self, request: Request) -> Response:
        """Deliver one dead letter again (event_id), or all of them (event_id empty)."""
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        ident = session.identity
        raw = form.get("event_id", "")
        if raw and not raw.isdigit():
            return self.error_page(
                request, session, 400, "Bad request", "Choose a dead letter to deliver again."
            )
        redirect = RedirectResponse("/deliveries", status_code=303)
        try:
            replayed = await self.call(
                self.guard.replay, session.token, ident.household_id, [int(raw)] if raw else []
            )
        except GuardRefusal as exc:
            if exc.code == "UNAUTHENTICATED" or exc.unreachable:
                return self.refused(request, session, exc)
            session.flash("error", f"The guard refused: {exc.message} ({exc.code})")
            return redirect
        log.info("console_replayed", household_id=ident.household_id, replayed=replayed)
        session.flash("ok", f"{replayed} event(s) will be delivered again.")
        return redirect

    async def reset_adaptation(self, request: Request) -> Response:
        """Drop what confirmed purchases added to one member's voiceprint (ResetVoiceAdaptation):
        their voice is scored against their enrollment alone again."""
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        ident = session.identity
        member_id = form.get("member_id", "")
        if not _ID.match(member_id):
            return self.error_page(request, session, 400, "Bad request", "Choose a member.")
        redirect = RedirectResponse("/members", status_code=303)
        try:
            names = {
                m.member_id: m.name
                for m in (await self.call(self.guard.members, session.token, ident.household_id)).members
            }
            dropped = await self.call(
                self.guard.reset_adaptation, session.token, ident.household_id, member_id
            )
        except GuardRefusal as exc:
            if exc.code == "UNAUTHENTICATED" or exc.unreachable:
                return self.refused(request, session, exc)
            session.flash("error", f"The guard refused: {exc.message} ({exc.code})")
            return redirect
        log.info("console_adaptation_reset", household_id=ident.household_id, dropped=dropped)
        name = names.get(member_id, member_id)
        session.flash(
            "ok",
            f"{name}'s voiceprint is back to the enrollment: {dropped} voice sample(s) from confirmed "
            "purchases were dropped.",
        )
        return redirect

    async def save_policy(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, submitted = checked
        ident = session.identity
        policy, form = forms.form_to_policy(submitted, ident.currency)

        def again(status: int) -> Response:
            context = self.policy_context(form, ident.currency)
            return self.render(request, "policy.html", status, session, active="policy", **context)

        if not form.ok:
            return again(400)
        try:
            current = await self.call(self.guard.policy, session.token, ident.household_id)
            if str(current.get("revision", "0")) != submitted.get("revision", ""):
                form.general.append(
                    f"The policy was changed elsewhere while you edited it (now revision "
                    f"{current.get('revision', '0')}). Nothing was saved: reload the page to see the "
                    "current policy, then make your change again."
                )
                return again(409)
            stored = await self.call(self.guard.set_policy, session.token, ident.household_id, policy)
        except GuardRefusal as exc:
            if exc.code != "INVALID_ARGUMENT":
                return self.refused(request, session, exc)
            forms.errors_by_field(form, exc.message, [(v.field, v.description) for v in exc.violations])
            return again(400)
        revision = stored.get("revision", "?")
        log.info("console_policy_saved", household_id=ident.household_id, revision=revision)
        session.flash("ok", f"Policy saved (revision {revision}). The next decision follows it.")
        return RedirectResponse("/policy", status_code=303)

    async def export(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        ident = session.identity
        try:
            file = await self.call(
                self.guard.export, session.token, ident.household_id, form.get("format") != "zip"
            )
        except GuardRefusal as exc:
            return self.refused(request, session, exc)
        log.info("console_export", household_id=ident.household_id, bytes=len(file.body))
        return Response(
            file.body,
            media_type=file.media_type,
            headers={"content-disposition": f'attachment; filename="{file.filename}"'},
        )

    async def erase(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        ident = session.identity
        typed = form.get("confirm", "").strip()
        if typed != ident.household_id:
            return self.render(
                request,
                "data.html",
                400,
                session,
                active="data",
                error="Nothing was erased: the text you typed is not this household's ID.",
            )
        try:
            tombstone = await self.call(self.guard.erase, session.token, ident.household_id, typed)
        except GuardRefusal as exc:
            return self.refused(request, session, exc)
        ended = self.sessions.delete_household(ident.household_id)
        log.info("console_erased", household_id=ident.household_id, sessions_ended=ended)
        response = self.render(
            request, "erased.html", 200, None, household_name=ident.household_name, tombstone=tombstone
        )
        self._clear_cookie(response, self.cookie)
        return response


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _duration(seconds: float) -> str:
    if seconds < 90:
        n = max(1, math.ceil(seconds))
        return f"{n} second{'s' if n != 1 else ''}"
    n = math.ceil(seconds / 60)
    return f"{n} minutes"


async def _health(_: Request) -> Response:
    return PlainTextResponse("ok")


def build_console_app(console: Console) -> Starlette:
    static = Path(__file__).parent / "static"
    routes = [
        Route("/", console.home),
        Route("/healthz", _health),
        Route("/signin", console.signin_page, methods=["GET"]),
        Route("/signin", console.signin, methods=["POST"]),
        Route("/signout", console.signout, methods=["POST"]),
        Route("/approvals", console.page("approvals", Console.load_approvals), methods=["GET"]),
        Route("/approvals/resolve", console.resolve, methods=["POST"]),
        Route("/decisions", console.page("decisions", Console.load_decisions), methods=["GET"]),
        Route("/policy", console.page("policy", Console.load_policy), methods=["GET"]),
        Route("/policy", console.save_policy, methods=["POST"]),
        Route("/members", console.page("members", Console.load_members), methods=["GET"]),
        Route("/members/reset-adaptation", console.reset_adaptation, methods=["POST"]),
        Route("/notifications", console.page("notifications", Console.load_notifications), methods=["GET"]),
        Route("/deliveries", console.page("deliveries", Console.load_deliveries), methods=["GET"]),
        Route("/deliveries/replay", console.replay, methods=["POST"]),
        Route("/data", console.page("data", Console.load_data), methods=["GET"]),
        Route("/data/export", console.export, methods=["POST"]),
        Route("/data/erase", console.erase, methods=["POST"]),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders, hsts=console.settings.secure_cookies),
        Middleware(
            TrustedHostMiddleware, allowed_hosts=console.settings.allowed_host_list(), www_redirect=False
        ),
    ]
    return Starlette(routes=routes, middleware=middleware)
