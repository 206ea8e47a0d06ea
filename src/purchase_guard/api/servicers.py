"""gRPC servicers: unpack the request, call the service, pack the answer. No decisions here."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from purchase_guard._gen.purchaseguard.v1 import admin_pb2, admin_pb2_grpc, guard_pb2, guard_pb2_grpc
from purchase_guard.api import convert
from purchase_guard.api.gate import current_principal
from purchase_guard.challenge.prompts import challenge_info
from purchase_guard.errors import ResourceExhausted
from purchase_guard.household.principals import Principal, PrincipalKind
from purchase_guard.household.service import HouseholdService
from purchase_guard.pipeline.guard import Caller, ConfirmInput, EvaluateInput, Guard
from purchase_guard.voice.digits import ENROLLMENT_PROMPTS


def caller_of(principal: Principal) -> Caller:
    """The pipeline's view of who asked: a stable id, and whether it speaks for a whole fleet."""
    return Caller(principal.caller_id, fleet=principal.kind is PrincipalKind.BACKEND)


class PurchaseGuardServicer(guard_pb2_grpc.PurchaseGuardServicer):
    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    def Evaluate(
        self, request: guard_pb2.EvaluateRequest, context: grpc.ServicerContext
    ) -> guard_pb2.EvaluateResponse:
        decision = self._guard.evaluate(
            EvaluateInput(
                caller=caller_of(current_principal()),
                request_id=request.request_id,
                household_id=request.household_id,
                device_id=request.device_id,
                order=convert.order_from_pb(request.order),
                audio=convert.audio_from_pb(request.audio),
                transcript=request.transcript,
            )
        )
        return guard_pb2.EvaluateResponse(
            decision_id=decision.decision_id,
            outcome=convert.outcome_to_pb(decision.outcome),
            reasons=convert.decision_reasons_to_pb(decision),
            speaker=convert.speaker_to_pb(decision.speaker),
            policy_revision=decision.policy_revision,
            challenge=convert.challenge_to_pb(decision.challenge),
            decided_at=convert.ts(decision.decided_at),
        )

    def Confirm(
        self, request: guard_pb2.ConfirmRequest, context: grpc.ServicerContext
    ) -> guard_pb2.ConfirmResponse:
        decision = self._guard.confirm(
            ConfirmInput(
                caller=caller_of(current_principal()),
                request_id=request.request_id,
                household_id=request.household_id,
                challenge_id=request.challenge_id,
                order=convert.order_from_pb(request.order),
                spoken_digits=request.spoken_digits,
                audio=convert.audio_from_pb(request.audio),
                device_id=request.device_id,
            )
        )
        return guard_pb2.ConfirmResponse(
            decision_id=decision.decision_id,
            outcome=convert.outcome_to_pb(decision.outcome),
            reasons=convert.decision_reasons_to_pb(decision),
            speaker=convert.speaker_to_pb(decision.speaker),
            challenge=convert.challenge_to_pb(decision.challenge),
            decided_at=convert.ts(decision.decided_at),
        )


class HouseholdAdminServicer(admin_pb2_grpc.HouseholdAdminServicer):
    def __init__(self, service: HouseholdService, max_streams: int = 4) -> None:
        self._svc = service
        # Each open WatchEvents holds a server thread: a bounded number, so decisions keep theirs.
        self._streams = threading.BoundedSemaphore(max_streams) if max_streams > 0 else None

    def _who(self, context: grpc.ServicerContext) -> Principal:
        # Authenticated and scoped by the gate before the request was looked at.
        return current_principal()

    def CreateHousehold(
        self, request: admin_pb2.CreateHouseholdRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateHouseholdResponse:
        household, token = self._svc.create_household(
            self._who(context),
            request.name,
            request.time_zone,
            request.currency.strip().upper(),
            request.retain_audio,
        )
        return admin_pb2.CreateHouseholdResponse(
            household=convert.household_to_pb(household), admin_token=token
        )

    def GetHousehold(
        self, request: admin_pb2.GetHouseholdRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetHouseholdResponse:
        principal = self._who(context)
        household = self._svc.get_household(principal, request.household_id)
        return admin_pb2.GetHouseholdResponse(
            household=convert.household_to_pb(household), caller_member_id=principal.member_id or ""
        )

    def AddMember(
        self, request: admin_pb2.AddMemberRequest, context: grpc.ServicerContext
    ) -> admin_pb2.AddMemberResponse:
        member = self._svc.add_member(
            self._who(context),
            request.household_id,
            request.display_name,
            convert.role_from_pb(request.role),
            request.is_parent,
        )
        return admin_pb2.AddMemberResponse(member=convert.member_to_pb(member, None, self._svc.encoder_name))

    def ListMembers(
        self, request: admin_pb2.ListMembersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListMembersResponse:
        principal = self._who(context)
        rows = self._svc.list_members(principal, request.household_id)
        digits = self._svc.digit_enrolled(principal, request.household_id)
        current = self._svc.encoder_name
        return admin_pb2.ListMembersResponse(
            members=[convert.member_to_pb(m, vp, current, m.member_id in digits) for m, vp in rows],
            current_encoder=current,
        )

    def RemoveMember(
        self, request: admin_pb2.RemoveMemberRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RemoveMemberResponse:
        self._svc.remove_member(self._who(context), request.household_id, request.member_id)
        return admin_pb2.RemoveMemberResponse()

    def EnrollVoice(
        self, request: admin_pb2.EnrollVoiceRequest, context: grpc.ServicerContext
    ) -> admin_pb2.EnrollVoiceResponse:
        report = self._svc.enroll_voice(
            self._who(context),
            request.household_id,
            request.member_id,
            [convert.audio_from_pb(a) for a in request.utterances],
        )
        return admin_pb2.EnrollVoiceResponse(
            member=convert.member_to_pb(report.member, report.voiceprint, self._svc.encoder_name),
            takes=[
                admin_pb2.TakeQuality(
                    index=t.index,
                    accepted=t.accepted,
                    problem=t.problem,
                    speech_seconds=t.speech_seconds,
                    snr_db=t.snr_db,
                    clipped_fraction=t.clipped_fraction,
                    consistency=t.consistency if t.consistency is not None else 0.0,
                )
                for t in report.takes
            ],
            warnings=list(report.warnings),
        )

    def EnrollDigits(
        self, request: admin_pb2.EnrollDigitsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.EnrollDigitsResponse:
        report = self._svc.enroll_digits(
            self._who(context),
            request.household_id,
            request.member_id,
            [(convert.audio_from_pb(t.audio), t.digits) for t in request.takes],
        )
        return admin_pb2.EnrollDigitsResponse(
            member=convert.member_to_pb(report.member, None, self._svc.encoder_name, True),
            digits_covered=report.digits_covered,
            prompts=list(ENROLLMENT_PROMPTS),
        )

    def CheckEnrollmentTake(
        self, request: admin_pb2.CheckEnrollmentTakeRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CheckEnrollmentTakeResponse:
        check = self._svc.check_enrollment_take(
            self._who(context),
            request.household_id,
            request.member_id,
            convert.audio_from_pb(request.audio),
            request.digits,
        )
        return admin_pb2.CheckEnrollmentTakeResponse(
            usable=check.usable,
            problem=check.problem,
            speech_seconds=check.speech_seconds,
            snr_db=check.snr_db,
            clipped_fraction=check.clipped_fraction,
            says_prompt=check.says_prompt,
        )

    def ConfirmVoiceRole(
        self, request: admin_pb2.ConfirmVoiceRoleRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ConfirmVoiceRoleResponse:
        self._svc.confirm_voice_role(self._who(context), request.household_id, request.member_id)
        return admin_pb2.ConfirmVoiceRoleResponse()

    def SetPolicy(
        self, request: admin_pb2.SetPolicyRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetPolicyResponse:
        principal = self._who(context)
        policy = self._svc.set_policy(principal, request.household_id, convert.policy_from_pb(request.policy))
        return admin_pb2.SetPolicyResponse(policy=convert.policy_to_pb(policy))

    def GetPolicy(
        self, request: admin_pb2.GetPolicyRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetPolicyResponse:
        policy = self._svc.get_policy(self._who(context), request.household_id)
        return admin_pb2.GetPolicyResponse(policy=convert.policy_to_pb(policy))

    def SetPin(
        self, request: admin_pb2.SetPinRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetPinResponse:
        self._svc.set_pin(self._who(context), request.household_id, request.pin)
        return admin_pb2.SetPinResponse()

    def ListDecisions(
        self, request: admin_pb2.ListDecisionsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListDecisionsResponse:
        decisions = self._svc.list_decisions(self._who(context), request.household_id, request.limit)
        return admin_pb2.ListDecisionsResponse(
            decisions=[convert.decision_record_to_pb(d) for d in decisions]
        )

    def ListNotifications(
        self, request: admin_pb2.ListNotificationsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListNotificationsResponse:
        items = self._svc.list_notifications(self._who(context), request.household_id)
        return admin_pb2.ListNotificationsResponse(
            notifications=[convert.notification_to_pb(n) for n in items]
        )

    def ListPendingApprovals(
        self, request: admin_pb2.ListPendingApprovalsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListPendingApprovalsResponse:
        items = self._svc.pending_approvals(self._who(context), request.household_id)
        return admin_pb2.ListPendingApprovalsResponse(approvals=[convert.pending_to_pb(c) for c in items])

    def ResolveApproval(
        self, request: admin_pb2.ResolveApprovalRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ResolveApprovalResponse:
        challenge = self._svc.resolve_approval(
            self._who(context),
            request.household_id,
            request.challenge_id,
            request.parent_member_id,
            request.approve,
        )
        return admin_pb2.ResolveApprovalResponse(
            challenge=convert.challenge_to_pb(challenge_info(challenge)),
            state="approved" if request.approve else "rejected",
        )

    def VerifyAudit(
        self, request: admin_pb2.VerifyAuditRequest, context: grpc.ServicerContext
    ) -> admin_pb2.VerifyAuditResponse:
        report = self._svc.verify_audit(self._who(context), request.household_id)
        return admin_pb2.VerifyAuditResponse(
            ok=report.ok, entries=report.entries, first_bad_seq=report.first_bad_seq or 0
        )

    def IssueCredential(
        self, request: admin_pb2.IssueCredentialRequest, context: grpc.ServicerContext
    ) -> admin_pb2.IssueCredentialResponse:
        credential, token = self._svc.issue_credential(
            self._who(context),
            request.household_id,
            convert.credential_kind_from_pb(request.kind),
            request.member_id,
            request.device_id,
            request.label,
        )
        return admin_pb2.IssueCredentialResponse(credential=convert.credential_to_pb(credential), token=token)

    def ListCredentials(
        self, request: admin_pb2.ListCredentialsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListCredentialsResponse:
        items = self._svc.list_credentials(self._who(context), request.household_id)
        return admin_pb2.ListCredentialsResponse(credentials=[convert.credential_to_pb(c) for c in items])

    def RevokeCredential(
        self, request: admin_pb2.RevokeCredentialRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeCredentialResponse:
        revoked = self._svc.revoke_credential(self._who(context), request.household_id, request.credential_id)
        return admin_pb2.RevokeCredentialResponse(credential=convert.credential_to_pb(revoked))

    def RenewVoiceprint(
        self, request: admin_pb2.RenewVoiceprintRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RenewVoiceprintResponse:
        expires = self._svc.renew_voiceprint(self._who(context), request.household_id, request.member_id)
        return admin_pb2.RenewVoiceprintResponse(expires_at=convert.ts(expires))

    def ResetVoiceAdaptation(
        self, request: admin_pb2.ResetVoiceAdaptationRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ResetVoiceAdaptationResponse:
        dropped = self._svc.reset_voice_adaptation(
            self._who(context), request.household_id, request.member_id
        )
        return admin_pb2.ResetVoiceAdaptationResponse(dropped=dropped)

    def WatchEvents(
        self, request: admin_pb2.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[admin_pb2.Event]:
        events = self._svc.watch_events(
            self._who(context),
            request.household_id,
            request.after_event_id,
            request.follow,
            context.is_active,
        )
        if self._streams is None or not self._streams.acquire(blocking=False):
            raise ResourceExhausted("too many event streams are open on this server; retry in a while")
        try:
            for event in events:
                yield convert.event_to_pb(event)
        finally:
            self._streams.release()

    def SetWebhook(
        self, request: admin_pb2.SetWebhookRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetWebhookResponse:
        webhook, secret = self._svc.set_webhook(self._who(context), request.household_id, request.url)
        return admin_pb2.SetWebhookResponse(webhook=convert.webhook_to_pb(webhook), secret=secret)

    def GetWebhook(
        self, request: admin_pb2.GetWebhookRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetWebhookResponse:
        webhook = self._svc.get_webhook(self._who(context), request.household_id)
        return admin_pb2.GetWebhookResponse(webhook=convert.webhook_to_pb(webhook))

    def RemoveWebhook(
        self, request: admin_pb2.RemoveWebhookRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RemoveWebhookResponse:
        self._svc.remove_webhook(self._who(context), request.household_id)
        return admin_pb2.RemoveWebhookResponse()

    def ListDeadLetters(
        self, request: admin_pb2.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListDeadLettersResponse:
        items = self._svc.dead_letters(self._who(context), request.household_id)
        return admin_pb2.ListDeadLettersResponse(dead_letters=[convert.dead_letter_to_pb(d) for d in items])

    def ReplayDeadLetters(
        self, request: admin_pb2.ReplayDeadLettersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ReplayDeadLettersResponse:
        replayed = self._svc.replay_dead_letters(
            self._who(context), request.household_id, list(request.event_ids)
        )
        return admin_pb2.ReplayDeadLettersResponse(replayed=replayed)
