"""What a WebUI user reads when an image could not be judged: one sentence that says what failed and what
to change, in the terms of the WebUI (Settings → HEIE and its option names, ``$HEIE_API_KEY``), not the
server's wire fields. It goes into the image's infotext (``HEIE error``, under the image in the gallery)
and the progress text, not only the console."""

from __future__ import annotations

import re
from typing import Optional

from heie_client import (
    Cancelled, ConnectionFailure, DeadlineExceeded, HeieError, InsecureTransport, InvalidArgument, ResourceExhausted,
    Unauthenticated, Unavailable, connection_failure,
)

from .settings import API_KEY_ENV, Settings

SETTINGS_PAGE = "Settings → HEIE"
TOKENS_OPTION = "Tokens per explanation section"
"""The slider's name as the user sees it (the start of its label in :data:`~heie_a1111.settings.OPTIONS`)."""
ADDRESS_OPTION = "Server address"
TIMEOUT_OPTION = "Time limit per image"

#: The server's refusal of a request whose context does not fit (server/src/pipeline/evaluator.rs).
_CONTEXT_REFUSAL = re.compile(
    r"(?P<views>\d+) image views × (?P<per_view>\d+) \+ (?P<prompt>\d+) prompt \+ (?P<generated>\d+) generated\) "
    r"but the server's --ctx-size gives each request (?P<available>\d+)")


class TooManyTokens(HeieError):
    """The tokens-per-section setting is more than the server takes; raised before any image is sent
    once the server's limit (or its refusal of an earlier image of the job) says so."""

    def __init__(self, message: str, most: Optional[int]) -> None:
        super().__init__(message, code=None)
        self.most = most


def fitting_tokens(detail: str, requested: int) -> Optional[int]:
    """The largest tokens per section the refused request would have fitted with, read from the
    server's context arithmetic (None when the message does not carry it)."""
    found = _CONTEXT_REFUSAL.search(detail)
    if found is None or requested <= 0:
        return None
    n = {k: int(v) for k, v in found.groupdict().items()}
    sections = max(1, round(n["generated"] / requested))  # a full explanation has three sections, fast mode one
    return max(0, (n["available"] - n["views"] * n["per_view"] - n["prompt"]) // sections)


def too_many_tokens(requested: int, where: str, most: Optional[int], why: str) -> TooManyTokens:
    limit = f"at most {most}" if most is not None else "a lower value"
    return TooManyTokens(
        f"{SETTINGS_PAGE} → “{TOKENS_OPTION}” is {requested}, more than the server at {where} takes ({why}); "
        f"set it to {limit}, or 0 for the server's default", most)


def tokens_refusal(error: HeieError, settings: Settings) -> Optional[TooManyTokens]:
    """The server's refusal of the tokens-per-section setting, in the slider's terms (None for any other error)."""
    if not (isinstance(error, InvalidArgument) and error.message.startswith("options.max_tokens_per_section")
            and settings.max_tokens):
        return None
    most = fitting_tokens(error.message, settings.max_tokens)
    why = ("its --ctx-size leaves room for fewer per image" if most is not None
           else error.message.split(": ", 1)[-1])
    return too_many_tokens(settings.max_tokens, error.address or settings.address, most, why)


def _connection(failure: ConnectionFailure, where: str, detail: str) -> str:
    if failure is ConnectionFailure.NO_SERVER:
        # The client's own sentence names the address, the cause and `heie serve --http`; add the setting.
        said = detail if detail.startswith("no HEIE server answers") else f"no HEIE server answers at {where} ({detail})"
        return f"{said.rstrip('.')} Or set {SETTINGS_PAGE} → “{ADDRESS_OPTION}” to the --http address of a running one."
    if failure is ConnectionFailure.SERVER_SPEAKS_TLS:
        return (f"the server at {where} speaks TLS: write the address as https://{where.split('://')[-1]} in "
                f"{SETTINGS_PAGE} → “{ADDRESS_OPTION}”")
    if failure is ConnectionFailure.SERVER_SPEAKS_PLAINTEXT:
        return (f"the server at {where} speaks plaintext, not TLS: write the address with http:// in "
                f"{SETTINGS_PAGE} → “{ADDRESS_OPTION}”, or start the server with --tls-cert and --tls-key")
    if failure is ConnectionFailure.CERTIFICATE_NOT_TRUSTED:
        return (f"the server at {where} has a TLS certificate this machine's CA certificates do not trust: add its "
                f"CA to them (or start the WebUI with SSL_CERT_FILE naming the CA's PEM file)")
    return f"{failure.value} at {where} ({detail})"


def explain(error: Exception, settings: Settings) -> str:
    """The sentence for an image that ``error`` kept from being judged."""
    if isinstance(error, TooManyTokens) or not isinstance(error, HeieError):
        return str(error) if not isinstance(error, HeieError) else error.message
    where = error.address or settings.address
    refusal = tokens_refusal(error, settings)
    if refusal is not None:
        return refusal.message
    failure = connection_failure(error, tls=where.lower().startswith("https://"))
    if failure is not None:
        return _connection(failure, where, error.message)
    if isinstance(error, Unauthenticated):
        if settings.api_key is None:
            return (f"the server at {where} needs an API key: start the WebUI with {API_KEY_ENV} set to one of the "
                    f"server's --api-key values")
        return (f"the server at {where} refused the API key in {API_KEY_ENV} ({error.message}): set it to one of the "
                f"server's --api-key values and restart the WebUI")
    if isinstance(error, InsecureTransport):
        return f"{error.message}: use an https:// server address, or unset {API_KEY_ENV}"
    if isinstance(error, Unavailable):
        return f"the server at {where} cannot take work now: {error.message}"
    if isinstance(error, ResourceExhausted):
        return f"the server at {where} is full: {error.message} (generate again later, or start it with a larger --max-queue)"
    if isinstance(error, DeadlineExceeded):
        limit = f"{settings.timeout:g} s" if settings.timeout else "none"
        return (f"the server at {where} did not finish within {SETTINGS_PAGE} → “{TIMEOUT_OPTION}” ({limit}): "
                f"raise it, or lower “{TOKENS_OPTION}”")
    if isinstance(error, Cancelled):
        return error.message
    if isinstance(error, InvalidArgument):
        return f"the server at {where} refused the image: {error.message}"
    return f"the call to {where} failed: {error.message}"


def code_of(error: Exception) -> str:
    """The status name for programs (``UNAVAILABLE``, …; ``INVALID_ARGUMENT`` for a bad setting)."""
    if isinstance(error, TooManyTokens):
        return "INVALID_ARGUMENT"
    if isinstance(error, HeieError):
        return error.code.name if error.code is not None else "INTERNAL"
    return "INVALID_ARGUMENT"
