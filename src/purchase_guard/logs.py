"""structlog JSON logging with a masking processor as the last line of defence.

Call sites never pass PINs, audio or embeddings; the masker also drops any key that
looks like one, so a future careless `log.info(..., pin=pin)` cannot leak it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

MASKED = frozenset(
    {
        "pin",
        "pin_hash",
        "audio",
        "pcm",
        "samples",
        "embedding",
        "embeddings",
        "voiceprint",
        "spoken_digits",
        "digits",
        "token",
        "admin_token",
        "operator_token",
        "authorization",
    }
)


def _mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in MASKED:
            event[key] = "[masked]"
    return event


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    # sys.stderr is looked up per logger, not once at start, so a redirected stderr (pytest's
    # capture, a daemon's log file) is honoured instead of writing to a closed stream.
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
