"""The voiceprint adaptation rule (voice/adaptation.py): pure, values in, a new set or a reason out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from purchase_guard.domain import AdaptationSample, Role, Voiceprint
from purchase_guard.voice.adaptation import (
    MAX_ADAPTED,
    MAX_WEIGHT,
    AdaptationLimits,
    Adapted,
    NotAdapted,
    Trigger,
    decide_adaptation,
    enrollment_vector,
    model_rows,
    model_vector,
)
from purchase_guard.voice.backend import identity_backend
from purchase_guard.voice.verifier import Band, Thresholds, VoiceVerifier

T0 = datetime(2026, 11, 25, tzinfo=UTC)
DIM = 8
LIMITS = AdaptationLimits(drift_floor=0.6, margin=0.03, child_threshold=0.5)


def vec(*head: float) -> tuple[float, ...]:
    v = np.zeros(DIM)
    v[: len(head)] = head
    return tuple(float(x) for x in v / np.linalg.norm(v))


PARENT = Voiceprint("ann", "hh", "fake", vec(1.0, 0.2), 3, T0)
CHILD = Voiceprint("tim", "hh", "fake", vec(0.0, 1.0), 3, T0)


def sample(emb: tuple[float, ...] = vec(1.0, 0.3, 0.1), **changes: object) -> AdaptationSample:
    base = AdaptationSample(
        challenge_id="chl-1",
        household_id="hh",
        member_id="ann",
        encoder="fake",
        embedding=emb,
        score=0.97,
        threshold=0.9,
        child_likelihood=0.1,
        net_speech_s=3.0,
        snr_db=25.0,
        clipped=0.0,
        broadcast=False,
        replayed=False,
        created_at=T0,
        enrollment_score=0.97,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def decide(s: AdaptationSample, target: Voiceprint = PARENT, **kw: object) -> Adapted | NotAdapted:
    return decide_adaptation(
        s,
        target,
        kw.pop("role", Role.ADULT),  # type: ignore[arg-type]
        kw.pop("others", [CHILD]),  # type: ignore[arg-type]
        Trigger.SPOKEN_PIN,
        kw.pop("limits", LIMITS),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_a_verified_clean_adult_sample_is_added_and_the_enrollment_is_untouched() -> None:
    """A verified, clean, adult sample joins the adapted set; the enrollment centroid is not changed."""
    out = decide(sample())
    assert isinstance(out, Adapted)
    assert len(out.adapted) == 1
    assert out.dropped == 0
    assert out.drift_score == pytest.approx(float(np.dot(vec(1.0, 0.3, 0.1), PARENT.embedding)))
    assert PARENT.embedding == vec(1.0, 0.2)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"child_likelihood": 0.5}, "child_like"),
        ({"broadcast": True}, "broadcast"),
        ({"replayed": True}, "replayed"),
        ({"member_id": "tim"}, "not_attributed"),
        ({"score": 0.89}, "not_attributed"),
        ({"net_speech_s": 0.8}, "low_quality"),
        ({"snr_db": 8.0}, "low_quality"),
        ({"clipped": 0.02}, "low_quality"),
        ({"encoder": "other"}, "encoder"),
    ],
)
def test_samples_the_rule_refuses_name_their_reason(changes: dict[str, object], reason: str) -> None:
    """Child-like, broadcast, replayed, not attributed to the member, low quality or another encoder:
    never adapted, and the reason says which."""
    out = decide(sample(**changes))
    assert isinstance(out, NotAdapted)
    assert out.reason == reason


def test_a_voice_closer_to_another_member_is_a_near_miss() -> None:
    """Even verified for the parent, a voice at least as close to the child's print does not adapt."""
    between = vec(0.6, 0.8)
    out = decide(sample(between))
    assert isinstance(out, NotAdapted)
    assert out.reason == "near_miss"
    # Without the child in the household the same sample passes the near-miss check.
    assert isinstance(decide(sample(between), others=[]), Adapted)


def test_drift_is_measured_against_the_original_enrollment_not_the_adapted_model() -> None:
    """A sample close to the adapted model but under the floor against the enrollment is refused."""
    drifted = vec(0.3, 0.0, 1.0)
    walked = replace(PARENT, adapted=tuple(vec(0.3, 0.0, 1.0) for _ in range(MAX_ADAPTED)))
    assert float(np.dot(drifted, model_vector(walked))) > float(np.dot(drifted, enrollment_vector(walked)))
    out = decide(sample(drifted), target=walked, others=[])
    assert isinstance(out, NotAdapted)
    assert out.reason == "drift"


def test_only_adults_adapt_and_off_means_off() -> None:
    """A child's or teen's print never adapts; a household that switched it off, or no calibrated
    floor, adapts nothing (fail closed)."""
    for role in (Role.CHILD, Role.TEEN, Role.GUEST):
        out = decide(sample(), role=role)
        assert isinstance(out, NotAdapted)
        assert out.reason == "role"
    assert isinstance(decide(sample(), enabled=False), NotAdapted)
    out = decide(sample(), limits=AdaptationLimits(drift_floor=None, margin=0.03))
    assert isinstance(out, NotAdapted)
    assert out.reason == "off"
    # No margin: the enrollment-alone check is left out (the shipped rule), nothing else changes.
    unmeasured = sample(enrollment_score=-np.inf)
    assert isinstance(decide(unmeasured, limits=AdaptationLimits(drift_floor=0.6, margin=None)), Adapted)


@pytest.mark.parametrize(
    ("enrollment_score", "adapts"),
    [(0.95, True), (0.93, True), (0.92, False), (0.89, False), (-np.inf, False), (np.nan, False)],
)
def test_the_enrollment_alone_must_clear_the_threshold_plus_the_margin(
    enrollment_score: float, adapts: bool
) -> None:
    """Threshold 0.9, margin 0.03: a voice that verified (score 0.97 against the print as it
    stands) adapts only when its score against the ORIGINAL enrollment alone is >= 0.93. Just over
    the threshold (where impostors' false accepts sit), under it (verified only thanks to earlier
    adaptations), not measured (-inf, a sample kept before the score was) or NaN: refused."""
    out = decide(sample(enrollment_score=enrollment_score))
    assert isinstance(out, Adapted) is adapts
    if not adapts:
        assert isinstance(out, NotAdapted)
        assert out.reason == "enrollment_margin"


def test_a_voice_verified_only_through_earlier_adaptations_cannot_add_to_them() -> None:
    """A print walked toward an impostor verifies the impostor; the impostor's sample still
    does not adapt, because against the enrollment alone it is under the threshold, even with no
    margin at all."""
    impostor = vec(0.6, 0.0, 0.8)
    walked = replace(PARENT, adapted=tuple(impostor for _ in range(MAX_ADAPTED)))
    x = np.asarray(impostor)
    score, alone = float(x @ model_vector(walked)), float(x @ enrollment_vector(walked))
    assert score > 0.85 > alone
    s = sample(impostor, score=score, threshold=0.85, enrollment_score=alone)
    limits = AdaptationLimits(drift_floor=0.0, margin=0.0, child_threshold=0.5)
    out = decide(s, target=walked, others=[], limits=limits)
    assert isinstance(out, NotAdapted)
    assert out.reason == "enrollment_margin"


def test_the_adapted_set_is_bounded_and_drops_the_oldest() -> None:
    """At most MAX_ADAPTED are kept; the next one drops the oldest."""
    vp = PARENT
    firsts = []
    for i in range(MAX_ADAPTED + 3):
        emb = vec(1.0, 0.3, 0.01 * (i + 1))
        firsts.append(emb)
        out = decide(sample(emb), target=vp, others=[])
        assert isinstance(out, Adapted)
        vp = replace(vp, adapted=out.adapted)
    assert len(vp.adapted) == MAX_ADAPTED
    assert np.allclose(vp.adapted[0], firsts[3])
    assert np.allclose(vp.adapted[-1], firsts[-1])


def test_adapted_rows_weigh_at_most_max_weight_and_none_changes_nothing() -> None:
    """Without adapted rows the model is the enrollment with equal weights; a full adapted set
    weighs MAX_WEIGHT, so even MAX_ADAPTED identical attacker rows cannot take the model over."""
    rows, w = model_rows(PARENT)
    assert rows.shape == (1, DIM)
    assert w.tolist() == [1.0]
    attacker = vec(0.0, 0.0, 1.0)
    full = replace(PARENT, adapted=tuple(attacker for _ in range(MAX_ADAPTED)))
    rows, w = model_rows(full)
    assert w.sum() == pytest.approx(1.0)
    assert w[1:].sum() == pytest.approx(MAX_WEIGHT)
    m = model_vector(full)
    assert float(m @ np.asarray(PARENT.embedding)) >= float(m @ np.asarray(attacker)) - 1e-9


def test_the_verifier_scores_the_weighted_model() -> None:
    """The verifier's score of a print with adapted rows is the cosine to `model_vector`, and equals
    the old centroid score when there are none."""
    from purchase_guard.voice.encoder import FakeEncoder

    enc = FakeEncoder()
    dim = enc.dim
    rng = np.random.default_rng(1)
    c = tuple(float(x) for x in rng.normal(size=dim))
    probe = rng.normal(size=dim)
    thr = Thresholds(enc.name, (Band("all", float("inf"), 0.5),))
    verifier = VoiceVerifier(enc, thr, backend=identity_backend(enc.name, dim))
    vp = Voiceprint("ann", "hh", enc.name, c, 3, T0)
    plain = verifier.score_embedding(probe, 3.0, [vp], {"ann": Role.ADULT})
    unit_c = np.asarray(c) / np.linalg.norm(c)
    assert plain.score == pytest.approx(float(probe / np.linalg.norm(probe) @ unit_c))
    grown = replace(vp, adapted=(tuple(float(x) for x in rng.normal(size=dim)),))
    scored = verifier.score_embedding(probe, 3.0, [grown], {"ann": Role.ADULT})
    assert scored.score == pytest.approx(float(probe / np.linalg.norm(probe) @ model_vector(grown)))
