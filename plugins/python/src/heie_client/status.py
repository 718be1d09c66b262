"""The status codes of a failed call, the same on both transports: gRPC's codes by name and number
(``heie.v1`` is a gRPC contract; its HTTP face names the same codes in ``{"error": {"code": …}}``)."""

from __future__ import annotations

import enum


class StatusCode(enum.IntEnum):
    """gRPC status codes (google.rpc.Code); ``.name`` is what both transports send on the wire."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def _missing_(cls, value: object) -> "StatusCode":
        return cls.UNKNOWN

    @classmethod
    def from_name(cls, name: str) -> "StatusCode":
        """The code named ``name`` (as the HTTP API writes it); UNKNOWN for a name this client does not know."""
        return cls.__members__.get(name, cls.UNKNOWN)


__all__ = ["StatusCode"]
