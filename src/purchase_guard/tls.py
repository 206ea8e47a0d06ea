"""TLS and mutual TLS for the gRPC listener, from certificate files named in settings.

With a server certificate and key the guard serves TLS; adding a client CA turns on mutual
TLS: every caller must present a certificate signed by that CA, or the handshake fails
before any RPC is read. The voice backend is the only intended caller of Evaluate and
Confirm, so mTLS is how the guard knows a request really comes from it.

Files are read once at start; a missing, unreadable or non-PEM file stops the server with
the setting's name (`tls_config` raises TlsError, which settings validation reports as a
ConfigError), never a half-secured listener. This module sits below the settings, so it
names the variables itself rather than importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

_CERT_SETTING = "PURCHASE_GUARD_TLS_CERT_FILE"
_KEY_SETTING = "PURCHASE_GUARD_TLS_KEY_FILE"
_CA_SETTING = "PURCHASE_GUARD_TLS_CLIENT_CA_FILE"


class TlsError(ValueError):
    """TLS material named by a setting is missing, unreadable, not PEM, or incomplete."""


_CERT_MARK = b"-----BEGIN CERTIFICATE-----"
_KEY_MARK = b"PRIVATE KEY-----"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None  # None: TLS only; set: client certificates are required

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


def _read(path: Path, setting: str, mark: bytes, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    if mark not in data:
        raise TlsError(f"{setting}: {path} holds no PEM {what}")
    return data


def tls_config(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> TlsConfig | None:
    """The TLS material named by the settings, checked; None when TLS is not configured.

    Certificate and key go together; a client CA without them is refused, because it would
    suggest callers are authenticated on a listener that is in fact plaintext.
    """
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise TlsError(f"{_CA_SETTING} needs {_CERT_SETTING} and {_KEY_SETTING}")
        return None
    if cert_file is None or key_file is None:
        raise TlsError(f"{_CERT_SETTING} and {_KEY_SETTING} must be set together")
    cert = _read(cert_file, _CERT_SETTING, _CERT_MARK, "certificate")
    key = _read(key_file, _KEY_SETTING, _KEY_MARK, "private key")
    ca = _read(client_ca_file, _CA_SETTING, _CERT_MARK, "certificate") if client_ca_file is not None else None
    return TlsConfig(cert, key, ca)


def server_credentials(config: TlsConfig) -> grpc.ServerCredentials:
    """gRPC server credentials; with a client CA, a client certificate is required."""
    return grpc.ssl_server_credentials(
        [(config.private_key, config.cert_chain)],
        root_certificates=config.client_ca,
        require_client_auth=config.mutual,
    )


def server_credentials_from_files(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> grpc.ServerCredentials:
    config = tls_config(cert_file, key_file, client_ca_file)
    assert config is not None  # both files were given
    return server_credentials(config)


def channel_credentials(
    server_ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """Client side: trust `server_ca_file`, and present a client certificate when one is given."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=server_ca_file.read_bytes(),
        private_key=key_file.read_bytes() if key_file is not None else None,
        certificate_chain=cert_file.read_bytes() if cert_file is not None else None,
    )
