"""Transport security of the client, for both transports: reading PEM material, and the rule that an
API token never travels in plaintext to another machine. (Each transport builds its own TLS settings
from the PEM read here: ``grpc_transport/channels.py``, ``http_transport/connection.py``.)"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union


from .errors import InsecureTransport

#: PEM data, or the path of a PEM file.
PemSource = Union[str, bytes, "os.PathLike[str]"]


def read_pem(source: PemSource, what: str) -> bytes:
    """PEM bytes from bytes, a PEM string or a file path."""
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str) and source.lstrip().startswith("-----BEGIN "):
        data = source.encode()
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ValueError(f"{what}: cannot read {path}: {err.strerror or err}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what}: not PEM data (no -----BEGIN line)")
    return data


@dataclass(frozen=True)
class TlsSettings:
    """TLS of a client: ``ca_cert`` (None = the system's roots) verifies the server; ``client_cert`` and
    ``client_key`` together are this client's identity for mutual TLS. All PEM bytes."""

    ca_cert: Optional[bytes] = None
    client_cert: Optional[bytes] = None
    client_key: Optional[bytes] = None


def tls_settings(
    tls: bool,
    ca_cert: Optional[PemSource] = None,
    client_cert: Optional[PemSource] = None,
    client_key: Optional[PemSource] = None,
) -> Optional[TlsSettings]:
    """The TLS settings, or None for plaintext. Giving any PEM implies TLS."""
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together (mutual TLS needs both)")
    if not (tls or ca_cert is not None or client_cert is not None):
        return None
    return TlsSettings(
        ca_cert=read_pem(ca_cert, "ca_cert") if ca_cert is not None else None,
        client_cert=read_pem(client_cert, "client_cert") if client_cert is not None else None,
        client_key=read_pem(client_key, "client_key") if client_key is not None else None,
    )


def host_of(address: str) -> str:
    """The host part of ``host:port``, ``[v6]:port``, ``dns:///host:port`` or ``unix:path``."""
    if address.startswith(("unix:", "unix-abstract:")):
        return "unix"
    if address.lower().startswith(("http://", "https://", "grpc://")):
        address = address.split("://", 1)[1].split("/", 1)[0]
    if "///" in address:
        address = address.split("///", 1)[1]
    if address.startswith("["):
        return address[1 : address.find("]")] if "]" in address else address[1:]
    if address.count(":") > 1:  # a bare IPv6 address without a port
        return address
    return address.rsplit(":", 1)[0] if ":" in address else address


def is_loopback(address: str) -> bool:
    """Whether ``address`` stays on this machine (localhost, 127.0.0.0/8, ::1, a Unix socket)."""
    host = host_of(address).lower()
    if host in ("unix", "localhost") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token_transport(addresses: Sequence[str], token: Optional[str], secure: bool) -> None:
    """Refuses (before connecting) to send ``token`` in plaintext to an address off this machine."""
    if not token or secure:
        return
    remote = [a for a in addresses if not is_loopback(a)]
    if remote:
        raise InsecureTransport(
            f"refusing to send the API token in plaintext to {', '.join(remote)}: "
            "connect with tls=True (and ca_cert=... for a private CA), or use a loopback address"
        )
