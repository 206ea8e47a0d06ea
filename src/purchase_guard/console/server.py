"""Runs the console: uvicorn on a socket the console binds itself, so port 0 works (tests).

uvicorn is told not to trust X-Forwarded-* headers (the sign-in throttle keys on the peer
address, which a client must not be able to choose) and not to announce itself.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from purchase_guard.console.guard_api import ConsoleGuard
from purchase_guard.console.settings import ConsoleSettings
from purchase_guard.console.web import Console, build_console_app


def _bind(settings: ConsoleSettings) -> socket.socket:
    host = settings.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, settings.port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _uvicorn(settings: ConsoleSettings, console: Console) -> uvicorn.Server:
    config = uvicorn.Config(
        build_console_app(console),
        log_config=None,
        access_log=False,  # the console logs each request itself (web.SecurityHeaders)
        proxy_headers=False,
        server_header=False,
        lifespan="off",
        ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
        ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


@dataclass
class RunningConsole:
    console: Console
    port: int
    url: str
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.console.guard.close()


def start_console(settings: ConsoleSettings, guard: ConsoleGuard | None = None) -> RunningConsole:
    """The console serving in a background thread (tests, embedding); `stop()` ends it."""
    guard = guard or ConsoleGuard(settings.target, settings.guard_tls, settings.rpc_timeout_seconds)
    console = Console(settings, guard)
    sock = _bind(settings)
    port = int(sock.getsockname()[1])
    server = _uvicorn(settings, console)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="console", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the console did not start")
        time.sleep(0.01)
    scheme = "https" if settings.https else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return RunningConsole(console, port, f"{scheme}://{host}:{port}", server, thread)


def serve_console(settings: ConsoleSettings) -> None:
    """Serves in the foreground until SIGINT/SIGTERM (uvicorn handles both)."""
    guard = ConsoleGuard(settings.target, settings.guard_tls, settings.rpc_timeout_seconds)
    console = Console(settings, guard)
    sock = _bind(settings)
    try:
        _uvicorn(settings, console).run(sockets=[sock])
    finally:
        guard.close()
        sock.close()
