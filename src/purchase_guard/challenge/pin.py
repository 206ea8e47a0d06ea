"""The household PIN: what counts as strong enough, and how it is stored and checked.

A PIN is spoken out loud to the speaker, so it is short by nature; its strength comes from the
online throttle (`throttle.py`), not from its length. What this module can do is refuse the PINs a
child or a visitor would try first, and keep the stored form an argon2id hash that is slow to test.

No message, repr or log line built here ever contains a PIN or a candidate.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import unicodedata

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from purchase_guard.errors import GuardError, WeakPin

__all__ = [
    "MAX_PIN_LENGTH",
    "MIN_PIN_LENGTH",
    "PinHasher",
    "is_weak_pin",
    "normalize_spoken_digits",
    "validate_pin",
]

MIN_PIN_LENGTH = 4
MAX_PIN_LENGTH = 8

# DataGenetics' top twenty from 3.4 million leaked four-digit PINs, then other favourites widely
# reported in leaked sets: keypad lines and shapes (2580, 1470), doubled digits, "love" (5683),
# and the common six- and eight-digit choices. Some overlap the rules below; the list is kept
# whole so it reads as the published one and survives a change to a rule.
COMMON_PINS = frozenset(
    {
        # four digits
        "1234", "1111", "0000", "1212", "7777", "1004", "2000", "4444", "2222", "6969",
        "9999", "3333", "5555", "6666", "1122", "1313", "8888", "4321", "2001", "1010",
        "2580", "0852", "1470", "0741", "3690", "0963", "1478", "8741", "3214", "1236",
        "7410", "9630", "1230", "1357", "2468", "1590", "5683", "0007", "1233", "1221",
        "2112", "1001", "2211", "1123", "1200", "1000", "1024", "7531", "9876", "4567",
        # six digits
        "123456", "654321", "111111", "000000", "121212", "112233", "123123", "696969",
        "159753", "147258", "789456", "102030", "147852", "123321", "123654", "753951",
        "258456", "147369", "741852", "852456", "963852", "159357", "456123", "101010",
        "520520", "131313", "011235", "112358", "142536", "332211", "998877", "100200",
        # eight digits
        "12345678", "87654321", "11223344", "12341234", "11111111", "00000000", "20202020",
        "13579246", "24681357", "19283746",
    }
)  # fmt: skip

# Characters a speech transcript puts between digits ("12 34", "12-34", "1, 2, 3, 4."). Anything
# else (letters, digits of other scripts) is left in place so the candidate fails to match.
_SPOKEN_SEPARATORS = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014\u2212.,]+")

# Four-digit years: the single largest family in leaked PIN sets (birth years, anniversaries).
_FIRST_YEAR, _LAST_YEAR = 1900, 2039


def normalize_spoken_digits(text: str) -> str:
    """Drops the spaces, dashes and punctuation a transcript puts between spoken digits."""
    return _SPOKEN_SEPARATORS.sub("", text)


def _is_pin_shaped(pin: str) -> bool:
    # isascii() first: str.isdigit() alone also accepts "²" and Arabic-Indic digits.
    return MIN_PIN_LENGTH <= len(pin) <= MAX_PIN_LENGTH and pin.isascii() and pin.isdigit()


def _weakness(pin: str) -> str | None:
    """Why `pin` is refused, in words that never contain the PIN itself; None when it is strong."""
    if not _is_pin_shaped(pin):
        return f"PIN must be {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH} digits (0-9) and nothing else"
    digits = [int(c) for c in pin]
    steps = {(b - a) % 10 for a, b in itertools.pairwise(digits)}
    if steps == {0}:
        return "PIN must not be the same digit repeated"
    if len(steps) == 1:
        # One constant step modulo 10: 1234, 4321, and also 7890 / 0987 (wrapping past zero, as on
        # a phone keypad's bottom row) and 1357 / 2468. Each is one guess away from a known start.
        return "PIN must not be a run of evenly spaced digits"
    for period in range(2, len(pin) // 2 + 1):
        if all(pin[i] == pin[i - period] for i in range(period, len(pin))):
            # 1212, 123123, 12121, 12341234: a short chunk typed again is no stronger than the chunk.
            return "PIN must not be a short group of digits repeated"
    if len(pin) == 4 and _FIRST_YEAR <= int(pin) <= _LAST_YEAR:
        return "PIN must not be a year"
    if pin in COMMON_PINS:
        return "PIN is one of the most commonly used PINs"
    return None


def is_weak_pin(pin: str) -> bool:
    """True when `validate_pin` would refuse `pin`."""
    return _weakness(pin) is not None


def validate_pin(pin: str) -> None:
    """Raises WeakPin unless `pin` is 4-8 ASCII digits and not trivially guessable.

    Refused: anything but 4-8 digits; one digit repeated; evenly spaced runs modulo 10 (1234, 9876,
    7890, 0987, 1357); a shorter group repeated (1212, 123123, 12121); four-digit years 1900-2039;
    and COMMON_PINS. Dates such as 0412 are deliberately allowed: refusing every MMDD/DDMM would
    remove a large share of the four-digit space for little gain, as the throttle bounds guessing.
    No normalisation here: a PIN being set comes from a keypad, not a transcript.
    """
    problem = _weakness(pin)
    if problem is not None:
        # `from None`: the PIN must not ride along in a chained traceback either.
        raise WeakPin(problem) from None


def _peppered(pepper: bytes, pin: str) -> str:
    # HMAC with a key that never sits in the database: a stolen copy of the database alone cannot
    # test a single PIN candidate, however many cores are thrown at argon2.
    return hmac.new(pepper, b"purchase-guard/pin/v1\x00" + pin.encode("ascii"), hashlib.sha256).hexdigest()


class PinHasher:
    """argon2id hashing for the household PIN, over a pepper (OWASP's "peppering").

    Defaults are OWASP's password-storage minimum for argon2id (m=19 MiB, t=2, p=1), which costs
    tens of milliseconds per check: invisible next to speech recognition. The hash is over
    HMAC-SHA256(pepper, PIN), the pepper being a key derived from the household's data key
    (`Sealer.derive`), which only the master key opens; the store also seals the hash itself.
    Tests pass cheaper argon2 settings.
    """

    __slots__ = ("_hasher",)

    def __init__(
        self,
        *,
        time_cost: int = 2,
        memory_cost: int = 19 * 1024,  # KiB
        parallelism: int = 1,
        hash_len: int = 32,
        salt_len: int = 16,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=hash_len,
            salt_len=salt_len,
            type=Type.ID,
        )

    def __repr__(self) -> str:
        p = self._hasher
        return f"PinHasher(time_cost={p.time_cost}, memory_cost={p.memory_cost}, parallelism={p.parallelism})"

    def hash(self, pin: str, pepper: bytes) -> str:
        """Validates `pin` (WeakPin if weak) and returns the argon2id hash of it under `pepper`.

        Validating here as well makes this the only door to a stored PIN, so a weak one cannot be
        stored by a caller that forgot to validate.
        """
        validate_pin(pin)
        return self._hasher.hash(_peppered(pepper, pin))

    def verify(self, pin_hash: str, candidate: str, pepper: bytes | None) -> bool:
        """True when the (transcribed) candidate matches; False on any mismatch, never an exception.

        `pepper` is None only for a hash made before hashes were peppered (verified, then rehashed
        with the pepper by the caller). A stored hash that is not an argon2 hash at all raises
        GuardError: that is data corruption, and reporting it as a wrong PIN would lock the
        household out for something they did not do.
        """
        spoken = normalize_spoken_digits(unicodedata.normalize("NFKC", candidate))
        if not _is_pin_shaped(spoken):
            # Could not be any stored PIN; skipping argon2 leaks only the shape, which is no secret.
            return False
        secret = spoken if pepper is None else _peppered(pepper, spoken)
        try:
            return self._hasher.verify(pin_hash, secret)
        except VerifyMismatchError:
            return False
        except InvalidHashError:
            raise GuardError("stored PIN hash is not a valid argon2 hash") from None
        except VerificationError:
            # Other verification failures (e.g. a hash of another argon2 type) are a non-match.
            return False

    def needs_rehash(self, pin_hash: str) -> bool:
        """True when `pin_hash` was made with other parameters; rehash after the next correct PIN."""
        try:
            return self._hasher.check_needs_rehash(pin_hash)
        except InvalidHashError:
            raise GuardError("stored PIN hash is not a valid argon2 hash") from None
