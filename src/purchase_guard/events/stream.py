"""WatchEvents' loop: the backlog after a cursor, then new events as the outbox gets them.

Events are read from the store (not from memory), so a stream sees events decided by every replica
sharing the store, and a client that reconnects with the last id it saw misses nothing and gets
nothing twice (ids are monotonic per household)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from purchase_guard.domain import Event
from purchase_guard.store.protocol import Outbox

PAGE = 100


def follow(
    store: Outbox,
    household_id: str,
    after_event_id: int,
    *,
    keep_open: bool,
    active: Callable[[], bool],
    poll_s: float,
    max_s: float | None = None,
    stopping: threading.Event | None = None,
) -> Iterator[Event]:
    """Yields the household's events after `after_event_id`; with `keep_open`, keeps looking every
    `poll_s` until `active()` turns false (the client went away), `max_s` has passed (the client
    resumes from its last id) or `stopping` is set."""
    cursor = after_event_id
    pause = stopping or threading.Event()
    end = None if max_s is None else time.monotonic() + max_s
    while active() and (end is None or time.monotonic() < end):
        batch = store.events_after(household_id, cursor, PAGE)
        for event in batch:
            yield event
            cursor = event.event_id
        if len(batch) == PAGE:
            continue
        if not keep_open or pause.wait(poll_s):
            return
