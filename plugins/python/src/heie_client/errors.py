"""Typed errors. Every failure of a call is a :class:`HeieError` carrying the gRPC status code and the
server's message; client-side input problems are :class:`InvalidImage` (also a ``ValueError``)."""

from __future__ import annotations

from typing import Optional

import grpc


class HeieError(Exception):
    """A call to the HEIE server failed. ``code`` is the gRPC status code (``None`` for failures that
    happened in the client), ``message`` the server's detail text."""

    code: Optional[grpc.StatusCode] = None

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, address: str = "") -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.address = address
        name = self.code.name if self.code is not None else "CLIENT"
        where = f" ({address})" if address else ""
        super().__init__(f"{name}: {message}{where}")


class InvalidArgument(HeieError):
    """The server rejected the image or options; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ResourceExhausted(HeieError):
    """The server's queue is full; retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(HeieError):
    """No server could be reached, or the model is not loaded yet."""

    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(HeieError):
    """The call was cancelled (by this client, e.g. on a host's interrupt, or by the server)."""

    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(HeieError):
    """The call ran past its timeout."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(HeieError):
    """The server (or a proxy in front of it) refused the token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Internal(HeieError):
    """The server failed; its logs have the detail."""

    code = grpc.StatusCode.INTERNAL


class ProtocolError(HeieError):
    """The server's answer broke the contract (e.g. a stream ended without a score)."""


class InvalidImage(HeieError, ValueError):
    """An image given to the client could not be turned into a request."""


class InsecureTransport(HeieError, ValueError):
    """The client refused to send a token in plaintext to another machine (use ``tls=True``)."""


_BY_CODE: dict[grpc.StatusCode, type[HeieError]] = {
    cls.code: cls
    for cls in (InvalidArgument, ResourceExhausted, Unavailable, Cancelled, DeadlineExceeded, Unauthenticated, Internal)
    if cls.code is not None
}


def from_rpc_error(error: grpc.RpcError, address: str = "") -> HeieError:
    """Turns a grpc error into the matching :class:`HeieError` subclass."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    cls = _BY_CODE.get(code, HeieError)
    return cls(details, code=code, address=address)
