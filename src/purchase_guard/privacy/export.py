"""Export (GDPR Art. 15): everything stored for one household as a machine-readable ZIP archive.

    manifest.json        format, household id, time, and per part: name, sha256, bytes, records
    household.json  members.json  voiceprints.json  policies.json  pin.json  decisions.json
    spend.json  challenges.json  notifications.json  audit.json

The records come from `Records.household_records`, whose queries each filter on the
household id. Before anything is serialised, every record is checked, one by one, to carry the
requested household id (`check_records`); a single foreign record aborts the export with an
internal error and a log line naming the part and position only, never its content. The
check is the last line of defence: a bug in a query must cost an export, not a leak.

What is left out, and why:
- voiceprint embeddings: the export carries voiceprint *metadata* (encoder, dimension, number
  of takes, time). The vector is a biometric template that only this encoder can use; put in
  an archive that is downloaded, mailed and stored elsewhere, it would be the most dangerous
  thing in it (spoofing, linking a person across systems) while telling the person nothing.
- the PIN hash and a challenge's expected digits (and the digits a speaker was asked to say):
  secrets that guard purchases, not information about the person.
Audit entries carry their stored (sealed) body as well as the opened record, so the holder can
recompute the hash chain offline.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from purchase_guard.errors import GuardError
from purchase_guard.logs import get_logger
from purchase_guard.serial import format_ts
from purchase_guard.store import codec
from purchase_guard.store.protocol import HouseholdRecords, Records

# What a derived_audio entry's `ref` is, by kind of entry (audio prints: the decision heard in).
_REF_NAME = {"digit_templates": "features", "adaptation_sample": "challenge_id"}

log = get_logger("purchase_guard.privacy.export")

FORMAT = "purchase-guard/household-export/v1"
MEDIA_TYPE = "application/zip"


class ForeignRecord(GuardError):
    """An export held a record of another household; nothing was returned (INTERNAL)."""


@dataclass(frozen=True, slots=True)
class ExportPart:
    name: str
    sha256: str
    size: int
    records: int


@dataclass(frozen=True, slots=True)
class ExportArchive:
    household_id: str
    generated_at: datetime
    data: bytes  # the ZIP archive
    sha256: str  # of `data`
    parts: tuple[ExportPart, ...]


# --- the item-by-item check -------------------------------------------------------------


def _refuse(requested: str, part: str, index: int) -> ForeignRecord:
    # The foreign record's ids and content stay out of the log and the message: logging them
    # would be the very leak being prevented.
    log.error("export_refused_foreign_record", household_id=requested, part=part, index=index)
    return ForeignRecord("export refused: a stored record failed the household check; nothing was returned")


def check_records(records: HouseholdRecords, household_id: str) -> int:
    """Raises ForeignRecord unless every record belongs to `household_id`; returns how many it checked."""
    owners: list[tuple[str, Iterable[str]]] = [
        ("household", [records.household.household_id]),
        ("members", (m.household_id for m in records.members)),
        ("voiceprints", (v.household_id for v in records.voiceprints)),
        ("policies", (p.household_id for p in records.policies)),
        ("pin", [] if records.pin is None else [records.pin.household_id]),
        ("decisions", (d.household_id for d in records.decisions)),
        ("spend", (s.household_id for s in records.spend)),
        ("challenges", (c.household_id for c in records.challenges)),
        ("notifications", (n.household_id for n in records.notifications)),
        ("audit", (a.entry.household_id for a in records.audit)),
        ("audit_anchor", [] if records.audit_anchor is None else [records.audit_anchor.household_id]),
        ("events", (e.household_id for e in records.events)),
        ("webhook", [] if records.webhook is None else [records.webhook.household_id]),
        ("derived_audio", (a.household_id for a in records.derived_audio)),
    ]
    checked = 0
    for part, ids in owners:
        for index, owner in enumerate(ids):
            checked += 1
            if owner != household_id:
                raise _refuse(household_id, part, index)
    # The opened audit record names its household too; it must agree with the entry's row.
    for index, record in enumerate(records.audit):
        checked += 1
        try:
            body = json.loads(record.body)
        except ValueError as exc:
            raise _refuse(household_id, "audit.body", index) from exc
        if not isinstance(body, dict) or body.get("household_id", household_id) != household_id:
            raise _refuse(household_id, "audit.body", index)
    return checked


# --- serialisation ----------------------------------------------------------------------


def _ts(when: datetime | None) -> str | None:
    return None if when is None else format_ts(when)


def _decision(d: Any) -> dict[str, Any]:
    out = codec.decision_to_dict(d)
    if out.get("challenge") is not None:
        # The prompt and the digits to repeat can spell out what a speaker had to say.
        out["challenge"] = {
            k: v for k, v in out["challenge"].items() if k not in ("prompt", "digits_to_repeat")
        }
    return out


def _challenge(c: Any) -> dict[str, Any]:
    out = codec.challenge_to_dict(c)
    out.pop("expected_digits_hash", None)
    out.pop("digits_to_repeat", None)
    return out


def _audit(records: HouseholdRecords) -> dict[str, Any]:
    anchor = records.audit_anchor
    return {
        "anchor": None
        if anchor is None
        else {
            "household_id": anchor.household_id,
            "seq": anchor.seq,
            "entry_hash": anchor.entry_hash,
            "at": _ts(anchor.at),
        },
        "entries": [
            {
                "household_id": a.entry.household_id,
                "seq": a.entry.seq,
                "decision_id": a.entry.decision_id,
                "at": _ts(a.entry.at),
                "prev_hash": a.entry.prev_hash,
                "entry_hash": a.entry.entry_hash,
                "stored_body": a.entry.body,
                "sealed": a.sealed,
                "record": json.loads(a.body),
            }
            for a in records.audit
        ],
    }


def _parts(records: HouseholdRecords) -> list[tuple[str, object, int]]:
    h = records.household
    pin = records.pin
    return [
        (
            "household.json",
            {
                "household_id": h.household_id,
                "name": h.name,
                "time_zone": h.time_zone,
                "currency": h.currency,
                "retain_audio": h.retain_audio,
                "created_at": _ts(h.created_at),
            },
            1,
        ),
        (
            "members.json",
            [
                {
                    "household_id": m.household_id,
                    "member_id": m.member_id,
                    "display_name": m.display_name,
                    "role": m.role.value,
                    "is_parent": m.is_parent,
                    "created_at": _ts(m.created_at),
                }
                for m in records.members
            ],
            len(records.members),
        ),
        (
            "voiceprints.json",
            [
                {
                    "household_id": v.household_id,
                    "member_id": v.member_id,
                    "encoder": v.encoder,
                    "dimensions": v.dim,
                    "utterances": v.n_utterances,
                    "created_at": _ts(v.created_at),
                    "template": "held encrypted by the guard; not exported (see docs/privacy.md)",
                    # Embeddings of confirmed purchases added since enrollment (docs/voice.md).
                    "adapted_from_purchases": v.n_adapted,
                    "adapted_at": None if v.adapted_at is None else _ts(v.adapted_at),
                }
                for v in records.voiceprints
            ],
            len(records.voiceprints),
        ),
        (
            "policies.json",
            [
                {
                    "household_id": p.household_id,
                    "revision": p.policy.revision,
                    "created_at": _ts(p.created_at),
                    "policy": codec.policy_to_dict(p.policy),
                }
                for p in records.policies
            ],
            len(records.policies),
        ),
        (
            "pin.json",
            None
            if pin is None
            else {
                "household_id": pin.household_id,
                "set_at": _ts(pin.set_at),
                "failures": pin.failures,
                "next_try_at": _ts(pin.next_try_at),
                "disabled_at": _ts(pin.disabled_at),
            },
            0 if pin is None else 1,
        ),
        ("decisions.json", [_decision(d) for d in records.decisions], len(records.decisions)),
        (
            "spend.json",
            [
                {
                    "household_id": s.household_id,
                    "decision_id": s.decision_id,
                    "member_id": s.member_id,
                    "amount_minor": s.amount_minor,
                    "at": _ts(s.at),
                    "low_value_exempt": s.exempt,
                }
                for s in records.spend
            ],
            len(records.spend),
        ),
        ("challenges.json", [_challenge(c) for c in records.challenges], len(records.challenges)),
        (
            "notifications.json",
            [
                {
                    "household_id": n.household_id,
                    "notification_id": n.notification_id,
                    "kind": n.kind,
                    "message": n.message,
                    "challenge_id": n.challenge_id,
                    "created_at": _ts(n.created_at),
                }
                for n in records.notifications
            ],
            len(records.notifications),
        ),
        ("audit.json", _audit(records), len(records.audit)),
        (
            "events.json",
            [{"event_id": e.event_id, **json.loads(codec.event_to_json(e))} for e in records.events],
            len(records.events),
        ),
        (
            "webhook.json",
            None
            if records.webhook is None
            else {
                "household_id": records.webhook.household_id,
                "url": records.webhook.url,
                "created_at": _ts(records.webhook.created_at),
                "secret": "held encrypted by the guard; not exported (set a new webhook to get a new one)",
            },
            0 if records.webhook is None else 1,
        ),
        (
            "derived_audio.json",
            [
                {
                    "household_id": a.household_id,
                    "what": a.what,
                    "member_id": a.member_id,
                    _REF_NAME.get(a.what, "decision_id"): a.ref,
                    **({"kind": a.kind} if a.kind else {}),
                    "created_at": _ts(a.created_at),
                    "expires_at": _ts(a.expires_at),
                    "data": (
                        "frame features, fingerprints or a speaker vector, never audio; "
                        "held encrypted, not exported"
                    ),
                }
                for a in records.derived_audio
            ],
            len(records.derived_audio),
        ),
    ]


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def build_archive(records: HouseholdRecords, household_id: str, generated_at: datetime) -> ExportArchive:
    """Checks the records item by item, then writes the ZIP. Deterministic for the same records
    and time, so the same export has the same sha256."""
    check_records(records, household_id)
    stamp = generated_at.timetuple()[:6]
    parts: list[ExportPart] = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=stamp)  # fixed times: a reproducible archive
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            archive.writestr(info, data)

        for name, value, count in _parts(records):
            data = _json(value)
            parts.append(ExportPart(name, hashlib.sha256(data).hexdigest(), len(data), count))
            add(name, data)
        manifest: Mapping[str, object] = {
            "format": FORMAT,
            "household_id": household_id,
            "generated_at": format_ts(generated_at),
            "parts": [
                {"name": p.name, "sha256": p.sha256, "bytes": p.size, "records": p.records} for p in parts
            ],
        }
        add("manifest.json", _json(manifest))
    data = buffer.getvalue()
    return ExportArchive(household_id, generated_at, data, hashlib.sha256(data).hexdigest(), tuple(parts))


def export_household(store: Records, household_id: str, now: Callable[[], datetime]) -> ExportArchive:
    """Reads the household's records (one snapshot, household-scoped queries) and archives them."""
    records = store.household_records(household_id)
    archive = build_archive(records, household_id, now())
    log.info(
        "household_exported",
        household_id=household_id,
        records=sum(p.records for p in archive.parts),
        archive_bytes=len(archive.data),
    )
    return archive


def read_archive(data: bytes) -> dict[str, Any]:
    """Opens an export and checks every part against the manifest's sha256; returns the parts by
    name (parsed JSON), the manifest under "manifest.json". For tests and for the CLI to verify."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        if manifest.get("format") != FORMAT:
            raise ValueError("not a purchase-guard household export")
        out: dict[str, Any] = {"manifest.json": manifest}
        for part in manifest["parts"]:
            raw = archive.read(part["name"])
            if hashlib.sha256(raw).hexdigest() != part["sha256"]:
                raise ValueError(f"part {part['name']} does not match its sha256")
            out[part["name"]] = json.loads(raw)
        return out
