"""Voiceprint adaptation in the store: adapted rows and pending samples, sealed, household-scoped."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from purchase_guard.domain import AdaptationSample, ChallengeStatus, Voiceprint
from purchase_guard.errors import Aborted, NotFound
from purchase_guard.store import codec
from purchase_guard.store.protocol import Store, VoiceprintUpdate

if TYPE_CHECKING:
    from conftest import Make

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ROWS = ((0.5, 0.25, -1.0), (0.125, 0.5, 0.75))


def _setup(store: Store, make: Make) -> tuple[str, str, Voiceprint]:
    hh = make.household(store)
    member = make.member(store, hh.household_id)
    vp = Voiceprint(member.member_id, hh.household_id, "ge2e-v1", (1.0, 0.0, 0.0), 3, T0)
    store.put_voiceprint(vp)
    return hh.household_id, member.member_id, vp


def _update(vp: Voiceprint, rows: tuple[tuple[float, ...], ...], expected: int = 0) -> VoiceprintUpdate:
    return VoiceprintUpdate(vp.household_id, vp.member_id, vp.encoder, vp.created_at, expected, rows, T0)


def _sample(hid: str, mid: str, cid: str) -> AdaptationSample:
    return AdaptationSample(
        cid, hid, mid, "ge2e-v1", (0.25, 0.5, 0.75), 0.9, 0.85, 0.1, 3.2, 21.0, 0.0, False, False, T0,
        enrollment_score=0.875,
    )  # fmt: skip


def test_adapted_rows_round_trip_and_leave_the_enrollment_alone(store: Store, make: Make) -> None:
    """A voiceprint update recorded with a decision reads back as the print's adapted rows (float32),
    with its time; the enrollment embedding and count are unchanged."""
    hid, _, vp = _setup(store, make)
    store.record_decision(make.decision(hid), "d1", "{}", voiceprint_update=_update(vp, ROWS))
    (got,) = store.list_voiceprints(hid)
    assert got.adapted == ROWS  # these values are exact in float32
    assert got.adapted_at == T0
    assert (got.embedding, got.n_utterances, got.created_at) == (vp.embedding, 3, T0)


def test_an_update_on_a_print_that_changed_is_aborted_with_the_decision(store: Store, make: Make) -> None:
    """An update decided on an older state of the print (another adaptation landed, or it was
    re-enrolled) is Aborted, and the decision is not recorded either."""
    hid, _, vp = _setup(store, make)
    store.record_decision(make.decision(hid), "d1", "{}", voiceprint_update=_update(vp, ROWS[:1]))
    stale = make.decision(hid)
    with pytest.raises(Aborted):
        store.record_decision(stale, "d2", "{}", voiceprint_update=_update(vp, ROWS, expected=0))
    assert all(d.decision_id != stale.decision_id for d in store.list_decisions(hid, 10))
    store.put_voiceprint(replace(vp, created_at=T0 + timedelta(days=1)))  # re-enrolled
    (got,) = store.list_voiceprints(hid)
    assert got.adapted == ()  # a new enrollment does not keep the old print's adaptations


def test_reset_drops_adapted_rows_and_samples(store: Store, make: Make) -> None:
    """reset_adaptation leaves the enrollment only, says how many rows went, drops the member's
    pending samples; an unknown member is NotFound."""
    hid, mid, vp = _setup(store, make)
    dec = make.decision(hid)
    chl = make.challenge(hid, dec.decision_id)
    store.record_decision(
        dec, "d1", "{}", challenge=chl, adaptation_sample=_sample(hid, mid, chl.challenge_id),
        voiceprint_update=_update(vp, ROWS),
    )  # fmt: skip
    assert store.reset_adaptation(hid, mid) == 2
    (got,) = store.list_voiceprints(hid)
    assert got.adapted == ()
    assert got.adapted_at is None
    assert got.embedding == vp.embedding
    assert store.get_adaptation_sample(hid, chl.challenge_id) is None
    assert store.reset_adaptation(hid, mid) == 0
    with pytest.raises(NotFound):
        store.reset_adaptation(hid, "mem_nobody")


def test_a_sample_lives_while_its_challenge_is_open(store: Store, make: Make) -> None:
    """A sample recorded with a new challenge reads back field for field, only in its household; it
    survives APPROVED, is dropped when the challenge closes, and expired ones are purged."""
    hid, mid, _ = _setup(store, make)
    other = make.household(store).household_id
    dec = make.decision(hid)
    chl = make.challenge(hid, dec.decision_id)
    sample = _sample(hid, mid, chl.challenge_id)
    store.record_decision(dec, "d1", "{}", challenge=chl, adaptation_sample=sample)
    assert store.get_adaptation_sample(hid, chl.challenge_id) == sample
    assert store.get_adaptation_sample(other, chl.challenge_id) is None
    approved = replace(chl, status=ChallengeStatus.APPROVED)
    assert store.update_challenge(approved, ChallengeStatus.PENDING)
    assert store.get_adaptation_sample(hid, chl.challenge_id) == sample
    store.record_decision(
        make.decision(hid), "d2", "{}", challenge=replace(chl, status=ChallengeStatus.PASSED),
        expected_status=ChallengeStatus.APPROVED,
    )  # fmt: skip
    assert store.get_adaptation_sample(hid, chl.challenge_id) is None
    # One never answered: purged once its challenge has expired.
    dec2 = make.decision(hid)
    chl2 = make.challenge(hid, dec2.decision_id)
    store.record_decision(
        dec2, "d3", "{}", challenge=chl2, adaptation_sample=_sample(hid, mid, chl2.challenge_id)
    )
    assert store.purge_adaptation_samples(chl2.expires_at - timedelta(seconds=1)) == 0
    assert store.purge_adaptation_samples(chl2.expires_at) == 1
    assert store.get_adaptation_sample(hid, chl2.challenge_id) is None


def test_a_sample_kept_before_the_enrollment_score_reads_back_as_never_adapting() -> None:
    """A sample sealed without `enrollment_score` (kept by a server before the margin rule) reads
    back as -inf, which the rule refuses; a measured score round-trips exactly, and an unmeasured
    one (-inf) is written as JSON null, not as a non-standard infinity."""
    sample = _sample("hh", "mem", "chl")
    blob = codec.adaptation_sample_to_bytes(sample)
    assert codec.adaptation_sample_from_bytes(blob) == sample
    doc = json.loads(blob)
    del doc["enrollment_score"]
    old = codec.adaptation_sample_from_bytes(json.dumps(doc).encode())
    assert old.enrollment_score == -math.inf
    unmeasured = codec.adaptation_sample_to_bytes(replace(sample, enrollment_score=-math.inf))
    assert json.loads(unmeasured)["enrollment_score"] is None
    assert codec.adaptation_sample_from_bytes(unmeasured).enrollment_score == -math.inf


def test_export_lists_what_adaptation_keeps_without_the_vectors(store: Store, make: Make) -> None:
    """The household's records name how many adapted rows each print has and each pending sample,
    never the vectors."""
    hid, mid, vp = _setup(store, make)
    dec = make.decision(hid)
    chl = make.challenge(hid, dec.decision_id)
    store.record_decision(
        dec, "d1", "{}", challenge=chl, adaptation_sample=_sample(hid, mid, chl.challenge_id),
        voiceprint_update=_update(vp, ROWS),
    )  # fmt: skip
    records = store.household_records(hid)
    (info,) = records.voiceprints
    assert (info.n_adapted, info.adapted_at) == (2, T0)
    samples = [a for a in records.derived_audio if a.what == "adaptation_sample"]
    assert [(a.member_id, a.ref) for a in samples] == [(mid, chl.challenge_id)]
    assert "0.25" not in repr(records.derived_audio)
