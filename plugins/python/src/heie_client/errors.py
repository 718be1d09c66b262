"""Typed errors. Every failure of a call is a :class:`HeieError` carrying the status code (gRPC's, on
either transport) and the server's message; client-side input problems are :class:`InvalidImage` (also a
``ValueError``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .status import StatusCode

if TYPE_CHECKING:
    from .connection_failures import ConnectionFailure


class HeieError(Exception):
    """A call to the HEIE server failed. ``code`` is the status code (:class:`StatusCode`, gRPC's codes on
    both transports; ``None`` for failures that happened in the client), ``message`` the server's detail
    text; ``failure``, set by the transport when the call never reached a server, says why (see
    :func:`~heie_client.connection_failures.connection_failure`)."""

    code: Optional[StatusCode] = None

    def __init__(self, message: str, code: Optional[StatusCode] = None, address: str = "",
                 failure: Optional["ConnectionFailure"] = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.address = address
        self.failure = failure
        name = self.code.name if self.code is not None else "CLIENT"
        where = f" ({address})" if address else ""
        super().__init__(f"{name}: {message}{where}")


class InvalidArgument(HeieError):
    """The server rejected the image or options; the message names the field."""

    code = StatusCode.INVALID_ARGUMENT


class ResourceExhausted(HeieError):
    """The server's queue is full; retry later."""

    code = StatusCode.RESOURCE_EXHAUSTED


class Unavailable(HeieError):
    """No server could be reached, or the model is not loaded yet."""

    code = StatusCode.UNAVAILABLE


class Cancelled(HeieError):
    """The call was cancelled (by this client, e.g. on a host's interrupt, or by the server)."""

    code = StatusCode.CANCELLED


class DeadlineExceeded(HeieError):
    """The call ran past its timeout."""

    code = StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(HeieError):
    """The server (or a proxy in front of it) refused the token."""

    code = StatusCode.UNAUTHENTICATED


class Internal(HeieError):
    """The server failed; its logs have the detail."""

    code = StatusCode.INTERNAL


class ProtocolError(HeieError):
    """The server's answer broke the contract (e.g. a stream ended without a score)."""


class InvalidImage(HeieError, ValueError):
    """An image given to the client could not be turned into a request."""


class InsecureTransport(HeieError, ValueError):
    """The client refused to send a token in plaintext to another machine (use ``tls=True``)."""


_BY_CODE: dict[StatusCode, type[HeieError]] = {
    cls.code: cls
    for cls in (InvalidArgument, ResourceExhausted, Unavailable, Cancelled, DeadlineExceeded, Unauthenticated, Internal)
    if cls.code is not None
}


def error_for(code: StatusCode, message: str, address: str = "",
              failure: Optional["ConnectionFailure"] = None) -> HeieError:
    """The :class:`HeieError` subclass of ``code`` (the plain class for codes without one)."""
    return _BY_CODE.get(code, HeieError)(message, code=code, address=address, failure=failure)
