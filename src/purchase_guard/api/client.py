"""A small gRPC client for the CLI and tools; answers are plain dicts (proto JSON mapping)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from purchase_guard._gen.purchaseguard.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    guard_pb2,
    guard_pb2_grpc,
    privacy_pb2,
    privacy_pb2_grpc,
)
from purchase_guard.tls import channel_credentials


def _dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def audio_pb(data: bytes) -> common_pb2.Audio:
    return common_pb2.Audio(encoded=data)


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How the client reaches a guard that serves TLS (tls.py): the CA that signed the
    guard's certificate, and for mutual TLS the caller's own certificate and key."""

    server_ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    # The name the guard's certificate carries, when the target address is another one
    # (an IP, a load balancer's name).
    server_name: str | None = None


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """The client TLS flags of the CLI's admin, guard and replay commands (`tls_from_args`)."""
    tls = parser.add_argument_group("TLS (plaintext without --tls-ca)")
    tls.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) that signed the guard's certificate")
    tls.add_argument(
        "--tls-cert", type=Path, help="this client's certificate (PEM), for a guard requiring mTLS"
    )
    tls.add_argument("--tls-key", type=Path, help="the private key (PEM) of --tls-cert")
    tls.add_argument(
        "--tls-server-name", help="the name in the guard's certificate, if not the target's host"
    )


def tls_from_args(args: argparse.Namespace) -> ClientTls | None:
    """ClientTls from the --tls-* flags, or None for plaintext. Flags that do not fit together,
    or a file that cannot be read, stop the command with a message (SystemExit) before it
    connects."""
    if args.tls_ca is None:
        if args.tls_cert or args.tls_key or args.tls_server_name:
            raise SystemExit("--tls-cert, --tls-key and --tls-server-name need --tls-ca")
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together")
    for path in (args.tls_ca, args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise SystemExit(f"cannot read {path}")
    return ClientTls(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)


def open_channel(target: str, tls: ClientTls | None = None, *, own_connection: bool = False) -> grpc.Channel:
    """A channel to the guard with 64 MiB messages: plaintext, or TLS as `tls` says. With
    `own_connection` it opens a TCP connection of its own instead of sharing one with other
    channels to the same target (as gRPC does by default), so server processes sharing a port
    (PURCHASE_GUARD_PROCESSES) can each be reached."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    creds = channel_credentials(tls.server_ca_file, tls.cert_file, tls.key_file)
    return grpc.secure_channel(target, creds, options=options)


class GuardClient:
    """Talks to a running guard. `token` is sent as `authorization: Bearer` on admin calls, and
    `backend_token` (the voice backend's credential, or a device credential) on Evaluate and Confirm.

    Plaintext unless `tls` is given; with it the channel is TLS, and presents a client
    certificate when `tls` holds one (required by a guard configured with a client CA).
    Unreadable certificate files raise OSError here, before any call.
    """

    def __init__(
        self,
        target: str,
        token: str = "",
        timeout: float = 60.0,
        tls: ClientTls | None = None,
        *,
        backend_token: str = "",
        own_connection: bool = False,
    ) -> None:
        self._channel = open_channel(target, tls, own_connection=own_connection)
        self._backend_token = backend_token
        self._data = privacy_pb2_grpc.HouseholdDataStub(self._channel)
        self._guard = guard_pb2_grpc.PurchaseGuardStub(self._channel)
        self._admin = admin_pb2_grpc.HouseholdAdminStub(self._channel)
        self._token = token
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def with_token(self, token: str) -> GuardClient:
        """The same channel with another admin credential (a household's, a parent's)."""
        other = GuardClient.__new__(GuardClient)
        other.__dict__.update(self.__dict__)
        other._token = token
        return other

    def with_backend_token(self, token: str) -> GuardClient:
        """The same channel with another credential for Evaluate and Confirm (a device's)."""
        other = GuardClient.__new__(GuardClient)
        other.__dict__.update(self.__dict__)
        other._backend_token = token
        return other

    def _meta(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token}"),) if self._token else ()

    def _backend_meta(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._backend_token}"),) if self._backend_token else ()

    def _call(self, method: str, request: Message) -> dict[str, Any]:
        fn = getattr(self._admin, method)
        return _dict(fn(request, metadata=self._meta(), timeout=self._timeout))

    # ---------------------------------------------------------------- admin
    def create_household(
        self, name: str, time_zone: str, currency: str, retain_audio: bool = False
    ) -> dict[str, Any]:
        return self._call(
            "CreateHousehold",
            admin_pb2.CreateHouseholdRequest(
                name=name, time_zone=time_zone, currency=currency, retain_audio=retain_audio
            ),
        )

    def get_household(self, household_id: str) -> dict[str, Any]:
        return self._call("GetHousehold", admin_pb2.GetHouseholdRequest(household_id=household_id))

    def add_member(self, household_id: str, name: str, role: str, is_parent: bool = False) -> dict[str, Any]:
        return self._call(
            "AddMember",
            admin_pb2.AddMemberRequest(
                household_id=household_id,
                display_name=name,
                role=common_pb2.Role.Value(role),
                is_parent=is_parent,
            ),
        )

    def list_members(self, household_id: str) -> dict[str, Any]:
        return self._call("ListMembers", admin_pb2.ListMembersRequest(household_id=household_id))

    def remove_member(self, household_id: str, member_id: str) -> dict[str, Any]:
        return self._call(
            "RemoveMember", admin_pb2.RemoveMemberRequest(household_id=household_id, member_id=member_id)
        )

    def enroll(self, household_id: str, member_id: str, takes: Sequence[bytes]) -> dict[str, Any]:
        return self._call(
            "EnrollVoice",
            admin_pb2.EnrollVoiceRequest(
                household_id=household_id, member_id=member_id, utterances=[audio_pb(t) for t in takes]
            ),
        )

    def enroll_digits(
        self, household_id: str, member_id: str, takes: Sequence[tuple[str, bytes]]
    ) -> dict[str, Any]:
        """Guided digit enrollment: (digits prompted, recording) per take."""
        return self._call(
            "EnrollDigits",
            admin_pb2.EnrollDigitsRequest(
                household_id=household_id,
                member_id=member_id,
                takes=[admin_pb2.DigitTake(digits=d, audio=audio_pb(a)) for d, a in takes],
            ),
        )

    def check_take(self, household_id: str, member_id: str, take: bytes, digits: str = "") -> dict[str, Any]:
        """Live feedback on one enrollment take (a guided digit take when `digits` is given)."""
        return self._call(
            "CheckEnrollmentTake",
            admin_pb2.CheckEnrollmentTakeRequest(
                household_id=household_id, member_id=member_id, audio=audio_pb(take), digits=digits
            ),
        )

    def confirm_voice_role(self, household_id: str, member_id: str) -> dict[str, Any]:
        return self._call(
            "ConfirmVoiceRole",
            admin_pb2.ConfirmVoiceRoleRequest(household_id=household_id, member_id=member_id),
        )

    def set_policy(self, household_id: str, policy: dict[str, Any]) -> dict[str, Any]:
        pb = json_format.ParseDict(policy, admin_pb2.Policy())
        return self._call("SetPolicy", admin_pb2.SetPolicyRequest(household_id=household_id, policy=pb))

    def get_policy(self, household_id: str) -> dict[str, Any]:
        return self._call("GetPolicy", admin_pb2.GetPolicyRequest(household_id=household_id))

    def set_pin(self, household_id: str, pin: str) -> dict[str, Any]:
        return self._call("SetPin", admin_pb2.SetPinRequest(household_id=household_id, pin=pin))

    def list_decisions(self, household_id: str, limit: int = 50) -> dict[str, Any]:
        return self._call(
            "ListDecisions", admin_pb2.ListDecisionsRequest(household_id=household_id, limit=limit)
        )

    def list_notifications(self, household_id: str) -> dict[str, Any]:
        return self._call("ListNotifications", admin_pb2.ListNotificationsRequest(household_id=household_id))

    def pending_approvals(self, household_id: str) -> dict[str, Any]:
        return self._call(
            "ListPendingApprovals", admin_pb2.ListPendingApprovalsRequest(household_id=household_id)
        )

    def resolve_approval(
        self, household_id: str, challenge_id: str, parent_member_id: str, approve: bool
    ) -> dict[str, Any]:
        """Needs a parent's own credential as `token`; `parent_member_id` may be empty (or must be
        that parent's id)."""
        return self._call(
            "ResolveApproval",
            admin_pb2.ResolveApprovalRequest(
                household_id=household_id,
                challenge_id=challenge_id,
                parent_member_id=parent_member_id,
                approve=approve,
            ),
        )

    def issue_credential(
        self, household_id: str, kind: str, member_id: str = "", device_id: str = "", label: str = ""
    ) -> dict[str, Any]:
        """`kind` is PARENT_CREDENTIAL, DEVICE_CREDENTIAL or BACKEND_CREDENTIAL."""
        return self._call(
            "IssueCredential",
            admin_pb2.IssueCredentialRequest(
                household_id=household_id,
                kind=admin_pb2.CredentialKind.Value(kind),
                member_id=member_id,
                device_id=device_id,
                label=label,
            ),
        )

    def list_credentials(self, household_id: str) -> dict[str, Any]:
        return self._call("ListCredentials", admin_pb2.ListCredentialsRequest(household_id=household_id))

    def revoke_credential(self, household_id: str, credential_id: str) -> dict[str, Any]:
        return self._call(
            "RevokeCredential",
            admin_pb2.RevokeCredentialRequest(household_id=household_id, credential_id=credential_id),
        )

    def renew_voiceprint(self, household_id: str, member_id: str) -> dict[str, Any]:
        return self._call(
            "RenewVoiceprint",
            admin_pb2.RenewVoiceprintRequest(household_id=household_id, member_id=member_id),
        )

    def reset_voice_adaptation(self, household_id: str, member_id: str) -> dict[str, Any]:
        return self._call(
            "ResetVoiceAdaptation",
            admin_pb2.ResetVoiceAdaptationRequest(household_id=household_id, member_id=member_id),
        )

    def set_webhook(self, household_id: str, url: str) -> dict[str, Any]:
        return self._call("SetWebhook", admin_pb2.SetWebhookRequest(household_id=household_id, url=url))

    def get_webhook(self, household_id: str) -> dict[str, Any]:
        return self._call("GetWebhook", admin_pb2.GetWebhookRequest(household_id=household_id))

    def remove_webhook(self, household_id: str) -> dict[str, Any]:
        return self._call("RemoveWebhook", admin_pb2.RemoveWebhookRequest(household_id=household_id))

    def dead_letters(self, household_id: str) -> dict[str, Any]:
        return self._call("ListDeadLetters", admin_pb2.ListDeadLettersRequest(household_id=household_id))

    def replay_dead_letters(self, household_id: str, event_ids: Sequence[int] = ()) -> dict[str, Any]:
        return self._call(
            "ReplayDeadLetters",
            admin_pb2.ReplayDeadLettersRequest(household_id=household_id, event_ids=list(event_ids)),
        )

    def watch_events(
        self, household_id: str, after_event_id: int = 0, follow: bool = False, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """The household's events after the cursor; with `follow`, keeps yielding new ones (no deadline
        unless `timeout` is given)."""
        request = admin_pb2.WatchEventsRequest(
            household_id=household_id, after_event_id=after_event_id, follow=follow
        )
        deadline = timeout if timeout is not None else (None if follow else self._timeout)
        for event in self._admin.WatchEvents(request, metadata=self._meta(), timeout=deadline):
            yield _dict(event)

    def verify_audit(self, household_id: str) -> dict[str, Any]:
        return self._call("VerifyAudit", admin_pb2.VerifyAuditRequest(household_id=household_id))

    def export_household(self, household_id: str) -> privacy_pb2.ExportHouseholdResponse:
        return self._data.ExportHousehold(
            privacy_pb2.ExportHouseholdRequest(household_id=household_id),
            metadata=self._meta(),
            timeout=self._timeout,
        )

    def erase_household(self, household_id: str, confirm: str | None = None) -> dict[str, Any]:
        """`confirm` is what the person typed to confirm (the guard erases nothing unless it repeats
        the id); the CLI, which asks for --yes instead, leaves it to default to the id itself."""
        return _dict(
            self._data.EraseHousehold(
                privacy_pb2.EraseHouseholdRequest(
                    household_id=household_id,
                    confirm_household_id=household_id if confirm is None else confirm,
                ),
                metadata=self._meta(),
                timeout=self._timeout,
            )
        )

    # ---------------------------------------------------------------- guard
    def evaluate(
        self,
        request_id: str,
        household_id: str,
        device_id: str,
        order: dict[str, Any],
        audio: bytes,
        transcript: str = "",
    ) -> dict[str, Any]:
        req = guard_pb2.EvaluateRequest(
            request_id=request_id,
            household_id=household_id,
            device_id=device_id,
            order=json_format.ParseDict(order, common_pb2.Order()),
            audio=audio_pb(audio),
            transcript=transcript,
        )
        return _dict(self._guard.Evaluate(req, metadata=self._backend_meta(), timeout=self._timeout))

    def confirm(
        self,
        request_id: str,
        household_id: str,
        challenge_id: str,
        order: dict[str, Any],
        spoken_digits: str,
        audio: bytes | None,
        device_id: str = "",
    ) -> dict[str, Any]:
        req = guard_pb2.ConfirmRequest(
            request_id=request_id,
            household_id=household_id,
            challenge_id=challenge_id,
            order=json_format.ParseDict(order, common_pb2.Order()),
            spoken_digits=spoken_digits,
            device_id=device_id,
        )
        if audio:
            req.audio.CopyFrom(audio_pb(audio))
        return _dict(self._guard.Confirm(req, metadata=self._backend_meta(), timeout=self._timeout))
