"""The template digit checker behind the DigitChecker protocol, and guided enrollment.

Answers are aligned against the member's own enrolled digit templates when there are any,
together with the packaged bank from many speakers (which covers digits a member's templates
lack, and is all there is for members enrolled before digit templates existed). The two modes
have their own thresholds because a member's own templates fit their voice far more closely.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from purchase_guard.errors import EnrollmentRejected
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.digits import dtw
from purchase_guard.voice.digits.align import Segment
from purchase_guard.voice.digits.base import (
    NO_DIGITS_HEARD,
    NO_SPEECH,
    NOT_THE_DIGITS,
    TOO_SHORT,
    WRONG_LENGTH,
    DigitCheck,
    DigitHypothesis,
    validate_expected,
)
from purchase_guard.voice.digits.features import mfcc
from purchase_guard.voice.digits.model import DigitModel, load_model
from purchase_guard.voice.digits.templates import (
    DIGITS,
    MAX_TEMPLATE_FRAMES,
    DigitTemplates,
    Frames,
    templates_from_segments,
)

# Guided enrollment: six strings, every digit three times, in different neighbours each time so
# a template is not always cut from the same co-articulation; about 15 s of speaking in all.
# A third template per digit was measured to help (docs/challenges.md).
ENROLLMENT_PROMPTS: tuple[str, ...] = ("01234", "56789", "97531", "86420", "13579", "02468")
_MIN_SEGMENT_FRAMES = 8  # 80 ms: shorter "digits" are alignment artefacts
TAKE_UNALIGNED = "the digits in the take could not be told apart"
TAKE_MISMATCH = "the take does not say the digits it was prompted with"


class TemplateDigitChecker:
    """DTW digit verification (name recorded with each decision). Thread-safe: holds no mutable state."""

    def __init__(self, model: DigitModel) -> None:
        self.model = model
        self.name = model.name
        self._bank = dtw.TemplateSet.of(model.bank)

    def warm_up(self) -> None:
        """Compile the alignment kernel (numba) before the first answer; call once at start."""
        rng = np.random.default_rng(0)
        noise = (0.05 * rng.standard_normal(16_000)).astype(np.float32)
        self.score_any(Pcm(noise), "0000", None)

    def _templates(self, templates: DigitTemplates | None) -> tuple[list[dtw.TemplateSet], bool]:
        own = dtw.member_templates(templates)
        if templates is not None and templates.features != dtw.FEATURES:
            # Templates from another feature extractor cannot be compared; use the bank alone.
            own = []
        return [dtw.TemplateSet.of(own), self._bank], bool(own)

    def check(self, pcm: Pcm, expected: str, templates: DigitTemplates | None) -> DigitCheck:
        validate_expected(expected)
        return self.score_any(pcm, expected, templates)

    def score_any(self, pcm: Pcm, expected: str, templates: DigitTemplates | None) -> DigitCheck:
        """`check` without the 4-8 length rule (the evaluation also scores 3-digit strings)."""
        sets, _ = self._templates(templates)
        # The member threshold is for templates of every expected digit (what guided enrollment
        # gives); with gaps the bank speaks for those digits, so the bank's threshold applies.
        mine = templates is not None and set(expected) <= set(self._own_digits(templates))
        params = self.model.params
        threshold = params.threshold_member if mine else params.threshold_generic
        prep = dtw.prepare(pcm, sets, params)
        if not dtw.enough_voice(prep):
            return DigitCheck(False, -np.inf, threshold, (0.0, 0.0), NO_SPEECH, self.name, mine)
        scored = dtw.score(prep, expected, params)
        if not np.isfinite(scored.score):
            return DigitCheck(False, -np.inf, threshold, (0.0, 0.0), TOO_SHORT, self.name, mine)
        accepted = scored.score >= threshold
        return DigitCheck(
            accepted=accepted,
            score=float(scored.score),
            threshold=threshold,
            span=dtw.span_seconds(scored.forced),
            problem="" if accepted else NOT_THE_DIGITS,
            checker=self.name,
            used_member_templates=mine,
        )

    @staticmethod
    def _own_digits(templates: DigitTemplates) -> str:
        return templates.digits_covered if templates.features == dtw.FEATURES else ""

    def recognise(self, pcm: Pcm, n_digits: int | None, templates: DigitTemplates | None) -> DigitHypothesis:
        if n_digits is not None and not 1 <= n_digits <= 8:
            raise ValueError("n_digits must be between 1 and 8")
        every, _ = self._templates(templates)
        params = self.model.params
        prep = dtw.prepare(pcm, every, params)
        if not dtw.enough_voice(prep):
            return DigitHypothesis("", (0.0, 0.0), 0.0, NO_SPEECH)
        path = dtw.free(prep, params, n_digits)
        if not np.isfinite(path.cost):
            return DigitHypothesis("", (0.0, 0.0), 0.0, TOO_SHORT if n_digits else NO_DIGITS_HEARD)
        digits = path.digits
        if not digits:
            return DigitHypothesis("", (0.0, 0.0), 0.0, NO_DIGITS_HEARD)
        span = dtw.span_seconds(path)
        margins = []
        for seg in path.segments:
            if seg.label.isdigit():
                frames = prep.local[seg.start : seg.end + 1]
                # The cheapest template frame per answer frame is an optimistic fit; against the
                # filler it says how far the stretch is from "not a digit at all".
                margins.append(params.filler_cost - float(frames[:, : prep.pause_column].min(axis=1).mean()))
        problem = "" if n_digits is None or len(digits) == n_digits else WRONG_LENGTH
        return DigitHypothesis(digits, span, float(np.mean(margins)), problem)

    def check_take(self, pcm: Pcm, prompt: str) -> str:
        """Live feedback on one guided take: "" when it can be cut into its prompt's digits and
        sounds like them to the packaged bank, else the problem (the same words EnrollDigits
        uses). EnrollDigits still checks each take against the member's other takes."""
        if not prompt or not all("0" <= c <= "9" for c in prompt) or len(prompt) > 8:
            raise ValueError("enrollment prompts are 1-8 ASCII digits")
        params = self.model.params
        prep, cut = self._cut_take(pcm, prompt)
        if isinstance(cut, str):
            return cut
        result = dtw.score(prep, prompt, params)
        return "" if result.score >= params.threshold_enroll_generic else TAKE_MISMATCH

    def _cut_take(self, pcm: Pcm, prompt: str) -> tuple[dtw.Prepared, list[Segment] | str]:
        """A take forced-aligned to its prompt against the bank: its digit segments, or the
        problem (no speech, or digits too short or long to be told apart)."""
        prep = dtw.prepare(pcm, [self._bank], self.model.params)
        if not dtw.enough_voice(prep):
            return prep, NO_SPEECH
        path = dtw.forced(prep, prompt, self.model.params)
        segs = [s for s in path.segments if s.label.isdigit()]
        if not np.isfinite(path.cost) or any(
            not _MIN_SEGMENT_FRAMES <= s.end - s.start + 1 <= MAX_TEMPLATE_FRAMES for s in segs
        ):
            return prep, TAKE_UNALIGNED
        return prep, segs

    def build_templates(
        self, takes: Sequence[tuple[Pcm, str]], require_every_digit: bool = True
    ) -> DigitTemplates:
        """Templates from guided enrollment takes (audio, digits prompted), cut by forced alignment.

        Each take is cut against the packaged bank, then checked against the templates of the
        member's other takes: a take that does not say its prompt (silence, other words, a
        recording played backwards) does not match them and is refused. Raises
        EnrollmentRejected listing (take index, reason); ValueError for a malformed prompt.
        """
        params = self.model.params
        cut: dict[int, list[tuple[str, Frames]]] = {}
        problems: list[tuple[int, str]] = []
        for index, (pcm, prompt) in enumerate(takes):
            if not prompt or not all("0" <= c <= "9" for c in prompt) or len(prompt) > 8:
                raise ValueError("enrollment prompts are 1-8 ASCII digits")
            _, segs = self._cut_take(pcm, prompt)
            if isinstance(segs, str):
                problems.append((index, segs))
                continue
            feats = mfcc(pcm.samples)
            cut[index] = [(s.label, feats[s.start : s.end + 1]) for s in segs]
        # One bad take spoils the templates the others are checked against, so the worst take
        # is refused first and the rest are checked again without it.
        while cut:
            worst, worst_margin = -1, 0.0
            for index in sorted(cut):
                pcm, prompt = takes[index]
                others = [p for j, ps in cut.items() if j != index for p in ps]
                covered = set(prompt) <= {d for d, _ in others}
                own = dtw.TemplateSet.of([dtw.Template(d, f) for d, f in others])
                result = dtw.score(dtw.prepare(pcm, [own, self._bank], params), prompt, params)
                # With the other takes covering the prompt, a take must match the member's own
                # voice saying those digits; otherwise only the packaged bank can vouch for it.
                gate = params.threshold_enroll if covered else params.threshold_enroll_generic
                margin = result.score - gate
                if margin < worst_margin:
                    worst, worst_margin = index, margin
            if worst < 0:
                break
            problems.append((worst, TAKE_MISMATCH))
            del cut[worst]
        if problems:
            raise EnrollmentRejected("some digit enrollment takes are unusable", tuple(sorted(problems)))
        pieces = [p for index in sorted(cut) for p in cut[index]]
        missing = [d for d in DIGITS if d not in {p[0] for p in pieces}]
        if missing and require_every_digit:
            raise EnrollmentRejected("the digit enrollment takes do not cover every digit")
        return templates_from_segments(pieces, dtw.FEATURES)


def load_template_checker(directory: Path | None = None) -> TemplateDigitChecker:
    return TemplateDigitChecker(load_model(directory))
