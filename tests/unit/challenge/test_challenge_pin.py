"""PIN strength rules and argon2id hashing; the PIN never shows up in a message or repr."""

from __future__ import annotations

import functools
import itertools
import traceback

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purchase_guard.challenge.pin import (
    COMMON_PINS,
    PinHasher,
    is_weak_pin,
    normalize_spoken_digits,
    validate_pin,
)
from purchase_guard.errors import GuardError, InvalidArgument, WeakPin

# The lowest argon2id cost the library accepts: these tests check behaviour, not cost.
PEPPER = b"a household's 32-byte pin pepper"
CHEAP = PinHasher(time_cost=1, memory_cost=8, parallelism=1)
STRONG = ["4829", "7391", "58203", "739164", "5820391", "58203917", "0417"]


@pytest.mark.parametrize("pin", STRONG)
def test_strong_pins_are_accepted(pin: str) -> None:
    """A 4-8 digit PIN without a pattern and not on the common list is accepted."""
    validate_pin(pin)
    assert not is_weak_pin(pin)


@pytest.mark.parametrize(
    "pin",
    [
        "",
        "482",
        "482917365",
        "48a9",
        "4829 ",
        " 4829",
        "48-29",
        "\u0664\u0668\u0662\u0669",
        "\u00b2\u00b3\u2074\u2075",
    ],
)
def test_malformed_pins_are_refused(pin: str) -> None:
    """Anything but 4-8 ASCII digits is refused, including other scripts' digits and separators."""
    with pytest.raises(WeakPin, match="4 to 8 digits"):
        validate_pin(pin)


@pytest.mark.parametrize(
    ("pin", "why"),
    [
        ("0000", "same digit"),
        ("77777777", "same digit"),
        ("3456", "evenly spaced"),
        ("6543", "evenly spaced"),
        ("7890", "evenly spaced"),  # wraps past zero ascending
        ("8901", "evenly spaced"),
        ("0987", "evenly spaced"),  # wraps past zero descending
        ("2109", "evenly spaced"),
        ("13579", "evenly spaced"),
        ("97531", "evenly spaced"),
        ("45678901", "evenly spaced"),
        ("4545", "repeated"),
        ("839839", "repeated"),
        ("58585", "repeated"),
        ("27182718", "repeated"),
        ("1984", "year"),
        ("2024", "year"),
        ("1900", "year"),
        ("2580", "commonly used"),
        ("6969", "repeated"),
        ("1004", "commonly used"),
        ("1122", "commonly used"),
        ("159753", "commonly used"),
    ],
)
def test_guessable_pins_are_refused(pin: str, why: str) -> None:
    """Same digits, evenly spaced runs (with wrap), repeated groups, years and common PINs are refused."""
    with pytest.raises(WeakPin, match=why):
        validate_pin(pin)


def test_datagenetics_top_twenty_all_refused() -> None:
    """Every PIN of DataGenetics' published top twenty is refused."""
    top = (
        "1234 1111 0000 1212 7777 1004 2000 4444 2222 6969 9999 3333 5555 6666 1122 1313 8888 4321 2001 1010"
    )
    for pin in top.split():
        assert is_weak_pin(pin), pin


@pytest.mark.parametrize("pin", sorted(COMMON_PINS))
def test_common_list_entries_are_refused_without_echo(pin: str) -> None:
    """Each common PIN is refused, and neither the message nor the traceback contains it."""
    with pytest.raises(WeakPin) as caught:
        validate_pin(pin)
    assert pin not in str(caught.value)
    assert pin not in "".join(traceback.format_exception(caught.value))
    assert caught.value.__cause__ is None
    assert isinstance(caught.value, InvalidArgument)


def test_weak_pin_is_invalid_argument() -> None:
    """WeakPin is an InvalidArgument, so the API maps it to INVALID_ARGUMENT."""
    assert issubclass(WeakPin, InvalidArgument)


@functools.cache
def _runs(length: int) -> frozenset[str]:
    ring = "0123456789" * 3
    runs = {ring[i : i + length] for i in range(10)}
    runs |= {r[::-1] for r in runs}
    runs |= {"".join(str((s + k * d) % 10) for k in range(length)) for s in range(10) for d in range(10)}
    return frozenset(runs)


def _independently_weak(pin: str) -> bool:
    # Each rule restated another way, to check the module's implementation against.
    runs = _runs(len(pin))
    repeated = any(len(pin) % p == 0 and pin[:p] * (len(pin) // p) == pin for p in range(1, len(pin))) or any(
        pin == (pin[:p] * len(pin))[: len(pin)] for p in range(1, len(pin) // 2 + 1)
    )
    year = len(pin) == 4 and pin[:2] in {"19", "20"} and int(pin) <= 2039
    return pin in runs or repeated or year or pin in COMMON_PINS


def test_all_four_digit_pins_classified_as_the_rules_say() -> None:
    """Over all 10,000 four-digit PINs, validate_pin refuses exactly the independently weak ones."""
    for digits in itertools.product("0123456789", repeat=4):
        pin = "".join(digits)
        assert is_weak_pin(pin) == _independently_weak(pin), pin


@given(st.text(alphabet="0123456789", min_size=4, max_size=8))
def test_pin_strength_matches_independent_rules(pin: str) -> None:
    """For any 4-8 digit string, validate_pin accepts exactly the ones no rule calls weak."""
    assert is_weak_pin(pin) == _independently_weak(pin)
    if is_weak_pin(pin):
        with pytest.raises(WeakPin):
            validate_pin(pin)
    else:
        validate_pin(pin)


@given(st.text(min_size=1, max_size=12).filter(lambda s: not (s.isascii() and s.isdigit())))
def test_anything_not_plain_digits_is_refused(pin: str) -> None:
    """Any string containing something other than ASCII digits is refused."""
    with pytest.raises(WeakPin):
        validate_pin(pin)


@pytest.mark.parametrize(
    ("spoken", "digits"),
    [
        ("48 29", "4829"),
        ("4-8-2-9", "4829"),
        (" 4, 8, 2, 9. ", "4829"),
        ("48\u201329", "4829"),
        ("4829", "4829"),
    ],
)
def test_spoken_separators_are_removed(spoken: str, digits: str) -> None:
    """Spaces, dashes (ASCII and typographic), commas and full stops from a transcript are dropped."""
    assert normalize_spoken_digits(spoken) == digits


def test_hash_and_verify_round_trip() -> None:
    """A hashed PIN verifies with the same PIN, as transcribed with spaces or dashes, and not with another."""
    stored = CHEAP.hash("4829", PEPPER)
    assert stored.startswith("$argon2id$")
    assert CHEAP.verify(stored, "4829", PEPPER)
    assert CHEAP.verify(stored, "48 29", PEPPER)
    assert CHEAP.verify(stored, "4-8-2-9", PEPPER)
    assert not CHEAP.verify(stored, "4828", PEPPER)
    assert not CHEAP.verify(stored, "48290", PEPPER)


@pytest.mark.parametrize("candidate", ["", "four eight two nine", "48", "\u0664\u0668\u0662\u0669", "4829x"])
def test_verify_malformed_candidate_is_false(candidate: str) -> None:
    """A candidate that is not 4-8 digits after normalising is simply a mismatch, never an error."""
    assert not CHEAP.verify(CHEAP.hash("4829", PEPPER), candidate, PEPPER)


def test_the_hash_is_over_the_pepper() -> None:
    """A PIN hashed under one household's pepper verifies only with that pepper: neither without it
    (a stolen database alone) nor with another household's."""
    stored = CHEAP.hash("4829", PEPPER)
    assert not CHEAP.verify(stored, "4829", None)
    assert not CHEAP.verify(stored, "4829", b"another household's pepper....")


def test_a_legacy_unpeppered_hash_still_verifies_without_a_pepper() -> None:
    """Hashes made before peppering (plain argon2id of the PIN) verify with pepper None, so they can
    be replaced at the next right answer."""
    legacy = CHEAP._hasher.hash("4829")  # the format stored by earlier versions
    assert CHEAP.verify(legacy, "4829", None)
    assert not CHEAP.verify(legacy, "4829", PEPPER)


def test_hash_is_salted() -> None:
    """Hashing the same PIN twice gives two different hashes that both verify."""
    first, second = CHEAP.hash("4829", PEPPER), CHEAP.hash("4829", PEPPER)
    assert first != second
    assert CHEAP.verify(first, "4829", PEPPER)
    assert CHEAP.verify(second, "4829", PEPPER)


def test_default_parameters_are_owasp_argon2id() -> None:
    """The default hasher uses argon2id with m=19 MiB, t=2, p=1, and verifies hashes from other settings."""
    hasher = PinHasher()
    stored = hasher.hash("4829", PEPPER)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify(CHEAP.hash("7391", PEPPER), "7391", PEPPER)
    assert hasher.needs_rehash(CHEAP.hash("7391", PEPPER))
    assert not hasher.needs_rehash(stored)


def test_hash_refuses_weak_pin_without_echo() -> None:
    """Hashing a weak PIN raises WeakPin, so a weak PIN can never be stored; the message omits it."""
    with pytest.raises(WeakPin) as caught:
        CHEAP.hash("2580", PEPPER)
    assert "2580" not in str(caught.value)


def test_corrupted_hash_raises_guard_error_not_mismatch() -> None:
    """A stored value that is not an argon2 hash is a server fault (GuardError), not a wrong PIN."""
    with pytest.raises(GuardError, match="not a valid argon2 hash") as caught:
        CHEAP.verify("not-a-hash", "4829", PEPPER)
    assert "4829" not in str(caught.value)
    with pytest.raises(GuardError):
        CHEAP.needs_rehash("not-a-hash")


def test_repr_shows_parameters_only() -> None:
    """The hasher's repr lists its cost parameters and nothing else."""
    assert repr(PinHasher()) == "PinHasher(time_cost=2, memory_cost=19456, parallelism=1)"
