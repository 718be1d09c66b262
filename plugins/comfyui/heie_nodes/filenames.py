"""A ``filename_prefix`` for Save Image that says what the judge thought: ``heie_0.26_badly-flawed``.

Save Image takes one prefix for the whole batch it is given (and adds ``_00001_`` and so on to it), so
one string stands for the whole batch: for one image its score (2 decimals) and band; for several the
lowest score of the batch and its band, after ``min`` (``heie_min0.26_badly-flawed``): a batch is filed
under its worst image. A batch with an image without a score reads ``heie_no-score``. To name each image by its own score,
judge and save the images one at a time (e.g. after Image From Batch). The band's spaces become hyphens
so that the name has no spaces; a server that names no bands gives the score alone (``heie_0.26``)."""

from __future__ import annotations

from typing import Optional, Sequence

PREFIX = "heie"
NO_SCORE = "no-score"


def filename_prefix(scored: Sequence[tuple[Optional[float], str]]) -> str:
    """The prefix for a batch of ``(score, band)`` pairs, one per image (score None: no verdict)."""
    if not scored or any(score is None for score, _ in scored):
        # An image without a verdict is the worst a batch can hold: it never passes a Filter either.
        return f"{PREFIX}_{NO_SCORE}"
    score, band = min(scored, key=lambda pair: pair[0])  # type: ignore[arg-type, return-value]
    lead = "min" if len(scored) > 1 else ""
    words = f"_{'-'.join(band.split())}" if band else ""
    return f"{PREFIX}_{lead}{score:.2f}{words}"
