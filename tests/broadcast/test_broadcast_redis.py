"""The Redis window and clip store against the real Redis: several replicas share one window."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from unit.broadcast.broadcast_synth import hear, programme, wav

from purchase_guard.broadcast.denylist import PROMOTED, Denylist, RedisClipStore
from purchase_guard.broadcast.fingerprint import PRINT_VERSION, Fingerprint, fingerprint
from purchase_guard.broadcast.guard import BroadcastGuard
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.broadcast.window import RedisWindow, WindowEntry
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.domain import AudioInput, ReasonCode
from purchase_guard.errors import Unavailable

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def entry(n: int, hh: str, seed: int, at: datetime) -> WindowEntry:
    return WindowEntry(f"e{n}", hh, "dev", f"dec{n}", at, fingerprint(hear(programme(seed), seed=n)))


def test_replicas_see_each_others_entries(bc_redis: tuple[Any, str]) -> None:
    """An utterance added through replica A is matched by a copy checked through replica B."""
    client, prefix = bc_redis
    a = RedisWindow(client, prefix, timedelta(minutes=10))
    b = RedisWindow(client, prefix, timedelta(minutes=10))
    assert a.match_and_add(entry(1, "hh1", 5, T0)) == []
    found = b.match_and_add(entry(2, "hh2", 5, T0 + timedelta(seconds=3)))
    assert [(m.entry.household_id, m.entry.decision_id) for m in found] == [("hh1", "dec1")]
    third = a.match_and_add(entry(3, "hh3", 5, T0 + timedelta(seconds=6)))
    assert {m.entry.household_id for m in third} == {"hh1", "hh2"}


def test_entries_leave_the_shared_window_when_it_passes(bc_redis: tuple[Any, str]) -> None:
    """After the window length, old entries are trimmed from Redis and no longer matched."""
    client, prefix = bc_redis
    window = RedisWindow(client, prefix, timedelta(minutes=10))
    window.match_and_add(entry(1, "hh1", 6, T0))
    window.match_and_add(entry(2, "hh2", 7, T0))
    assert client.zcard(f"{prefix}:log") == 2
    fresh = RedisWindow(client, prefix, timedelta(minutes=10))
    late = fresh.match_and_add(entry(3, "hh3", 6, T0 + timedelta(minutes=11)))
    assert late == []
    assert client.zcard(f"{prefix}:log") == 1


def test_cluster_forms_across_replicas_and_promotion_is_shared(bc_redis: tuple[Any, str]) -> None:
    """Three households on alternating replicas form a cluster; the promoted clip then stops a
    replay checked on the other replica after the window."""
    client, prefix = bc_redis
    guards = [
        BroadcastGuard(RedisWindow(client, prefix), Denylist(RedisClipStore(client, prefix)), SequentialIds())
        for _ in range(2)
    ]
    prog = programme(8)
    results = [
        guards[k % 2].check(
            f"hh{k}", "d", f"dec{k}", hear(prog, seed=k), T0 + timedelta(seconds=k), caller_id=""
        )
        for k in range(3)
    ]
    assert [r.code for r in results[2].reasons] == [ReasonCode.BROADCAST_MATCH]
    assert set(results[2].cluster_decisions) == {("hh0", "dec0"), ("hh1", "dec1")}
    replay = guards[1].check("hh9", "d", "dec9", hear(prog, seed=9), T0 + timedelta(hours=2), caller_id="")
    assert [r.code for r in replay.reasons] == [ReasonCode.BROADCAST_MATCH]
    assert dict(replay.reasons[0].detail)["source"] == PROMOTED


def test_clip_registered_on_one_replica_is_enforced_by_another(bc_redis: tuple[Any, str]) -> None:
    """RegisterClip through one replica's registry; another replica's guard refuses the clip."""
    client, prefix = bc_redis
    audio = programme(9, seconds=8.0)
    clip = ClipRegistry(RedisClipStore(client, prefix), FrozenClock(T0), SequentialIds()).register(
        "Ad", AudioInput(encoded=wav(audio))
    )
    other = Denylist(RedisClipStore(client, prefix))
    heard = fingerprint(hear(audio, seed=3, start_s=3.0))
    assert [m.clip.clip_id for m in other.match(heard, T0)] == [clip.clip_id]


def test_registered_clip_audio_is_shared_and_reprinted_by_an_upgraded_replica(
    bc_redis: tuple[Any, str],
) -> None:
    """The clip's kept audio lives in Redis beside its print: a replica running a newer print
    method re-prints it from there and refuses the clip; RemoveClip deletes the audio too."""
    client, prefix = bc_redis
    audio = programme(10, seconds=8.0)
    registry = ClipRegistry(RedisClipStore(client, prefix), FrozenClock(T0), SequentialIds())
    clip = registry.register("Ad", AudioInput(encoded=wav(audio)))
    store = RedisClipStore(client, prefix)
    kept = store.audio(clip.clip_id)
    assert kept is not None
    flipped = Fingerprint(clip.fp.bits ^ 0xFFFFFFFF, clip.fp.mask, clip.fp.hop_s)
    store.put(replace(clip, fp=flipped, print_version=PRINT_VERSION - 1), kept)
    heard = fingerprint(hear(audio, seed=4, start_s=3.0))
    found = Denylist(RedisClipStore(client, prefix)).match(heard, T0)
    assert [(m.clip.clip_id, m.clip.print_version) for m in found] == [(clip.clip_id, PRINT_VERSION)]
    registry.remove(clip.clip_id)
    assert (store.all(), store.audio(clip.clip_id)) == ([], None)


def test_unreachable_redis_is_unavailable() -> None:
    """With Redis down the window raises Unavailable (the pipeline makes that GUARD_ERROR, never ALLOW)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=1, socket_timeout=0.5, socket_connect_timeout=0.5)
    window = RedisWindow(client, "pg-broadcast-test:down")
    with pytest.raises(Unavailable):
        window.match_and_add(entry(1, "hh1", 5, T0))


def test_entries_written_with_another_print_version_are_ignored(bc_redis: tuple[Any, str]) -> None:
    """During a rolling upgrade a replica never compares its prints with an older replica's."""
    client, prefix = bc_redis
    writer = RedisWindow(client, prefix, timedelta(minutes=10))
    writer.match_and_add(entry(1, "hh1", 8, T0))
    writer.match_and_add(entry(2, "hh2", 8, T0))
    # Rewrite the two stored entries as an older print version would have written them.
    for blob, seq in client.zrange(f"{prefix}:log", 0, -1, withscores=True):
        size = int.from_bytes(blob[:4], "little")
        head = json.loads(blob[4 : 4 + size])
        head["v"] = PRINT_VERSION - 1
        new_head = json.dumps(head).encode()
        client.zrem(f"{prefix}:log", blob)
        client.zadd(f"{prefix}:log", {len(new_head).to_bytes(4, "little") + new_head + blob[4 + size :]: seq})
    upgraded = RedisWindow(client, prefix, timedelta(minutes=10))
    assert upgraded.match_and_add(entry(3, "hh3", 8, T0 + timedelta(seconds=2))) == []
    # Entries of the current version are still shared: the other replica sees hh3's.
    assert "hh3" in {m.entry.household_id for m in writer.match_and_add(entry(4, "hh4", 8, T0))}
