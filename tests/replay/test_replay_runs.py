"""The runner end to end on synthetic audio and the fake encoder: in process and over gRPC.

These need no ../shared/data: they check the runner's own behaviour (invalid files reported
while the rest runs, failures with their decision trail, exit code, JUnit and HTML output,
a remote guard's clock moved through TestControl, fresh households on every run).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent import futures
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import yaml
from support.server import fast_pins, front_door, local_settings
from trust.test_trust_tls import mint_ca, mint_leaf

from purchase_guard._gen.purchaseguard.v1 import admin_pb2_grpc, guard_pb2_grpc
from purchase_guard.api.client import ClientTls
from purchase_guard.api.servicers import HouseholdAdminServicer, PurchaseGuardServicer
from purchase_guard.api.testing_servicer import ReplayControl, add_test_control
from purchase_guard.app import App, build_app
from purchase_guard.clock import OffsetClock
from purchase_guard.replay import runner
from purchase_guard.replay.engine import FAILED, INVALID, PASSED, SKIPPED
from purchase_guard.replay.report import write_html, write_junit
from purchase_guard.replay.target import InProcessTarget, RemoteTarget
from purchase_guard.tls import server_credentials_from_files
from purchase_guard.voice.encoder import FakeEncoder

OPERATOR = "op-" + "r" * 40

GUEST_NEEDS_APPROVAL = {
    "rules": [
        {
            "role": "ADULT",
            "mode": "PURCHASE_ALLOWED",
            "on_limit": "LIMIT_CHALLENGE",
            "challenge_method": "SPOKEN_PIN",
        },
        {
            "role": "GUEST",
            "mode": "PURCHASE_WITH_CHALLENGE",
            "on_limit": "LIMIT_DENY",
            "challenge_method": "PARENT_APPROVAL",
        },
    ]
}


def approval_scenario(**extra: Any) -> dict[str, Any]:
    """A guest's request waits for a parent; left for 24 h it expires. Idempotent by request id."""
    doc: dict[str, Any] = {
        "name": "approval expires",
        "household": {
            "key": "home",
            "members": [{"key": "pat", "role": "ADULT", "parent": True}],
            "policy": GUEST_NEEDS_APPROVAL,
        },
        "orders": {"toy": {"items": [{"sku": "t1", "price": "12.00", "category": "toys"}]}},
        "steps": [
            {
                "id": "ask",
                "evaluate": {"order": "toy", "audio": {"file": "voices/low.flac"}, "request_id": "ask-1"},
                "expect": {"outcome": "CHALLENGE", "challenge": "PARENT_APPROVAL", "speaker": "unknown"},
            },
            {
                "evaluate": {"order": "toy", "audio": {"file": "voices/low.flac"}, "request_id": "ask-1"},
                "expect": {"outcome": "CHALLENGE", "same_decision_as": "ask"},
            },
            {"confirm": {}, "expect": {"outcome": "CHALLENGE", "reasons": ["CHALLENGE_REQUIRED"]}},
            {"wait": "24h1s"},
            {"confirm": {}, "expect": {"outcome": "DENY", "reasons": ["CHALLENGE_EXPIRED"]}},
            {"approve": {"as": "pat"}, "expect": {"error": "FAILED_PRECONDITION"}},
            {"check": {"decisions": 3, "audit": True}},
        ],
    }
    doc.update(extra)
    return doc


def write(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def fake_target(fake_thresholds: Path) -> InProcessTarget:
    return InProcessTarget(FakeEncoder(), thresholds_file=fake_thresholds)


def test_invalid_file_is_reported_and_the_rest_still_runs(
    tmp_path: Path, synth_root: Path, fake_target: InProcessTarget
) -> None:
    """One bad file is INVALID with its path and field; the good one beside it still runs and passes."""
    bad = approval_scenario()
    bad["steps"][0]["expect"]["outcome"] = "MAYBE"
    write(tmp_path / "corpus", "a-bad.yaml", bad)
    write(tmp_path / "corpus", "b-good.yaml", approval_scenario())
    summary = runner.run([tmp_path / "corpus"], fake_target, synth_root)
    status = {Path(r.path).name: r for r in summary.results}
    assert status["a-bad.yaml"].status == INVALID
    assert f"{tmp_path / 'corpus' / 'a-bad.yaml'}: steps[0].expect.outcome:" in status["a-bad.yaml"].message
    assert status["b-good.yaml"].status == PASSED, status["b-good.yaml"].message
    assert len(status["b-good.yaml"].steps) == 7
    assert not summary.ok
    assert "1 passed, 0 failed, 0 skipped, 1 invalid" in summary.line()


def test_wrong_expectation_fails_with_the_decision_trail(
    tmp_path: Path, synth_root: Path, fake_target: InProcessTarget
) -> None:
    """A scenario expecting ALLOW for an unknown voice fails, naming the step and what came back."""
    doc = approval_scenario()
    doc["steps"][0]["expect"] = {"outcome": "ALLOW", "forbidden_reasons": ["SPEAKER_UNKNOWN"]}
    write(tmp_path, "wrong.yaml", doc)
    summary = runner.run([tmp_path / "wrong.yaml"], fake_target, synth_root)
    (result,) = summary.results
    assert result.status == FAILED
    assert result.message.startswith("steps[0] evaluate (ask) @ home: expected ALLOW, got CHALLENGE")
    first = result.steps[0]
    assert not first.passed
    assert "forbidden reasons present: SPEAKER_UNKNOWN" in first.problems
    assert "SPEAKER_UNKNOWN" in {code for code, _ in first.reasons}
    assert first.latency_ms is not None
    write_junit(summary, tmp_path / "junit.xml")
    case = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    assert "expected ALLOW, got CHALLENGE" in failure.get("message", "")
    page = write_html(summary, tmp_path / "report").read_text()
    assert "expected ALLOW, got CHALLENGE" in page
    assert "<td class='num off'>1</td>" in page  # CHALLENGE where ALLOW was expected, off the diagonal


def test_main_exit_code_junit_and_report(tmp_path: Path, synth_root: Path) -> None:
    """The command exits 1 when a file is invalid, and still writes JUnit and the HTML report."""
    bad = approval_scenario()
    bad["steps"][1]["evaluate"]["order"] = "sofa"
    write(tmp_path / "corpus", "bad.yaml", bad)
    junit, report = tmp_path / "out" / "junit.xml", tmp_path / "out" / "report"
    code = runner.main(
        [
            str(tmp_path / "corpus"),
            "--data",
            str(synth_root),
            "--junit",
            str(junit),
            "--report",
            str(report),
            "--quiet",
        ]
    )
    assert code == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("errors") == "1"
    assert (report / "index.html").is_file()
    assert (report / "results.json").is_file()
    assert runner.main([str(tmp_path / "nowhere"), "--data", str(synth_root), "--quiet"]) == 2


# ------------------------------------------------------------------------------ remote target
def remote_server(app: App, with_clock: bool) -> grpc.Server:
    """Guard and admin services, plus TestControl when asked: what a test-mode guard serves."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=front_door(app))
    guard_pb2_grpc.add_PurchaseGuardServicer_to_server(PurchaseGuardServicer(app.guard), server)
    admin_pb2_grpc.add_HouseholdAdminServicer_to_server(HouseholdAdminServicer(app.households), server)
    if with_clock:
        add_test_control(server, app)
    return server


@pytest.fixture
def test_mode_app(tmp_path: Path, fake_thresholds: Path) -> Iterator[App]:
    settings = local_settings(
        tmp_path,
        OPERATOR,
        sqlite_path=tmp_path / "remote.db",
        encoder="fake",
        test_mode=True,
        thresholds_file=fake_thresholds,
    )
    app = build_app(settings, clock=OffsetClock(), pins=fast_pins())
    yield app
    app.store.close()


def serve(app: App, with_clock: bool) -> tuple[grpc.Server, str]:
    server = remote_server(app, with_clock)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_remote_target_moves_the_guard_clock_and_reruns_cleanly(
    tmp_path: Path, synth_root: Path, test_mode_app: App
) -> None:
    """Against a test-mode guard, `start` and `wait` move its clock through TestControl; running the
    same scenario twice passes twice, because each run creates its own households and request ids."""
    server, address = serve(test_mode_app, with_clock=True)
    target = RemoteTarget(address, OPERATOR, backend_token=test_mode_app.backend_token)
    try:
        path = write(tmp_path, "remote.yaml", approval_scenario(start="2026-11-25T09:15:00"))
        first = runner.run([path], target, synth_root)
        second = runner.run([path], target, synth_root)
    finally:
        target.close()
        server.stop(0)
    assert [r.status for r in (*first.results, *second.results)] == [PASSED, PASSED], first.results[0].message
    zone = ZoneInfo("America/Los_Angeles")
    asked = [datetime.fromisoformat(r.steps[0].decided_at) for r in (*first.results, *second.results)]
    assert [(t.astimezone(zone).hour, t.astimezone(zone).minute) for t in asked] == [(9, 15), (9, 15)]
    # The second run decided afresh instead of replaying the first run's request ids: day 1 09:15,
    # the 24 h wait (day 2 09:15), the 49 h gap after the scenario (day 4 10:15), then the next
    # 09:15 is on day 5.
    assert abs(asked[1] - asked[0] - timedelta(hours=96)) < timedelta(minutes=1)  # real time flows too
    assert first.results[0].steps[0].decision_id != second.results[0].steps[0].decision_id


def test_remote_target_replays_against_a_guard_that_requires_client_certificates(
    tmp_path: Path, synth_root: Path, test_mode_app: App
) -> None:
    """With the client TLS settings (`replay --tls-ca/--tls-cert/--tls-key`), a scenario replays
    end to end against an mTLS guard; the same target without its certificate gets no answer."""
    ca, ca_cert, ca_key = mint_ca(tmp_path, "replay-ca")
    server_pair = mint_leaf(tmp_path, "server", ca_cert, ca_key, server=True)
    client_pair = mint_leaf(tmp_path, "qa", ca_cert, ca_key, server=False)
    server = remote_server(test_mode_app, True)
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials_from_files(server_pair.cert, server_pair.key, ca.cert)
    )
    server.start()
    address = f"127.0.0.1:{port}"
    tls = ClientTls(ca.cert, client_pair.cert, client_pair.key, server_name="guard.test")
    target = RemoteTarget(address, OPERATOR, tls=tls, backend_token=test_mode_app.backend_token)
    no_cert = ReplayControl(address, OPERATOR, 10, tls=ClientTls(ca.cert, server_name="guard.test"))
    try:
        summary = runner.run([write(tmp_path, "tls.yaml", approval_scenario())], target, synth_root)
        with pytest.raises(grpc.RpcError) as refused:
            no_cert.has_service("clock")
    finally:
        target.close()
        no_cert.close()
        server.stop(0)
    assert [r.status for r in summary.results] == [PASSED], summary.results[0].message
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_remote_target_without_clock_control_skips_clock_scenarios(
    tmp_path: Path, synth_root: Path, test_mode_app: App
) -> None:
    """A guard without TestControl cannot move time: scenarios that need it are skipped, not failed."""
    server, address = serve(test_mode_app, with_clock=False)
    target = RemoteTarget(address, OPERATOR, backend_token=test_mode_app.backend_token)
    try:
        summary = runner.run([write(tmp_path, "s.yaml", approval_scenario())], target, synth_root)
    finally:
        target.close()
        server.stop(0)
    (result,) = summary.results
    assert result.status == SKIPPED
    assert "clock" in result.message
    assert summary.ok
