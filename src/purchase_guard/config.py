"""One settings object, read from the environment once and validated at start.

Every setting is `PURCHASE_GUARD_<NAME>` in the environment. A bad value stops the
server before it listens, with a message naming the variable, instead of surfacing
later as a wrong decision.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from purchase_guard.sealing import parse_master_keys
from purchase_guard.tls import TlsError, tls_config

ENV_PREFIX = "PURCHASE_GUARD_"
ENCODERS = ("ge2e", "ecapa", "fake")
STORES = ("sqlite", "postgres")
WINDOWS = ("memory", "redis")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConfigError(ValueError):
    """A setting is missing or invalid; raised at start, never while serving."""


@dataclass(frozen=True, slots=True)
class Settings:
    # Where the server listens. Port 0 picks a free port (tests).
    listen: str = "127.0.0.1:50051"
    # Prometheus metrics on this port; 0 disables the endpoint.
    metrics_port: int = 9464
    # 127.0.0.1 for a laptop; 0.0.0.0 in a container so Prometheus can scrape it.
    metrics_host: str = "127.0.0.1"
    store: str = "sqlite"
    sqlite_path: Path = Path("var/purchase-guard.db")
    # libpq connection string, required when store is "postgres".
    postgres_dsn: str = field(default="", repr=False)
    postgres_pool_size: int = 10
    # Redis for state shared between replicas (broadcast window, rate limits).
    redis_url: str = field(default="", repr=False)
    broadcast_enabled: bool = True
    broadcast_window: str = "memory"
    broadcast_window_seconds: float = 600.0
    # An utterance is a broadcast when it and the utterances it matches come from at least this
    # many distinct sources (an authenticated caller and the device it names; never the
    # household a request claims), all within broadcast_max_spread_seconds of it, and those
    # utterances match each other at the offsets their matches with it imply.
    broadcast_min_sources: int = 3
    # Of those sources, at least this many distinct authenticated callers. 1 suits one voice
    # platform calling for every device; 2 stops one credential forming a cluster alone where
    # devices hold credentials of their own (a device credential is always one source).
    broadcast_min_callers: int = 1
    # Copies of one broadcast arrive together; two strangers' utterances minutes apart are
    # not compared for the verdict, so false clusters grow with the traffic in this span only.
    broadcast_max_spread_seconds: float = 30.0
    # At most this many of the newest utterances count for a verdict (0: no cap). False
    # clusters grow with the square of the utterances in the spread, and a busy fleet fills
    # 30 s with tens of thousands; copies of one broadcast arrive within seconds, which the
    # newest this many still cover (3 s at a million utterances in 10 minutes). Chosen on the
    # tuning split: the largest swept cap within 1e-5 false verdicts per Evaluate (modelled,
    # at the pool's upper per-pair rate) and 50 ms query p99 at that traffic
    # (scripts/bench_fleet.py --split tune; docs/broadcast.md "Fleet scale").
    broadcast_max_in_span: int = 5_000
    # Where the window's index lives: "scan" (every print scored, in process) or "index"
    # (inverted index of sub-print keys: lookups, then the fine check on a few candidates).
    broadcast_index: str = "scan"
    broadcast_promote_hours: float = 48.0
    # OpenTelemetry tracing of decision steps; off unless switched on.
    otel_enabled: bool = False
    otel_endpoint: str = ""
    # "ge2e" runs the real pretrained weights; "fake" exists for unit tests only and is
    # refused unless test_mode is on, so a misconfigured server cannot fake verification.
    encoder: str = "ge2e"
    ge2e_weights: Path | None = None
    # Who runs GE2E's network: "torch" (the reference) or "onnx" (ONNX Runtime: the same
    # embeddings within cosine 1e-5, exported on first use into ge2e_onnx_dir, default
    # ~/.cache/purchase-guard/ge2e-onnx; voice/ge2e_onnx.py).
    ge2e_runtime: str = "torch"
    ge2e_onnx_dir: Path | None = None
    # Local folder in the spkrec-ecapa-voxceleb layout (`make model`); required for encoder=ecapa.
    ecapa_model_dir: Path | None = None
    # Child-voice classifier weights; default: the one shipped for the encoder, if any.
    child_detector_file: Path | None = None
    # Concurrent requests' embeddings are batched: at most this many, waiting at most this long.
    embed_max_batch: int = 16
    embed_max_wait_ms: float = 5.0
    thresholds_file: Path | None = None
    operator_token: str = field(default="", repr=False)
    operator_token_file: Path = Path("var/operator-token")
    # The voice backend's credential for Evaluate and Confirm (a fleet-wide backend); like the
    # operator token, written 0600 to the file at first start unless given.
    backend_token: str = field(default="", repr=False)
    backend_token_file: Path = Path("var/backend-token")
    # Serving plaintext gRPC on an address other than loopback needs saying so: credentials and
    # audio would cross the network in the clear.
    allow_plaintext: bool = False
    # A child's voiceprint is deleted after this long unless a parent renews it (COPPA 2025).
    child_voiceprint_days: int = 365
    max_audio_seconds: float = 30.0
    max_message_bytes: int = 16 * 1024 * 1024
    max_enroll_takes: int = 10
    challenge_expiry: timedelta = timedelta(minutes=2)
    approval_expiry: timedelta = timedelta(hours=24)
    max_attempts: int = 5
    # Random digits to repeat: 5, so a blind guess passes a challenge (5 attempts) with
    # probability 5e-5, under the 1e-4 the issue sets; never the same ones for a household
    # within random_digits_unique_days.
    random_digits: int = 5
    random_digits_unique_days: int = 90
    # How long a household's audio prints are kept to spot replays of earlier audio.
    replay_window_days: int = 30
    # Earlier prints kept opened and prepared between replay checks, per process (MiB; 0: none).
    # Without them a check re-opens the household's whole window every time.
    replay_cache_mib: int = 64
    # Purchases asked in an unrecognised voice sent to a household's parents per rolling hour;
    # past it such requests are refused (UNKNOWN_VOICE_LIMITED), so a broadcast cannot flood them.
    unknown_voice_approvals_per_hour: int = 3
    # mTLS: with cert and key the server listens with TLS; with a client CA it requires client certs.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    rate_limits_enabled: bool = True
    # Confirmed purchases may adapt voiceprints (voice/adaptation.py); each household's policy can
    # also switch it off (Policy.voice_adaptation). Off here: no household adapts.
    voice_adaptation_enabled: bool = True
    rate_limit_backend: str = "memory"  # memory | redis (shared by replicas)
    evaluate_per_household_per_minute: int = 60
    evaluate_per_device_per_minute: int = 20
    confirm_per_household_per_minute: int = 30
    confirm_per_device_per_minute: int = 10
    enroll_per_household_per_hour: int = 20
    # Evaluate and Confirm per authenticated caller: a device or household credential, or a
    # fleet-wide backend (which speaks for every household, so its bucket is a fleet's).
    decisions_per_caller_per_minute: int = 120
    decisions_per_backend_per_minute: int = 60_000
    # The PIN's guess budget (limits/pin_budget.py, NIST SP 800-63B-4): consecutive wrong PINs
    # checked before each further one waits (30 s, doubling, at most an hour), and how many
    # disable the PIN until a parent sets a new one.
    pin_free_failures: int = 5
    pin_disable_after: int = 50
    # Envelope encryption (docs/privacy.md): base64 32-byte master key(s), active first; else a file.
    master_key: str = field(default="", repr=False)
    master_key_file: Path = Path("var/master-key")
    # Purge decisions and audit entries older than this many days; 0 keeps everything.
    retention_days: int = 0
    retention_interval_seconds: float = 3600.0
    # Events (WatchEvents, webhooks; events/). A stream looks for new events this often. An open
    # stream holds one of the server's `workers` threads, so at most `events_max_streams` are open
    # at once (fewer than the workers, so decisions always have threads; -1: half the workers; 0
    # turns WatchEvents off), each for at most `events_stream_max_seconds` (the client then
    # resumes from its last event id).
    events_poll_seconds: float = 0.5
    events_max_streams: int = -1
    events_stream_max_seconds: float = 300.0
    # The delivery worker posts each household's events to its webhook: a receiver gets this long
    # to answer; a timeout, 5xx or 429 is retried after a jittered exponential back-off from the
    # base, capped, until max attempts (then a dead letter). A claimed delivery is held for the
    # lease (longer than the timeout); one left by a killed guard is taken again after it.
    webhooks_enabled: bool = True
    webhook_timeout_seconds: float = 5.0
    webhook_retry_base_seconds: float = 2.0
    webhook_retry_cap_seconds: float = 900.0
    webhook_max_attempts: int = 15
    webhook_workers: int = 4
    webhook_lease_seconds: float = 30.0
    # Test mode enables the controllable clock (replay `wait` steps) and the fake encoder.
    test_mode: bool = False
    log_level: str = "info"
    workers: int = 8
    # Server processes sharing the listening port (SO_REUSEPORT; the kernel spreads connections
    # over them), each with its own encoder, store connection and `workers` threads. What a
    # decision depends on must then be shared between them: rate limits and the broadcast window
    # in Redis (refused otherwise); SQLite's household lock also holds across processes.
    processes: int = 1
    # Threads of the encoder's runtime per process (torch: intra-op threads; ONNX Runtime: that
    # many single-threaded passes over shares of a batch); 0: the runtime's default with one
    # process (ONNX: OMP_NUM_THREADS, else this process's CPUs), the cores divided by
    # `processes` with several.
    encoder_threads: int = 0
    grace_seconds: float = 5.0

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def event_streams(self) -> int:
        """How many WatchEvents streams may be open at once (see events_max_streams)."""
        return self.workers // 2 if self.events_max_streams < 0 else self.events_max_streams

    @property
    def child_voiceprint_retention(self) -> timedelta:
        return timedelta(days=self.child_voiceprint_days)

    def validated(self) -> Settings:
        if ":" not in self.listen:
            raise ConfigError(f"{ENV_PREFIX}LISTEN must be host:port, got {self.listen!r}")
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(
                f"{ENV_PREFIX}LISTEN must be host:port with a port 0-65535, got {self.listen!r}"
            )
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"{ENV_PREFIX}METRICS_PORT must be 0-65535, got {self.metrics_port}")
        if self.store not in STORES:
            raise ConfigError(f"{ENV_PREFIX}STORE must be one of {STORES}, got {self.store!r}")
        if self.store == "postgres" and not self.postgres_dsn:
            raise ConfigError(f"{ENV_PREFIX}POSTGRES_DSN is required when {ENV_PREFIX}STORE=postgres")
        if not 1 <= self.postgres_pool_size <= 200:
            raise ConfigError(f"{ENV_PREFIX}POSTGRES_POOL_SIZE must be 1-200")
        if self.broadcast_window not in WINDOWS:
            raise ConfigError(f"{ENV_PREFIX}BROADCAST_WINDOW must be one of {WINDOWS}")
        if self.broadcast_window == "redis" and not self.redis_url:
            raise ConfigError(f"{ENV_PREFIX}REDIS_URL is required when {ENV_PREFIX}BROADCAST_WINDOW=redis")
        if not 10.0 <= self.broadcast_window_seconds <= 86400.0:
            raise ConfigError(f"{ENV_PREFIX}BROADCAST_WINDOW_SECONDS must be 10-86400")
        if not 2 <= self.broadcast_min_sources <= 100:
            raise ConfigError(f"{ENV_PREFIX}BROADCAST_MIN_SOURCES must be 2-100")
        if not 1 <= self.broadcast_min_callers <= self.broadcast_min_sources:
            raise ConfigError(f"{ENV_PREFIX}BROADCAST_MIN_CALLERS must be 1-BROADCAST_MIN_SOURCES")
        if not 1.0 <= self.broadcast_max_spread_seconds <= self.broadcast_window_seconds:
            raise ConfigError(
                f"{ENV_PREFIX}BROADCAST_MAX_SPREAD_SECONDS must be 1 up to BROADCAST_WINDOW_SECONDS"
            )
        if self.broadcast_max_in_span and not 100 <= self.broadcast_max_in_span <= 10_000_000:
            raise ConfigError(f"{ENV_PREFIX}BROADCAST_MAX_IN_SPAN must be 0 (no cap) or 100-10000000")
        if self.broadcast_index not in ("scan", "index"):
            raise ConfigError(f"{ENV_PREFIX}BROADCAST_INDEX must be scan or index")
        if not 0.0 <= self.broadcast_promote_hours <= 24.0 * 30:
            raise ConfigError(f"{ENV_PREFIX}BROADCAST_PROMOTE_HOURS must be 0-720")
        if self.retention_days and self.retention_days < 31:
            raise ConfigError(
                f"{ENV_PREFIX}RETENTION_DAYS must be 0 (keep all) or at least 31 (30-day caps read spend)"
            )
        if not 60.0 <= self.retention_interval_seconds <= 7 * 86400.0:
            raise ConfigError(f"{ENV_PREFIX}RETENTION_INTERVAL_SECONDS must be 60-604800")
        if self.master_key:
            try:
                parse_master_keys(self.master_key, f"{ENV_PREFIX}MASTER_KEY")
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        if self.rate_limit_backend not in WINDOWS:
            raise ConfigError(f"{ENV_PREFIX}RATE_LIMIT_BACKEND must be one of {WINDOWS}")
        if self.rate_limit_backend == "redis" and not self.redis_url:
            raise ConfigError(f"{ENV_PREFIX}REDIS_URL is required when {ENV_PREFIX}RATE_LIMIT_BACKEND=redis")
        for name in (
            "evaluate_per_household_per_minute",
            "evaluate_per_device_per_minute",
            "confirm_per_household_per_minute",
            "confirm_per_device_per_minute",
            "enroll_per_household_per_hour",
            "decisions_per_caller_per_minute",
        ):
            if not 1 <= getattr(self, name) <= 100_000:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be 1-100000")
        try:
            tls = tls_config(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
        except TlsError as exc:
            raise ConfigError(str(exc)) from exc
        if tls is None and not self.allow_plaintext and not _is_loopback(host):
            raise ConfigError(
                f"{ENV_PREFIX}LISTEN={self.listen} is not a loopback address, and without TLS credentials "
                f"and audio would cross the network in the clear: set {ENV_PREFIX}TLS_CERT_FILE and "
                f"{ENV_PREFIX}TLS_KEY_FILE, or {ENV_PREFIX}ALLOW_PLAINTEXT=1 behind a trusted network"
            )
        if not 1 <= self.decisions_per_backend_per_minute <= 10_000_000:
            raise ConfigError(f"{ENV_PREFIX}DECISIONS_PER_BACKEND_PER_MINUTE must be 1-10000000")
        if not 30 <= self.child_voiceprint_days <= 3 * 365:
            raise ConfigError(f"{ENV_PREFIX}CHILD_VOICEPRINT_DAYS must be 30-1095")
        if self.backend_token and len(self.backend_token) < 24:
            raise ConfigError(f"{ENV_PREFIX}BACKEND_TOKEN must be at least 24 characters")
        if self.ge2e_runtime not in ("torch", "onnx"):
            raise ConfigError(f"{ENV_PREFIX}GE2E_RUNTIME must be torch or onnx, got {self.ge2e_runtime!r}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"{ENV_PREFIX}ENCODER must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "fake" and not self.test_mode:
            raise ConfigError(f"{ENV_PREFIX}ENCODER=fake is only allowed with {ENV_PREFIX}TEST_MODE=1")
        if self.encoder == "ecapa" and (self.ecapa_model_dir is None or not self.ecapa_model_dir.is_dir()):
            raise ConfigError(
                f"{ENV_PREFIX}ECAPA_MODEL_DIR must name the local spkrec-ecapa-voxceleb folder "
                f"when {ENV_PREFIX}ENCODER=ecapa"
            )
        if self.child_detector_file is not None and not self.child_detector_file.is_file():
            raise ConfigError(f"{ENV_PREFIX}CHILD_DETECTOR_FILE: no file at {self.child_detector_file}")
        if not 1 <= self.embed_max_batch <= 64:
            raise ConfigError(f"{ENV_PREFIX}EMBED_MAX_BATCH must be 1-64")
        if not 0.0 <= self.embed_max_wait_ms <= 50.0:
            raise ConfigError(f"{ENV_PREFIX}EMBED_MAX_WAIT_MS must be 0-50")
        if self.ge2e_weights is not None and not self.ge2e_weights.is_file():
            raise ConfigError(f"{ENV_PREFIX}GE2E_WEIGHTS: no file at {self.ge2e_weights}")
        if self.thresholds_file is not None and not self.thresholds_file.is_file():
            raise ConfigError(f"{ENV_PREFIX}THRESHOLDS_FILE: no file at {self.thresholds_file}")
        if self.operator_token and len(self.operator_token) < 24:
            raise ConfigError(f"{ENV_PREFIX}OPERATOR_TOKEN must be at least 24 characters")
        if not 1.0 <= self.max_audio_seconds <= 120.0:
            raise ConfigError(f"{ENV_PREFIX}MAX_AUDIO_SECONDS must be 1-120, got {self.max_audio_seconds}")
        if not 64 * 1024 <= self.max_message_bytes <= 64 * 1024 * 1024:
            raise ConfigError(f"{ENV_PREFIX}MAX_MESSAGE_BYTES must be 64 KiB-64 MiB")
        if not 3 <= self.max_enroll_takes <= 20:
            raise ConfigError(f"{ENV_PREFIX}MAX_ENROLL_TAKES must be 3-20")
        if not timedelta(seconds=10) <= self.challenge_expiry <= timedelta(minutes=30):
            raise ConfigError(f"{ENV_PREFIX}CHALLENGE_EXPIRY_SECONDS must be 10-1800")
        if not timedelta(minutes=1) <= self.approval_expiry <= timedelta(days=7):
            raise ConfigError(f"{ENV_PREFIX}APPROVAL_EXPIRY_SECONDS must be 60-604800")
        if not 1 <= self.max_attempts <= 10:
            raise ConfigError(f"{ENV_PREFIX}MAX_ATTEMPTS must be 1-10")
        if not 4 <= self.random_digits <= 8:
            raise ConfigError(f"{ENV_PREFIX}RANDOM_DIGITS must be 4-8")
        if self.max_attempts * 10.0**-self.random_digits > 1e-4 * (1 + 1e-9):
            raise ConfigError(
                f"{ENV_PREFIX}RANDOM_DIGITS={self.random_digits} with MAX_ATTEMPTS={self.max_attempts} lets "
                "a blind guess pass a challenge with probability over 1e-4: use more digits or fewer attempts"
            )
        if not 1 <= self.random_digits_unique_days <= 365:
            raise ConfigError(f"{ENV_PREFIX}RANDOM_DIGITS_UNIQUE_DAYS must be 1-365")
        if not 0 <= self.unknown_voice_approvals_per_hour <= 100:
            raise ConfigError("unknown_voice_approvals_per_hour must be between 0 and 100")
        if not 1 <= self.replay_window_days <= 365:
            raise ConfigError(f"{ENV_PREFIX}REPLAY_WINDOW_DAYS must be 1-365")
        if not 0 <= self.replay_cache_mib <= 16384:
            raise ConfigError(f"{ENV_PREFIX}REPLAY_CACHE_MIB must be 0-16384")
        if not 1 <= self.pin_free_failures <= 10:
            raise ConfigError(f"{ENV_PREFIX}PIN_FREE_FAILURES must be 1-10")
        if not self.pin_free_failures < self.pin_disable_after <= 100:
            raise ConfigError(
                f"{ENV_PREFIX}PIN_DISABLE_AFTER must be above PIN_FREE_FAILURES and at most 100"
            )
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"{ENV_PREFIX}LOG_LEVEL must be debug, info, warning or error")
        if not 0.02 <= self.events_poll_seconds <= 10.0:
            raise ConfigError(f"{ENV_PREFIX}EVENTS_POLL_SECONDS must be 0.02-10")
        if not -1 <= self.events_max_streams < self.workers:
            raise ConfigError(
                f"{ENV_PREFIX}EVENTS_MAX_STREAMS must be -1 (half the workers), 0 (off) or below "
                f"{ENV_PREFIX}WORKERS (each open stream holds a worker thread; decisions need the rest)"
            )
        if not 1.0 <= self.events_stream_max_seconds <= 86400.0:
            raise ConfigError(f"{ENV_PREFIX}EVENTS_STREAM_MAX_SECONDS must be 1-86400")
        if not 0.1 <= self.webhook_timeout_seconds <= 60.0:
            raise ConfigError(f"{ENV_PREFIX}WEBHOOK_TIMEOUT_SECONDS must be 0.1-60")
        if not 0.01 <= self.webhook_retry_base_seconds <= self.webhook_retry_cap_seconds <= 86400.0:
            raise ConfigError(
                f"{ENV_PREFIX}WEBHOOK_RETRY_BASE_SECONDS must be at least 0.01 and at most "
                "WEBHOOK_RETRY_CAP_SECONDS, which is at most 86400"
            )
        if not 1 <= self.webhook_max_attempts <= 100:
            raise ConfigError(f"{ENV_PREFIX}WEBHOOK_MAX_ATTEMPTS must be 1-100")
        if not 1 <= self.webhook_workers <= 64:
            raise ConfigError(f"{ENV_PREFIX}WEBHOOK_WORKERS must be 1-64")
        if not self.webhook_timeout_seconds < self.webhook_lease_seconds <= 3600.0:
            raise ConfigError(
                f"{ENV_PREFIX}WEBHOOK_LEASE_SECONDS must be above WEBHOOK_TIMEOUT_SECONDS (a delivery "
                "still being posted must not be claimed again) and at most 3600"
            )
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"{ENV_PREFIX}WORKERS must be 1-256")
        if not 0 <= self.encoder_threads <= 256:
            raise ConfigError(f"{ENV_PREFIX}ENCODER_THREADS must be 0 (default) to 256")
        self._validate_processes()
        return self

    def _validate_processes(self) -> None:
        """Several processes on one port decide as one server only if nothing a decision depends on
        is kept per process: each combination that would split such state is refused by name."""
        if not 1 <= self.processes <= 64:
            raise ConfigError(f"{ENV_PREFIX}PROCESSES must be 1-64")
        if self.processes == 1:
            return
        many = f"{ENV_PREFIX}PROCESSES={self.processes}"
        if self.rate_limits_enabled and self.rate_limit_backend != "redis":
            raise ConfigError(
                f"{many} needs {ENV_PREFIX}RATE_LIMIT_BACKEND=redis: in-process rate limits would be "
                f"counted per process, letting {self.processes} times the limit through"
            )
        if self.broadcast_enabled and self.broadcast_window != "redis":
            raise ConfigError(
                f"{many} needs {ENV_PREFIX}BROADCAST_WINDOW=redis: with the in-process window each "
                "process would see only the utterances it served, and a broadcast spread over them "
                "would not be recognised"
            )
        if self.test_mode:
            raise ConfigError(
                f"{many} cannot run with {ENV_PREFIX}TEST_MODE=1: the controllable clock is per process"
            )
        if self.store == "sqlite" and str(self.sqlite_path) == ":memory:":
            raise ConfigError(f"{many} needs a SQLite file the processes share, not :memory:")
        if self.metrics_port and self.metrics_port + self.processes - 1 > 65535:
            raise ConfigError(
                f"{ENV_PREFIX}METRICS_PORT: process i serves metrics on METRICS_PORT + i, past 65535 "
                f"with {many}"
            )

    @property
    def threads_per_encoder(self) -> int:
        """The encoder runtime's intra-op threads (0: the library's default)."""
        if self.encoder_threads:
            return self.encoder_threads
        if self.processes == 1:
            return 0
        return max(1, (os.cpu_count() or 1) // self.processes)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes).validated()


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


def _parse(name: str, raw: str, default: object) -> object:
    env = ENV_PREFIX + name.upper()
    try:
        if isinstance(default, bool):
            return _parse_bool(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, timedelta):
            return timedelta(seconds=float(raw))
        if isinstance(default, Path) or name in (
            "ge2e_weights",
            "thresholds_file",
            "ecapa_model_dir",
            "child_detector_file",
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
        ):
            return Path(raw) if raw else None
    except ValueError as exc:
        raise ConfigError(f"{env}: cannot parse {raw!r}") from exc
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        key = ENV_PREFIX + f.name.upper()
        if f.name in ("challenge_expiry", "approval_expiry"):
            key += "_SECONDS"
        if key in env:
            default = Settings.__dataclass_fields__[f.name].default
            values[f.name] = _parse(f.name, env[key], default)
    unknown = sorted(
        k for k in env if k.startswith(ENV_PREFIX) and k not in _known_env_names() and not _is_external(k)
    )
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)} (typo?)")
    return Settings(**values).validated()  # type: ignore[arg-type]


def _known_env_names() -> set[str]:
    names = set()
    for f in fields(Settings):
        key = ENV_PREFIX + f.name.upper()
        names.add(key + "_SECONDS" if f.name in ("challenge_expiry", "approval_expiry") else key)
    return names


def _is_external(key: str) -> bool:
    # Variables read by tests and tools, not by the server; the web console's own settings
    # (purchase_guard/console/settings.py) may share its environment.
    if key.startswith(ENV_PREFIX + "CONSOLE_"):
        return True
    return key in {
        ENV_PREFIX + n
        for n in ("DATA_DIR", "REQUIRE_DATA", "REQUIRE_SERVICES", "ADMIN_TOKEN", "TEST_POSTGRES_DSN")
    }
