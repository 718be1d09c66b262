"""How the nodes reach ``heie serve``: the address widget, the API key and TLS.

The API key is read from the environment of the ComfyUI process (``HEIE_API_KEY``), never from a widget:
widget values are saved into every workflow file and into the PNGs ComfyUI writes, so a key typed into
a node would leak with each shared image."""

from __future__ import annotations

import os
from typing import Any, Optional

from heie_client import Client
from heie_client.balancing import split_targets

API_KEY_VARIABLE = "HEIE_API_KEY"


def addresses(address: str) -> list[str]:
    """The servers of the address widget, in every form heie-client takes: ``host:port``, a comma list
    of them, ``dns:///name:port`` (every replica the name resolves to) or ``ipv4:a:p,b:q`` (one
    balanced set; its commas are not split here)."""
    if not address.strip():
        raise ValueError("the address widget is empty: give host:port of heie serve, e.g. 127.0.0.1:50051")
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
