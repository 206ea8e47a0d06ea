"""The webhook delivery worker: claims due outbox rows, posts them signed, records what happened.

It runs on its own threads, started by the server (api/server.py), and never holds a household lock
or a transaction while it posts: a slow or dead receiver delays only its own deliveries, never a
decision. Delivery is at least once: a row is claimed for a lease longer than the post's timeout,
and a guard killed mid-delivery leaves the claim to run out, after which any guard (this one
restarted, or another replica) posts the same event again, with the same event id.

Outcomes of one attempt:
    2xx                              delivered
    timeout, connection error, 5xx,  retried after a jittered exponential back-off
    429 (Retry-After honoured)       (base * 2^(attempt-1), capped; full delay in [d/2, d])
    other 4xx, 3xx (never followed)  dead letter: the parent lists and replays it
    max attempts reached             dead letter
"""

from __future__ import annotations

import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from purchase_guard.clock import Clock, SystemClock
from purchase_guard.config import Settings
from purchase_guard.domain import ChallengeMethod, ChallengeStatus
from purchase_guard.events.derive import approval_expired
from purchase_guard.events.signing import signed_headers, wire_body
from purchase_guard.logs import get_logger
from purchase_guard.metrics import EVENTS
from purchase_guard.store.protocol import DecisionLog, Delivery, Outbox

log = get_logger("purchase_guard.events")

USER_AGENT = "purchase-guard-webhooks/1"


class WorkerStore(Outbox, DecisionLog, Protocol):
    """What the worker reads and writes."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to: `status` is the HTTP status (0 when there was no answer)."""

    status: int
    error: str = ""
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status in {0, 408, 429} or self.status >= 500


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect is the receiver's answer (3xx), never followed with a signed body


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Attempt:
    if not url.startswith(("https://", "http://")):
        # Set-time validation allows only these; anything else (file:, ftp:) is never opened.
        return Attempt(400, "not an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
        url, data=body, method="POST", headers={**headers, "User-Agent": USER_AGENT}
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(1024)
            return Attempt(int(response.status))
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers is not None else None
        wait = float(retry_after) if retry_after is not None and retry_after.strip().isdigit() else None
        return Attempt(int(exc.code), f"HTTP {exc.code}", wait)
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Attempt(0, f"no answer: {type(reason).__name__}")


def backoff_s(attempts: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before attempt `attempts + 1`, after `attempts` failed ones (>= 1): exponential, capped,
    with jitter so receivers coming back up are not hit by every guard at once."""
    ceiling = min(cap_s, base_s * 2.0 ** (attempts - 1))
    return rng.uniform(ceiling / 2, ceiling)


class DeliveryWorker:
    def __init__(
        self,
        store: WorkerStore,
        settings: Settings,
        *,
        clock: Clock | None = None,
        wall: Clock | None = None,
        poster: Callable[[str, bytes, dict[str, str], float], Attempt] = post,
        batch: int = 32,
        rng: random.Random | None = None,
    ) -> None:
        """`clock` is the guard's decision clock (approval expiry is judged on it); `wall` the real
        time deliveries are scheduled and signed with."""
        self._store = store
        self._settings = settings
        self._clock = clock or SystemClock()
        self._wall = wall or SystemClock()
        self._post = poster
        self._batch = batch
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=settings.webhook_workers, thread_name_prefix="webhook")
        self._last_sweep = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-delivery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._settings.webhook_timeout_seconds + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """Look for due deliveries now (after a decision queued events, or a replay)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # a store hiccup: try again at the next poll
                log.warning("event_delivery_failed", error=type(exc).__name__)
                busy = 0
            if busy < self._batch:
                self._wake.wait(self._settings.events_poll_seconds)
                self._wake.clear()

    def run_once(self) -> int:
        """One round: announce expired approvals, then claim and post due deliveries. Returns how
        many deliveries were attempted."""
        if time.monotonic() - self._last_sweep >= 1.0:
            self._last_sweep = time.monotonic()
            self.sweep_expired()
        now = self._wall.now()
        lease = timedelta(seconds=self._settings.webhook_lease_seconds)
        claimed = self._store.claim_deliveries(now, now + lease, self._batch)
        if claimed:
            list(self._pool.map(self._deliver, claimed))
        return len(claimed)

    def sweep_expired(self) -> int:
        found = 0
        now = self._clock.now()
        for household_id, challenge_id in self._store.expired_approvals(now, 100):
            challenge = self._store.get_challenge(household_id, challenge_id)
            if (
                challenge.status is ChallengeStatus.PENDING
                and challenge.method is ChallengeMethod.PARENT_APPROVAL
            ):
                found += len(self._store.add_events(household_id, (approval_expired(challenge),)))
        return found

    def _deliver(self, delivery: Delivery) -> None:
        event = delivery.event
        body = wire_body(event)
        headers = signed_headers(delivery.webhook.secret, event, body, int(self._wall.now().timestamp()))
        attempt = self._post(delivery.webhook.url, body, headers, self._settings.webhook_timeout_seconds)
        attempts = delivery.attempts + 1
        hid, eid = event.household_id, event.event_id
        at = self._wall.now()
        if attempt.delivered:
            self._store.delivery_done(hid, eid, attempts=attempts, status=attempt.status, at=at)
            EVENTS.labels("delivered").inc()
            return
        if attempt.retryable and attempts < self._settings.webhook_max_attempts:
            wait = backoff_s(
                attempts,
                self._settings.webhook_retry_base_seconds,
                self._settings.webhook_retry_cap_seconds,
                self._rng,
            )
            if attempt.retry_after_s is not None:
                wait = max(wait, min(attempt.retry_after_s, self._settings.webhook_retry_cap_seconds))
            self._store.delivery_retry(
                hid,
                eid,
                attempts=attempts,
                status=attempt.status,
                error=attempt.error,
                at=at + timedelta(seconds=wait),
            )
            EVENTS.labels("retried").inc()
            log.info(
                "webhook_retry", event_id=eid, attempts=attempts, status=attempt.status, wait_s=round(wait, 2)
            )
            return
        error = (
            attempt.error if not attempt.retryable else f"gave up after {attempts} attempts: {attempt.error}"
        )
        self._store.delivery_dead(hid, eid, attempts=attempts, status=attempt.status, error=error, at=at)
        EVENTS.labels("dead_lettered").inc()
        log.warning("webhook_dead_letter", event_id=eid, attempts=attempts, status=attempt.status)
