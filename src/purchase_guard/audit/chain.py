"""The per-household audit hash chain: pure functions, no I/O.

Each household's audit entries form a chain: entry `n` carries `seq = n` (starting at 1),
`prev_hash` = the entry hash of entry `n - 1` (`GENESIS` for the first) and its own
`entry_hash`, a sha256 over every field of the entry. Editing any field, deleting or
inserting an entry, or reordering entries breaks the chain at the first affected seq.

Removing entries from the *end* of a chain leaves a valid, shorter chain; only an anchor kept
elsewhere (a previously seen head hash, passed as `expected_head`) can reveal that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from purchase_guard.serial import dumps, format_ts

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    household_id: str
    seq: int
    decision_id: str
    at: datetime
    body: str  # canonical JSON of the masked decision record (as stored: sealed)
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    """Where a household's chain starts after retention purged its oldest entries: the first
    kept entry has seq `seq + 1` and prev_hash `entry_hash`."""

    household_id: str
    seq: int
    entry_hash: str
    at: datetime  # time of the last purged entry


# Domain separation: a hash from this chain cannot be mistaken for any other sha256 use.
_DOMAIN = b"purchase-guard/audit-entry/v1"


def canonical_json(obj: object) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8 kept, NaN/Infinity rejected."""
    return dumps(obj)


def _field(value: str) -> bytes:
    # Length-prefixing every field makes the encoding unambiguous: ("ab", "c") and ("a", "bc")
    # hash differently, which plain concatenation would not guarantee.
    raw = value.encode("utf-8")
    return len(raw).to_bytes(8, "big") + raw


def entry_hash(household_id: str, seq: int, decision_id: str, at_iso: str, body: str, prev_hash: str) -> str:
    """Hex sha256 of the length-prefixed fields of one audit entry."""
    digest = hashlib.sha256()
    digest.update(_field(_DOMAIN.decode("ascii")))
    for part in (household_id, str(seq), decision_id, at_iso, body, prev_hash):
        digest.update(_field(part))
    return digest.hexdigest()


def hash_of(entry: AuditEntry) -> str:
    """The hash `entry` should carry given its other fields."""
    return entry_hash(
        entry.household_id, entry.seq, entry.decision_id, format_ts(entry.at), entry.body, entry.prev_hash
    )


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    entries: int
    first_bad_seq: int | None = None  # the seq at which the chain first breaks
    problem: str = ""


def verify_chain(
    entries: Sequence[AuditEntry],
    expected_head: str | None = None,
    *,
    first_seq: int = 1,
    prev_hash: str = GENESIS,
) -> ChainReport:
    """Checks one household's entries, in the order given, against the chain rules.

    `first_bad_seq` is the position (seq) where the chain first breaks: for an edited entry
    its own seq, for a deleted one the seq that is missing. `expected_head`, when given, is
    an entry hash known from elsewhere that must be the last entry's, which catches
    truncation. `first_seq` and `prev_hash` let a chain whose oldest entries were purged be
    checked from its retention anchor instead of from entry 1 and GENESIS.
    """
    prev = prev_hash
    household = entries[0].household_id if entries else None
    for index, entry in enumerate(entries):
        expected_seq = first_seq + index
        if entry.household_id != household:
            return ChainReport(False, len(entries), expected_seq, "entry of another household in the chain")
        if entry.seq != expected_seq:
            return ChainReport(
                False, len(entries), expected_seq, f"expected seq {expected_seq}, found {entry.seq}"
            )
        if entry.prev_hash != prev:
            return ChainReport(
                False, len(entries), expected_seq, "prev_hash does not match the previous entry"
            )
        if entry.entry_hash != hash_of(entry):
            return ChainReport(False, len(entries), expected_seq, "entry_hash does not match the entry")
        prev = entry.entry_hash
    if expected_head is not None and prev != expected_head:
        return ChainReport(
            False, len(entries), first_seq + len(entries), "chain does not end at the expected head"
        )
    return ChainReport(True, len(entries), None, "")


def verify_anchored_chain(
    entries: Sequence[AuditEntry], anchor: AuditAnchor | None, expected_head: str | None = None
) -> ChainReport:
    """`verify_chain` for a chain whose oldest entries were purged: it starts after `anchor`
    (seq anchor.seq + 1, prev_hash anchor.entry_hash) instead of at seq 1 from GENESIS.
    `expected_head` (e.g. a tombstone's) must be the last entry's hash, or the anchor's if none is left."""
    first_seq, prev = (1, GENESIS) if anchor is None else (anchor.seq + 1, anchor.entry_hash)
    return verify_chain(entries, expected_head, first_seq=first_seq, prev_hash=prev)
