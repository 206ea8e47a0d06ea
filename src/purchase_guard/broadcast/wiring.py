"""Assembles the broadcast defence from parts `app.py` picked (the window and clip store).

Default (`broadcast_window = "memory"`): an in-process window and a SQLite clip store in a
file beside the main store (`<sqlite_path stem>-broadcast.db`), so registered clips survive a
restart. With `broadcast_window = "redis"`, both the window and the clips live in Redis at
`redis_url`, shared by every replica. `broadcast_index` picks the search: "index" (inverted
index of sub-print keys, `index.py`) or "scan" (every windowed print scored, `match.py`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from purchase_guard.broadcast._kernels import warm_up
from purchase_guard.broadcast.denylist import ClipStore, Denylist
from purchase_guard.broadcast.guard import BroadcastGuard, ClusterRule
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.broadcast.window import FleetWindow
from purchase_guard.clock import Clock, IdSource
from purchase_guard.config import Settings

REDIS_PREFIX = "purchase-guard:broadcast"


@dataclass(frozen=True, slots=True)
class BroadcastParts:
    guard: BroadcastGuard
    registry: ClipRegistry
    store: ClipStore
    window: FleetWindow


def clip_db_path(settings: Settings) -> Path:
    path = Path(settings.sqlite_path)
    return path.with_name(f"{path.stem}-broadcast.db")


def cluster_rule(settings: Settings) -> ClusterRule:
    return ClusterRule(
        min_sources=settings.broadcast_min_sources,
        min_callers=settings.broadcast_min_callers,
        max_spread=timedelta(seconds=settings.broadcast_max_spread_seconds),
    )


def assemble(
    settings: Settings, window: FleetWindow, store: ClipStore, clock: Clock, ids: IdSource
) -> BroadcastParts:
    # Compile the search loops now (or load them from numba's cache), not on the first request.
    warm_up()
    denylist = Denylist(store)
    # Registered clips are indexed off the request path, so the first Evaluate after a start
    # does not wait for the whole index (it waits on the denylist's lock only if it comes
    # while the build is still running).
    threading.Thread(target=denylist.preload, name="denylist-preload", daemon=True).start()
    guard = BroadcastGuard(
        window,
        denylist,
        ids,
        cluster=cluster_rule(settings),
        promote_for=timedelta(hours=settings.broadcast_promote_hours),
    )
    registry = ClipRegistry(store, clock, ids, max_clip_bytes=settings.max_message_bytes)
    return BroadcastParts(guard, registry, store, window)
