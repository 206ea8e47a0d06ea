"""Builds the broadcast defence from settings: the one place that picks its backends.

Default (`broadcast_window = "memory"`): an in-process window and a SQLite clip store in a
file beside the main store (`<sqlite_path stem>-broadcast.db`), so registered clips survive a
restart. With `broadcast_window = "redis"`, both the window and the clips live in Redis at
`redis_url`, shared by every replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from purchase_guard.broadcast._kernels import warm_up
from purchase_guard.broadcast.denylist import ClipStore, Denylist, RedisClipStore, SqliteClipStore
from purchase_guard.broadcast.guard import BroadcastGuard, ClusterRule
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.broadcast.window import FleetWindow, MemoryWindow, RedisWindow
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


def build_broadcast(
    settings: Settings,
    clock: Clock,
    ids: IdSource,
    *,
    redis_client: Any = None,
    redis_prefix: str = REDIS_PREFIX,
) -> BroadcastParts:
    # Compile the search loops now (or load them from numba's cache), not on the first request.
    warm_up()
    window_length = timedelta(seconds=settings.broadcast_window_seconds)
    store: ClipStore
    window: FleetWindow
    if settings.broadcast_window == "redis":
        if redis_client is None:
            import redis  # only needed when Redis is configured

            redis_client = redis.Redis.from_url(
                settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        window = RedisWindow(redis_client, redis_prefix, window_length)
        store = RedisClipStore(redis_client, redis_prefix)
    else:
        path = clip_db_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        window = MemoryWindow(window_length)
        store = SqliteClipStore(path)
    guard = BroadcastGuard(
        window,
        Denylist(store),
        ids,
        cluster=cluster_rule(settings),
        promote_for=timedelta(hours=settings.broadcast_promote_hours),
    )
    registry = ClipRegistry(store, clock, ids, max_clip_bytes=settings.max_message_bytes)
    return BroadcastParts(guard, registry, store, window)
