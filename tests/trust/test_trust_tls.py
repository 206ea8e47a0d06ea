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
from trust.trust_harness import AssembledGuard, assemble_guard, make_app, stubs

from purchase_guard.api.tls import (
    channel_credentials,
    server_credentials,
    server_credentials_from_files,
    tls_config,
)
from purchase_guard.config import ConfigError
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
    with pytest.raises(ConfigError, match=message):
        tls_config(*args)
