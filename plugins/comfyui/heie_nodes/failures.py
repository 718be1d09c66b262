"""What a node says when the server cannot do its work: one sentence a ComfyUI user can act on (which
address, what to do), with the server's own message where it has one, instead of a raw gRPC status."""

from __future__ import annotations

from heie_client import (
    DeadlineExceeded, HeieError, InsecureTransport, InvalidArgument, ResourceExhausted, Unauthenticated, Unavailable,
)

from .connection import API_KEY_VARIABLE


class HeieNodeError(RuntimeError):
    """A HEIE node could not get its verdicts; the message says why and what to do."""


def _where(error: HeieError, address: str) -> str:
    return error.address or address


def explain(error: HeieError, address: str) -> HeieNodeError:
    """The node error for a failed call to the server(s) in ``address``."""
    where = _where(error, address)
    if isinstance(error, Unavailable):
        # heie serve's own UNAVAILABLE messages (loading, shutting down, engine restarting) all speak of
        # "the server" or "the model"; anything else is gRPC failing to reach a server at all.
        if error.message.startswith(("the server", "the model")):
            return HeieNodeError(f"HEIE: the server at {where} cannot take work now: {error.message}")
        return HeieNodeError(
            f"HEIE: no server answers at {where}. Start it with `heie serve` (see the HEIE README), "
            f"or set the node's address to where it runs.")
    if isinstance(error, Unauthenticated):
        return HeieNodeError(
            f"HEIE: the server at {where} refused the API key ({error.message}). Set {API_KEY_VARIABLE} in "
            f"ComfyUI's environment to one of the server's --api-key values and restart ComfyUI.")
    if isinstance(error, InsecureTransport):
        return HeieNodeError(
            f"HEIE: {error.message}. Give the node a CA certificate (ca_cert) so the key travels over TLS, "
            f"or unset {API_KEY_VARIABLE}.")
    if isinstance(error, InvalidArgument):
        return HeieNodeError(f"HEIE: the server at {where} refused the request: {error.message}")
    if isinstance(error, ResourceExhausted):
        return HeieNodeError(f"HEIE: the server at {where} refused the work for now: {error.message} "
                             f"(or start it with a larger --max-queue).")
    if isinstance(error, DeadlineExceeded):
        return HeieNodeError(f"HEIE: the server at {where} did not answer within the node's timeout: {error.message}")
    code = error.code.name if error.code is not None else "client error"
    return HeieNodeError(f"HEIE: the call to {where} failed ({code}): {error.message}")
