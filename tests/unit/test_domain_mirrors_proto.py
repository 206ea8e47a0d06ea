"""The domain's enums and the wire's enums name the same values, so nothing is lost in conversion."""

from __future__ import annotations

import enum

import pytest

from purchase_guard._gen.purchaseguard.v1 import common_pb2
from purchase_guard.domain import ChallengeMethod, Effect, Outcome, ReasonCode, Role


def _proto_names(enum_name: str) -> set[str]:
    values = common_pb2.DESCRIPTOR.enum_types_by_name[enum_name].values
    return {v.name for v in values if v.number != 0}


@pytest.mark.parametrize(
    ("domain", "proto"),
    [(ReasonCode, "ReasonCode"), (Outcome, "Outcome"), (Role, "Role"), (ChallengeMethod, "ChallengeMethod")],
)
def test_each_domain_enum_has_exactly_the_proto_values(domain: type[enum.Enum], proto: str) -> None:
    """Every domain value has a proto value of the same name and every proto value (but the
    unspecified zero) a domain value: a new code added on one side only fails here."""
    assert {m.value for m in domain} == _proto_names(proto)


def test_effects_map_one_to_one_onto_the_wire() -> None:
    """Each Effect has its own proto value (the wire names differ where proto's names would clash)."""
    assert len(Effect) == len(_proto_names("Effect"))
