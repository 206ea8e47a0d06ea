"""Order digests bind a challenge to one exact order; digit digests to one exact answer."""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purchase_guard.challenge.digest import digits_digest, digits_match, order_digest
from purchase_guard.domain import LineItem, Money, Order

ITEMS = (
    LineItem("sku-1", "AA batteries", "household", 2, Money(499, "USD")),
    LineItem("sku-2", "Caf\u00e9 beans", "grocery", 1, Money(1_299, "USD")),
)
ORDER = Order(items=ITEMS, total=Money(2_297, "USD"), merchant="shop")
# Computed once from the v1 encoding; if this changes, every pending challenge stops matching.
KNOWN_DIGEST = "f65d3b8f1ce172ed5c1a067262ba160d8c8f63461408a9d183daf7ed3d8f4b2e"


def test_digest_is_sha256_hex_and_stable() -> None:
    """The digest is 64 lower-case hex characters and the same for the same input every time."""
    digest = order_digest("hh_1", ORDER)
    assert len(digest) == 64
    assert digest == digest.lower()
    int(digest, 16)
    assert order_digest("hh_1", ORDER) == digest


def test_digest_known_answer() -> None:
    """The encoding is frozen: a known order gives a known digest, so stored challenges stay valid."""
    assert order_digest("hh_1", ORDER) == KNOWN_DIGEST


def test_item_order_does_not_matter() -> None:
    """Reordering the basket's items gives the same digest."""
    swapped = dataclasses.replace(ORDER, items=ITEMS[::-1])
    assert order_digest("hh_1", swapped) == order_digest("hh_1", ORDER)


def test_unicode_normal_form_does_not_matter() -> None:
    """A title written with a combining accent digests like the precomposed one (NFC)."""
    decomposed = dataclasses.replace(ITEMS[1], title="Cafe\u0301 beans")
    other = dataclasses.replace(ORDER, items=(ITEMS[0], decomposed))
    assert order_digest("hh_1", other) == order_digest("hh_1", ORDER)


def _item(i: int, **changes: object) -> Callable[[Order], Order]:
    def change(order: Order) -> Order:
        items = list(order.items)
        items[i] = dataclasses.replace(items[i], **changes)  # type: ignore[arg-type]
        return dataclasses.replace(order, items=tuple(items))

    return change


MUTATIONS: dict[str, Callable[[Order], Order]] = {
    "sku": _item(0, sku="sku-9"),
    "title": _item(0, title="AAA batteries"),
    "category": _item(0, category="Household"),
    "quantity": _item(0, quantity=3),
    "unit price": _item(0, unit_price=Money(500, "USD")),
    "unit currency": _item(0, unit_price=Money(499, "EUR")),
    "total": lambda o: dataclasses.replace(o, total=Money(2_298, "USD")),
    "total currency": lambda o: dataclasses.replace(o, total=Money(2_297, "EUR")),
    "merchant": lambda o: dataclasses.replace(o, merchant="shop2"),
    "extra item": lambda o: dataclasses.replace(o, items=(*o.items, o.items[0])),
    "dropped item": lambda o: dataclasses.replace(o, items=o.items[:1]),
    "trailing space": lambda o: dataclasses.replace(o, merchant="shop "),
}


@pytest.mark.parametrize("field", sorted(MUTATIONS))
def test_any_field_change_changes_digest(field: str) -> None:
    """Changing any single field of the order (or adding/removing an item) changes the digest."""
    assert order_digest("hh_1", MUTATIONS[field](ORDER)) != order_digest("hh_1", ORDER)


def test_household_is_part_of_digest() -> None:
    """The same order in another household digests differently."""
    assert order_digest("hh_2", ORDER) != order_digest("hh_1", ORDER)


def test_field_boundaries_are_unambiguous() -> None:
    """Moving text between adjacent fields (sku "ab"+title "c" vs "a"+"bc") changes the digest."""
    one = dataclasses.replace(ORDER, items=(LineItem("ab", "c", "x", 1, Money(1, "USD")),))
    two = dataclasses.replace(ORDER, items=(LineItem("a", "bc", "x", 1, Money(1, "USD")),))
    assert order_digest("hh_1", one) != order_digest("hh_1", two)


text = st.text(max_size=8)
line_items = st.builds(
    LineItem,
    sku=text,
    title=text,
    category=text,
    quantity=st.integers(1, 5),
    unit_price=st.builds(Money, st.integers(0, 10_000), st.sampled_from(["USD", "EUR", "JPY"])),
)
orders = st.builds(
    Order,
    items=st.lists(line_items, min_size=1, max_size=5).map(tuple),
    total=st.builds(Money, st.integers(0, 100_000), st.sampled_from(["USD", "EUR"])),
    merchant=text,
)


@given(st.data(), orders)
def test_permuting_items_never_changes_digest(data: st.DataObject, order: Order) -> None:
    """For any order, any permutation of its items gives the same digest."""
    items = data.draw(st.permutations(order.items))
    assert order_digest("hh", dataclasses.replace(order, items=tuple(items))) == order_digest("hh", order)


@given(orders, orders, text, text)
def test_different_orders_give_different_digests(a: Order, b: Order, hh_a: str, hh_b: str) -> None:
    """Two (household, order) pairs digest alike exactly when they are the same up to item order and NFC."""

    def nfc(value: str) -> str:
        return unicodedata.normalize("NFC", value)

    def canonical(hh: str, order: Order) -> tuple[object, ...]:
        items = sorted(
            (
                nfc(i.sku),
                nfc(i.title),
                nfc(i.category),
                i.quantity,
                i.unit_price.minor_units,
                i.unit_price.currency,
            )
            for i in order.items
        )
        return (nfc(hh), tuple(items), order.total, nfc(order.merchant))

    same = canonical(hh_a, a) == canonical(hh_b, b)
    assert (order_digest(hh_a, a) == order_digest(hh_b, b)) == same


@given(orders, st.sampled_from(sorted(MUTATIONS)))
def test_mutations_change_digest_for_any_order(order: Order, field: str) -> None:
    """For any order, each single-field mutation changes the digest unless it left the order equal."""
    mutated = MUTATIONS[field](order)
    if (
        sorted(map(repr, mutated.items)) == sorted(map(repr, order.items))
        and mutated.total == order.total
        and (mutated.merchant == order.merchant)
    ):
        return
    assert order_digest("hh", mutated) != order_digest("hh", order)


# --- spoken digits ---------------------------------------------------------------------------


def test_digits_match_accepts_transcribed_answer() -> None:
    """The expected digits match when spoken with spaces or dashes, and a wrong answer does not."""
    expected = digits_digest("ch_1", "482917")
    assert digits_match("ch_1", expected, "482917")
    assert digits_match("ch_1", expected, "48 29 17")
    assert digits_match("ch_1", expected, "482-917")
    assert not digits_match("ch_1", expected, "482916")
    assert not digits_match("ch_1", expected, "")


def test_digits_digest_is_keyed_by_challenge() -> None:
    """The same digits in two challenges digest differently, and neither is a plain sha256 of the digits."""
    first, second = digits_digest("ch_1", "482917"), digits_digest("ch_2", "482917")
    assert first != second
    assert first != hashlib.sha256(b"482917").hexdigest()
    assert not digits_match("ch_2", first, "482917")


@pytest.mark.parametrize("stored", ["", "zz", "\u00e9" * 64])
def test_corrupted_expected_digest_is_a_mismatch(stored: str) -> None:
    """A stored digest that is empty or not ASCII hex never matches and never raises."""
    assert not digits_match("ch_1", stored, "482917")


@given(st.text(alphabet="0123456789", min_size=4, max_size=8), st.text(min_size=1, max_size=12))
def test_digits_match_round_trip(digits: str, challenge_id: str) -> None:
    """For any digits and challenge id, the digits match their own digest."""
    assert digits_match(challenge_id, digits_digest(challenge_id, digits), digits)
