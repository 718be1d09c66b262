"""Why a connection failed: both transports report a refused port, an untrusted certificate and a
TLS/plaintext mismatch as UNAVAILABLE, and a user needs to know which one it was (start the server, fix
``ca_cert``, or add/remove TLS). The HTTP transport knows it from the exception it caught and sets
``HeieError.failure``; for gRPC it is read from the UNAVAILABLE detail text."""

from __future__ import annotations

import enum
from typing import Optional

from .errors import HeieError, Unavailable


class ConnectionFailure(enum.Enum):
    """What went wrong before any call reached the server; the value is a sentence for people."""

    NO_SERVER = "nothing accepts connections there"
    CERTIFICATE_NOT_TRUSTED = "the server's TLS certificate is not trusted by the CA certificate in use"
    CERTIFICATE_NAME_MISMATCH = "the server's TLS certificate is not issued for this address"
    SERVER_SPEAKS_TLS = "the server speaks TLS but this client connected in plaintext"
    SERVER_SPEAKS_PLAINTEXT = "the server speaks plaintext but this client connected with TLS"
    TLS_HANDSHAKE = "the TLS handshake with the server failed"


#: BoringSSL's reasons for a certificate chain that does not lead to a trusted CA.
_UNTRUSTED = ("CERTIFICATE_VERIFY_FAILED", "BAD_SIGNATURE", "certificate signature failure",
              "unable to get local issuer certificate", "self signed certificate", "self-signed certificate")


def connection_failure(error: HeieError, tls: bool) -> Optional[ConnectionFailure]:
    """Why ``error`` (from a client connecting with TLS when ``tls``) never reached a server, or None
    when it is not a connection failure (e.g. the server's own UNAVAILABLE: model loading, draining).

    gRPC C-core's wording (``grpcio`` 1.6x): a TLS client reports ``Tls handshake failed … REASON``;
    a plaintext client talking to a TLS server sees the server close the socket at once (rustls drops
    the HTTP/2 preface it cannot read)."""
    if not isinstance(error, Unavailable):
        return None
    if error.failure is not None:
        return error.failure
    return grpc_detail_failure(error.message, tls)


def grpc_detail_failure(detail: str, tls: bool) -> Optional[ConnectionFailure]:
    """The failure gRPC C-core describes in an UNAVAILABLE ``detail`` (None when it describes none)."""
    if any(reason in detail for reason in _UNTRUSTED):
        return ConnectionFailure.CERTIFICATE_NOT_TRUSTED
    if "WRONG_VERSION_NUMBER" in detail or "packet length too long" in detail.lower():
        return ConnectionFailure.SERVER_SPEAKS_PLAINTEXT
    if "Peer name" in detail or "peer name" in detail.lower() or "hostname" in detail.lower():
        return ConnectionFailure.CERTIFICATE_NAME_MISMATCH
    if "handshake" in detail.lower():
        return ConnectionFailure.TLS_HANDSHAKE
    connecting = "failed to connect to all addresses" in detail
    if connecting and ("Socket closed" in detail or "Connection reset" in detail):
        return ConnectionFailure.TLS_HANDSHAKE if tls else ConnectionFailure.SERVER_SPEAKS_TLS
    if connecting or "Connection refused" in detail:
        return ConnectionFailure.NO_SERVER
    return None
