"""docs/api.md cannot drift from the protos: every RPC has its own section, every reason code and
event kind is in its table."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos" / "purchaseguard" / "v1"
DOC = (ROOT / "docs" / "api.md").read_text()


def _enum_values(name: str) -> list[str]:
    for proto in PROTOS.glob("*.proto"):
        m = re.search(r"enum " + name + r" \{(.*?)\}", proto.read_text(), re.S)
        if m:
            return re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*=", m.group(1), re.M)
    raise AssertionError(f"no enum {name}")


def test_every_rpc_has_a_section() -> None:
    """Each `rpc Name(` of every proto is a `### Name` heading, and each service is named."""
    rpcs = {
        name
        for proto in PROTOS.glob("*.proto")
        for name in re.findall(r"^\s*rpc (\w+)\(", proto.read_text(), re.M)
    }
    assert len(rpcs) > 30
    headings = set(re.findall(r"^### (\w+)$", DOC, re.M))
    assert rpcs - headings == set()
    assert headings - rpcs == set()  # no section for an RPC that is gone
    services = {
        s for proto in PROTOS.glob("*.proto") for s in re.findall(r"^service (\w+)", proto.read_text(), re.M)
    }
    assert all(f"## {s}" in DOC for s in services)


def test_every_reason_code_and_event_kind_is_in_a_table() -> None:
    """Each ReasonCode and EventKind value is a row (`| `CODE` |`) of the doc's tables."""
    for enum in ("ReasonCode", "EventKind"):
        values = _enum_values(enum)
        assert values
        missing = [v for v in values if f"| `{v}` |" not in DOC]
        assert missing == [], f"{enum} values missing from docs/api.md: {missing}"


def test_every_rpc_section_says_who_or_inherits_it() -> None:
    """Each RPC section gives an example; sections that differ from their service's callers say who."""
    for m in re.finditer(r"^### (\w+)\n(.*?)(?=^#{2,3} )", DOC, re.M | re.S):
        assert "**Example:**" in m.group(2) or "```sh" in m.group(2), m.group(1)
