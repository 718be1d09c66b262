"""The explanation as people read it. The server writes the model's chain of thought with two marker
tokens in it: ``[MAP]`` where the regions become the heatmap, ``[SCORE]`` where the rating becomes the
score. Shown literally they read as garbage ("…the plausibility score for this image is [SCORE]."), so
the text shown on the node puts the score value and a pointer to the heatmap in their place. The raw text
(markers kept) stays in the node's ``results`` JSON output for code."""

from __future__ import annotations

import re
from typing import Optional

MAP_MARKER = "[MAP]"
SCORE_MARKER = "[SCORE]"
MAP_FOR_PEOPLE = "shown in the heatmap"
_SPACES = re.compile(r"[ \t]+")


def for_people(raw: str, score: Optional[float]) -> str:
    """``raw`` with ``[SCORE]`` replaced by the score (3 decimals; "not available" when the image has
    none) and ``[MAP]`` by a reference to the heatmap output; other text untouched."""
    value = f"{score:.3f}" if score is not None else "not available"
    text = raw.replace(SCORE_MARKER, value).replace(MAP_MARKER, MAP_FOR_PEOPLE)
    # Control characters (a small or broken model writes some) show as boxes or nothing: drop them.
    text = "".join(c for c in text if c.isprintable() or c in "\n\t")
    # The markers are tokens of their own, so the model often writes a space before the full stop after them.
    text = text.replace(f"{value} .", f"{value}.").replace(f"{MAP_FOR_PEOPLE} .", f"{MAP_FOR_PEOPLE}.")
    return "\n".join(_SPACES.sub(" ", line).rstrip() for line in text.splitlines()).strip()
