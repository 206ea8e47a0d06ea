"""The console's settings: `PURCHASE_GUARD_CONSOLE_<NAME>` in the environment, checked once at start.

Like the guard's own settings (config.py), a bad value stops the console before it listens, with
the variable's name. The guard ignores these variables, and the console ignores the guard's, so
both can share one environment.

The one rule that is about more than a typo: the console carries parents' credentials, so it
refuses to serve plain HTTP on anything but a loopback address unless it has a certificate and
key of its own (it then serves HTTPS) or it is told explicitly that plain HTTP is wanted there
(ALLOW_INSECURE_HTTP=1, e.g. behind a reverse proxy that terminates TLS on the same host).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from purchase_guard.api.client import ClientTls
from purchase_guard.config import ConfigError

CONSOLE_PREFIX = "PURCHASE_GUARD_CONSOLE_"
_CERT_MARK = b"-----BEGIN CERTIFICATE-----"
_KEY_MARK = b"PRIVATE KEY-----"
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    # Where the console listens (HTTP, or HTTPS with tls_cert_file/tls_key_file). Port 0: any free port.
    listen: str = "127.0.0.1:8080"
    # The guard's gRPC address.
    target: str = "127.0.0.1:50051"
    # How the console reaches a guard serving TLS: the CA that signed the guard's certificate, and
    # for a guard requiring mutual TLS the console's client certificate and key.
    guard_tls_ca_file: Path | None = None
    guard_tls_cert_file: Path | None = None
    guard_tls_key_file: Path | None = None
    guard_tls_server_name: str = ""
    # The console's own HTTPS certificate and key (PEM).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Plain HTTP on a non-loopback address: refused unless this is set.
    allow_insecure_http: bool = False
    # A reverse proxy in front terminates TLS: cookies are marked Secure and HSTS is sent although
    # the console itself speaks HTTP.
    tls_terminated: bool = False
    # Host names the console answers to (comma-separated); empty: the listen host, plus localhost
    # names when that is a loopback address. Guards against DNS rebinding.
    allowed_hosts: str = ""
    session_idle_seconds: int = 30 * 60
    session_max_seconds: int = 12 * 60 * 60
    max_sessions: int = 10_000
    # Sign-in throttling (throttle.py): this many failures within the window lock an address or a
    # credential prefix out until the oldest failure leaves the window; before that, each failure
    # doubles the wait before the next attempt, starting at signin_delay_seconds.
    signin_max_failures: int = 5
    signin_window_seconds: int = 15 * 60
    signin_delay_seconds: float = 1.0
    rpc_timeout_seconds: float = 10.0
    log_level: str = "info"
    # Not a setting: filled in by `validated` from the guard_tls_* files.
    guard_tls: ClientTls | None = field(default=None, compare=False)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def https(self) -> bool:
        """Whether the console serves HTTPS itself."""
        return self.tls_cert_file is not None

    @property
    def secure_cookies(self) -> bool:
        return self.https or self.tls_terminated

    def allowed_host_list(self) -> list[str]:
        if self.allowed_hosts.strip():
            return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]
        hosts = [self.host.lower()]
        if is_loopback(self.host):
            hosts += ["127.0.0.1", "localhost", "::1", "[::1]"]
        return sorted(set(hosts))

    def validated(self) -> ConsoleSettings:
        p = CONSOLE_PREFIX
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{p}LISTEN must be host:port with a port 0-65535, got {self.listen!r}")
        t_host, t_sep, t_port = self.target.rpartition(":")
        if not t_sep or not t_host or not t_port.isdigit():
            raise ConfigError(f"{p}TARGET must be the guard's host:port, got {self.target!r}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError(f"{p}TLS_CERT_FILE and {p}TLS_KEY_FILE must be set together")
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            _check_pem(self.tls_cert_file, "TLS_CERT_FILE", _CERT_MARK, "certificate")
            _check_pem(self.tls_key_file, "TLS_KEY_FILE", _KEY_MARK, "private key")
        if not self.https and not is_loopback(self.host) and not self.allow_insecure_http:
            raise ConfigError(
                f"{p}LISTEN {self.listen!r} is not a loopback address and the console has no certificate: "
                f"parents' credentials would cross the network in clear. Set {p}TLS_CERT_FILE and "
                f"{p}TLS_KEY_FILE, or {p}ALLOW_INSECURE_HTTP=1 if a TLS proxy on this host fronts it"
            )
        if "*" in self.allowed_host_list() and len(self.allowed_host_list()) > 1:
            raise ConfigError(f"{p}ALLOWED_HOSTS: '*' (any host) cannot be combined with names")
        if not 60 <= self.session_idle_seconds <= 24 * 3600:
            raise ConfigError(f"{p}SESSION_IDLE_SECONDS must be 60-86400")
        if not self.session_idle_seconds <= self.session_max_seconds <= 7 * 24 * 3600:
            raise ConfigError(f"{p}SESSION_MAX_SECONDS must be SESSION_IDLE_SECONDS-604800")
        if not 1 <= self.max_sessions <= 1_000_000:
            raise ConfigError(f"{p}MAX_SESSIONS must be 1-1000000")
        if not 1 <= self.signin_max_failures <= 100:
            raise ConfigError(f"{p}SIGNIN_MAX_FAILURES must be 1-100")
        if not 60 <= self.signin_window_seconds <= 24 * 3600:
            raise ConfigError(f"{p}SIGNIN_WINDOW_SECONDS must be 60-86400")
        if not 0.0 <= self.signin_delay_seconds <= 60.0:
            raise ConfigError(f"{p}SIGNIN_DELAY_SECONDS must be 0-60")
        if not 0.5 <= self.rpc_timeout_seconds <= 120.0:
            raise ConfigError(f"{p}RPC_TIMEOUT_SECONDS must be 0.5-120")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"{p}LOG_LEVEL must be debug, info, warning or error")
        return _with_guard_tls(self)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_pem(path: Path, setting: str, mark: bytes, what: str) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{CONSOLE_PREFIX}{setting}: cannot read {path}: {exc.strerror}") from exc
    if mark not in data:
        raise ConfigError(f"{CONSOLE_PREFIX}{setting}: {path} holds no PEM {what}")


def _with_guard_tls(s: ConsoleSettings) -> ConsoleSettings:
    p = CONSOLE_PREFIX
    if s.guard_tls_ca_file is None:
        if s.guard_tls_cert_file or s.guard_tls_key_file or s.guard_tls_server_name:
            raise ConfigError(
                f"{p}GUARD_TLS_CERT_FILE, {p}GUARD_TLS_KEY_FILE and {p}GUARD_TLS_SERVER_NAME "
                f"need {p}GUARD_TLS_CA_FILE"
            )
        return replace(s, guard_tls=None)
    if (s.guard_tls_cert_file is None) != (s.guard_tls_key_file is None):
        raise ConfigError(f"{p}GUARD_TLS_CERT_FILE and {p}GUARD_TLS_KEY_FILE must be set together")
    _check_pem(s.guard_tls_ca_file, "GUARD_TLS_CA_FILE", _CERT_MARK, "certificate")
    if s.guard_tls_cert_file is not None and s.guard_tls_key_file is not None:
        _check_pem(s.guard_tls_cert_file, "GUARD_TLS_CERT_FILE", _CERT_MARK, "certificate")
        _check_pem(s.guard_tls_key_file, "GUARD_TLS_KEY_FILE", _KEY_MARK, "private key")
    tls = ClientTls(
        s.guard_tls_ca_file, s.guard_tls_cert_file, s.guard_tls_key_file, s.guard_tls_server_name or None
    )
    return replace(s, guard_tls=tls)


def _parse(name: str, raw: str, default: object) -> object:
    env = CONSOLE_PREFIX + name.upper()
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{env}: cannot parse {raw!r} (use 1 or 0)")
    try:
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if name.endswith("_file"):
            return Path(raw) if raw else None
    except ValueError as exc:
        raise ConfigError(f"{env}: cannot parse {raw!r}") from exc
    return raw


def load_console_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> ConsoleSettings:
    """Settings from the environment (`overrides`, e.g. the CLI's --target, win), validated."""
    env = os.environ if environ is None else environ
    names = {f.name for f in fields(ConsoleSettings) if f.name != "guard_tls"}
    values: dict[str, object] = {}
    for name in sorted(names):
        key = CONSOLE_PREFIX + name.upper()
        if key in env:
            values[name] = _parse(name, env[key], ConsoleSettings.__dataclass_fields__[name].default)
    unknown = sorted(
        k for k in env if k.startswith(CONSOLE_PREFIX) and k[len(CONSOLE_PREFIX) :].lower() not in names
    )
    if unknown:
        raise ConfigError(f"unknown console settings: {', '.join(unknown)} (typo?)")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ConsoleSettings(**values).validated()  # type: ignore[arg-type]
