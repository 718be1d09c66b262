"""How the nodes reach ``heie serve``: the address widget (``auto`` = a local server started on demand),
the API key and TLS.

The API key is read from the environment of the ComfyUI process (``HEIE_API_KEY``), never from a widget:
widget values are saved into every workflow file and into the PNGs ComfyUI writes, so a key typed into
a node would leak with each shared image."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from heie_client import Client
from heie_client.balancing import split_targets
from heie_client.local_server import (AUTO, CancelCheck, DownloadCallback, LocalServerError, LocalServerSettings,
                                      resolve_address)

API_KEY_VARIABLE = "HEIE_API_KEY"
#: The address widget's default: the pack starts (once per ComfyUI process) a local ``heie serve``.
DEFAULT_ADDRESS = AUTO
#: How the local server of the address "auto" is started: environment variables of the ComfyUI process
#: (like the API key, they belong to the machine, not to the workflows that get shared).
MODEL_VARIABLE = "HEIE_COMFY_MODEL"
MMPROJ_VARIABLE = "HEIE_COMFY_MMPROJ"
BINARY_VARIABLE = "HEIE_COMFY_BINARY"
THREADS_VARIABLE = "HEIE_COMFY_THREADS"


def addresses(address: str) -> list[str]:
    """The servers of the address widget, in every form heie-client takes: ``host:port``, a comma list
    of them, ``dns:///name:port`` (every replica the name resolves to) or ``ipv4:a:p,b:q`` (one
    balanced set; its commas are not split here)."""
    if not address.strip():
        raise ValueError("the address widget is empty: write auto (a local server started for you) or the "
                         "host:port of a running heie serve, e.g. 127.0.0.1:50051")
    return split_targets(address.strip())


def api_key() -> Optional[str]:
    """The server's API key from ``HEIE_API_KEY``, or None when unset or empty."""
    return os.environ.get(API_KEY_VARIABLE, "").strip() or None


def open_client(address: str, timeout: float, ca_cert: str = "") -> Client:
    """A client for the node's server. ``timeout`` is the deadline of each call in seconds (0 = none);
    ``ca_cert`` is the path of a PEM CA certificate: set, the connection uses TLS verified by it."""
    options: dict[str, Any] = {"timeout": timeout or None, "token": api_key()}
    if ca_cert.strip():
        options["ca_cert"] = os.path.expanduser(ca_cert.strip())
    return Client(addresses(address), **options)


def local_server_settings(log_dir: str = "") -> LocalServerSettings:
    """The settings of the address "auto" from the ``HEIE_COMFY_*`` variables; ``log_dir`` is where the
    server's log goes ('' = heie_client's default folder)."""
    threads = os.environ.get(THREADS_VARIABLE, "").strip()
    if threads and not (threads.isdigit() and int(threads) > 0):
        raise ValueError(f"{THREADS_VARIABLE} is {threads!r}: give a whole number of threads above 0, or unset it "
                         "for all cores")
    return LocalServerSettings(
        binary=os.environ.get(BINARY_VARIABLE, "").strip(),
        model=os.environ.get(MODEL_VARIABLE, "").strip(),
        mmproj=os.environ.get(MMPROJ_VARIABLE, "").strip(),
        log_dir=log_dir,
        threads=int(threads) if threads else 0,
    )


def server_address(address: str, log_dir: str = "", progress: Optional[Callable[[str], None]] = None,
                   download: Optional[DownloadCallback] = None, cancelled: Optional[CancelCheck] = None) -> str:
    """The address widget's value, or for "auto" the address of the shared local server (started on the
    first call, which may take a while; ``progress`` hears what it is doing, ``download`` how far the
    model's first download is, and ``cancelled`` true abandons the start with heie_client's
    ``StartCancelled``). Raises ValueError with a one-sentence reason when it cannot be started."""
    if address.strip().lower() != AUTO:
        return address
    try:
        return resolve_address(address, local_server_settings(log_dir), progress, download, cancelled)
    except LocalServerError as err:
        raise ValueError(f"the address is auto and the local HEIE server could not start: {err}") from None
