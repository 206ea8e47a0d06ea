"""Broadcast defence: audio fingerprints, the known-clip denylist and the fleet-wide window.

Public entry points: `BroadcastGuard` (the pipeline's `BroadcastDefence`), `ClipRegistry`
(operators' register / list / remove), the window implementations (`MemoryWindow`,
`RedisWindow`) and the clip stores (`SqliteClipStore`, `RedisClipStore`, `MemoryClipStore`).
"""
