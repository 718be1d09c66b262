"""One HTTP request to one ``heie serve --http``: the endpoint, TLS, headers, and every failure as a core
error with the server's code, or, when no HEIE server answered, UNAVAILABLE saying what to do.

One connection per call (``http.client``): a stream is closed to cancel it, and unary calls are rare."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from ..connection_failures import ConnectionFailure
from ..errors import DeadlineExceeded, HeieError, Unavailable, error_for
from ..security import TlsSettings
from ..status import StatusCode

#: The server sends a keep-alive comment every 5 s while a request waits in its queue, so a silent socket
#: for this long means the server or the network is gone, whatever the request's own deadline.
IDLE_READ_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
START_HINT = "is `heie serve --http HOST:PORT` running there?"
#: What to change for each TLS disagreement between this client and the server.
_TLS_FIXES = {
    ConnectionFailure.CERTIFICATE_NOT_TRUSTED: "give the client (ca_cert) the CA certificate that signed the server's "
                                               "--tls-cert",
    ConnectionFailure.CERTIFICATE_NAME_MISMATCH: "use an address (host name or IP) that the server's certificate lists",
    ConnectionFailure.SERVER_SPEAKS_TLS: "use an https:// address (and the CA certificate of the server's --tls-cert)",
    ConnectionFailure.SERVER_SPEAKS_PLAINTEXT: "use an http:// address, or start the server with --tls-cert and "
                                               "--tls-key",
    ConnectionFailure.TLS_HANDSHAKE: "check ca_cert; a server started with --tls-client-ca also wants the client's "
                                     "certificate and key (client_cert, client_key)",
}


@dataclass(frozen=True)
class HttpEndpoint:
    """``http(s)://host:port`` of one server (``address`` as the user wrote it)."""

    address: str
    scheme: str
    host: str
    port: int
    balanced: bool = False

    @classmethod
    def parse(cls, address: str) -> "HttpEndpoint":
        parts = urlsplit(address.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server address {address!r}: expected http(s)://host[:port]")
        return cls(address, scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """Verifies the server with ``ca_cert`` (else the system's roots); presents the client certificate."""
    context = ssl.create_default_context(cadata=tls.ca_cert.decode("ascii") if tls.ca_cert else None)
    if tls.client_cert is not None and tls.client_key is not None:
        # ssl loads a certificate chain only from files: give it private ones for the moment it reads them.
        with tempfile.TemporaryDirectory(prefix="heie-tls-") as folder:
            cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
            for path, data in ((cert, tls.client_cert), (key, tls.client_key)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as file:
                    file.write(data)
            context.load_cert_chain(cert, key)
    return context


def _failure(err: BaseException, tls: bool) -> Optional[ConnectionFailure]:
    """Why a request never reached a HEIE server, from the exception ``http.client``/``ssl`` raised."""
    if isinstance(err, ssl.SSLCertVerificationError):
        if "match" in str(err).lower() or getattr(err, "verify_code", 0) == 62:
            return ConnectionFailure.CERTIFICATE_NAME_MISMATCH
        return ConnectionFailure.CERTIFICATE_NOT_TRUSTED
    if isinstance(err, ssl.SSLError):
        text = str(err).upper()
        if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text or "PACKET_LENGTH_TOO_LONG" in text:
            return ConnectionFailure.SERVER_SPEAKS_PLAINTEXT
        return ConnectionFailure.TLS_HANDSHAKE
    if isinstance(err, ConnectionRefusedError) or isinstance(err, socket.gaierror):
        return ConnectionFailure.NO_SERVER
    hung_up = (http.client.RemoteDisconnected, ConnectionResetError)
    if not tls and isinstance(err, (http.client.BadStatusLine, *hung_up)):
        # A TLS server answers a plaintext request with a TLS alert (not an HTTP status line) or hangs up.
        return ConnectionFailure.SERVER_SPEAKS_TLS
    if tls and isinstance(err, hung_up):
        # The server hung up on the TLS connection before any answer: with TLS 1.3 a server that wants a client
        # certificate may do so without an alert (as gRPC's "Socket closed" for a TLS channel).
        return ConnectionFailure.TLS_HANDSHAKE
    return None


class HttpConnection:
    """Opens requests to endpoints with one client's TLS, key and deadline."""

    def __init__(self, tls: Optional[TlsSettings], token: Optional[str]) -> None:
        self.tls = tls is not None
        self._context = ssl_context(tls) if tls is not None else None
        self._token = token

    def headers(self, has_body: bool, timeout: Optional[float]) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if timeout:
            headers["X-Heie-Timeout-Ms"] = str(max(1, int(timeout * 1000)))  # the server's deadline, as grpc-timeout
        return headers

    def open(self, endpoint: HttpEndpoint, method: str, path: str, body: Optional[Any], timeout: Optional[float],
             ok: tuple[int, ...] = (200,)) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends the request; returns the connection and its response when its status is in ``ok``, else
        raises the server's error (or UNAVAILABLE when no HEIE server answered)."""
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        if endpoint.scheme == "https":
            context = self._context or ssl.create_default_context()
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                endpoint.host, endpoint.port, timeout=CONNECT_TIMEOUT_S, context=context)
        else:
            connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=CONNECT_TIMEOUT_S)
        try:
            connection.connect()
            connection.sock.settimeout(IDLE_READ_TIMEOUT_S)  # type: ignore[union-attr]
            connection.request(method, path, body=payload, headers=self.headers(payload is not None, timeout))
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as err:
            connection.close()
            raise self.unreachable(endpoint, err) from None
        if response.status in ok:
            return connection, response
        try:
            error = error_of(response, endpoint)
            if response.status == 400 and endpoint.scheme == "http" and PLAIN_HTTP_TO_HTTPS in error.message:
                # The server's HTTPS port read our plaintext request and said so (as nginx does): the TLS
                # settings of the two ends disagree, which is a connection failure like gRPC's, not a bad request.
                failure = ConnectionFailure.SERVER_SPEAKS_TLS
                error = Unavailable(f"cannot connect to {endpoint}: {failure.value}; {_TLS_FIXES[failure]}",
                                    address=str(endpoint), failure=failure)
            raise error
        finally:
            connection.close()

    def unreachable(self, endpoint: HttpEndpoint, err: BaseException) -> HeieError:
        if isinstance(err, (socket.timeout, TimeoutError)):
            return DeadlineExceeded(f"no answer for {IDLE_READ_TIMEOUT_S:.0f} s", address=str(endpoint))
        failure = _failure(err, self.tls)
        if failure is None or failure is ConnectionFailure.NO_SERVER:
            return Unavailable(f"no HEIE server answers at {endpoint}: {err}; {START_HINT}", address=str(endpoint),
                               failure=failure)
        # Something answered, but the TLS settings of the two ends disagree: say which and what to change.
        detail = "" if failure is ConnectionFailure.SERVER_SPEAKS_TLS else f" ({err})"  # its error is a TLS record
        return Unavailable(f"cannot connect to {endpoint}: {failure.value}{detail}; {_TLS_FIXES[failure]}",
                           address=str(endpoint), failure=failure)


#: The start of the server's answer to a plaintext request on its HTTPS port (`server/src/http/tls_handshake.rs`).
PLAIN_HTTP_TO_HTTPS = "this port speaks HTTPS"


def error_of(response: http.client.HTTPResponse, endpoint: HttpEndpoint) -> HeieError:
    """The server's ``{"error": {"code", "message"}}``; anything else (another program on that port) is
    UNAVAILABLE naming the HTTP status."""
    raw = response.read(65536)
    try:
        error = json.loads(raw)["error"]
        return error_for(StatusCode.from_name(str(error["code"])), str(error["message"]), str(endpoint))
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip().splitlines()[:1]
        return Unavailable(f"HTTP {response.status} {response.reason} {text[0][:200] if text else ''} — not a HEIE "
                           f"server? {START_HINT}", address=str(endpoint))
