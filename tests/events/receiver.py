"""A real HTTP webhook receiver for the events suites: http.server on a free loopback port, in a thread.

Each POST is recorded (headers, raw body) and answered from a script: the next scripted status, or
200 once the script is used up. A scripted `HOLD` keeps the request open until `release()` (a slow
receiver), then answers 200."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD = -1


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() on arrival
    status: int = 0  # what the receiver answered (HOLD answers 200 once released)

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def event_id(self) -> int:
        # Header names are case-insensitive (urllib sends "Purchaseguard-event-id").
        lower = {k.lower(): v for k, v in self.headers.items()}
        return int(lower["purchaseguard-event-id"])


class Receiver:
    def __init__(self, *script: int, policy: Callable[[Received], int] | None = None) -> None:
        """`policy`, when given, picks each answer from the request instead of the script (a status,
        or HOLD); a status of 0 means: hang up without answering (a receiver that dies)."""
        self.script = list(script)
        self.policy = policy
        self.received: list[Received] = []
        self.holding = threading.Event()  # set while a HOLD request is open
        self._release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                got = Received(dict(self.headers.items()), body, time.monotonic())
                with receiver._lock:
                    if receiver.policy is not None:
                        status = receiver.policy(got)
                    else:
                        status = receiver.script.pop(0) if receiver.script else 200
                    receiver.received.append(replace(got, status=200 if status == HOLD else status))
                if status == HOLD:
                    receiver.holding.set()
                    receiver._release.wait(60)
                    status = 200
                if status == 0:
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the guard hung up (killed, or timed out)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def release(self) -> None:
        self._release.set()

    def ids(self) -> list[int]:
        with self._lock:
            return [r.event_id for r in self.received]

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
