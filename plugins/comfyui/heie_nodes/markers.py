"""The explanation as people read it on the nodes: the markers filled in by
``heie_client.readable_explanation`` (shared with the WebUI extension), the score with its band, and the
digits that tell scores apart. The raw text (markers kept) stays in the node's ``results`` JSON output
for code."""

from __future__ import annotations

import re
from typing import Iterable, Optional

from heie_client.readable_explanation import readable

DECIMALS = 3
#: Between a score and its band: "0.257 — badly flawed".
BAND_DASH = "\u2014"
#: A float32 score has at most 9 significant decimals: more never tells two scores apart.
MAX_DECIMALS = 9
#: The score at the start of the server's summary line.
_SUMMARY_SCORE = re.compile(r"^score \d+(?:\.\d+)?")


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
    return readable(raw, format_score(score, decimals))
