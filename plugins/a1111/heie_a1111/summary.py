"""The one-line summary of an explanation that goes into the infotext and the ``heie`` metadata key."""

from __future__ import annotations

import re

_HEADING = re.compile(r"^\s*#+.*$", re.MULTILINE)
_MARKER = re.compile(r"\[(MAP|SCORE)\]")
_SPACE = re.compile(r"\s+")
# The sentences the server writes around the markers carry nothing a caption needs.
_TEMPLATE = re.compile(
    r"So, the potential problematic regions in the image are|"
    r"Based on the overall analysis, the plausibility score for this image is\s*\.?"
)


def one_line(sections: dict[str, str], max_chars: int) -> str:
    """The analysis (else the whole explanation) without headings, markers and template sentences,
    on one line, cut at ``max_chars`` with an ellipsis."""
    text = sections.get("ANALYSIS") or "".join(sections.values())
    text = _TEMPLATE.sub("", _MARKER.sub("", _HEADING.sub("", text)))
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)].rstrip() + "…"
