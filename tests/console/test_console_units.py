"""The console's pure parts without a browser: settings, sessions, throttle, the policy form, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from purchase_guard.api.client import admin_pb2
from purchase_guard.api.convert import policy_to_pb
from purchase_guard.cli import main as cli_main
from purchase_guard.config import ConfigError, load_settings
from purchase_guard.console import forms
from purchase_guard.console.guard_api import MemberView, _reasons, current_encoder, refusal_from_rpc
from purchase_guard.console.sessions import Identity, PreSession, SessionStore, csrf_ok
from purchase_guard.console.settings import ConsoleSettings, load_console_settings
from purchase_guard.console.throttle import SignInThrottle, address_key, credential_key
from purchase_guard.policy.defaults import default_policy


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


IDENTITY = Identity("hh_1", "The Smiths", "America/Los_Angeles", "USD")

# ------------------------------------------------------------------ settings


def test_default_settings_listen_on_loopback_and_validate() -> None:
    """With no variables the console listens on 127.0.0.1:8080 and talks to the guard on 127.0.0.1:50051."""
    s = load_console_settings({})
    assert (s.host, s.port, s.target) == ("127.0.0.1", 8080, "127.0.0.1:50051")
    assert not s.secure_cookies
    assert s.guard_tls is None


def test_plain_http_on_a_non_loopback_address_is_refused_unless_allowed() -> None:
    """0.0.0.0 without a certificate stops the console, naming the settings that fix it; the explicit
    ALLOW_INSECURE_HTTP=1 lets it start."""
    with pytest.raises(ConfigError) as info:
        load_console_settings({"PURCHASE_GUARD_CONSOLE_LISTEN": "0.0.0.0:8080"})
    assert "PURCHASE_GUARD_CONSOLE_TLS_CERT_FILE" in str(info.value)
    assert "PURCHASE_GUARD_CONSOLE_ALLOW_INSECURE_HTTP" in str(info.value)
    ok = load_console_settings(
        {"PURCHASE_GUARD_CONSOLE_LISTEN": "0.0.0.0:8080", "PURCHASE_GUARD_CONSOLE_ALLOW_INSECURE_HTTP": "1"}
    )
    assert ok.host == "0.0.0.0"
    assert load_console_settings({"PURCHASE_GUARD_CONSOLE_LISTEN": "[::1]:8080"}).host == "::1"


def test_non_loopback_with_a_certificate_serves_https_with_secure_cookies(tmp_path: Path) -> None:
    """A certificate and key (PEM) make the console HTTPS with Secure cookies; non-PEM files are refused."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    env = {
        "PURCHASE_GUARD_CONSOLE_LISTEN": "0.0.0.0:8443",
        "PURCHASE_GUARD_CONSOLE_TLS_CERT_FILE": str(cert),
        "PURCHASE_GUARD_CONSOLE_TLS_KEY_FILE": str(key),
    }
    s = load_console_settings(env)
    assert s.https
    assert s.secure_cookies
    key.write_text("not a key")
    with pytest.raises(ConfigError, match="PURCHASE_GUARD_CONSOLE_TLS_KEY_FILE"):
        load_console_settings(env)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PURCHASE_GUARD_CONSOLE_LISTN": "127.0.0.1:1"}, "PURCHASE_GUARD_CONSOLE_LISTN"),
        ({"PURCHASE_GUARD_CONSOLE_SESSION_IDLE_SECONDS": "soon"}, "SESSION_IDLE_SECONDS"),
        ({"PURCHASE_GUARD_CONSOLE_SESSION_IDLE_SECONDS": "5"}, "SESSION_IDLE_SECONDS"),
        ({"PURCHASE_GUARD_CONSOLE_ALLOW_INSECURE_HTTP": "maybe"}, "ALLOW_INSECURE_HTTP"),
        ({"PURCHASE_GUARD_CONSOLE_TARGET": "nowhere"}, "TARGET"),
        ({"PURCHASE_GUARD_CONSOLE_GUARD_TLS_CERT_FILE": "/x.pem"}, "GUARD_TLS_CA_FILE"),
        ({"PURCHASE_GUARD_CONSOLE_TLS_CERT_FILE": "/x.pem"}, "TLS_KEY_FILE"),
        ({"PURCHASE_GUARD_CONSOLE_SIGNIN_MAX_FAILURES": "0"}, "SIGNIN_MAX_FAILURES"),
    ],
)
def test_bad_settings_stop_the_console_naming_the_variable(env: dict[str, str], needle: str) -> None:
    """A typo or an out-of-range value is a ConfigError that names the variable, before anything listens."""
    with pytest.raises(ConfigError, match=needle):
        load_console_settings(env)


def test_guard_and_console_share_an_environment() -> None:
    """The guard ignores the console's variables and the console the guard's (each still refuses typos)."""
    env = {"PURCHASE_GUARD_CONSOLE_LISTEN": "127.0.0.1:9000", "PURCHASE_GUARD_LISTEN": "127.0.0.1:50052"}
    assert load_settings(env).listen == "127.0.0.1:50052"
    assert load_console_settings(env).listen == "127.0.0.1:9000"


def test_cli_console_refuses_a_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`purchase-guard console --listen 0.0.0.0:8080` without TLS exits 2 with the reason, serving nothing."""
    monkeypatch.delenv("PURCHASE_GUARD_CONSOLE_ALLOW_INSECURE_HTTP", raising=False)
    assert cli_main(["console", "--listen", "0.0.0.0:8080", "--target", "127.0.0.1:1"]) == 2
    assert "not a loopback address" in capsys.readouterr().err


# ------------------------------------------------------------------ sessions


def test_sessions_expire_when_idle_and_at_the_absolute_limit() -> None:
    """30 min without a request ends a session; activity keeps it only until the 12 h limit."""
    clock = Clock()
    store = SessionStore(1800, 12 * 3600, 100, clock)
    idle_id, _ = store.create(IDENTITY, "pgh_token")
    clock.t += 1799
    assert store.get(idle_id) is not None
    clock.t += 1800
    assert store.get(idle_id) is None
    busy_id, _ = store.create(IDENTITY, "pgh_token")
    for _ in range(24):  # a request every 1799 s: 43176 s in all, still inside 12 h
        clock.t += 1799
        assert store.get(busy_id) is not None
    clock.t += 24  # 12 h since sign-in, 24 s since the last request
    assert store.get(busy_id) is None
    assert len(store) == 0


def test_sessions_have_fresh_ids_and_csrf_tokens_and_end_on_delete() -> None:
    """Every sign-in gets a new random id and CSRF token; delete and erasure end sessions."""
    store = SessionStore(1800, 43200, 100, Clock())
    a_id, a = store.create(IDENTITY, "pgh_a")
    b_id, b = store.create(IDENTITY, "pgh_b")
    other_id, _ = store.create(Identity("hh_2", "Other", "UTC", "EUR"), "pgh_c")
    assert a_id != b_id
    assert a.csrf != b.csrf
    assert "pgh_a" not in repr(a)
    store.delete(a_id)
    assert store.get(a_id) is None
    assert store.delete_household("hh_1") == 1
    assert store.get(b_id) is None
    assert store.get(other_id) is not None
    assert store.get("x" * 500) is None


def test_session_store_is_bounded() -> None:
    """Past max_sessions the least recently used session is dropped, not memory grown."""
    store = SessionStore(1800, 43200, 2, Clock())
    first, _ = store.create(IDENTITY, "t1")
    second, _ = store.create(IDENTITY, "t2")
    store.get(first)  # now the most recently used
    store.create(IDENTITY, "t3")
    assert store.get(second) is None
    assert store.get(first) is not None
    assert len(store) == 2


def test_csrf_comparison_refuses_missing_and_wrong_tokens() -> None:
    """Only the exact token matches; missing, empty or altered ones never do."""
    assert csrf_ok("abc", "abc")
    assert not csrf_ok("abc", None)
    assert not csrf_ok("abc", "")
    assert not csrf_ok("abc", "abd")
    assert not csrf_ok("", "")


def test_sign_in_token_is_bound_to_its_cookie_and_to_this_process() -> None:
    """The pre-session token only matches the cookie it was made for, under this console's key."""
    pre, other = PreSession(), PreSession()
    cookie = PreSession.new_cookie()
    token = pre.token_for(cookie)
    assert pre.ok(cookie, token)
    assert not pre.ok(PreSession.new_cookie(), token)
    assert not other.ok(cookie, token)
    assert not pre.ok(None, token)


# ------------------------------------------------------------------ throttle


def test_each_failure_doubles_the_wait_then_five_lock_until_the_oldest_ages_out() -> None:
    """1 s, 2 s, 4 s, 8 s after failures one to four; the fifth locks the key for the window's rest."""
    clock = Clock()
    throttle = SignInThrottle(5, 900, 1.0, clock)
    keys = [address_key("10.0.0.1")]
    waits = []
    for _ in range(4):
        throttle.failed(keys)
        waits.append(throttle.wait_seconds(keys))
        clock.t += waits[-1]
    assert waits == [1.0, 2.0, 4.0, 8.0]
    first_failure = 1000.0
    throttle.failed(keys)
    assert throttle.wait_seconds(keys) == pytest.approx(first_failure + 900 - clock.t)
    clock.t = first_failure + 900
    assert throttle.wait_seconds(keys) == 0.0  # the first failure left the window
    throttle.failed(keys)  # five in the window again: locked until the second failure (at 1001) leaves it
    assert throttle.wait_seconds(keys) == pytest.approx(1001 + 900 - clock.t)


def test_success_clears_the_credential_key_but_not_the_address() -> None:
    """A valid sign-in does not reset the address's failures (it could be used to reset a guesser's count)."""
    throttle = SignInThrottle(3, 900, 0.0, Clock())
    addr, cred = address_key("10.0.0.2"), credential_key("pgh_abcdefghijklmnop")
    for _ in range(3):
        throttle.failed([addr, cred])
    throttle.succeeded(cred)
    assert throttle.wait_seconds([cred]) == 0.0
    assert throttle.wait_seconds([addr]) > 0


def test_credential_key_is_a_hash_of_the_prefix_only() -> None:
    """Credentials sharing their first 12 characters share a key; the key shows none of them."""
    a = credential_key("pgh_ABCDEFGH-rest-one")
    assert a == credential_key("pgh_ABCDEFGH-rest-two")
    assert a != credential_key("pgh_ABCDEFGX-rest-one")
    assert "ABCDEFGH" not in a


def test_throttle_memory_is_bounded() -> None:
    """Many addresses cannot grow the throttle past max_keys."""
    throttle = SignInThrottle(5, 900, 0.0, Clock(), max_keys=10)
    for i in range(50):
        throttle.failed([address_key(f"10.0.1.{i}")])
    assert len(throttle._failures) <= 10


# ------------------------------------------------------------------ policy form


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("", "USD", 0), ("170", "USD", 17000), ("170.5", "USD", 17050), ("0.07", "USD", 7), ("-5", "USD", -500)],
)
def test_amounts_are_read_in_the_currencys_major_unit(text: str, currency: str, minor: int) -> None:
    """Parents type 170.50, the guard gets minor units; blank means no limit (0)."""
    assert forms.parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency"), [("abc", "USD"), ("1,000", "USD"), ("1.005", "USD"), ("5.5", "JPY")]
)
def test_malformed_amounts_are_refused_with_a_sentence(text: str, currency: str) -> None:
    """Thousands separators, extra decimals and words are refused rather than guessed."""
    with pytest.raises(ValueError, match=currency):
        forms.parse_amount(text, currency)


def test_three_decimal_currencies_round_trip() -> None:
    """KWD has three decimals: 1.250 is 1250 fils, shown back as 1.250."""
    assert forms.parse_amount("1.25", "KWD") == 1250
    assert forms.amount_text(1250, "KWD") == "1.250"
    assert forms.amount_text(500, "JPY") == "500"


def _default_policy_mapping() -> dict[str, Any]:
    return json_format.MessageToDict(policy_to_pb(default_policy()), preserving_proto_field_name=True)


def _normal(policy: dict[str, Any]) -> dict[str, Any]:
    pb = json_format.ParseDict(policy, admin_pb2.Policy())
    pb.revision = 0
    return json_format.MessageToDict(pb, preserving_proto_field_name=True)


def test_default_policy_survives_the_form_unchanged() -> None:
    """Showing the default policy and saving it untouched sends the same policy back."""
    original = _default_policy_mapping()
    shown = forms.policy_to_form(original, "USD")
    assert shown.values["ADULT.max_order"] == "100.00"
    policy, form = forms.form_to_policy(shown.values, "USD")
    assert form.ok, form.errors
    assert _normal(policy) == _normal(original)


def test_quiet_hours_and_exemption_round_trip_including_midnight() -> None:
    """Quiet hours from 00:00 (minute 0, omitted by the JSON mapping) and an exemption survive the form."""
    original = _default_policy_mapping()
    original["quiet_hours"] = {"end_minute": 420, "action": "LIMIT_CHALLENGE"}
    original["low_value_exemption"] = {"per_order_max_minor": "500", "cumulative_max_minor": "2000"}
    shown = forms.policy_to_form(original, "USD")
    assert (shown.values["quiet.start"], shown.values["quiet.end"]) == ("00:00", "07:00")
    policy, form = forms.form_to_policy(shown.values, "USD")
    assert form.ok
    assert _normal(policy) == _normal(original)


def test_no_rule_leaves_the_role_out_and_shifts_rule_indexes() -> None:
    """A role set to "No rule" is not sent; the guard's rules[i] then names the i-th role sent."""
    values = forms.policy_to_form(_default_policy_mapping(), "USD").values
    values["TEEN.mode"] = forms.NO_RULE
    policy, form = forms.form_to_policy(values, "USD")
    assert [r["role"] for r in policy["rules"]] == ["ADULT", "CHILD", "GUEST"]
    assert forms.field_for_path("rules[1].daily_cap_minor", form.roles_sent) == "CHILD.daily_cap"
    assert forms.field_for_path("policy.rules[0].mode", form.roles_sent) == "ADULT.mode"
    assert forms.field_for_path("rules[7].mode", form.roles_sent) is None
    assert forms.field_for_path("quiet_hours.end_minute", form.roles_sent) == "quiet.end"


def test_unreadable_values_are_marked_on_their_fields() -> None:
    """Bad amounts, times and choices come back as errors on those fields, in the form as typed."""
    values = forms.policy_to_form(_default_policy_mapping(), "USD").values
    values |= {
        "CHILD.daily_cap": "lots",
        "quiet.enabled": "on",
        "quiet.start": "25:00",
        "ADULT.on_limit": "MAYBE",
    }
    _, form = forms.form_to_policy(values, "USD")
    assert set(form.errors) == {"CHILD.daily_cap", "quiet.start", "ADULT.on_limit"}
    assert form.values["CHILD.daily_cap"] == "lots"
    assert forms.field_label("CHILD.daily_cap") == "Children (under 13): Daily cap"


def test_guard_refusals_land_on_the_field_they_name() -> None:
    """BadRequest field violations go to their fields; without any, the message's leading path does;
    a message naming no known field stays general."""
    sent = ("ADULT", "TEEN", "CHILD", "GUEST")
    form = forms.PolicyForm({}, roles_sent=sent)
    forms.errors_by_field(form, "ignored", [("policy.rules[2].max_order_minor", "must be >= 0")])
    assert form.errors == {"CHILD.max_order": ["must be >= 0"]}
    form = forms.PolicyForm({}, roles_sent=sent)
    forms.errors_by_field(form, "household_monthly_cap_minor must be >= 0", [])
    assert form.errors == {"household.monthly_cap": ["household_monthly_cap_minor must be >= 0"]}
    form = forms.PolicyForm({}, roles_sent=sent)
    forms.errors_by_field(form, "something else went wrong", [])
    assert form.general == ["something else went wrong"]
    assert not form.ok


# ------------------------------------------------------------------ guard adapter


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """A gRPC server whose methods fail the way the guard will: with or without google.rpc details."""

    def bad_request(_: bytes, context: grpc.ServicerContext) -> bytes:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="utterances[1]", description="too short: 0.4 s of speech, need 1.0 s"
                    )
                ]
            )
        )
        status = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message="utterances[1]: too short", details=[detail]
        )
        context.abort_with_status(rpc_status.to_status(status))
        return b""

    def plain(_: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "this credential is not valid for that household")
        return b""

    handlers = {
        "BadRequest": grpc.unary_unary_rpc_method_handler(bad_request),
        "Plain": grpc.unary_unary_rpc_method_handler(plain),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Refuse", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def _refusal(target: str, method: str) -> Any:
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(f"/test.Refuse/{method}")(b"", timeout=5)
    return refusal_from_rpc(info.value)


def test_refusals_carry_bad_request_field_violations(refusing_server: str) -> None:
    """A refusal with google.rpc BadRequest details in grpc-status-details-bin yields its field violations."""
    refusal = _refusal(refusing_server, "BadRequest")
    assert refusal.code == "INVALID_ARGUMENT"
    assert refusal.message == "utterances[1]: too short"
    assert [(v.field, v.description) for v in refusal.violations] == [
        ("utterances[1]", "too short: 0.4 s of speech, need 1.0 s")
    ]


def test_refusals_without_details_keep_code_and_message(refusing_server: str) -> None:
    """Today's guard sends only a message: the console keeps code and message, no violations."""
    refusal = _refusal(refusing_server, "Plain")
    assert (refusal.code, refusal.violations) == ("PERMISSION_DENIED", ())
    assert "not valid for that household" in refusal.message


def test_reasons_keep_their_effect_and_whether_they_decided() -> None:
    """A reason's effect, rule and determining flag are read; older records without them still show."""
    new, old = _reasons(
        [
            {
                "code": "AMOUNT_OVER_LIMIT",
                "message": "Over",
                "effect": "NEEDS_CHALLENGE",
                "rule": "policy.max_order",
                "determining": True,
                "detail": {"limit": "4000"},
            },
            {"code": "SPEAKER_VERIFIED", "message": "Known voice", "effect": "EFFECT_UNSPECIFIED"},
        ]
    )
    assert (new.effect, new.rule, new.determining, new.detail) == (
        "NEEDS_CHALLENGE",
        "policy.max_order",
        True,
        (("limit", "4000"),),
    )
    assert (old.effect, old.determining) == ("", False)


def test_current_encoder_prefers_the_guards_word_over_the_latest_decision() -> None:
    """The encoder named by the guard wins; else the newest decision's; else unknown (no prompt)."""
    decisions = [{"speaker": {}}, {"speaker": {"encoder": "ge2e/2"}}, {"speaker": {"encoder": "ge2e/1"}}]
    assert current_encoder({"current_encoder": "ecapa/1"}, decisions) == ("ecapa/1", "guard")
    assert current_encoder({}, decisions) == ("ge2e/2", "latest decision")
    assert current_encoder({}, []) == (None, "")
    member = MemberView("m", "Ann", "ADULT", True, True, "ge2e/1")
    assert member.needs_reenrollment("ge2e/2")
    assert not member.needs_reenrollment("ge2e/1")
    assert not member.needs_reenrollment(None)
    assert not MemberView("m", "Tim", "CHILD", False, False, "").needs_reenrollment("ge2e/2")


def test_identity_says_household_until_the_guard_names_the_parent() -> None:
    """Signed in with a household token: "household X"; with a parent's own credential: "parent Y of X"."""
    assert IDENTITY.signed_in_as == "household The Smiths"
    parent = Identity("hh_1", "The Smiths", "UTC", "USD", "mem_1", "Ann")
    assert parent.signed_in_as == "parent Ann of The Smiths"


def test_settings_object_is_frozen() -> None:
    """Settings are a value: nothing changes them after start."""
    s = ConsoleSettings().validated()
    with pytest.raises(AttributeError):
        s.listen = "0.0.0.0:1"  # type: ignore[misc]
