"""Runs `python -m purchase_guard serve` with the speaker check slowed down, for the SIGTERM test.

Every speaker check prints SLOW_CHECK_STARTED to stderr and then waits
PURCHASE_GUARD_TEST_SLOW_SECONDS (read here, removed before the server reads its settings)
before doing the real work, so the test knows a call is in flight when it sends SIGTERM.
Everything else, including signal handling and shutdown, is the real `serve` command.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from typing import Any

from purchase_guard.voice.verifier import VoiceVerifier

DELAY_S = float(os.environ.pop("PURCHASE_GUARD_TEST_SLOW_SECONDS", "3"))


def _slowed(real: Any) -> Any:
    def slow(self: VoiceVerifier, *args: Any, **kwargs: Any) -> Any:
        print("SLOW_CHECK_STARTED", file=sys.stderr, flush=True)
        time.sleep(DELAY_S)
        return real(self, *args, **kwargs)

    return slow


# Evaluate verifies with `verify_sample` when voiceprints may adapt, else with `verify`.
VoiceVerifier.verify = _slowed(VoiceVerifier.verify)  # type: ignore[method-assign]
VoiceVerifier.verify_sample = _slowed(VoiceVerifier.verify_sample)  # type: ignore[method-assign]
sys.argv = ["purchase_guard", "serve"]
runpy.run_module("purchase_guard", run_name="__main__")
