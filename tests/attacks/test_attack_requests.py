"""Issue 14, attacks 3, 7 and 9: a recording sent again, Unicode around a blocked category, and the
small ones (a Redis that answers garbage, too many channels, Python reprs in messages). Each test
names the attack as found against 773a185 ("Before: ...") and shows over real gRPC that it fails."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from attacks.attack_world import NOW, Family, World, codes, make_family, new_id, order, rpc_error, world_at
from support.takes import new_take
from unit.voice.voice_synth import RATE, encode, synth_voice

DAY = timedelta(days=1)
REPR_MARKS = ("BytesIO", "<", "object at 0x", "Traceback", "Error(")


def test_the_same_recording_three_times_spends_the_daily_cap_once(world: World, family: Family) -> None:
    """Before: the same recording sent three times (new request ids) was allowed three times and
    used up the household's daily cap. Now the second and third are DENY with REPLAYED_AUDIO and
    record no spend: 100.00 of the adult's 300.00 a day is spent, and two new orders of 100.00 in
    new takes still fit under the cap."""
    recording = new_take("low")
    replies = [family.ask("low", 10_000, audio=recording) for _ in range(3)]
    assert [r["outcome"] for r in replies] == ["ALLOW", "DENY", "DENY"]
    assert all("REPLAYED_AUDIO" in codes(r) for r in replies[1:])
    assert world.app.store.spend_since(family.household_id, None, NOW - DAY) == 10_000
    assert [family.ask("low", 10_000)["outcome"] for _ in range(2)] == ["ALLOW", "ALLOW"]
    assert world.app.store.spend_since(family.household_id, None, NOW - DAY) == 30_000


BYPASSES = {
    "zero-width space": "alc\u200bohol",
    "fullwidth": "\uff41\uff4c\uff43\uff4f\uff48\uff4f\uff4c",
    "soft hyphen": "alcohol\u00ad",
    "upper case": "ALCOHOL",
    "mixed and padded": " Alc\u200dOhol\ufeff",
}


@pytest.mark.parametrize("category", list(BYPASSES.values()), ids=list(BYPASSES))
def test_unicode_spellings_of_a_blocked_category_are_blocked(
    world: World, family: Family, category: str
) -> None:
    """Before: "alc\\u200bohol", fullwidth "\\uff41\\uff4c..." and "alcohol\\u00ad" were allowed where
    "alcohol" was blocked. Now each spelling is DENY with CATEGORY_BLOCKED for the verified adult,
    who is allowed the same order in another category."""
    from attacks.attack_world import set_policy

    set_policy(family, blocked_categories=["alcohol"])
    assert family.ask("low", 1500, "household")["outcome"] == "ALLOW"
    reply = family.ask("low", 1500, category)
    assert reply["outcome"] == "DENY"
    assert "CATEGORY_BLOCKED" in codes(reply)


def test_a_blocked_category_written_oddly_in_the_policy_still_blocks(world: World, family: Family) -> None:
    """The other side of the same bypass: a parent who typed the category fullwidth or in capitals
    in the policy still blocks the plain spelling in an order."""
    from attacks.attack_world import set_policy

    set_policy(family, blocked_categories=["\uff21\uff2c\uff23\uff2f\uff28\uff2f\uff2c"])
    reply = family.ask("low", 1500, "alcohol")
    assert reply["outcome"] == "DENY"
    assert "CATEGORY_BLOCKED" in codes(reply)


# ------------------------------------------------------------------ small ones
class JunkServer:
    """A TCP server on a free port that answers every connection with `reply` (not Redis)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                while conn.recv(65536):
                    conn.sendall(self.reply)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=[b"\x00\xff\xfe garbage <object at 0x1>\r\n", b"+OK\r\n", b":12\r\n"], ids=repr)
def junk_redis(request: pytest.FixtureRequest) -> Iterator[JunkServer]:
    server = JunkServer(request.param)
    yield server
    server.close()


def test_a_redis_that_answers_garbage_is_unavailable_with_a_clean_message(
    tmp_path: Path, junk_redis: JunkServer
) -> None:
    """Before: a Redis that answered garbage made Evaluate UNKNOWN with Python's text. Now, with the
    rate limiter pointed at a server that answers junk (not RESP, or RESP of the wrong shape), an
    authenticated Evaluate is UNAVAILABLE, its message says what is wrong in words, and nothing
    was decided."""
    folder = tmp_path / "guard"
    with world_at(folder) as w:  # set up while the limiter works (enrollment is metered too)
        family = make_family(w.operator)
    junk = {"rate_limit_backend": "redis", "redis_url": f"redis://127.0.0.1:{junk_redis.port}/0"}
    with world_at(folder, **junk) as w:
        family.me = w.operator.with_token(family.token)
        error = rpc_error(family.ask, "low", 1500)
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        details = error.details() or ""
        assert "rate limiter is unavailable" in details
        assert not any(mark in details for mark in REPR_MARKS), details
        assert w.app.store.list_decisions(family.household_id, 10) == []


def channels_wav(count: int) -> bytes:
    voice = synth_voice("low", 1.8, seed=11)
    ramp = np.linspace(0.6, 1.0, count, dtype=np.float32)
    return encode(voice[:, None] * ramp[None, :], RATE)


@pytest.mark.parametrize("count", [3, 6])
def test_more_than_two_channels_is_invalid_argument(world: World, family: Family, count: int) -> None:
    """Before: a 6-channel WAV was accepted although the docs say mono or stereo. Now 3 and 6
    channels are INVALID_ARGUMENT saying so, and a stereo recording is still decided."""
    error = rpc_error(family.ask, "low", 1500, audio=channels_wav(count))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "mono or stereo" in (error.details() or "")
    assert family.ask("low", 1500, audio=channels_wav(2))["outcome"] == "ALLOW"


UNDECODABLE = {
    "random bytes": bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8)),
    "cut WAV header": channels_wav(1)[:30],
    "RIFF then junk": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 64,
    "FLAC magic then junk": b"fLaC" + b"\x00\x01" * 200,
    "text": b"<html>not audio</html>",
}


@pytest.mark.parametrize("audio", list(UNDECODABLE.values()), ids=list(UNDECODABLE))
def test_undecodable_audio_is_refused_without_object_reprs(
    world: World, family: Family, audio: bytes
) -> None:
    """Before: decode errors printed a `BytesIO` repr. Now undecodable audio is INVALID_ARGUMENT
    whose message carries no object repr, class name or traceback."""
    error = rpc_error(family.me.evaluate, new_id(), family.household_id, "kitchen", order(1500), audio)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details
    assert not any(mark in details for mark in REPR_MARKS), details
