"""The HEIE entries of ``p.extra_generation_params`` as per-image values.

``p.extra_generation_params`` is one dict for the whole job, and the WebUI builds every image's infotext
and the grid's from it. A plain string written for image 2 would therefore also label image 3 when image
3 could not be judged, and the grid (built after the last image) would carry the last image's score.
Since v1.9 the WebUI calls a callable value with the infotext's context (``p``, ``index``,
``use_main_prompt``) and leaves the entry out when it returns None; each entry here looks up the
verdict of the image whose infotext is being built, and answers None for the grid and for images not
judged (yet).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

KEYS = ("HEIE score", "HEIE score before repair", "HEIE repaired", "HEIE repair result", "HEIE threshold",
        "HEIE reject if", "HEIE rejected", "HEIE rejected by", "HEIE summary", "HEIE error")
"""Every entry the extension may write, in infotext order."""


class Entry:
    """Callable value of one infotext key; ``lookup(p, index)`` gives that image's entries."""

    def __init__(self, key: str, lookup: Callable[[Any, int], Optional[dict[str, str]]]) -> None:
        self.key = key
        self._lookup = lookup

    def __call__(self, p: Any = None, index: Optional[int] = None, use_main_prompt: bool = False,
                 **_context: Any) -> Optional[str]:
        if use_main_prompt or p is None:  # the grid's infotext, or a caller that names no image
            return None
        entries = self._lookup(p, int(index or 0))
        return entries.get(self.key) if entries else None

    def __repr__(self) -> str:
        return f"<HEIE infotext entry {self.key!r}>"


def install(params: dict[str, Any], lookup: Callable[[Any, int], Optional[dict[str, str]]]) -> None:
    """Puts one :class:`Entry` per key into ``params`` (once per job; later calls keep them)."""
    for key in KEYS:
        if not isinstance(params.get(key), Entry):
            params[key] = Entry(key, lookup)


def remove(params: dict[str, Any]) -> None:
    for key in KEYS:
        if isinstance(params.get(key), Entry):
            del params[key]


def render(params: dict[str, Any], p: Any, index: int, use_main_prompt: bool = False) -> dict[str, Any]:
    """``params`` with the entries evaluated the way the WebUI's ``create_infotext`` does (None left
    out); what tests and the real-WebUI check compare against."""
    out = {}
    for key, value in params.items():
        if callable(value):
            value = value(p=p, index=index, use_main_prompt=use_main_prompt)
        if value is not None:
            out[key] = value
    return out
