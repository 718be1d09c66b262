"""The server address "auto" (the default): the WebUI process gets one local ``heie serve --http``,
started by heie_client's ``local_server`` on the first judged image and shared by every later one (a
server that died is started again, the WebUI's exit stops it). Its model, mmproj and binary come from
the settings page; its log is heie_client's default (``~/.cache/heie/logs/heie-serve.log``). While it
starts, the progress text says what it does (the default model's first download in percent), and the
WebUI's Interrupt abandons the start (heie_client's ``StartCancelled``, a ``Cancelled``: the image's
"cancelled" note); the next image starts it again."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

from heie_client.local_server import AUTO, CancelCheck, LocalServerError, LocalServerSettings, resolve_address

from .settings import Settings


def with_server_address(settings: Settings, progress: Optional[Callable[[str], None]] = None,
                        cancelled: Optional[CancelCheck] = None) -> Settings:
    """``settings`` itself, or for the address "auto" the same settings with the running local server's
    address (the server started first when none runs; ``progress`` hears what it is doing, ``cancelled``
    true abandons the start). A server that cannot start is a ValueError whose sentence says what to do."""
    if settings.address.strip().lower() != AUTO:
        return settings
    local = LocalServerSettings(binary=settings.server_binary.strip(), model=settings.server_model.strip(),
                                mmproj=settings.server_mmproj.strip())
    try:
        return replace(settings, address=resolve_address(AUTO, local, progress, cancelled=cancelled))
    except LocalServerError as err:
        raise ValueError(f"the server address is auto and the local HEIE server could not start: {err}") from None
