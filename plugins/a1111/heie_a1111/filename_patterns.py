"""``[heie_score]`` and ``[heie_band]`` for the WebUI's "Images filename pattern" setting (e.g.
``[seed]-[heie_score]`` → ``01234-1000-0.734.png``): the score of the image being saved (with the digits
that explain a reject) and its band's words (spaces as hyphens: ``badly-flawed``).

The WebUI calls each pattern with its ``FilenameGenerator``, which holds the job (``p``) and the image it
saves; an image not judged (a grid, an image whose judgement failed) gets None, which the adapter turns
into the WebUI's "nothing, and drop the text before it" so no literal ``[heie_score]`` is left.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .hooks import STATE_ATTR
from .run_state import RunState
from .verdict import Verdict, score_text


def _verdict(p: Any, image: Any) -> Optional[Verdict]:
    state = getattr(p, STATE_ATTR, None)
    return state.verdict_for(image) if isinstance(state, RunState) and image is not None else None


def heie_score(p: Any, image: Any) -> Optional[str]:
    """The score as this image's infotext shows it (after a repair, with the digits that tell it from the
    score before), so the file's name and its infotext agree."""
    verdict = _verdict(p, image)
    if verdict is None:
        return None
    state = getattr(p, STATE_ATTR)
    outcome = state.outcome_at((int(getattr(p, "iteration", 0) or 0), int(getattr(p, "batch_index", 0) or 0)))
    if outcome is not None and outcome.verdict is verdict:
        return outcome.infotext()["HEIE score"].split(" (")[0]
    return score_text(verdict.score, verdict.threshold)


def heie_band(p: Any, image: Any) -> Optional[str]:
    verdict = _verdict(p, image)
    return verdict.band.replace(" ", "-") if verdict is not None and verdict.band else None


PATTERNS: dict[str, Callable[[Any, Any], Optional[str]]] = {"heie_score": heie_score, "heie_band": heie_band}
"""Pattern name (as written between brackets, lower case) → its value for ``(p, image)``."""
