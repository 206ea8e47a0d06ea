"""verify_all_chains: what a (re)starting server checks before serving."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from trust.trust_harness import assemble_guard, create_household, evaluate_pb, make_app, stubs

from purchase_guard.audit.startup import verify_all_chains
from purchase_guard.store.protocol import Store
from purchase_guard.voice.encoder import SpeakerEncoder


class Listing:
    """A store that can list its households, as the lead's Store protocol addition would."""

    def __init__(self, store: Store, ids: list[str]) -> None:
        self._store = store
        self._ids = ids

    def list_household_ids(self) -> list[str]:
        return list(self._ids)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def test_every_chain_is_checked_and_a_tampered_one_is_named(
    tmp_path: Path, trust_encoder: SpeakerEncoder
) -> None:
    """Two households with decisions; one audit body edited in the file: the report is not ok, names that
    household and the first bad seq, and counts the other household's intact entries."""
    app = make_app(tmp_path, trust_encoder)
    guard = assemble_guard(app)
    try:
        with stubs(guard.target) as s:
            victim, _ = create_household(s, "Victim")
            other, _ = create_household(s, "Other")
            for i in range(3):
                s.guard.Evaluate(evaluate_pb(f"v{i}", victim), timeout=30)
                s.guard.Evaluate(evaluate_pb(f"o{i}", other), timeout=30)
        clean = verify_all_chains(app.store, [victim, other])
        assert clean.ok
        assert (clean.households, clean.entries) == (2, 6)

        with contextlib.closing(sqlite3.connect(tmp_path / "guard.db")) as conn, conn:
            conn.execute("UPDATE audit SET body = body || ' ' WHERE household_id = ? AND seq = 2", (victim,))
        report = verify_all_chains(Listing(app.store, [victim, other]))  # type: ignore[arg-type]
        assert not report.ok
        assert [(b.household_id, b.first_bad_seq) for b in report.broken] == [(victim, 2)]
    finally:
        guard.stop()


class Unreadable:
    def audit_entries(self, household_id: str) -> list[object]:
        raise OSError("disk gone")


def test_an_unreadable_chain_counts_as_broken() -> None:
    """A household whose entries cannot be read is reported broken, not skipped."""
    report = verify_all_chains(Unreadable(), ["hh_1"])  # type: ignore[arg-type]
    assert not report.ok
    assert report.broken[0].household_id == "hh_1"
