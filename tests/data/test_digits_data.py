"""The digit content check on real FSDD and speechocean762 digits with the packaged model.

FSDD answers use takes 10-49; the member's templates come from takes 0-2 joined into the
enrollment prompts, as guided enrollment would record them. speechocean answers are a
speaker's digit strings, with templates from that speaker's other strings.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from purchase_guard.errors import EnrollmentRejected
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.digits import (
    ENROLLMENT_PROMPTS,
    DigitTemplates,
    TemplateDigitChecker,
    build_digit_templates,
    load_digit_checker,
)
from purchase_guard.voice.digits.corpus import fsdd_join, load_flac, speechocean_utterances
from purchase_guard.voice.digits.training import fsdd_enrollment

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def checker() -> TemplateDigitChecker:
    return load_digit_checker()


@pytest.fixture(scope="module")
def jackson(data_dir: Path, checker: TemplateDigitChecker) -> DigitTemplates:
    takes = [(pcm, prompt) for pcm, prompt, _ in fsdd_enrollment(data_dir, "jackson")]
    assert [p for _, p in takes] == list(ENROLLMENT_PROMPTS)
    return build_digit_templates(takes, checker)


def _answers(data: Path, speaker: str, n: int, seed: int) -> list[tuple[Pcm, str, list[tuple[float, float]]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(4))
        pcm, bounds = fsdd_join(data, speaker, digits, [rng.randrange(10, 50) for _ in digits], rng)
        out.append((pcm, digits, bounds))
    return out


def _changed(digits: str, i: int) -> str:
    return digits[:i] + str((int(digits[i]) + 3) % 10) + digits[i + 1 :]


def test_enrolled_templates_cover_every_digit_and_round_trip(
    checker: TemplateDigitChecker, jackson: DigitTemplates, data_dir: Path
) -> None:
    """Guided enrollment yields templates of all ten digits; after to_bytes/from_bytes they score the same."""
    assert jackson.digits_covered == "0123456789"
    back = DigitTemplates.from_bytes(jackson.to_bytes())
    pcm, digits, _ = _answers(data_dir, "jackson", 1, 5)[0]
    a = checker.check(pcm, digits, jackson)
    b = checker.check(pcm, digits, back)
    assert a.used_member_templates
    assert b.used_member_templates
    assert b.score == pytest.approx(a.score, abs=0.02)
    assert b.accepted == a.accepted


def test_fsdd_right_answers_pass_and_changed_digits_fail(
    checker: TemplateDigitChecker, jackson: DigitTemplates, data_dir: Path
) -> None:
    """With the member's templates, right answers pass (>= 5 of 6) and every one-digit change fails.

    The span the digits were found in starts before the first digit ends and reaches into the last.
    """
    answers = _answers(data_dir, "jackson", 6, 11)
    passed = 0
    for pcm, digits, bounds in answers:
        right = checker.check(pcm, digits, jackson)
        passed += right.accepted
        start, end = right.span
        assert start <= bounds[0][1] - 0.1
        assert end >= bounds[-1][0] + 0.1
        assert end <= pcm.duration_s + 1e-6
        for i in (0, 3):
            wrong = checker.check(pcm, _changed(digits, i), jackson)
            assert not wrong.accepted
            assert wrong.problem
            assert not any(c.isdigit() for c in wrong.problem)
    assert passed >= 5


def test_reversed_speech_of_the_same_voice_fails(
    checker: TemplateDigitChecker, jackson: DigitTemplates, data_dir: Path
) -> None:
    """The member's own voice played backwards (not words) never passes, with or without templates."""
    for pcm, digits, _ in _answers(data_dir, "jackson", 4, 12):
        rev = Pcm(np.ascontiguousarray(pcm.samples[::-1]))
        assert not checker.check(rev, digits, jackson).accepted
        assert not checker.check(rev, digits, None).accepted


def test_recognise_reads_back_a_right_answer(
    checker: TemplateDigitChecker, jackson: DigitTemplates, data_dir: Path
) -> None:
    """Fixed-length recognition with the member's templates reads most answers back exactly (>= 4 of 5)."""
    right = 0
    for pcm, digits, _ in _answers(data_dir, "jackson", 5, 13):
        hyp = checker.recognise(pcm, 4, jackson)
        right += hyp.digits == digits
        assert len(hyp.digits) == 4
        assert hyp.span[1] > hyp.span[0]
    assert right >= 4


def test_enrollment_takes_that_do_not_say_the_prompt_are_rejected(
    checker: TemplateDigitChecker, data_dir: Path
) -> None:
    """Silence or reversed audio offered as an enrollment take is refused, naming the take."""
    takes = [(pcm, prompt) for pcm, prompt, _ in fsdd_enrollment(data_dir, "theo")]
    takes[1] = (Pcm(np.zeros(40_000, np.float32)), takes[1][1])
    takes[2] = (Pcm(np.ascontiguousarray(takes[2][0].samples[::-1])), takes[2][1])
    with pytest.raises(EnrollmentRejected) as info:
        checker.build_templates(takes)
    assert {i for i, _ in info.value.problems} == {1, 2}
    assert not any(c.isdigit() for _, why in info.value.problems for c in why)


def _templates_keeping_good_takes(
    checker: TemplateDigitChecker, takes: list[tuple[Pcm, str]]
) -> DigitTemplates:
    """As the service would: takes the gate refuses are dropped (the member would be asked again)."""
    try:
        return checker.build_templates(takes, require_every_digit=False)
    except EnrollmentRejected as exc:
        bad = {i for i, _ in exc.problems}
        kept = [t for i, t in enumerate(takes) if i not in bad]
        assert kept, "every take was refused"
        return checker.build_templates(kept, require_every_digit=False)


def test_speechocean_child_strings_rank_right_and_other_sentences_fail(
    checker: TemplateDigitChecker, data_dir: Path
) -> None:
    """Speaker 1092, a child with five digit strings, templates from the other four strings.

    Children's right answers mostly do NOT clear the threshold (measured: docs/challenges.md), so
    what must hold is the safe side: the right digits score above a one-digit change of them in
    at least four of five strings, no changed string passes, and none of four of the child's other
    sentences passes as digits.
    """
    utts = [u for u in speechocean_utterances(data_dir) if u.speaker == "1092"]
    strings = [u for u in utts if u.digits]
    assert len(strings) == 5
    audio = {u.utt_id: load_flac(u.path) for u in utts}
    ranked = 0
    for u in strings:
        others = [(audio[v.utt_id], v.digits) for v in strings if v.utt_id != u.utt_id]
        templates = _templates_keeping_good_takes(checker, others)
        right = checker.check(audio[u.utt_id], u.digits, templates)
        wrong = checker.check(audio[u.utt_id], _changed(u.digits, 1), templates)
        ranked += right.score > wrong.score
        assert not wrong.accepted
    assert ranked >= 4
    every = _templates_keeping_good_takes(checker, [(audio[v.utt_id], v.digits) for v in strings])
    sentences = [u for u in utts if not u.digits][:4]
    assert len(sentences) == 4
    for u in sentences:
        if not u.digits:
            result = checker.check(audio[u.utt_id], "4719", every)
            assert not result.accepted
            assert not any(c.isdigit() for c in result.problem)
