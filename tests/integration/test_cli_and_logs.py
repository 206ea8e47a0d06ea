"""The CLI a parent or operator uses, and what reaches the logs while it runs."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from support.audio import fsdd_digit_takes, fsdd_wav

from purchase_guard.api.server import RunningServer
from purchase_guard.cli import main
from purchase_guard.logs import configure_logging

OPERATOR = "op-" + "x" * 40  # the operator token the `server` fixture is started with

pytestmark = pytest.mark.data


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code = main(list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_parent_flow_through_the_cli(
    server: RunningServer,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator creates a household and a parent, with the household token, sets it up and buys."""
    target = f"127.0.0.1:{server.port}"
    created = run_cli(
        capsys, "admin", "--target", target, "--token", OPERATOR, "create-household",
        "--name", "CLI family", "--time-zone", "Europe/London", "--currency", "GBP",
    )  # fmt: skip
    hid = created["household"]["household_id"]
    token = created["admin_token"]
    adm = ("admin", "--target", target, "--token", token)
    member = run_cli(
        capsys, *adm, "add-member", "--household", hid, "--name", "Jo", "--role", "adult", "--parent"
    )
    mid = member["member"]["member_id"]
    takes = []
    for i, digits in enumerate(("3817", "5092", "6641")):
        path = tmp_path / f"take{i}.wav"
        path.write_bytes(fsdd_wav(data_dir, "jackson", digits, i))
        takes.append(str(path))
    enrolled = run_cli(capsys, *adm, "enroll", "--household", hid, "--member", mid, *takes)
    assert enrolled["member"]["voice_enrolled"]
    assert all(t["accepted"] for t in enrolled["takes"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("7391\n"))
    run_cli(capsys, *adm, "set-pin", "--household", hid)
    order = tmp_path / "order.yaml"
    order.write_text(
        "items:\n  - {sku: tea, title: Tea, category: grocery, quantity: 2,\n"
        "     unit_price: {minor_units: 450, currency: GBP}}\n"
        "total: {minor_units: 900, currency: GBP}\nmerchant: corner-shop\n"
    )
    audio = tmp_path / "ask.wav"
    audio.write_bytes(fsdd_wav(data_dir, "jackson", "2749", 9))
    backend = ("guard", "--target", target, "--backend-token", server.app.backend_token)
    decision = run_cli(
        capsys, *backend, "evaluate", "--household", hid, "--device", "hall",
        "--order", str(order), "--audio", str(audio),
    )  # fmt: skip
    assert decision["outcome"] == "ALLOW", decision
    issued = run_cli(
        capsys, *adm, "issue-credential", "--kind", "parent", "--household", hid, "--member", mid,
        "--label", "Jo's phone",
    )  # fmt: skip
    assert issued["token"].startswith("pgp_")
    listed = run_cli(capsys, *adm, "credentials", "--household", hid)["credentials"]
    assert [(c["kind"], c["member_id"], c["label"]) for c in listed] == [
        ("PARENT_CREDENTIAL", mid, "Jo's phone")
    ]
    assert "token" not in listed[0]
    history = run_cli(capsys, *adm, "decisions", "--household", hid)
    assert [d["decision_id"] for d in history["decisions"]] == [decision["decision_id"]]
    assert run_cli(capsys, *adm, "verify-audit", "--household", hid)["ok"]


def test_cli_reports_errors_with_status_and_exit_code(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused call prints the gRPC status and message on stderr and exits non-zero."""
    code = main(
        ["admin", "--target", f"127.0.0.1:{server.port}", "--token", "nope", "members", "--household", "hh_x"]
    )
    assert code == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_logs_are_json_with_decision_id_and_never_secrets(
    server: RunningServer, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every decision log line is JSON with a decision id; no PIN, audio, token or embedding appears."""
    sink = io.StringIO()
    configure_logging("debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sink))
    try:
        from purchase_guard.api.client import GuardClient

        client = GuardClient(f"127.0.0.1:{server.port}", OPERATOR, backend_token=server.app.backend_token)
        created = client.create_household("Logs", "UTC", "USD")
        hid, token = created["household"]["household_id"], created["admin_token"]
        mid = client.add_member(hid, "A", "ADULT", True)["member"]["member_id"]
        client.enroll(
            hid, mid, [fsdd_wav(data_dir, "theo", d, i) for i, d in enumerate(("3817", "5092", "6641"))]
        )
        client.enroll_digits(hid, mid, fsdd_digit_takes(data_dir, "theo"))
        client.set_pin(hid, "8352")
        order = {
            "items": [
                {
                    "sku": "s",
                    "category": "c",
                    "quantity": 1,
                    "unit_price": {"minor_units": "20000", "currency": "USD"},
                }
            ],
            "total": {"minor_units": "20000", "currency": "USD"},
            "merchant": "m",
        }
        ev = client.evaluate("log1", hid, "d", order, fsdd_wav(data_dir, "theo", "2749", 9))
        assert ev["challenge"]["method"] == "SPOKEN_PIN"
        confirmed = client.confirm(
            "log2",
            hid,
            ev["challenge"]["challenge_id"],
            order,
            "8352",
            fsdd_wav(data_dir, "theo", "8352", 12),
        )
        assert confirmed["outcome"] == "ALLOW", confirmed  # the PIN was heard, checked and passed
        client.close()
    finally:
        configure_logging("info")
    lines = [json.loads(line) for line in sink.getvalue().splitlines() if line.strip()]
    decisions = [line for line in lines if line.get("event") == "decision"]
    assert len(decisions) == 2
    assert all(re.fullmatch(r"dec_[0-9a-f]{32}", d["decision_id"]) for d in decisions)
    text = sink.getvalue()
    assert "8352" not in text
    assert token not in text
    assert OPERATOR not in text
    for line in lines:
        for value in line.values():
            # An embedding would show up as a long list of floats.
            assert not (
                isinstance(value, list) and len(value) > 16 and all(isinstance(v, float) for v in value)
            )


def test_serve_starts_on_embedded_defaults_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`purchase-guard serve` on its defaults starts, answers health, and exits 0 on SIGTERM; at
    start it logs that OpenBLAS runs single-threaded."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PURCHASE_GUARD_")},
        "PURCHASE_GUARD_LISTEN": "127.0.0.1:0",
        "PURCHASE_GUARD_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "purchase_guard", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first + (proc.stderr.read() if proc.stderr else "")
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert (tmp_path / "var" / "purchase-guard.db").is_file()
        token_file = tmp_path / "var" / "operator-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        # At start the process set numpy's and scipy's OpenBLAS to one thread each (blas.py).
        assert proc.stderr is not None
        events = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
        blas = [e for e in events if e.get("event") == "blas_single_threaded"]
        assert len(blas) == 1, events[:5]
        assert blas[0]["libraries"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
