"""What a node says when the server cannot do its work: one sentence a ComfyUI user can act on (which
address, what to do), with the server's own message where it has one, instead of a raw gRPC status."""

from __future__ import annotations

import re
from typing import Optional

from heie_client import (
    ConnectionFailure, DeadlineExceeded, HeieError, InsecureTransport, InvalidArgument, ResourceExhausted, Unauthenticated, Unavailable,
    connection_failure,
)

from .connection import API_KEY_VARIABLE


class HeieNodeError(RuntimeError):
    """A HEIE node could not get its verdicts; the message says why and what to do."""


def _where(error: HeieError, address: str) -> str:
    return error.address or address


def _connection(failure: ConnectionFailure, where: str, ca_cert: str, detail: str) -> HeieNodeError:
    fix_ca = "Set ca_cert to the PEM CA certificate that signed the server's --tls-cert."
    if failure is ConnectionFailure.CERTIFICATE_NOT_TRUSTED:
        trusted_by = f"the CA certificate in ca_cert ({ca_cert})" if ca_cert else "this machine's CA certificates"
        return HeieNodeError(f"HEIE: the server at {where} speaks TLS, but its certificate is not trusted by "
                             f"{trusted_by}. {fix_ca}")
    if failure is ConnectionFailure.SERVER_SPEAKS_TLS:
        return HeieNodeError(f"HEIE: the server at {where} speaks TLS and the node connected without it "
                             f"(ca_cert is empty). {fix_ca}")
    if failure is ConnectionFailure.SERVER_SPEAKS_PLAINTEXT:
        return HeieNodeError(f"HEIE: the server at {where} speaks plaintext, not TLS, and ca_cert is set. Clear "
                             f"ca_cert, or start the server with --tls-cert and --tls-key.")
    if failure is ConnectionFailure.CERTIFICATE_NAME_MISMATCH:
        return HeieNodeError(f"HEIE: the server at {where} has a TLS certificate that is not issued for that "
                             f"address. Set the node's address to a name the certificate lists.")
    if failure is ConnectionFailure.TLS_HANDSHAKE:
        return HeieNodeError(f"HEIE: the TLS handshake with the server at {where} failed ({detail}). Check ca_cert; "
                             f"a server started with --tls-client-ca also wants client certificates, which the "
                             f"node does not send.")
    return HeieNodeError(
        f"HEIE: no server answers at {where}. Start it with `heie serve` (see the HEIE README), "
        f"or set the node's address to where it runs.")


#: The server's refusal of a request whose context does not fit (pipeline/evaluator.rs, ``prepare``).
_CONTEXT_REFUSAL = re.compile(
    r"(?P<views>\d+) image views × (?P<per_view>\d+) \+ (?P<prompt>\d+) prompt \+ (?P<generated>\d+) generated\) "
    r"but the server's --ctx-size gives each request (?P<available>\d+)")


def largest_max_tokens(detail: str, requested: int) -> Optional[int]:
    """The largest max_tokens the refused request would have fitted with, read from the server's
    context arithmetic (None when the message does not carry it)."""
    found = _CONTEXT_REFUSAL.search(detail)
    if found is None or requested <= 0:
        return None
    n = {k: int(v) for k, v in found.groupdict().items()}
    sections = max(1, round(n["generated"] / requested))  # an explanation has three sections, fast mode one
    return max(0, (n["available"] - n["views"] * n["per_view"] - n["prompt"]) // sections)


def too_many_tokens(requested: int, where: str, most: Optional[int], why: str) -> HeieNodeError:
    """The node error for a ``max_tokens`` widget the server cannot honour, in the widget's own terms."""
    limit = f"at most {most}" if most is not None else "a lower value"
    return HeieNodeError(
        f"HEIE: max_tokens {requested} is more than the server at {where} can take ({why}). Set the node's "
        f"max_tokens to {limit}, or 0 for the server's default.")


def explain(error: HeieError, address: str, tls: bool = False, ca_cert: str = "", max_tokens: int = 0) -> HeieNodeError:
    """The node error for a failed call to the server(s) in ``address``, made by a client that
    connected with TLS when ``tls`` (verified by the CA file ``ca_cert``, else the system's roots) and
    asked for ``max_tokens`` per section (the widget; 0 = the server's default)."""
    where = _where(error, address)
    if isinstance(error, InvalidArgument) and error.message.startswith("options.max_tokens_per_section") and max_tokens:
        most = largest_max_tokens(error.message, max_tokens)
        why = ("its --ctx-size leaves room for fewer explanation tokens per image" if most is not None
               else error.message.split(": ", 1)[-1])
        return too_many_tokens(max_tokens, where, most, why)
    failure = connection_failure(error, tls)
    if failure is not None:
        return _connection(failure, where, ca_cert, error.message)
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
