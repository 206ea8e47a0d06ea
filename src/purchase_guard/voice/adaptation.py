"""Voiceprints that improve with use: when a confirmed purchase may add its voice to a profile.

Issue 19 item 5. After a purchase challenge is passed (spoken PIN or random digits in the
member's voice, or a parent's approval), the request utterance's embedding may join the
voiceprint of the member the voice verified as. `decide_adaptation` is the whole rule: it takes
values and returns the new adapted set, or the reason not to adapt. The pipeline applies it.

Bounds (no single adaptation, nor any run of them, can take the profile over):
- the enrollment (`Voiceprint.embedding`, `templates`) is never changed;
- at most `MAX_ADAPTED` adapted embeddings are kept, the oldest dropped first;
- together they weigh at most `MAX_WEIGHT` of the model, and each `MAX_WEIGHT / MAX_ADAPTED`
  (`model_rows`): the enrollment always weighs at least half.

Never adapted from (each a `NotAdapted.reason`):
- `off`: the household switched adaptation off, or no drift floor is calibrated;
- `role`: the member is not an ADULT (children's and teens' prints are not grown: a child's
  biometrics are kept as little as possible, and an adult's is the one that buys);
- `encoder`: the sample or the print belongs to another encoder;
- `not_attributed`: the request's voice did not verify as this member, at the request
  (a parent's approval of a voice nobody recognised adapts nobody, see below);
- `enrollment_margin`: scored against the ORIGINAL enrollment alone (no adapted rows), the
  request's voice did not clear the band threshold plus `AdaptationLimits.margin`. A voice that
  only verified because of earlier adaptations cannot add to them, and one that verified just
  over the threshold (where an impostor's false accept sits) is not taught: the margin puts the
  bar where impostors pass at a tenth of the band's rate (fitted on training speakers,
  thresholds.json `adaptation.margin`; not shipped: see docs/voice.md);
- `child_like`: the child detector's likelihood is at or above the challenge point;
- `broadcast` / `replayed`: the broadcast or replay check matched (or could not run);
- `low_quality`: too little net speech, too noisy or clipped (the enrollment gates' limits);
- `near_miss`: the voice scores at least as close to another member of the household;
- `drift`: its cosine to the ORIGINAL enrollment is under the drift floor, so a run of
  adaptations cannot walk the profile away from the person who enrolled.

Which member an approval may adapt, and why: only the member the request's voice verified as
(the challenge's member), never the parent who approved and never "the closest member" of a
voice that did not verify. A parent approving says "this purchase may go ahead", not "this was
my voice": the approver is usually elsewhere, on the phone. A child who asks and gets the
purchase approved must not end up in the parent's print, and a voice that never cleared the
threshold for anyone must not be taught to. So an approval adapts what a PIN pass adapts: a
voice that verified as the member, confirmed by a second factor.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from purchase_guard.domain import AdaptationSample, Role, Voiceprint

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

MAX_ADAPTED = 10  # adapted embeddings kept per print (oldest dropped)
MAX_WEIGHT = 0.5  # their total weight in the model when all MAX_ADAPTED are there


class Trigger(enum.Enum):
    """How the purchase the sample came with was confirmed."""

    SPOKEN_PIN = "SPOKEN_PIN"
    RANDOM_DIGITS = "RANDOM_DIGITS"
    PARENT_APPROVAL = "PARENT_APPROVAL"


@dataclass(frozen=True, slots=True)
class AdaptationLimits:
    """The rule's settings. `drift_floor` is the cosine to the original enrollment a sample must
    reach (calibrated on training speakers, thresholds.json `adaptation.drift_floor`); `margin`
    how far over the band threshold the sample's score against the original enrollment alone must
    be (thresholds.json `adaptation.margin`). No drift floor turns adaptation off (fail closed: no
    calibration, no adaptation); no margin leaves the enrollment-alone check out (the first
    pass's rule, what ships: the margin cost most of the FRR gain, docs/voice.md)."""

    drift_floor: float | None
    margin: float | None = None
    child_threshold: float = 0.5
    min_speech_s: float = 1.0
    min_snr_db: float = 10.0
    max_clipped: float = 0.01
    max_templates: int = MAX_ADAPTED


@dataclass(frozen=True, slots=True)
class Adapted:
    """Adapt: the print's new adapted set (oldest first), how many old ones it dropped, and the
    sample's cosine to the original enrollment (recorded with the decision)."""

    adapted: tuple[tuple[float, ...], ...]
    dropped: int
    drift_score: float


@dataclass(frozen=True, slots=True)
class NotAdapted:
    reason: str
    detail: str


def _unit(v: Sequence[float] | FloatArray) -> FloatArray:
    a = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(a))
    return a / n if n > 0 else a


def enrollment_rows(vp: Voiceprint) -> FloatArray:
    """The print's enrollment as rows (its take embeddings, or the centroid), unit length."""
    rows = vp.templates if vp.templates else (vp.embedding,)
    return np.stack([_unit(t) for t in rows])


def adapted_weight(n_adapted: int, max_templates: int = MAX_ADAPTED, max_weight: float = MAX_WEIGHT) -> float:
    """Total weight of `n_adapted` adapted embeddings: MAX_WEIGHT / MAX_ADAPTED each."""
    return max_weight * min(n_adapted, max_templates) / max_templates


def model_rows(vp: Voiceprint) -> tuple[FloatArray, FloatArray]:
    """(rows, weights summing to 1) of the model a print is scored against: the enrollment rows
    share 1 - adapted_weight, the adapted rows adapted_weight. Without adapted rows the weights
    are uniform, so scoring is exactly what it was before adaptation existed."""
    enrolled = enrollment_rows(vp)
    if not vp.adapted:
        return enrolled, np.full(enrolled.shape[0], 1.0 / enrolled.shape[0])
    adapted = np.stack([_unit(t) for t in vp.adapted])
    a = adapted_weight(adapted.shape[0])
    w = np.concatenate(
        [
            np.full(enrolled.shape[0], (1 - a) / enrolled.shape[0]),
            np.full(adapted.shape[0], a / adapted.shape[0]),
        ]
    )
    return np.vstack([enrolled, adapted]), w


def model_vector(vp: Voiceprint) -> FloatArray:
    """The print's weighted centroid (unit length): what the shipped cosine back-end scores."""
    rows, w = model_rows(vp)
    return _unit(w @ rows)


def enrollment_vector(vp: Voiceprint) -> FloatArray:
    """The centroid of the original enrollment only (what drift is measured against)."""
    return _unit(enrollment_rows(vp).mean(axis=0))


def decide_adaptation(
    sample: AdaptationSample,
    target: Voiceprint,
    role: Role,
    others: Sequence[Voiceprint],
    trigger: Trigger,
    limits: AdaptationLimits,
    *,
    enabled: bool = True,
) -> Adapted | NotAdapted:
    """Whether `sample` may join `target`'s adapted set, and the set it gives.

    `others` are the household's other members' prints (the near-miss check). `trigger` says
    how the purchase was confirmed; every trigger needs the same evidence of the voice (it
    verified as `target`'s member at the request), see the module docstring."""
    del trigger  # every trigger is held to the same evidence; kept for the record
    if not enabled or limits.drift_floor is None:
        return NotAdapted("off", "voice adaptation is off for this household")
    if role is not Role.ADULT:
        return NotAdapted("role", f"only adults' voiceprints adapt, this member is {role.value}")
    if sample.encoder != target.encoder:
        return NotAdapted("encoder", "the sample and the voiceprint were made by different encoders")
    if sample.member_id != target.member_id or sample.score < sample.threshold:
        return NotAdapted("not_attributed", "the request's voice did not verify as this member")
    # NaN (or the -inf of a sample kept before the score was) fails the comparison: refused.
    if limits.margin is not None and not sample.enrollment_score >= sample.threshold + limits.margin:
        return NotAdapted(
            "enrollment_margin",
            f"against the enrollment alone the voice scored {sample.enrollment_score:.3f}, "
            f"under the threshold {sample.threshold:.3f} + margin {limits.margin:.3f}",
        )
    if sample.broadcast:
        return NotAdapted("broadcast", "the request matched (or could not be checked against) a broadcast")
    if sample.replayed:
        return NotAdapted("replayed", "the request was (or could not be checked for) a replay")
    if sample.child_likelihood >= limits.child_threshold:
        return NotAdapted("child_like", f"child-like voice ({sample.child_likelihood:.2f})")
    if (
        sample.net_speech_s < limits.min_speech_s
        or sample.snr_db < limits.min_snr_db
        or sample.clipped > limits.max_clipped
    ):
        return NotAdapted(
            "low_quality",
            f"{sample.net_speech_s:.1f} s of speech, SNR {sample.snr_db:.0f} dB, "
            f"{100 * sample.clipped:.1f} % clipped",
        )
    x = _unit(sample.embedding)
    if x.shape[0] != len(target.embedding) or not np.all(np.isfinite(x)):
        return NotAdapted("encoder", "the sample does not fit the voiceprint")
    own = float(x @ model_vector(target))
    rivals = [float(x @ model_vector(vp)) for vp in others if vp.encoder == target.encoder]
    if rivals and max(rivals) >= own:
        return NotAdapted("near_miss", "the voice is as close to another member of the household")
    drift = float(x @ enrollment_vector(target))
    if drift < limits.drift_floor:
        return NotAdapted(
            "drift", f"cosine to the enrollment {drift:.3f} is under the floor {limits.drift_floor:.3f}"
        )
    kept = (*target.adapted, tuple(float(v) for v in x))
    dropped = max(0, len(kept) - limits.max_templates)
    return Adapted(kept[dropped:], dropped, drift)
