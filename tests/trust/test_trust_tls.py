"""mTLS between the voice backend and the guard, with certificates minted by the test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from trust.trust_harness import OPERATOR, AssembledGuard, assemble_guard, make_app, stubs

from purchase_guard.api.client import ClientTls, GuardClient
from purchase_guard.cli import main as cli_main
from purchase_guard.config import ConfigError, Settings
from purchase_guard.tls import (
    channel_credentials,
    server_credentials,
    server_credentials_from_files,
    tls_config,
)
from purchase_guard.voice.encoder import SpeakerEncoder

SERVING = 1


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(dirpath: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    cert_path, key_path = dirpath / f"{name}.crt", dirpath / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pair(cert_path, key_path)


def mint_ca(dirpath: Path, name: str) -> tuple[Pair, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(dirpath, name, cert, key), cert, key


def mint_leaf(
    dirpath: Path, name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool
) -> Pair:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName("guard.test")]),
            critical=False,
        )
    return _write(dirpath, name, builder.sign(ca_key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    client: Pair
    rogue_client: Pair  # signed by a CA the guard does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = mint_ca(d, "guard-test-ca")
    _, rogue_cert, rogue_key = mint_ca(d, "rogue-ca")
    return Pki(
        ca=ca,
        server=mint_leaf(d, "server", ca_cert, ca_key, server=True),
        client=mint_leaf(d, "voice-backend", ca_cert, ca_key, server=False),
        rogue_client=mint_leaf(d, "rogue-client", rogue_cert, rogue_key, server=False),
    )


@pytest.fixture
def mtls_guard(tmp_path: Path, trust_encoder: SpeakerEncoder, pki: Pki) -> Iterator[AssembledGuard]:
    app = make_app(tmp_path, trust_encoder)
    guard = assemble_guard(
        app, credentials=server_credentials_from_files(pki.server.cert, pki.server.key, pki.ca.cert)
    )
    yield guard
    guard.stop()


OVERRIDE = (("grpc.ssl_target_name_override", "guard.test"),)


def health_status(target: str, creds: grpc.ChannelCredentials) -> int:
    with stubs(target, creds, **dict(OVERRIDE)) as s:
        return s.health_status()


def test_client_with_a_certificate_from_the_trusted_ca_is_served(
    mtls_guard: AssembledGuard, pki: Pki
) -> None:
    """The voice backend's certificate, signed by the configured client CA, gets answers."""
    creds = channel_credentials(pki.ca.cert, pki.client.cert, pki.client.key)
    assert health_status(mtls_guard.target, creds) == SERVING


def test_client_without_a_certificate_is_refused(mtls_guard: AssembledGuard, pki: Pki) -> None:
    """With a client CA configured, a TLS client that presents no certificate never gets an answer."""
    creds = channel_credentials(pki.ca.cert)
    with pytest.raises(grpc.RpcError) as info:
        health_status(mtls_guard.target, creds)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_client_with_a_certificate_from_another_ca_is_refused(mtls_guard: AssembledGuard, pki: Pki) -> None:
    """A certificate that chains to a CA the guard does not trust is refused at the handshake."""
    creds = channel_credentials(pki.ca.cert, pki.rogue_client.cert, pki.rogue_client.key)
    with pytest.raises(grpc.RpcError) as info:
        health_status(mtls_guard.target, creds)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(mtls_guard: AssembledGuard) -> None:
    """A plaintext client cannot talk to a TLS listener at all."""
    with pytest.raises(grpc.RpcError) as info, stubs(mtls_guard.target) as s:
        s.health_status()
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_tls_without_client_ca_serves_clients_without_certificates(
    tmp_path: Path, trust_encoder: SpeakerEncoder, pki: Pki
) -> None:
    """Server TLS alone (no client CA) encrypts but does not require a client certificate."""
    config = tls_config(pki.server.cert, pki.server.key, None)
    assert config is not None
    assert not config.mutual
    guard = assemble_guard(make_app(tmp_path, trust_encoder), credentials=server_credentials(config))
    try:
        assert health_status(guard.target, channel_credentials(pki.ca.cert)) == SERVING
    finally:
        guard.stop()


def test_tls_settings_absent_means_no_tls() -> None:
    """No certificate, key or CA configured: no TLS config (the listener stays as configured today)."""
    assert tls_config(None, None, None) is None


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("cert-only", "TLS_CERT_FILE and PURCHASE_GUARD_TLS_KEY_FILE must be set together"),
        ("ca-only", "TLS_CLIENT_CA_FILE needs"),
        ("missing-file", "TLS_KEY_FILE: cannot read"),
        ("key-as-cert", "TLS_CERT_FILE"),
        ("cert-as-key", "TLS_KEY_FILE"),
    ],
)
def test_bad_tls_settings_stop_the_server_with_the_setting_name(
    pki: Pki, tmp_path: Path, which: str, message: str
) -> None:
    """Half-configured or unreadable TLS material is a ConfigError naming the setting, never plaintext."""
    args = {
        "cert-only": (pki.server.cert, None, None),
        "ca-only": (None, None, pki.ca.cert),
        "missing-file": (pki.server.cert, tmp_path / "nope.key", None),
        "key-as-cert": (pki.server.key, pki.server.key, None),
        "cert-as-key": (pki.server.cert, pki.server.cert, None),
    }[which]
    cert, key, ca = args
    with pytest.raises(ConfigError, match=message):
        Settings(tls_cert_file=cert, tls_key_file=key, tls_client_ca_file=ca).validated()


def _status_of_lookup(client: GuardClient) -> grpc.StatusCode:
    """The status of an admin call for a household that does not exist (NOT_FOUND means the
    request crossed the channel and reached the servicer)."""
    try:
        client.get_household("hh_absent")
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        client.close()
    raise AssertionError("a lookup of an absent household returned an answer")


def test_guard_client_speaks_mtls(mtls_guard: AssembledGuard, pki: Pki) -> None:
    """GuardClient with the CA, its certificate and key reaches the servicer of an mTLS guard
    (NOT_FOUND for an absent household); without its certificate, or in plaintext, it cannot
    reach it at all (UNAVAILABLE)."""
    full = ClientTls(pki.ca.cert, pki.client.cert, pki.client.key, server_name="guard.test")
    no_cert = ClientTls(pki.ca.cert, server_name="guard.test")
    assert (
        _status_of_lookup(GuardClient(mtls_guard.target, OPERATOR, 10, tls=full)) is grpc.StatusCode.NOT_FOUND
    )
    assert (
        _status_of_lookup(GuardClient(mtls_guard.target, OPERATOR, 10, tls=no_cert))
        is grpc.StatusCode.UNAVAILABLE
    )
    assert _status_of_lookup(GuardClient(mtls_guard.target, OPERATOR, 10)) is grpc.StatusCode.UNAVAILABLE


def test_cli_reaches_an_mtls_guard_with_tls_flags(
    mtls_guard: AssembledGuard, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    """`purchase-guard admin --tls-ca/--tls-cert/--tls-key/--tls-server-name` talks to an mTLS
    guard: the answer for an absent household is NOT_FOUND, not a failed handshake."""
    code = cli_main(
        [
            "admin",
            "--target",
            mtls_guard.target,
            "--token",
            OPERATOR,
            "--tls-ca",
            str(pki.ca.cert),
            "--tls-cert",
            str(pki.client.cert),
            "--tls-key",
            str(pki.client.key),
            "--tls-server-name",
            "guard.test",
            "get-household",
            "--household",
            "hh_absent",
        ]
    )
    assert code == 1
    assert "NOT_FOUND" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "c.pem", "--tls-key", "k.pem"], "need --tls-ca"),
        (["--tls-ca", "{ca}", "--tls-cert", "{ca}"], "go together"),
        (["--tls-ca", "missing-ca.pem"], "cannot read missing-ca.pem"),
    ],
    ids=["cert-without-ca", "cert-without-key", "unreadable-ca"],
)
def test_cli_tls_flags_that_do_not_fit_stop_with_a_message(flags: list[str], message: str, pki: Pki) -> None:
    """Client TLS flags that do not fit together, or a file that cannot be read, stop the CLI
    with a message naming the problem, before any connection."""
    args = [f.format(ca=pki.ca.cert) for f in flags]
    with pytest.raises(SystemExit, match=message):
        cli_main(["admin", "--target", "127.0.0.1:1", *args, "get-household", "--household", "hh_absent"])
