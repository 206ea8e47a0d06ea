"""gRPC `BroadcastRegistry`: operator-only access to the known-clip denylist."""

from __future__ import annotations

import grpc

from purchase_guard._gen.purchaseguard.v1 import broadcast_pb2, broadcast_pb2_grpc
from purchase_guard.api import convert
from purchase_guard.api.gate import current_principal
from purchase_guard.broadcast.denylist import Clip
from purchase_guard.broadcast.registry import ClipRegistry
from purchase_guard.errors import PermissionDenied


def clip_to_pb(clip: Clip) -> broadcast_pb2.Clip:
    out = broadcast_pb2.Clip(
        clip_id=clip.clip_id,
        label=clip.label,
        voiced_seconds=round(clip.voiced_seconds, 3),
        source=clip.source,
        created_at=convert.ts(clip.created_at),
        enforced=clip.enforced,
    )
    if clip.expires_at is not None:
        out.expires_at.CopyFrom(convert.ts(clip.expires_at))
    return out


class BroadcastRegistryServicer(broadcast_pb2_grpc.BroadcastRegistryServicer):
    """The gate admits only the operator here; the check is repeated in case it is wired without."""

    def __init__(self, registry: ClipRegistry) -> None:
        self._registry = registry

    def _operator(self, context: grpc.ServicerContext) -> None:
        if not current_principal().is_operator:
            raise PermissionDenied("only the operator credential can manage broadcast clips")

    def RegisterClip(
        self, request: broadcast_pb2.RegisterClipRequest, context: grpc.ServicerContext
    ) -> broadcast_pb2.RegisterClipResponse:
        self._operator(context)
        clip = self._registry.register(request.label, convert.audio_from_pb(request.audio))
        return broadcast_pb2.RegisterClipResponse(clip=clip_to_pb(clip))

    def ListClips(
        self, request: broadcast_pb2.ListClipsRequest, context: grpc.ServicerContext
    ) -> broadcast_pb2.ListClipsResponse:
        self._operator(context)
        clips = self._registry.list(include_promoted=request.include_promoted)
        return broadcast_pb2.ListClipsResponse(clips=[clip_to_pb(c) for c in clips])

    def RemoveClip(
        self, request: broadcast_pb2.RemoveClipRequest, context: grpc.ServicerContext
    ) -> broadcast_pb2.RemoveClipResponse:
        self._operator(context)
        self._registry.remove(request.clip_id)
        return broadcast_pb2.RemoveClipResponse()
