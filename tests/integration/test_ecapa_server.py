"""The ECAPA encoder chosen by settings, through a real server: enroll, Evaluate and Confirm.

The checkpoint is a tiny one built by the test in the spkrec-ecapa-voxceleb layout (the real
weights cannot be fetched here), so this proves the loading path and the flow, not accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.audio import fsdd_digit_takes, fsdd_wav
from support.server import fast_pins, local_settings
from unit.voice.tiny_ecapa import build_tiny_ecapa

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer, build_server
from purchase_guard.app import build_app
from purchase_guard.voice.child import LogisticChildDetector
from purchase_guard.voice.ecapa import EcapaEncoder, encoder_name

pytestmark = pytest.mark.data
OPERATOR = "op-" + "e" * 40


@pytest.fixture
def ecapa_server(tmp_path: Path) -> Iterator[tuple[RunningServer, str]]:
    model = build_tiny_ecapa(tmp_path / "ecapa")
    name = encoder_name(model)
    # Thresholds are per encoder; a real deployment calibrates them (scripts/calibrate_voice.py).
    thresholds = tmp_path / "thresholds.json"
    bands = [{"name": "all", "max_speech_s": None, "threshold": 0.5}]
    thresholds.write_text(json.dumps({"version": 1, "encoders": {name: {"bands": bands}}}))
    # A server refuses to start without a child-voice detector for its encoder; the tiny model gets
    # one that never flags (this test is about the loading path, not about children).
    dim = EcapaEncoder(model).dim
    detector = LogisticChildDetector(name, np.zeros(dim), np.ones(dim), np.zeros(dim), -8.0)
    child_file = tmp_path / "child.json"
    child_file.write_text(json.dumps(detector.to_mapping()))
    settings = local_settings(
        tmp_path,
        OPERATOR,
        master_key_file=tmp_path / "master-key",
        encoder="ecapa",
        ecapa_model_dir=model,
        thresholds_file=thresholds,
        child_detector_file=child_file,
    )
    running = build_server(build_app(settings, pins=fast_pins()))
    yield running, name
    running.stop(grace=0)


def order(total: int) -> dict[str, Any]:
    money = {"minor_units": str(total), "currency": "USD"}
    return {
        "items": [{"sku": "s", "category": "household", "quantity": 1, "unit_price": money}],
        "total": money,
        "merchant": "m",
    }


def test_ecapa_voiceprints_and_decisions_carry_the_ecapa_encoder(
    ecapa_server: tuple[RunningServer, str], data_dir: Path
) -> None:
    """With encoder=ecapa, enrollment, Evaluate and Confirm all run on ECAPA and say so."""
    running, name = ecapa_server
    client = GuardClient(f"127.0.0.1:{running.port}", OPERATOR, backend_token=running.app.backend_token)
    try:
        hid = client.create_household("Ecapa", "UTC", "USD")["household"]["household_id"]
        mid = client.add_member(hid, "A", "ADULT", True)["member"]["member_id"]
        takes = [fsdd_wav(data_dir, "george", d, i) for i, d in enumerate(("3817", "5092", "6641"))]
        enrolled = client.enroll(hid, mid, takes)
        assert enrolled["member"]["voice_encoder"] == name
        client.enroll_digits(hid, mid, fsdd_digit_takes(data_dir, "george"))
        client.set_pin(hid, "7391")
        ev = client.evaluate("e1", hid, "d", order(15000), fsdd_wav(data_dir, "george", "7305", 10))
        assert ev["speaker"]["encoder"] == name
        assert ev["speaker"]["member_id"] == mid
        # Over the adult per-order limit: a PIN challenge, scored by ECAPA.
        assert ev["outcome"] == "CHALLENGE"
        assert {"AMOUNT_OVER_LIMIT", "SPEAKER_VERIFIED"} <= {r["code"] for r in ev["reasons"]}
        assert ev["challenge"]["method"] == "SPOKEN_PIN"
        ch = ev["challenge"]["challenge_id"]
        answer = fsdd_wav(data_dir, "george", "7391", 20)
        cf = client.confirm("c1", hid, ch, order(15000), "7391", answer)
        assert cf["outcome"] == "ALLOW"
        assert cf["speaker"]["encoder"] == name
    finally:
        client.close()
