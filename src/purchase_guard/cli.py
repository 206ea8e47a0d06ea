"""Command line: serve | console | admin ... | guard ... | eval speakers.

`serve` runs the guard on its embedded defaults. `admin` and `guard` drive a running
guard over gRPC, for parents, operators and QA. `eval` measures the speaker decisions.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import yaml

from purchase_guard.config import ConfigError, load_settings

DEFAULT_TARGET = "127.0.0.1:50051"


def print_refusal(exc: Any) -> None:
    """The status, the message and, under it, each google.rpc BadRequest field violation (which
    take of an enrollment, which field of a policy) so a script can see what to fix."""
    from purchase_guard.console.guard_api import refusal_from_rpc

    refusal = refusal_from_rpc(exc)
    print(f"error: {refusal.code}: {refusal.message}", file=sys.stderr)
    for violation in refusal.violations:
        print(f"  {violation.field}: {violation.description}", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    from purchase_guard.logs import configure_logging, get_logger

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"purchase-guard: bad configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    log = get_logger("purchase_guard.cli")
    worker = args.worker is not None
    if settings.processes > 1 and not worker:
        # Several processes on one port: this one only starts and watches them (api/processes.py).
        from purchase_guard.api.processes import supervise

        return supervise(settings)
    from purchase_guard.blas import single_threaded_blas
    from purchase_guard.tracing import configure_tracing, shutdown_tracing

    # Requests run on many threads at once; OpenBLAS's own pool only spins beside them.
    log.info("blas_single_threaded", libraries=single_threaded_blas())
    configure_tracing(settings.otel_enabled, settings.otel_endpoint)

    from prometheus_client import start_http_server

    from purchase_guard.api.server import build_server
    from purchase_guard.app import build_app
    from purchase_guard.errors import GuardError

    try:
        app = build_app(settings)
    except GuardError as exc:
        print(f"purchase-guard: cannot start: {exc}", file=sys.stderr)
        return 3
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    running = build_server(app, share_port=worker)
    print(
        f"purchase-guard listening on {settings.listen.rsplit(':', 1)[0]}:{running.port} "
        f"(encoder {app.verifier.encoder.name}, "
        f"store {settings.sqlite_path if settings.store == 'sqlite' else settings.store}, "
        f"operator token in {settings.operator_token_file if not settings.operator_token else 'settings'}, "
        f"backend token in {settings.backend_token_file if not settings.backend_token else 'settings'})",
        flush=True,
    )
    done = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("shutdown_requested", signal=signum)
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    running.stop()
    shutdown_tracing()
    log.info("server_stopped")
    return 0


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    env = os.environ.get("PURCHASE_GUARD_ADMIN_TOKEN")
    if env:
        return env
    path = Path(os.environ.get("PURCHASE_GUARD_OPERATOR_TOKEN_FILE", "var/operator-token"))
    if path.is_file():
        return path.read_text().strip()
    return ""


def _backend_token(args: argparse.Namespace) -> str:
    if args.backend_token:
        return str(args.backend_token)
    env = os.environ.get("PURCHASE_GUARD_BACKEND_TOKEN")
    if env:
        return env
    path = Path(os.environ.get("PURCHASE_GUARD_BACKEND_TOKEN_FILE", "var/backend-token"))
    if path.is_file():
        return path.read_text().strip()
    return ""


def _load_structured(path: str) -> Any:
    text = Path(path).read_text()
    return yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)


def _admin(args: argparse.Namespace) -> int:
    import grpc

    from purchase_guard.api.client import GuardClient, tls_from_args

    client = GuardClient(args.target, _token(args), tls=tls_from_args(args))
    try:
        out = _admin_call(client, args)
    except grpc.RpcError as exc:
        print_refusal(exc)
        return 1
    finally:
        client.close()
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _admin_call(client: Any, a: argparse.Namespace) -> Any:
    cmd = a.admin_cmd
    if cmd == "create-household":
        return client.create_household(a.name, a.time_zone, a.currency, a.retain_audio)
    if cmd == "get-household":
        return client.get_household(a.household)
    if cmd == "add-member":
        return client.add_member(a.household, a.name, a.role.upper(), a.parent)
    if cmd == "members":
        return client.list_members(a.household)
    if cmd == "remove-member":
        return client.remove_member(a.household, a.member)
    if cmd == "enroll":
        return client.enroll(a.household, a.member, [Path(f).read_bytes() for f in a.files])
    if cmd == "enroll-digits":
        # Each file is named for, or given with, the digits it reads: --take 01234=path.wav
        pairs = []
        for take in a.take:
            digits, _, path = take.partition("=")
            pairs.append((digits, Path(path).read_bytes()))
        return client.enroll_digits(a.household, a.member, pairs)
    if cmd == "check-take":
        return client.check_take(a.household, a.member, Path(a.file).read_bytes(), a.digits or "")
    if cmd == "confirm-voice-role":
        return client.confirm_voice_role(a.household, a.member)
    if cmd == "set-policy":
        return client.set_policy(a.household, _load_structured(a.file))
    if cmd == "get-policy":
        return client.get_policy(a.household)
    if cmd == "set-pin":
        # Read from the terminal (or stdin), never from argv: argv shows up in `ps` and shell history.
        pin = getpass.getpass("New PIN: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
        return client.set_pin(a.household, pin)
    if cmd == "decisions":
        return client.list_decisions(a.household, a.limit)
    if cmd == "notifications":
        return client.list_notifications(a.household)
    if cmd == "approvals":
        return client.pending_approvals(a.household)
    if cmd in ("approve", "reject"):
        return client.resolve_approval(a.household, a.challenge, a.parent_member or "", cmd == "approve")
    if cmd == "issue-credential":
        return client.issue_credential(
            a.household or "", f"{a.kind.upper()}_CREDENTIAL", a.member or "", a.device or "", a.label
        )
    if cmd == "credentials":
        return client.list_credentials(a.household or "")
    if cmd == "revoke-credential":
        return client.revoke_credential(a.household or "", a.credential)
    if cmd == "renew-voiceprint":
        return client.renew_voiceprint(a.household, a.member)
    if cmd == "reset-adaptation":
        return client.reset_voice_adaptation(a.household, a.member)
    if cmd == "export":
        reply = client.export_household(a.household)
        fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(reply.archive)
        return {
            "household_id": reply.household_id,
            "out": a.out,
            "sha256": reply.sha256,
            "parts": [{"name": p.name, "records": p.records, "sha256": p.sha256} for p in reply.parts],
        }
    if cmd == "erase":
        if not a.yes:
            raise SystemExit("erase cannot be undone: add --yes to confirm")
        return client.erase_household(a.household)
    if cmd == "verify-audit":
        return client.verify_audit(a.household)
    if cmd == "set-webhook":
        return client.set_webhook(a.household, a.url)
    if cmd == "get-webhook":
        return client.get_webhook(a.household)
    if cmd == "remove-webhook":
        return client.remove_webhook(a.household)
    if cmd == "dead-letters":
        return client.dead_letters(a.household)
    if cmd == "replay-dead-letters":
        return client.replay_dead_letters(a.household, a.event_id or ())
    if cmd == "events":
        if a.follow:
            # One JSON object per line as they happen (Ctrl-C to stop); resume with --after.
            for event in client.watch_events(a.household, a.after, follow=True):
                print(json.dumps(event, sort_keys=True), flush=True)
            return {}
        return {"events": list(client.watch_events(a.household, a.after))}
    raise SystemExit(f"unknown admin command {cmd}")


def _guard(args: argparse.Namespace) -> int:
    import grpc

    from purchase_guard.api.client import GuardClient, tls_from_args

    client = GuardClient(args.target, tls=tls_from_args(args), backend_token=_backend_token(args))
    order = _load_structured(args.order)
    try:
        if args.guard_cmd == "evaluate":
            out = client.evaluate(
                args.request_id or uuid.uuid4().hex,
                args.household,
                args.device,
                order,
                Path(args.audio).read_bytes(),
                args.transcript,
            )
        else:
            out = client.confirm(
                args.request_id or uuid.uuid4().hex,
                args.household,
                args.challenge,
                order,
                args.digits,
                Path(args.audio).read_bytes() if args.audio else None,
                args.device,
            )
    except grpc.RpcError as exc:
        print_refusal(exc)
        return 1
    finally:
        client.close()
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _console(args: argparse.Namespace) -> int:
    from purchase_guard.console.settings import load_console_settings

    try:
        settings = load_console_settings(target=args.target, listen=args.listen)
    except ConfigError as exc:
        print(f"purchase-guard console: bad configuration: {exc}", file=sys.stderr)
        return 2
    from purchase_guard.console.server import serve_console
    from purchase_guard.logs import configure_logging

    configure_logging(settings.log_level)
    scheme = "https" if settings.https else "http"
    print(f"purchase-guard console on {scheme}://{settings.listen} (guard {settings.target})", flush=True)
    serve_console(settings)
    return 0


def _eval(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    if not rest or rest[0] != "speakers":
        print(
            "usage: purchase-guard eval speakers --data DIR --out DIR [--encoder ge2e|ecapa] "
            "[--ecapa-model-dir DIR] [--utterance pin|command|long]",
            file=sys.stderr,
        )
        return 2
    from purchase_guard.app import encoder_for
    from purchase_guard.voice import evaluation

    return int(evaluation.main(rest[1:], encoder_for))


def build_parser() -> argparse.ArgumentParser:
    from purchase_guard.api.client import add_tls_arguments

    p = argparse.ArgumentParser(prog="purchase-guard", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gRPC server (settings from PURCHASE_GUARD_* variables)")
    # Set by the supervisor for each of PURCHASE_GUARD_PROCESSES workers; not for people.
    s.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    s.set_defaults(func=_serve)

    adm = sub.add_parser("admin", help="household administration over gRPC")
    adm.add_argument("--target", default=DEFAULT_TARGET)
    add_tls_arguments(adm)
    adm.add_argument(
        "--token",
        help="operator, household or parent token (default: $PURCHASE_GUARD_ADMIN_TOKEN, then "
        "var/operator-token); approve and reject need a parent's own credential",
    )
    asub = adm.add_subparsers(dest="admin_cmd", required=True)
    c = asub.add_parser("create-household")
    c.add_argument("--name", required=True)
    c.add_argument("--time-zone", required=True)
    c.add_argument("--currency", required=True)
    c.add_argument("--retain-audio", action="store_true")
    for name in (
        "get-household",
        "members",
        "get-policy",
        "set-pin",
        "notifications",
        "approvals",
        "verify-audit",
        "get-webhook",
        "remove-webhook",
        "dead-letters",
    ):
        x = asub.add_parser(name)
        x.add_argument("--household", required=True)
    wh = asub.add_parser(
        "set-webhook", help="POST the household's events to URL (https; prints the secret once)"
    )
    wh.add_argument("--household", required=True)
    wh.add_argument("--url", required=True)
    rd = asub.add_parser("replay-dead-letters", help="deliver dead letters again (all, or each --event-id)")
    rd.add_argument("--household", required=True)
    rd.add_argument("--event-id", type=int, action="append")
    ev = asub.add_parser("events", help="the household's events after --after (with --follow, live)")
    ev.add_argument("--household", required=True)
    ev.add_argument("--after", type=int, default=0)
    ev.add_argument("--follow", action="store_true")
    m = asub.add_parser("add-member")
    m.add_argument("--household", required=True)
    m.add_argument("--name", required=True)
    m.add_argument("--role", required=True, choices=["adult", "teen", "child", "guest"])
    m.add_argument("--parent", action="store_true")
    r = asub.add_parser("remove-member")
    r.add_argument("--household", required=True)
    r.add_argument("--member", required=True)
    e = asub.add_parser("enroll", help="enroll a voice from 3 or more WAV/FLAC files")
    e.add_argument("--household", required=True)
    e.add_argument("--member", required=True)
    e.add_argument("files", nargs="+")
    ed = asub.add_parser(
        "enroll-digits", help="guided digit enrollment: --take 01234=take1.wav --take 56789=take2.wav ..."
    )
    ed.add_argument("--household", required=True)
    ed.add_argument("--member", required=True)
    ed.add_argument("--take", action="append", required=True, help="DIGITS=FILE, once per prompt read")
    ct = asub.add_parser("check-take", help="live feedback on one enrollment take before enrolling")
    ct.add_argument("--household", required=True)
    ct.add_argument("--member", required=True)
    ct.add_argument("--digits", help="the digits prompted, for a guided digit take")
    ct.add_argument("file")
    cv = asub.add_parser("confirm-voice-role", help="as a parent: confirm a child-like voice's role")
    cv.add_argument("--household", required=True)
    cv.add_argument("--member", required=True)
    sp = asub.add_parser("set-policy", help="set the policy from a YAML or JSON file (proto JSON mapping)")
    sp.add_argument("--household", required=True)
    sp.add_argument("file")
    d = asub.add_parser("decisions")
    d.add_argument("--household", required=True)
    d.add_argument("--limit", type=int, default=50)
    for name in ("approve", "reject"):
        x = asub.add_parser(name, help=f"{name} a pending purchase as the parent whose --token this is")
        x.add_argument("--household", required=True)
        x.add_argument("--challenge", required=True)
        x.add_argument("--parent-member", help="deprecated: the parent is the credential's own")
    ic = asub.add_parser("issue-credential", help="issue a parent's, a device's or a backend's credential")
    ic.add_argument("--kind", required=True, choices=["parent", "device", "backend"])
    ic.add_argument("--household", help="the household (not for a backend credential)")
    ic.add_argument("--member", help="the parent (parent credentials)")
    ic.add_argument("--device", help="the device (device credentials)")
    ic.add_argument("--label", default="")
    lc = asub.add_parser("credentials", help="list a household's credentials (or, without one, backends')")
    lc.add_argument("--household")
    rc = asub.add_parser("revoke-credential")
    rc.add_argument("--household")
    rc.add_argument("--credential", required=True)
    rv = asub.add_parser("renew-voiceprint", help="keep a child's voiceprint for another retention period")
    rv.add_argument("--household", required=True)
    rv.add_argument("--member", required=True)
    ra = asub.add_parser(
        "reset-adaptation",
        help="drop what confirmed purchases added to a member's voiceprint (back to enrollment)",
    )
    ra.add_argument("--household", required=True)
    ra.add_argument("--member", required=True)
    ex = asub.add_parser("export", help="write the household's complete data (GDPR Art. 15) as a ZIP archive")
    ex.add_argument("--household", required=True)
    ex.add_argument("--out", required=True, help="archive file to write (mode 0600)")
    er = asub.add_parser(
        "erase", help="erase the household's data and destroy its key (GDPR Art. 17); cannot be undone"
    )
    er.add_argument("--household", required=True)
    er.add_argument("--yes", action="store_true", help="confirm the erasure")
    adm.set_defaults(func=_admin)

    g = sub.add_parser("guard", help="call Evaluate or Confirm (for QA and smoke tests)")
    g.add_argument("--target", default=DEFAULT_TARGET)
    g.add_argument(
        "--backend-token",
        help="backend or device credential (default: $PURCHASE_GUARD_BACKEND_TOKEN, then var/backend-token)",
    )
    add_tls_arguments(g)
    gsub = g.add_subparsers(dest="guard_cmd", required=True)
    ev = gsub.add_parser("evaluate")
    ev.add_argument("--household", required=True)
    ev.add_argument("--device", required=True)
    ev.add_argument("--order", required=True, help="order as YAML/JSON (proto JSON mapping)")
    ev.add_argument("--audio", required=True)
    ev.add_argument("--transcript", default="")
    ev.add_argument("--request-id", default="")
    cf = gsub.add_parser("confirm")
    cf.add_argument("--household", required=True)
    cf.add_argument("--challenge", required=True)
    cf.add_argument("--order", required=True)
    cf.add_argument("--digits", default="")
    cf.add_argument("--audio")
    cf.add_argument("--device", default="")
    cf.add_argument("--request-id", default="")
    g.set_defaults(func=_guard)

    con = sub.add_parser(
        "console", help="serve the parents' web console (settings from PURCHASE_GUARD_CONSOLE_* variables)"
    )
    con.add_argument("--target", help="the guard's host:port (default: $PURCHASE_GUARD_CONSOLE_TARGET)")
    con.add_argument("--listen", help="host:port to serve on (default: $PURCHASE_GUARD_CONSOLE_LISTEN)")
    con.set_defaults(func=_console)

    sub.add_parser(
        "replay",
        help="replay QA scenarios: replay <folders|files> [--target host:port] [--report DIR] [--junit FILE]",
    )
    ev2 = sub.add_parser("eval", help="evaluation commands: `eval speakers --data DIR --out DIR`")
    ev2.add_argument("rest", nargs=argparse.REMAINDER)
    ev2.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["replay"]:
        # The replay runner owns its own argument parser (documented in docs/replay.md).
        from purchase_guard.replay.runner import main as replay_main

        return replay_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
