"""The content check of a challenge answer: does this audio say these digits, in this voice?

    checker = load_digit_checker()                # once at start; Unavailable if the model is broken
    templates = build_digit_templates(takes)      # guided enrollment (ENROLLMENT_PROMPTS), optional
    result = checker.check(pcm, expected, templates)

Offline, numpy only (no torch). Method, protocol and measured accuracy: docs/challenges.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.digits.base import (
    MAX_DIGITS,
    MIN_DIGITS,
    DigitCheck,
    DigitChecker,
    DigitHypothesis,
    validate_expected,
)
from purchase_guard.voice.digits.checker import (
    ENROLLMENT_PROMPTS,
    TemplateDigitChecker,
    load_template_checker,
)
from purchase_guard.voice.digits.templates import DigitTemplates

__all__ = [
    "ENROLLMENT_PROMPTS",
    "MAX_DIGITS",
    "MIN_DIGITS",
    "DigitCheck",
    "DigitChecker",
    "DigitHypothesis",
    "DigitTemplates",
    "TemplateDigitChecker",
    "build_digit_templates",
    "load_digit_checker",
    "validate_expected",
]


def load_digit_checker(model_dir: Path | None = None) -> TemplateDigitChecker:
    """The digit checker with the packaged model (or the one in `model_dir`).

    Raises purchase_guard.errors.Unavailable when a model file is missing, damaged or made for
    other features: the caller must then fail closed (no answer passes).
    """
    return load_template_checker(model_dir)


@lru_cache(maxsize=1)
def _default_checker() -> TemplateDigitChecker:
    return load_template_checker()


def build_digit_templates(
    takes: Sequence[tuple[Pcm, str]], checker: TemplateDigitChecker | None = None
) -> DigitTemplates:
    """A member's digit templates from guided enrollment takes (audio, digits prompted).

    Takes are cut into digits by forced alignment with the packaged model (or `checker`'s).
    Raises EnrollmentRejected when a take does not say its prompt or a digit is not covered,
    Unavailable when the model cannot be loaded.
    """
    return (checker if checker is not None else _default_checker()).build_templates(takes)
