"""The explanation as people read it. The server writes the model's chain of thought with two marker
tokens in it: ``[MAP]`` where the regions become the heatmap, ``[SCORE]`` where the rating becomes the
score. Shown literally they read as garbage ("…the plausibility score for this image is [SCORE]."), so
the text shown on the node puts the score value and a pointer to the heatmap in their place. The raw text
(markers kept) stays in the node's ``results`` JSON output for code.

A zero-shot server writes one ``[MAP]`` per view (tiles and thumbnail), often back to back: a run of
them is one pointer to the heatmap. A section the server did not write (fast mode has no description)
keeps only its heading in the raw text: such a heading is dropped."""

from __future__ import annotations

import re
from typing import Iterable, Optional

MAP_MARKER = "[MAP]"
SCORE_MARKER = "[SCORE]"
MAP_FOR_PEOPLE = "shown in the heatmap"
HEADING = "### "
DECIMALS = 3
#: Between a score and its band: "0.257 — badly flawed".
BAND_DASH = "\u2014"
#: A float32 score has at most 9 significant decimals: more never tells two scores apart.
MAX_DECIMALS = 9
#: The score at the start of the server's summary line.
_SUMMARY_SCORE = re.compile(r"^score \d+(?:\.\d+)?")
_SPACES = re.compile(r"[ \t]+")
#: One or more [MAP] markers in a row (with only white space between them), and the text touching them.
_MAPS = re.compile(r"(\S?)[ \t]*\[MAP\](?:\s*\[MAP\])*[ \t]*(\S?)")


def format_score(score: Optional[float], decimals: int = DECIMALS) -> str:
    """The score as shown to people ("not available" when the image has none)."""
    return f"{score:.{decimals}f}" if score is not None else "not available"


def score_in_words(score: Optional[float], band: str, decimals: int = DECIMALS) -> str:
    """The score with its band beside it, as every score the nodes show: "0.257 — badly flawed" (the
    number alone from a server that names no band; "not available" without a score)."""
    shown = format_score(score, decimals)
    return f"{shown} {BAND_DASH} {band}" if score is not None and band else shown


def summary_in_words(summary: str, band: str) -> str:
    """The server's one-line summary ("score 0.254 (zero-shot): …") with the band after its score, as
    beside every other score the node shows; unchanged when it names the band already or has no score."""
    if not band or band in summary:
        return summary
    return _SUMMARY_SCORE.sub(lambda m: f"{m.group(0)} {BAND_DASH} {band}", summary, count=1)


def separating_decimals(values: Iterable[Optional[float]], decimals: int = DECIMALS) -> int:
    """The fewest decimals (at least ``decimals``) at which values that differ are shown differently:
    scores that decided a rank or a pass (and the threshold they were held against) never look equal
    when they are not."""
    distinct = sorted({v for v in values if v is not None})
    for digits in range(decimals, MAX_DECIMALS + 1):
        shown = {f"{v:.{digits}f}" for v in distinct}
        if len(shown) == len(distinct):
            return digits
    return MAX_DECIMALS


def for_people(raw: str, score: Optional[float], decimals: int = DECIMALS) -> str:
    """``raw`` with ``[SCORE]`` replaced by the score (``decimals`` digits; "not available" when the image
    has none), each run of ``[MAP]`` by one reference to the heatmap output, and the headings of empty
    sections dropped; other text untouched."""
    value = format_score(score, decimals)
    text = _MAPS.sub(_map_for_people, raw).replace(SCORE_MARKER, value)
    # Control characters (a small or broken model writes some) show as boxes or nothing: drop them.
    text = "".join(c for c in text if c.isprintable() or c in "\n\t")
    # The markers are tokens of their own, so the model often writes a space before the full stop after them.
    text = text.replace(f"{value} .", f"{value}.").replace(f"{MAP_FOR_PEOPLE} .", f"{MAP_FOR_PEOPLE}.")
    lines = [_SPACES.sub(" ", line).rstrip() for line in text.splitlines()]
    return "\n".join(_without_empty_sections(lines)).strip()


def _map_for_people(match: "re.Match[str]") -> str:
    """One pointer to the heatmap, set off by a space from a word before or after it (not from punctuation)."""
    before, after = match.group(1), match.group(2)
    lead = f"{before} " if before and before not in "([" else before
    trail = f" {after}" if after and (after.isalnum() or after in "([") else after
    return f"{lead}{MAP_FOR_PEOPLE}{trail}"


def _without_empty_sections(lines: list[str]) -> list[str]:
    """``lines`` less each heading whose section has no text before the next heading or the end."""
    kept: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith(HEADING):
            rest = next((other for other in lines[i + 1:] if other.strip()), None)
            if rest is None or rest.startswith(HEADING):
                continue
        kept.append(line)
    # A dropped heading leaves the blank lines around it: at most one blank line in a row.
    return [line for i, line in enumerate(kept) if line or (i > 0 and kept[i - 1])]
