"""The digit content check on synthetic and tiny inputs: alignment, scoring, containers, loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from purchase_guard.errors import Unavailable
from purchase_guard.voice.audio import Pcm
from purchase_guard.voice.digits import (
    DigitHypothesis,
    DigitTemplates,
    base,
    load_digit_checker,
    validate_expected,
)
from purchase_guard.voice.digits.align import FILLER, PAUSE, UnitInstance, align
from purchase_guard.voice.digits.dtw import FEATURES
from purchase_guard.voice.digits.model import BANK_FILE, META_FILE

PACKAGED = Path(base.__file__).resolve().parent


def _local_two_words() -> np.ndarray:
    """Six frames: the first three fit template "1" (columns 0-2), the last three template "2" (3-5)."""
    local = np.full((6, 8), 2.0)
    for i in range(3):
        local[i, i] = 0.1
        local[3 + i, 3 + i] = 0.1
    local[:, 6] = 3.0  # pause column
    local[:, 7] = 1.5  # filler column
    return local


def _units(order: str) -> list[UnitInstance]:
    cols = {"1": np.arange(0, 3), "2": np.arange(3, 6)}
    n = len(order)
    units = [UnitInstance(FILLER, np.array([7]), 0, 0), UnitInstance(FILLER, np.array([7]), n, n)]
    units += [UnitInstance(PAUSE, np.array([6]), k, k) for k in range(n + 1)]
    units += [UnitInstance(d, cols[d], k, k + 1) for k, d in enumerate(order)]
    return units


def test_forced_alignment_finds_the_words_and_their_boundaries() -> None:
    """Aligning "12" to audio that says 1 then 2 costs 6 x 0.1 and cuts at frame 3."""
    path = align(_local_two_words(), _units("12"), final_level=2, stay_penalty=0.1)
    assert path.cost == pytest.approx(0.6)
    assert path.digits == "12"
    assert [(s.label, s.start, s.end) for s in path.segments] == [("1", 0, 2), ("2", 3, 5)]
    assert path.digit_span() == (0, 5)


def test_wrong_order_costs_more_than_the_right_one() -> None:
    """Forcing "21" onto audio that says "12" is dearer than the true order; free decoding finds "12"."""
    local = _local_two_words()
    right = align(local, _units("12"), 2, 0.1)
    wrong = align(local, _units("21"), 2, 0.1)
    assert wrong.cost > right.cost + 1.0
    free_units = [UnitInstance(FILLER, np.array([7]), 0, 0), UnitInstance(PAUSE, np.array([6]), 0, 0)]
    free_units += [UnitInstance("1", np.arange(0, 3), 0, 0), UnitInstance("2", np.arange(3, 6), 0, 0)]
    free = align(local, free_units, 0, 0.1)
    assert free.digits == "12"
    assert free.cost == pytest.approx(right.cost)


def test_audio_too_short_for_the_expected_digits_cannot_align() -> None:
    """Two frames cannot hold two three-frame words at no faster than double pace: cost is infinite."""
    path = align(_local_two_words()[:2], _units("12"), 2, 0.1)
    assert not np.isfinite(path.cost)
    assert path.segments == ()


@pytest.mark.parametrize(
    "bad", ["123", "123456789", "12a4", "12 34", "\u0661\u0662\u0663\u0664", "", "\uff11\uff12\uff13\uff14"]
)
def test_expected_digits_outside_4_to_8_ascii_digits_are_a_caller_bug(bad: str) -> None:
    """Anything but 4-8 ASCII digits raises ValueError, and the message does not echo the input."""
    with pytest.raises(ValueError, match="ASCII digits") as info:
        validate_expected(bad)
    assert bad not in str(info.value) or bad == ""


def test_problem_texts_hold_no_digits() -> None:
    """Every fixed problem sentence is free of digits, so no PIN can ride along into a reason."""
    texts = [v for k, v in vars(base).items() if k.isupper() and isinstance(v, str)]
    assert len(texts) >= 5
    assert not any(c.isdigit() for t in texts for c in t)


def test_hypothesis_repr_hides_the_digits() -> None:
    """A DigitHypothesis printed in a traceback or log shows how many digits, not which."""
    h = DigitHypothesis("4719", (0.1, 1.9), 0.3, "")
    assert "4719" not in repr(h)
    assert "n_digits=4" in repr(h)


def _templates() -> DigitTemplates:
    rng = np.random.default_rng(3)
    return DigitTemplates(
        {
            "1": (rng.standard_normal((30, 26)).astype(np.float32),),
            "7": tuple(rng.standard_normal((n, 26)).astype(np.float32) for n in (20, 41)),
        },
        FEATURES,
    )


def test_templates_round_trip_through_bytes() -> None:
    """to_bytes/from_bytes keeps every template (float16 precision), its digit and the feature name."""
    t = _templates()
    back = DigitTemplates.from_bytes(t.to_bytes())
    assert back.features == FEATURES
    assert back.digits_covered == "17"
    assert back.count() == 3
    for d in "17":
        for a, b in zip(t.by_digit[d], back.by_digit[d], strict=True):
            assert a.shape == b.shape
            assert np.allclose(a, b, atol=2e-3)


def test_speaker_takes_round_trip_and_old_containers_have_none() -> None:
    """The digit takes' speaker embeddings survive to_bytes/from_bytes with their encoder; a
    container written without them still loads, with no speaker takes."""
    rng = np.random.default_rng(5)
    takes = [tuple(float(x) for x in rng.standard_normal(256)) for _ in range(3)]
    t = _templates().with_speaker_takes("enc/1", takes)
    back = DigitTemplates.from_bytes(t.to_bytes())
    assert back.speaker_encoder == "enc/1"
    assert np.allclose(np.asarray(back.speaker_takes), np.asarray(takes), atol=1e-6)
    plain = DigitTemplates.from_bytes(_templates().to_bytes())
    assert plain.speaker_takes == ()
    assert plain.speaker_encoder == ""


def test_speaker_takes_without_an_encoder_or_of_a_bad_shape_are_refused() -> None:
    """Embeddings that cannot say which encoder made them, or are not embeddings, are refused."""
    with pytest.raises(ValueError, match="speaker take"):
        DigitTemplates(_templates().by_digit, FEATURES, "", ((0.0,) * 256,))
    with pytest.raises(ValueError, match="speaker take"):
        DigitTemplates(_templates().by_digit, FEATURES, "enc/1", ((float("nan"),) * 256,))
    with pytest.raises(ValueError, match="speaker take"):
        DigitTemplates(_templates().by_digit, FEATURES, "enc/1", ((0.0,) * 3,))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b.replace(b'"version": 1', b'"version": 9'),
        lambda b: b"not templates at all",
        lambda b: b.replace(b"purchase-guard/digit-templates", b"something-else"),
    ],
)
def test_damaged_template_bytes_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    """A truncated, foreign or future-version blob raises ValueError instead of decoding to junk."""
    with pytest.raises(ValueError, match="digit templates"):
        DigitTemplates.from_bytes(mangle(_templates().to_bytes()))


def test_templates_of_the_wrong_shape_are_refused() -> None:
    """Templates with another frame width, or keyed by something but a digit, cannot be built."""
    with pytest.raises(ValueError, match="shape"):
        DigitTemplates({"1": (np.zeros((10, 39), np.float32),)}, FEATURES)
    with pytest.raises(ValueError, match="single digits"):
        DigitTemplates({"x": (np.zeros((10, 26), np.float32),)}, FEATURES)


def test_packaged_model_loads_and_records_what_it_was_fitted_on() -> None:
    """The shipped model loads, names itself, and its JSON says which data and script made it."""
    checker = load_digit_checker()
    assert checker.name.startswith("digits-dtw/")
    fitted = checker.model.fitted_on
    assert fitted["script"] == "scripts/train_digits.py"
    assert set(fitted["bank"]["fsdd_speakers"]) == {
        "george",
        "jackson",
        "lucas",
        "nicolas",
        "theo",
        "yweweler",
    }
    labels = {t.label for t in checker.model.bank}
    assert labels == set("0123456789")
    p = checker.model.params
    assert p.threshold_generic <= 0.0
    assert p.threshold_member <= 0.0


def _copy_model(tmp_path: Path) -> Path:
    for name in (META_FILE, BANK_FILE):
        shutil.copy(PACKAGED / name, tmp_path / name)
    return tmp_path


def test_missing_model_files_are_unavailable(tmp_path: Path) -> None:
    """No JSON, or no bank, raises Unavailable (the caller fails closed)."""
    with pytest.raises(Unavailable, match="could not be read"):
        load_digit_checker(tmp_path)
    _copy_model(tmp_path)
    (tmp_path / BANK_FILE).unlink()
    with pytest.raises(Unavailable, match="could not be read"):
        load_digit_checker(tmp_path)


def test_a_damaged_or_swapped_bank_is_unavailable(tmp_path: Path) -> None:
    """A bank whose bytes differ from the recorded SHA-256 is refused, as is a broken JSON."""
    d = _copy_model(tmp_path)
    blob = bytearray((d / BANK_FILE).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (d / BANK_FILE).write_bytes(bytes(blob))
    with pytest.raises(Unavailable, match="SHA-256"):
        load_digit_checker(d)
    other = tmp_path / "other"
    other.mkdir()
    d2 = _copy_model(other)
    (d2 / META_FILE).write_text("{not json")
    with pytest.raises(Unavailable):
        load_digit_checker(d2)


def test_a_model_for_other_features_is_unavailable(tmp_path: Path) -> None:
    """A model made with another feature extractor is refused rather than scored with these frames."""
    d = _copy_model(tmp_path)
    meta = json.loads((d / META_FILE).read_text())
    meta["features"] = "other-features/9"
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(Unavailable, match="features"):
        load_digit_checker(d)


def test_silence_noise_and_tones_are_refused_without_an_exception() -> None:
    """Non-speech gives accepted=False with a digit-free problem; only a broken model raises."""
    checker = load_digit_checker()
    rng = np.random.default_rng(0)
    t = np.arange(32_000) / 16_000
    inputs = [
        np.zeros(32_000, np.float32),
        (0.1 * rng.standard_normal(32_000)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        np.zeros(100, np.float32),
    ]
    for x in inputs:
        for templates in (None, _templates()):
            result = checker.check(Pcm(x), "4719", templates)
            assert not result.accepted
            assert result.problem
            assert not any(c.isdigit() for c in result.problem)
            hyp = checker.recognise(Pcm(x), 4, templates)
            assert not any(c.isdigit() for c in hyp.problem)
