"""Server-side sessions: the parent's credential stays in this process's memory, never in the browser.

The browser's cookie carries a random session id (256 bits); the store keys sessions by the id's
sha256, so the ids themselves are not kept. A session ends after `idle` without a request, after
`absolute` whatever happens, at sign-out, or when the guard stops accepting its credential. The
store is bounded: past `max_sessions` the least recently used session is dropped (its parent
signs in again) rather than memory growing without limit.

Each session has its own CSRF token, compared in constant time (`csrf_ok`).

Sign-in itself is protected by a stateless pre-session token (`PreSession`): the sign-in form
carries an HMAC of a random cookie value under a per-process key, so a page elsewhere cannot sign a
parent into another household's console (login CSRF), and showing the form costs no memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

ID_BYTES = 32


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed in, as the guard told the console (guard_api.ConsoleGuard.identify)."""

    household_id: str
    household_name: str
    time_zone: str
    currency: str
    # The parent whose own credential this is; empty while the guard only knows household tokens.
    parent_member_id: str = ""
    parent_name: str = ""

    @property
    def signed_in_as(self) -> str:
        if self.parent_member_id:
            return f"parent {self.parent_name or self.parent_member_id} of {self.household_name}"
        return f"household {self.household_name}"


@dataclass(frozen=True, slots=True)
class Flash:
    kind: str  # "ok" | "error"
    text: str


@dataclass(slots=True)
class Session:
    identity: Identity
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    last_seen: float
    flashes: list[Flash] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append(Flash(kind, text))

    def take_flashes(self) -> list[Flash]:
        out, self.flashes = self.flashes, []
        return out


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_ok(expected: str, given: str | None) -> bool:
    """Constant-time comparison; a missing or empty token never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


class SessionStore:
    def __init__(
        self,
        idle_seconds: float,
        absolute_seconds: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle_seconds
        self._absolute = absolute_seconds
        self._max = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        # Least recently used first.
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self, identity: Identity, token: str) -> tuple[str, Session]:
        """A new session with a fresh id (never one the browser offered: no session fixation)."""
        session_id = secrets.token_urlsafe(ID_BYTES)
        now = self._clock()
        session = Session(identity, token, secrets.token_urlsafe(ID_BYTES), now, now)
        with self._lock:
            self._purge_expired(now)
            while len(self._sessions) >= self._max:
                self._sessions.popitem(last=False)
            self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session for this id, marked as used now; None (and the session gone) once expired."""
        if not session_id or len(session_id) > 128:
            return None
        key = _key(session_id)
        now = self._clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[key]
                return None
            session.last_seen = now
            self._sessions.move_to_end(key)
            return session

    def delete(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(_key(session_id), None)

    def delete_household(self, household_id: str) -> int:
        """Ends every session of a household (after it was erased); returns how many."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.identity.household_id == household_id]
            for k in keys:
                del self._sessions[k]
            return len(keys)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen >= self._idle or now - session.created >= self._absolute

    def _purge_expired(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[k]


class PreSession:
    """Stateless CSRF for the sign-in form: token = HMAC(process key, random cookie value)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_urlsafe(ID_BYTES)

    def token_for(self, cookie: str) -> str:
        return hmac.new(self._key, b"signin:" + cookie.encode(), hashlib.sha256).hexdigest()

    def ok(self, cookie: str | None, given: str | None) -> bool:
        if not cookie or len(cookie) > 128:
            return False
        return csrf_ok(self.token_for(cookie), given)
