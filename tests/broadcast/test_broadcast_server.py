"""A real server with the broadcast defence over real gRPC: the registry, known clips, a fleet
cluster and the late catch of challenges issued before the cluster formed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from broadcast.broadcast_audio import household_copy, load16k
from support.audio import wav_bytes
from support.rpc import status_of
from support.server import fast_pins, local_settings

from purchase_guard._gen.purchaseguard.v1 import broadcast_pb2, broadcast_pb2_grpc, common_pb2
from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer, build_server
from purchase_guard.app import build_app, build_broadcast
from purchase_guard.clock import FrozenClock, SequentialIds
from purchase_guard.voice.ge2e import Ge2eEncoder

pytestmark = pytest.mark.data

OPERATOR = "op-" + "b" * 40


@pytest.fixture(scope="module")
def bc_encoder() -> Ge2eEncoder:
    return Ge2eEncoder()


@pytest.fixture
def bc_server(tmp_path: Path, bc_encoder: Ge2eEncoder) -> Iterator[tuple[RunningServer, FrozenClock]]:
    clock = FrozenClock(datetime(2026, 11, 25, 20, 0, tzinfo=UTC))
    settings = local_settings(tmp_path, OPERATOR, max_message_bytes=4 * 1024 * 1024)
    # The guard's clip store is the file the server's registry uses (same settings), so a clip
    # registered over gRPC is enforced by this guard.
    parts = build_broadcast(settings, clock, SequentialIds())
    app = build_app(
        settings,
        encoder=bc_encoder,
        clock=clock,
        pins=fast_pins(),
        broadcast=parts.guard,
    )
    running = build_server(app)
    yield running, clock
    running.stop(grace=0)


@pytest.fixture
def client(bc_server: tuple[RunningServer, FrozenClock]) -> Iterator[GuardClient]:
    c = GuardClient(
        f"127.0.0.1:{bc_server[0].port}", OPERATOR, timeout=60, backend_token=bc_server[0].app.backend_token
    )
    yield c
    c.close()


@pytest.fixture
def registry(
    bc_server: tuple[RunningServer, FrozenClock],
) -> Iterator[broadcast_pb2_grpc.BroadcastRegistryStub]:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{bc_server[0].port}", options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
    )
    yield broadcast_pb2_grpc.BroadcastRegistryStub(channel)
    channel.close()


def meta(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def order(total: int = 17000) -> dict[str, Any]:
    return {
        "items": [
            {
                "sku": "dollhouse",
                "title": "Dollhouse",
                "category": "toys",
                "quantity": 1,
                "unit_price": {"minor_units": str(total), "currency": "USD"},
            }
        ],
        "total": {"minor_units": str(total), "currency": "USD"},
        "merchant": "example-shop",
    }


def household(client: GuardClient, name: str) -> tuple[str, str]:
    """A household whose policy sends guests' orders to a parent for approval (instead of the
    default refusal), so an unrecognised voice gets a challenge the late catch can cancel."""
    hh = client.create_household(name, "America/Los_Angeles", "USD")
    hid, token = hh["household"]["household_id"], hh["admin_token"]
    client.with_token(token).add_member(hid, "Parent", "ADULT", True)
    policy = client.get_policy(hid)["policy"]
    for rule in policy["rules"]:
        if rule["role"] == "GUEST":
            rule["mode"] = "PURCHASE_WITH_CHALLENGE"
            rule["challenge_method"] = "PARENT_APPROVAL"
    policy.pop("revision", None)
    client.set_policy(hid, policy)
    return hid, token


def codes(resp: dict[str, Any]) -> list[str]:
    return [r["code"] for r in resp.get("reasons", [])]


def test_registry_needs_the_operator_and_valid_audio(
    client: GuardClient, registry: broadcast_pb2_grpc.BroadcastRegistryStub, data_dir: Path
) -> None:
    """No token is UNAUTHENTICATED, a household token PERMISSION_DENIED, empty or undecodable audio
    INVALID_ARGUMENT, an unknown clip id NOT_FOUND; the operator can register, list and remove."""
    _, token = household(client, "Smiths")
    clip_wav = wav_bytes(load16k(data_dir / "broadcast" / "jfk.flac"), 16_000)
    good = broadcast_pb2.RegisterClipRequest(label="JFK", audio=common_pb2.Audio(encoded=clip_wav))
    assert status_of(lambda: registry.RegisterClip(good)) is grpc.StatusCode.UNAUTHENTICATED
    denied = status_of(lambda: registry.RegisterClip(good, metadata=meta(token)))
    assert denied is grpc.StatusCode.PERMISSION_DENIED
    for audio in (common_pb2.Audio(), common_pb2.Audio(encoded=b"RIFF....WAVEjunk")):
        bad = broadcast_pb2.RegisterClipRequest(label="x", audio=audio)
        assert status_of(lambda bad=bad: registry.RegisterClip(bad, metadata=meta(OPERATOR))) is (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    clip = registry.RegisterClip(good, metadata=meta(OPERATOR)).clip
    assert clip.source == "registered"
    assert clip.voiced_seconds > 5.0
    assert clip.enforced
    listed = registry.ListClips(broadcast_pb2.ListClipsRequest(), metadata=meta(OPERATOR)).clips
    assert [c.clip_id for c in listed] == [clip.clip_id]
    registry.RemoveClip(broadcast_pb2.RemoveClipRequest(clip_id=clip.clip_id), metadata=meta(OPERATOR))
    assert registry.ListClips(broadcast_pb2.ListClipsRequest(), metadata=meta(OPERATOR)).clips == []
    missing = broadcast_pb2.RemoveClipRequest(clip_id=clip.clip_id)
    gone = status_of(lambda: registry.RemoveClip(missing, metadata=meta(OPERATOR)))
    assert gone is grpc.StatusCode.NOT_FOUND


def test_registered_clip_is_denied_as_known_broadcast(
    client: GuardClient, registry: broadcast_pb2_grpc.BroadcastRegistryStub, data_dir: Path
) -> None:
    """After the operator registers a clip, an Evaluate holding part of it is DENY with
    KNOWN_BROADCAST naming the clip."""
    jfk = load16k(data_dir / "broadcast" / "jfk.flac")
    audio = common_pb2.Audio(encoded=wav_bytes(jfk, 16_000))
    request = broadcast_pb2.RegisterClipRequest(label="JFK", audio=audio)
    clip = registry.RegisterClip(request, metadata=meta(OPERATOR)).clip
    hid, _ = household(client, "Joneses")
    heard = household_copy(data_dir, jfk, 4.0, 7.0, seed=2)
    resp = client.evaluate("r1", hid, "tv-room", order(), wav_bytes(heard.samples, 16_000))
    assert resp["outcome"] == "DENY"
    assert codes(resp)[0] == "KNOWN_BROADCAST"
    assert resp["reasons"][0]["detail"]["clip_id"] == clip.clip_id


def test_a_clip_heard_only_at_the_end_of_longer_speech_is_challenged_not_refused(
    client: GuardClient, registry: broadcast_pb2_grpc.BroadcastRegistryStub, data_dir: Path
) -> None:
    """The graded denylist over gRPC: the last 2.5 s of a registered clip followed by 6 s of
    someone else reading is a match too weak to refuse (it covers a third of the utterance):
    never ALLOW, SUSPECTED_BROADCAST with effect NEEDS_CHALLENGE naming the clip, and not
    KNOWN_BROADCAST."""
    jfk = load16k(data_dir / "broadcast" / "jfk.flac")
    audio = common_pb2.Audio(encoded=wav_bytes(jfk, 16_000))
    clip = registry.RegisterClip(
        broadcast_pb2.RegisterClipRequest(label="JFK", audio=audio), metadata=meta(OPERATOR)
    ).clip
    hid, _ = household(client, "Garcias")
    tail = household_copy(data_dir, jfk, 8.5, 11.0, seed=3).samples
    reader = sorted((data_dir / "librispeech" / "test-other").glob("*/*.flac"))[0]
    talk = load16k(reader)[: 6 * 16_000]
    talk = 0.3 * talk / np.max(np.abs(talk))
    heard = np.concatenate([tail, talk]).astype(np.float32)
    resp = client.evaluate("r1", hid, "tv-room", order(), wav_bytes(heard, 16_000))
    assert resp["outcome"] == "CHALLENGE"
    suspected = [r for r in resp["reasons"] if r["code"] == "SUSPECTED_BROADCAST"]
    assert [(r["effect"], r["detail"]["clip_id"]) for r in suspected] == [("NEEDS_CHALLENGE", clip.clip_id)]
    assert "KNOWN_BROADCAST" not in codes(resp)


def test_fleet_cluster_denies_and_cancels_earlier_challenges(
    client: GuardClient, bc_server: tuple[RunningServer, FrozenClock], data_dir: Path
) -> None:
    """Three homes hear the same TV segment: the first two get a challenge, the third is DENY with
    BROADCAST_MATCH, and a Confirm of the first home's challenge then answers BROADCAST_MATCH."""
    _, clock = bc_server
    tv = load16k(next(f for f in sorted((data_dir / "librispeech" / "train-clean-100").glob("*.flac"))))
    homes = [household(client, f"Home {k}") for k in range(3)]
    answers = []
    for k, (hid, _) in enumerate(homes):
        clock.advance(timedelta(seconds=2))
        heard = household_copy(data_dir, tv, 2.0, 5.0, seed=10 + k, snr_db=20.0)
        answers.append(client.evaluate(f"r{k}", hid, "kitchen", order(), wav_bytes(heard.samples, 16_000)))
    assert [a["outcome"] for a in answers[:2]] == ["CHALLENGE", "CHALLENGE"], answers[:2]
    assert answers[2]["outcome"] == "DENY"
    assert "BROADCAST_MATCH" in codes(answers[2])
    first_hid, _ = homes[0]
    challenge_id = answers[0]["challenge"]["challenge_id"]
    confirm = client.confirm("c0", first_hid, challenge_id, order(), "", None)
    assert confirm["outcome"] == "DENY"
    assert codes(confirm) == ["BROADCAST_MATCH"]
