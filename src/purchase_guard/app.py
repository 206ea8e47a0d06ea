"""Wiring: builds the real backends from settings. The only place that picks implementations."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from purchase_guard.audit.startup import verify_all_chains
from purchase_guard.broadcast.denylist import ClipStore, RedisClipStore, SqliteClipStore
from purchase_guard.broadcast.index import IndexedWindow, MemoryPostings
from purchase_guard.broadcast.postings_redis import RedisPostings
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.broadcast.window import FleetWindow, MemoryWindow, RedisWindow
from purchase_guard.broadcast.wiring import REDIS_PREFIX, BroadcastParts, assemble, clip_db_path
from purchase_guard.challenge.pin import PinHasher
from purchase_guard.clock import Clock, IdSource, OffsetClock, RandomIds, SystemClock
from purchase_guard.config import ENV_PREFIX, ConfigError, Settings
from purchase_guard.household.service import HouseholdService
from purchase_guard.limits import InProcessRateLimiter, RateLimiter, RedisRateLimiter
from purchase_guard.logs import get_logger
from purchase_guard.pipeline.guard import Guard
from purchase_guard.pipeline.ports import BroadcastDefence, NoBroadcastDefence
from purchase_guard.pipeline.verdict import DEFAULT_CHILD_THRESHOLD, NEVER
from purchase_guard.privacy.retention import MinimisePlan, RetentionWorker
from purchase_guard.privacy.service import PrivacyService
from purchase_guard.sealing import resolve_master_keys
from purchase_guard.secret_files import write_once
from purchase_guard.store.protocol import Store
from purchase_guard.store.sqlite import SqliteStore
from purchase_guard.voice.adaptation import AdaptationLimits
from purchase_guard.voice.child import child_detector_for
from purchase_guard.voice.digits import TemplateDigitChecker, load_digit_checker
from purchase_guard.voice.encoder import FakeEncoder, SpeakerEncoder
from purchase_guard.voice.verifier import VoiceVerifier, build_verifier

log = get_logger("purchase_guard.app")


@dataclass
class App:
    settings: Settings
    store: Store
    verifier: VoiceVerifier
    guard: Guard
    households: HouseholdService
    clock: Clock
    operator_token: str
    privacy: PrivacyService
    rate_limiter: RateLimiter
    backend_token: str
    # Built here, started by the server (api/server.py) and stopped with it.
    retention: RetentionWorker
    clips: ClipRegistry | None = None
    # Households whose audit chain failed verification at start: not served until an operator
    # has looked (their requests are FAILED_PRECONDITION).
    quarantined: frozenset[str] = frozenset()


def build_encoder(settings: Settings) -> SpeakerEncoder:
    if settings.encoder == "fake":
        return FakeEncoder()
    inner: SpeakerEncoder
    if settings.encoder == "ecapa":
        from purchase_guard.voice.ecapa import EcapaEncoder

        if settings.ecapa_model_dir is None:
            raise ConfigError("PURCHASE_GUARD_ECAPA_MODEL_DIR is required for encoder=ecapa")
        inner = EcapaEncoder(settings.ecapa_model_dir)
    elif settings.ge2e_runtime == "onnx":
        from purchase_guard.voice.ge2e_onnx import Ge2eOnnxEncoder

        inner = Ge2eOnnxEncoder(
            settings.ge2e_weights, settings.ge2e_onnx_dir, threads=settings.threads_per_encoder
        )
    else:
        from purchase_guard.voice.ge2e import Ge2eEncoder

        inner = Ge2eEncoder(settings.ge2e_weights, threads=settings.threads_per_encoder)
    if settings.embed_max_batch <= 1:
        return inner
    from purchase_guard.voice.batching import BatchingEncoder

    return BatchingEncoder(inner, max_batch=settings.embed_max_batch, max_wait_ms=settings.embed_max_wait_ms)


def encoder_for(kind: str, ecapa_model_dir: Path | None = None) -> SpeakerEncoder:
    """A bare encoder of `kind` (no request batching), for the evaluation and training tools."""
    settings = Settings(
        encoder=kind, ecapa_model_dir=ecapa_model_dir, embed_max_batch=1, test_mode=kind == "fake"
    )
    return build_encoder(settings.validated())


def _token_from(given: str, path: Path, prefix: str, what: str) -> str:
    """A token from settings, else from its file, else a new one written there (0600)."""
    if given:
        return given
    if path.is_file():
        token = path.read_text().strip()
        if len(token) >= 24:
            return token
        # Unusable (empty, cut short by hand): replaced, as a first start would have written it.
        path.unlink(missing_ok=True)
    # A replica starting at the same moment may create the file first; then its token counts.
    text, created = write_once(path, prefix + secrets.token_urlsafe(32) + "\n")
    if created:
        log.info(f"{what}_token_created", path=str(path))
    return text.strip()


def resolve_operator_token(settings: Settings) -> str:
    return _token_from(settings.operator_token, Path(settings.operator_token_file), "pgo_", "operator")


def resolve_backend_token(settings: Settings) -> str:
    """The voice backend's token for Evaluate and Confirm: settings, else var/backend-token (0600)."""
    return _token_from(settings.backend_token, Path(settings.backend_token_file), "pgb_", "backend")


def build_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.rate_limit_backend == "redis":
        return RedisRateLimiter.from_url(settings.redis_url, prefix="pg:rl:")
    return InProcessRateLimiter()


def build_store(settings: Settings) -> Store:
    try:
        master = resolve_master_keys(settings.master_key, Path(settings.master_key_file))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if settings.store == "postgres":
        # Imported here so the embedded default does not need libpq loaded.
        from purchase_guard.store.postgres import PostgresStore

        store: Store = PostgresStore(
            settings.postgres_dsn, pool_size=settings.postgres_pool_size, master_keys=master
        )
        return store
    # The folder holds household data and keys: only the service's user may enter it.
    Path(settings.sqlite_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteStore(settings.sqlite_path, master_keys=master)


def build_broadcast(
    settings: Settings,
    clock: Clock,
    ids: IdSource,
    *,
    redis_client: Any = None,
    redis_prefix: str = REDIS_PREFIX,
) -> BroadcastParts:
    """The broadcast defence: window (memory or Redis; inverted index or scan) and clip store."""
    length = timedelta(seconds=settings.broadcast_window_seconds)
    span = timedelta(seconds=settings.broadcast_max_spread_seconds)
    cap = settings.broadcast_max_in_span
    store: ClipStore
    window: FleetWindow
    if settings.broadcast_window == "redis":
        if redis_client is None:
            import redis  # only needed when Redis is configured

            redis_client = redis.Redis.from_url(
                settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        if settings.broadcast_index == "index":
            window = IndexedWindow(
                RedisPostings(redis_client, redis_prefix, length), length, span, max_in_span=cap
            )
        else:
            window = RedisWindow(redis_client, redis_prefix, length, max_in_span=cap)
        store = RedisClipStore(redis_client, redis_prefix)
    else:
        path = clip_db_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        window = (
            IndexedWindow(MemoryPostings(), length, span, max_in_span=cap)
            if settings.broadcast_index == "index"
            else MemoryWindow(length, max_in_span=cap)
        )
        store = SqliteClipStore(path)
    return assemble(settings, window, store, clock, ids)


def build_app(
    settings: Settings,
    *,
    store: Store | None = None,
    encoder: SpeakerEncoder | None = None,
    clock: Clock | None = None,
    ids: IdSource | None = None,
    pins: PinHasher | None = None,
    broadcast: BroadcastDefence | None = None,
    digits: TemplateDigitChecker | None = None,
) -> App:
    if store is None:
        store = build_store(settings)
    if clock is None:
        clock = OffsetClock() if settings.test_mode else SystemClock()
    ids = ids or RandomIds()
    pins = pins or PinHasher()
    encoder = encoder or build_encoder(settings)
    child = child_detector_for(encoder.name, settings.child_detector_file)
    # Only the fake encoder (a spectral stand-in for tests; settings refuse it outside test mode)
    # runs without one.
    if child is None and not isinstance(encoder, FakeEncoder):
        # Without it CHILD_VOICE could never fire: a child who verifies as a parent would buy.
        raise ConfigError(
            f"no child-voice detector for encoder {encoder.name}; set {ENV_PREFIX}CHILD_DETECTOR_FILE"
        )
    # The thresholds name the VAD and scoring back-end they were calibrated with; both are built here.
    verifier = build_verifier(encoder, settings.thresholds_file, child_detector=child)
    points = child.operating_points if child is not None else {}
    # What an answer says is checked on its audio; a model that cannot load stops the start (no
    # spoken answer could be judged). Compiled now, not at the first answer.
    digits = digits or load_digit_checker()
    digits.warm_up()
    token = resolve_operator_token(settings)
    backend_token = resolve_backend_token(settings)
    # A server killed mid-write, or a restored or edited database, must not go back to deciding
    # silently on top of a broken record: every chain is checked, and a broken one's household
    # is refused until an operator has looked.
    audit = verify_all_chains(store)
    quarantined = frozenset(b.household_id for b in audit.broken)
    if quarantined:
        log.error("audit_chains_broken_at_start", households=sorted(quarantined))
    clips: ClipRegistry | None = None
    defence: BroadcastDefence
    if settings.broadcast_enabled:
        parts = build_broadcast(settings, clock, ids)
        clips = parts.registry
        defence = broadcast or parts.guard
    else:
        defence = broadcast or NoBroadcastDefence()
    guard = Guard(
        settings,
        store,
        verifier,
        defence,
        pins,
        clock,
        ids,
        child_threshold=points.get("challenge", DEFAULT_CHILD_THRESHOLD),
        quarantined=quarantined,
        digits=digits,
        high_child_threshold=points.get("high", NEVER),
        adaptation=(
            AdaptationLimits(
                drift_floor=verifier.thresholds.drift_floor,
                margin=verifier.thresholds.adapt_margin,
                child_threshold=points.get("challenge", DEFAULT_CHILD_THRESHOLD),
            )
            if settings.voice_adaptation_enabled
            else None
        ),
    )
    households = HouseholdService(
        settings,
        store,
        verifier,
        pins,
        clock,
        ids,
        token,
        approvals=guard,
        backend_token=backend_token,
        digits=digits,
    )
    privacy = PrivacyService(store, households, clock)
    return App(
        settings,
        store,
        verifier,
        guard,
        households,
        clock,
        token,
        privacy,
        build_rate_limiter(settings),
        backend_token,
        # Always on: children's voiceprints expire and audio prints age out whether or not
        # decisions are purged (retention_days).
        RetentionWorker(
            store,
            clock.now,
            settings.retention_days,
            settings.retention_interval_seconds,
            ids=ids,
            plan=MinimisePlan(
                audio_prints=timedelta(days=settings.replay_window_days),
                issued_digits=timedelta(days=settings.random_digits_unique_days),
            ),
        ),
        clips,
        quarantined,
    )
