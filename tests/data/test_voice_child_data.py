"""The packaged GE2E child detector on speechocean762 speakers it was not trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from purchase_guard.voice.audio import decode_audio
from purchase_guard.voice.child import child_detector_for
from purchase_guard.voice.child_training import age_class, split_speakers
from purchase_guard.voice.evaluation import speechocean_rows
from purchase_guard.voice.ge2e import Ge2eEncoder
from purchase_guard.voice.vad import trim_silence

pytestmark = pytest.mark.data

PER_CLASS = 4
UTTERANCES = 4


def test_held_out_children_are_flagged_and_adults_mostly_not(shared_data: Path) -> None:
    """On 4 held-out children and 4 held-out adults (4 utterances each), children are flagged far more often.

    Held-out speakers come from the same alternate split the training script uses, and none
    of their utterances is in the detector's training list.
    """
    encoder = Ge2eEncoder()
    det = child_detector_for(encoder.name)
    assert det is not None
    by_spk, ages = speechocean_rows(shared_data / "speechocean762-train")
    split = split_speakers(ages)
    trained = set(det.meta["training_utterances"])
    flagged: dict[str, list[bool]] = {"child": [], "adult": []}
    for cls in ("child", "adult"):
        speakers = sorted(s for s in by_spk if split.get(s) == "heldout" and age_class(ages[s]) == cls)
        for spk in speakers[:PER_CLASS]:
            rows = sorted(by_spk[spk])[:UTTERANCES]
            assert not {utt for utt, _ in rows} & trained
            pcms = [trim_silence(decode_audio(encoded=path.read_bytes())).samples for _, path in rows]
            for emb in encoder.embed_batch(pcms):
                flagged[cls].append(det.likelihood(emb) >= 0.5)
    child_rate = float(np.mean(flagged["child"]))
    adult_rate = float(np.mean(flagged["adult"]))
    assert child_rate >= 0.75
    assert adult_rate <= 0.25
