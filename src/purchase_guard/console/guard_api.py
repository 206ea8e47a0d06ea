"""The console's one way to the guard: GuardClient calls with the session's credential, as typed views.

Everything the pages show comes from here, and every call carries the signed-in parent's own
credential, so the guard's authorisation (PERMISSION_DENIED for another household) is the final
check on every page and action. The household id always comes from the session, never from a form.

A few things the pages need are not (yet) in the admin API; this module fills them from what is,
and reads the dedicated field first where the server will add one, so switching is one place:

- who signed in: GetHousehold answers `caller_member_id` once parent credentials exist; until then
  a household token signs in "as household X" (see `identify`);
- a pending approval's reasons and voice scores: PendingApproval `reasons` / `speaker` if present,
  else the Evaluate decision that opened the challenge (ListDecisions, matched by challenge id);
- the guard's current speaker encoder (for re-enrollment prompts): ListMembersResponse
  `current_encoder` if present, else the encoder named by the newest voice decision.

Refusals become `GuardRefusal` with the gRPC code, the message and any google.rpc BadRequest field
violations from `grpc-status-details-bin`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from purchase_guard.api.client import ClientTls, GuardClient
from purchase_guard.console.sessions import Identity
from purchase_guard.domain import Money
from purchase_guard.money import format_money
from purchase_guard.privacy.export import read_archive

T = TypeVar("T")
# Newest decisions read to find a pending approval's scores (the guard's own maximum).
DECISION_LOOKBACK = 500


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class GuardRefusal(Exception):
    """The guard refused a call (or could not be reached): code name, message, field violations."""

    def __init__(self, code: str, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.violations = tuple(violations)

    @property
    def unreachable(self) -> bool:
        return self.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


class WideCredential(GuardRefusal):
    """The credential works but opens more than one household (the operator's): refused at sign-in."""

    def __init__(self) -> None:
        super().__init__(
            "PERMISSION_DENIED",
            "This credential opens every household (an operator credential). The console accepts only "
            "your household's credential or your own parent credential.",
        )


def refusal_from_rpc(exc: grpc.RpcError) -> GuardRefusal:
    """The code, message and BadRequest field violations of a failed call.

    Details come from the google.rpc.Status in the `grpc-status-details-bin` trailer when the guard
    sends one; a trailer that does not match the call's own status is ignored (the message stays).
    """
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    message = (details_fn() if callable(details_fn) else "") or ""
    violations: list[FieldViolation] = []
    try:
        status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    except (ValueError, TypeError):
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    return GuardRefusal(name, str(message), violations)


# ------------------------------------------------------------------ views
@dataclass(frozen=True, slots=True)
class ReasonView:
    code: str
    message: str
    detail: tuple[tuple[str, str], ...]
    # FORBID, NEEDS_CHALLENGE, PERMIT, NOTE, CHECK_ERROR; "" for decisions recorded before effects.
    effect: str = ""
    rule: str = ""
    # One of the findings that determined the outcome.
    determining: bool = False


@dataclass(frozen=True, slots=True)
class SpeakerView:
    member_id: str
    member_name: str
    role: str
    score: float
    threshold: float
    verified: bool
    child_likelihood: float  # -1 when not computed
    encoder: str


@dataclass(frozen=True, slots=True)
class LineView:
    title: str
    sku: str
    category: str
    quantity: int
    unit_price: str
    line_total: str


@dataclass(frozen=True, slots=True)
class ApprovalView:
    challenge_id: str
    lines: tuple[LineView, ...]
    total: str
    merchant: str
    asked_by: str  # member name, or "" when the voice was not recognised
    expires_at: datetime | None
    reasons: tuple[ReasonView, ...]
    speaker: SpeakerView | None
    requested_at: datetime | None

    @property
    def summary(self) -> str:
        titles = ", ".join(line.title for line in self.lines) or "an order"
        return f"{titles} ({self.total})"


@dataclass(frozen=True, slots=True)
class DecisionView:
    decision_id: str
    kind: str
    outcome: str
    reasons: tuple[ReasonView, ...]
    speaker: SpeakerView | None
    total: str
    device_id: str
    decided_at: datetime | None
    challenge_id: str
    policy_revision: int


@dataclass(frozen=True, slots=True)
class MemberView:
    member_id: str
    name: str
    role: str
    is_parent: bool
    enrolled: bool
    encoder: str

    def needs_reenrollment(self, current_encoder: str | None) -> bool:
        """An enrolled voiceprint made by another encoder than the guard's: it can no longer be
        scored, so this member's voice is not recognised until they enroll again."""
        return self.enrolled and bool(current_encoder) and self.encoder != current_encoder


@dataclass(frozen=True, slots=True)
class MembersView:
    members: tuple[MemberView, ...]
    current_encoder: str | None
    # "guard" when the guard said it; "latest decision" when inferred; "" when unknown.
    encoder_source: str

    @property
    def parents(self) -> tuple[MemberView, ...]:
        return tuple(m for m in self.members if m.is_parent)


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """An event the household's webhook receiver did not take."""

    event_id: int
    kind: str
    message: str
    attempts: int
    last_status: int
    last_error: str
    dead_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveriesView:
    webhook_url: str  # empty when no webhook is set
    dead_letters: tuple[DeadLetterView, ...]


@dataclass(frozen=True, slots=True)
class NotificationView:
    notification_id: str
    kind: str
    message: str
    challenge_id: str
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExportFile:
    filename: str
    media_type: str
    body: bytes


# ------------------------------------------------------------------ conversion
def _ts(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def money_text(m: Mapping[str, Any] | None) -> str:
    if not m:
        return ""
    return format_money(Money(int(m.get("minor_units", 0)), str(m.get("currency", ""))))


def _reasons(raw: Sequence[Mapping[str, Any]] | None) -> tuple[ReasonView, ...]:
    return tuple(
        ReasonView(
            str(r.get("code", "REASON_CODE_UNSPECIFIED")),
            str(r.get("message", "")),
            tuple(sorted((str(k), str(v)) for k, v in dict(r.get("detail", {})).items())),
            effect="" if r.get("effect") in (None, "EFFECT_UNSPECIFIED") else str(r.get("effect")),
            rule=str(r.get("rule", "")),
            determining=bool(r.get("determining", False)),
        )
        for r in raw or ()
    )


def _speaker(raw: Mapping[str, Any] | None, names: Mapping[str, str]) -> SpeakerView | None:
    if not raw:
        return None
    member_id = str(raw.get("member_id", ""))
    return SpeakerView(
        member_id=member_id,
        member_name=names.get(member_id, ""),
        role=str(raw.get("role", "ROLE_UNSPECIFIED")),
        score=float(raw.get("score", 0.0)),
        threshold=float(raw.get("threshold", 0.0)),
        verified=bool(raw.get("verified", False)),
        child_likelihood=float(raw.get("child_likelihood", 0.0)),
        encoder=str(raw.get("encoder", "")),
    )


def _lines(order: Mapping[str, Any]) -> tuple[LineView, ...]:
    out = []
    for item in order.get("items", ()):
        price = item.get("unit_price", {})
        qty = int(item.get("quantity", 0))
        total = {"minor_units": int(price.get("minor_units", 0)) * qty, "currency": price.get("currency", "")}
        out.append(
            LineView(
                str(item.get("title", "")),
                str(item.get("sku", "")),
                str(item.get("category", "")),
                qty,
                money_text(price),
                money_text(total),
            )
        )
    return tuple(out)


def _member(raw: Mapping[str, Any]) -> MemberView:
    return MemberView(
        member_id=str(raw.get("member_id", "")),
        name=str(raw.get("display_name", "")),
        role=str(raw.get("role", "ROLE_UNSPECIFIED")),
        is_parent=bool(raw.get("is_parent", False)),
        enrolled=bool(raw.get("voice_enrolled", False)),
        encoder=str(raw.get("voice_encoder", "")),
    )


def _decision(raw: Mapping[str, Any], names: Mapping[str, str]) -> DecisionView:
    return DecisionView(
        decision_id=str(raw.get("decision_id", "")),
        kind=str(raw.get("kind", "")),
        outcome=str(raw.get("outcome", "OUTCOME_UNSPECIFIED")),
        reasons=_reasons(raw.get("reasons")),
        speaker=_speaker(raw.get("speaker"), names),
        total=money_text(raw.get("total")),
        device_id=str(raw.get("device_id", "")),
        decided_at=_ts(raw.get("decided_at")),
        challenge_id=str(raw.get("challenge_id", "")),
        policy_revision=int(raw.get("policy_revision", 0)),
    )


def current_encoder(
    members_reply: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]]
) -> tuple[str | None, str]:
    """The guard's current speaker encoder and where that came from (see the module docstring)."""
    said = members_reply.get("current_encoder")
    if isinstance(said, str) and said:
        return said, "guard"
    for d in decisions:  # newest first
        enc = (d.get("speaker") or {}).get("encoder")
        if isinstance(enc, str) and enc:
            return enc, "latest decision"
    return None, ""


# ------------------------------------------------------------------ the adapter
class ConsoleGuard:
    """Blocking calls (run them off the event loop); one channel shared by every session."""

    def __init__(self, target: str, tls: ClientTls | None, timeout: float) -> None:
        self._base = GuardClient(target, "", timeout=timeout, tls=tls)

    def close(self) -> None:
        self._base.close()

    def _call(self, token: str, fn: Callable[[GuardClient], T]) -> T:
        try:
            return fn(self._base.with_token(token))
        except grpc.RpcError as exc:
            raise refusal_from_rpc(exc) from None
        except ValueError as exc:
            # grpc refuses metadata it cannot send (e.g. a credential with a newline) with ValueError.
            raise GuardRefusal("INVALID_ARGUMENT", f"the request could not be sent: {exc}") from None

    # ---- who is signing in
    def identify(self, token: str, household_id: str) -> Identity:
        """Checks the credential against the guard and returns who it belongs to.

        Refuses (PERMISSION_DENIED) a credential that opens households other than this one, such as
        the operator's: the console is for a household's parents, and a console session must never
        be able to reach another household even through a mistake in the console. The probe asks for
        a household id that cannot exist; a household-scoped credential is refused it before the
        guard even looks the id up, any wider credential gets NOT_FOUND.
        """
        reply = self._call(token, lambda c: c.get_household(household_id))
        household = reply.get("household", {})
        probe = "hh_console_scope_probe_" + secrets.token_hex(8)
        try:
            self._call(token, lambda c: c.get_household(probe))
        except GuardRefusal as exc:
            if exc.unreachable:
                raise
            if exc.code != "PERMISSION_DENIED":
                raise WideCredential() from None
        else:
            raise WideCredential()
        parent_id = str(reply.get("caller_member_id", ""))
        parent_name = ""
        if parent_id:
            members = self._call(token, lambda c: c.list_members(household_id)).get("members", [])
            parent_name = next(
                (str(m.get("display_name", "")) for m in members if m.get("member_id") == parent_id), ""
            )
        return Identity(
            household_id=str(household.get("household_id", household_id)),
            household_name=str(household.get("name", household_id)),
            time_zone=str(household.get("time_zone", "UTC")),
            currency=str(household.get("currency", "")),
            parent_member_id=parent_id,
            parent_name=parent_name,
        )

    # ---- members
    def _names(self, token: str, hid: str) -> dict[str, str]:
        members = self._call(token, lambda c: c.list_members(hid)).get("members", [])
        return {str(m.get("member_id", "")): str(m.get("display_name", "")) for m in members}

    def members(self, token: str, hid: str) -> MembersView:
        reply = self._call(token, lambda c: c.list_members(hid))
        encoder, source = None, ""
        if not reply.get("current_encoder"):
            decisions = self._call(token, lambda c: c.list_decisions(hid, 50)).get("decisions", [])
            encoder, source = current_encoder(reply, decisions)
        else:
            encoder, source = current_encoder(reply, ())
        members = sorted(
            (_member(m) for m in reply.get("members", [])), key=lambda m: (not m.is_parent, m.name)
        )
        return MembersView(tuple(members), encoder, source)

    # ---- approvals
    def pending_approvals(self, token: str, hid: str) -> list[ApprovalView]:
        pending = self._call(token, lambda c: c.pending_approvals(hid)).get("approvals", [])
        if not pending:
            return []
        names = self._names(token, hid)
        opened: dict[str, Mapping[str, Any]] = {}
        if any("reasons" not in p for p in pending):
            history = self._call(token, lambda c: c.list_decisions(hid, DECISION_LOOKBACK))
            for d in history.get("decisions", []):
                if d.get("kind") == "evaluate" and d.get("challenge_id"):
                    opened.setdefault(str(d["challenge_id"]), d)
        out = []
        for p in pending:
            cid = str(p.get("challenge_id", ""))
            source: Mapping[str, Any] = p if "reasons" in p else opened.get(cid, {})
            order = p.get("order", {})
            member_id = str(p.get("member_id", ""))
            out.append(
                ApprovalView(
                    challenge_id=cid,
                    lines=_lines(order),
                    total=money_text(order.get("total")),
                    merchant=str(order.get("merchant", "")),
                    asked_by=names.get(member_id, member_id) if member_id else "",
                    expires_at=_ts(p.get("expires_at")),
                    reasons=_reasons(source.get("reasons")),
                    speaker=_speaker(source.get("speaker"), names),
                    requested_at=_ts(source.get("decided_at")),
                )
            )
        return out

    def resolve(self, token: str, hid: str, challenge_id: str, parent_member_id: str, approve: bool) -> str:
        reply = self._call(token, lambda c: c.resolve_approval(hid, challenge_id, parent_member_id, approve))
        return str(reply.get("state", "approved" if approve else "rejected"))

    # ---- history and notifications
    def decisions(self, token: str, hid: str, limit: int = 100) -> list[DecisionView]:
        names = self._names(token, hid)
        raw = self._call(token, lambda c: c.list_decisions(hid, limit)).get("decisions", [])
        return [_decision(d, names) for d in raw]

    def notifications(self, token: str, hid: str) -> list[NotificationView]:
        raw = self._call(token, lambda c: c.list_notifications(hid)).get("notifications", [])
        return [
            NotificationView(
                str(n.get("notification_id", "")),
                str(n.get("kind", "")),
                str(n.get("message", "")),
                str(n.get("challenge_id", "")),
                _ts(n.get("created_at")),
            )
            for n in raw
        ]

    # ---- webhook deliveries
    def deliveries(self, token: str, hid: str) -> DeliveriesView:
        try:
            url = str(self._call(token, lambda c: c.get_webhook(hid)).get("webhook", {}).get("url", ""))
        except GuardRefusal as exc:
            if exc.code != "NOT_FOUND":
                raise
            url = ""
        raw = self._call(token, lambda c: c.dead_letters(hid)).get("dead_letters", [])
        return DeliveriesView(
            url,
            tuple(
                DeadLetterView(
                    int(d.get("event", {}).get("event_id", 0)),
                    str(d.get("event", {}).get("kind", "")).removeprefix("EVENT_").lower(),
                    str(d.get("event", {}).get("message", "")),
                    int(d.get("attempts", 0)),
                    int(d.get("last_status", 0)),
                    str(d.get("last_error", "")),
                    _ts(d.get("dead_at")),
                )
                for d in raw
            ),
        )

    def reset_adaptation(self, token: str, hid: str, member_id: str) -> int:
        """Drops what confirmed purchases added to the member's voiceprint; how many went."""
        return int(self._call(token, lambda c: c.reset_voice_adaptation(hid, member_id)).get("dropped", 0))

    def replay(self, token: str, hid: str, event_ids: Sequence[int]) -> int:
        return int(self._call(token, lambda c: c.replay_dead_letters(hid, event_ids)).get("replayed", 0))

    # ---- policy
    def policy(self, token: str, hid: str) -> dict[str, Any]:
        return dict(self._call(token, lambda c: c.get_policy(hid)).get("policy", {}))

    def set_policy(self, token: str, hid: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call(token, lambda c: c.set_policy(hid, dict(policy))).get("policy", {}))

    # ---- data rights
    def export(self, token: str, hid: str, as_json: bool) -> ExportFile:
        """The household's export: the guard's ZIP archive as it came, or (as_json) one JSON document
        holding the manifest and every part, after checking the archive's and each part's sha256."""
        import json

        reply = self._call(token, lambda c: c.export_household(hid))
        archive = bytes(reply.archive)
        if hashlib.sha256(archive).hexdigest() != reply.sha256:
            raise GuardRefusal("DATA_LOSS", "the export archive does not match its sha256; try again")
        stamp = reply.generated_at.ToDatetime().strftime("%Y%m%dT%H%M%SZ")
        base = f"household-{reply.household_id}-{stamp}"
        if not as_json:
            return ExportFile(base + ".zip", reply.media_type or "application/zip", archive)
        try:
            parts = read_archive(archive)
        except (ValueError, KeyError) as exc:
            raise GuardRefusal("DATA_LOSS", f"the export archive is damaged: {exc}") from None
        document = {
            "format": reply.format,
            "household_id": reply.household_id,
            "archive_sha256": reply.sha256,
            "manifest": parts.pop("manifest.json"),
            "parts": parts,
        }
        body = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False).encode()
        return ExportFile(base + ".json", "application/json", body)

    def erase(self, token: str, hid: str, typed_confirmation: str) -> dict[str, Any]:
        return self._call(token, lambda c: c.erase_household(hid, confirm=typed_confirmation))
