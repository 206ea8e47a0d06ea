"""scripts/eval_households.py on a tiny configuration: real guard, real audio, accounting that holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import eval_households

from purchase_guard.voice.households import ATTACK_OUTCOMES, GENUINE_OUTCOMES

pytestmark = pytest.mark.data


def test_tiny_benchmark_accounts_for_every_request(shared_data: Path, tmp_path: Path) -> None:
    """Two households of one fold (shipped files, speechocean762 and FSDD only): every request is
    accounted once, replays are refused as replays, no other request is refused as one (no
    recording reached a household twice), and no attack ends in ALLOW."""
    report = eval_households.run(
        shared_data,
        households=2,
        cache_dir=tmp_path,
        shipped=True,
        folds_run=[0],
        corpora=["speechocean", "fsdd-pin"],
        log=lambda _m: None,
    )
    s = report["summary"]
    assert report["k_fold"] is False
    assert report["protocol"].startswith("SMOKE")
    g = s["genuine"]["all"]
    assert g["attempts"] > 0
    assert sum(g[o]["k"] for o in GENUINE_OUTCOMES) == g["attempts"]
    kinds = s["attacks"]
    total = g["attempts"] + sum(per["all"]["attempts"] for per in kinds.values())
    assert total == report["attempts"]
    for kind, per in kinds.items():
        assert sum(per["all"][o]["k"] for o in ATTACK_OUTCOMES) == per["all"]["attempts"], kind
        assert per["all"]["allow"]["k"] == 0, kind
        if kind == "replay":
            assert per["all"]["first_reason"] == {"REPLAYED_AUDIO": per["all"]["attempts"]}
        else:
            assert "REPLAYED_AUDIO" not in per["all"]["first_reason"], kind
    assert "REPLAYED_AUDIO" not in s["genuine"]["all"]["refused_first_reason"]
    assert kinds["stranger"]["all"]["attempts"] == 2 * eval_households.STRANGERS_PER_HOUSEHOLD
