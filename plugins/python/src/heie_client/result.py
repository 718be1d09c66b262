"""Folding an event stream into one :class:`Result`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from .errors import ProtocolError
from .events import (
    Done, Event, FinishReason, HeadsMode, Heatmap, HeatmapEncoding, LevelProbability, Region, RegionBox, Regions,
    Score, Section, Started, TextDelta,
)
from .heatmaps import decode_heatmap, decode_overlay

if TYPE_CHECKING:
    import numpy as np

@dataclass(frozen=True)
class Result:
    """Everything the server said about one image.

    The *primary* score and heatmap are the first ones sent (trained heads when the server has them,
    else zero-shot); zero-shot extras that a trained server adds are kept in ``scores``/``heatmaps``.
    """

    score: Optional[float]
    """Plausibility in [0, 1] (1 = looks real); None only when the evaluation failed or was cut."""
    mode: HeadsMode
    summary: str
    """The server's one-line summary for captions and metadata (``Done.summary``: the score, the mode and
    the analysis's first sentence, at most 200 characters); '' when the stream ended without it."""
    heatmap: Optional[np.ndarray] = field(repr=False)
    """H×W float32 in [0, 1] (1 = most implausible), or None when no value map was requested."""
    overlay: Optional[np.ndarray] = field(repr=False)
    """H×W×3 uint8 picture of the heatmap over the image, when OVERLAY_PNG was requested."""
    overlay_png: Optional[bytes] = field(repr=False)
    explanation: str = field(repr=False)
    """The whole chain of thought as streamed (headings and markers included)."""
    sections: dict[Section, str] = field(repr=False)
    boxes: tuple[RegionBox, ...]
    regions: tuple[Region, ...] = field(repr=False)
    """The flagged regions as data (box, mask, category, severity, sentences); empty when none."""
    band: str = field(repr=False)
    """The primary score's band in words ("flawed", "good", …); '' when there is no score."""
    levels: tuple[LevelProbability, ...] = field(repr=False)
    scores: tuple[Score, ...] = field(repr=False)
    heatmaps: tuple[Heatmap, ...] = field(repr=False)
    started: Optional[Started] = field(repr=False)
    done: Optional[Done] = field(repr=False)

    @property
    def finish_reason(self) -> FinishReason:
        return self.done.finish_reason if self.done else FinishReason.UNSPECIFIED

    @property
    def ok(self) -> bool:
        """True when a score came back and the evaluation did not fail."""
        return self.score is not None and self.finish_reason is not FinishReason.ERROR

    @property
    def error(self) -> str:
        """The server's reason when the evaluation failed (batch calls only), else ''."""
        return self.done.message if self.done and self.done.finish_reason is FinishReason.ERROR else ""


class ResultBuilder:
    """Accumulates the events of one image; :meth:`build` gives the :class:`Result`."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._sections: dict[Section, list[str]] = {}
        self._boxes: list[RegionBox] = []
        self._regions: tuple[Region, ...] = ()
        self._scores: list[Score] = []
        self._heatmaps: list[Heatmap] = []
        self._started: Optional[Started] = None
        self._done: Optional[Done] = None

    def add(self, event: Event) -> None:
        if isinstance(event, Started):
            self._started = event
        elif isinstance(event, TextDelta):
            self._text.append(event.text)
            self._sections.setdefault(event.section, []).append(event.text)
        elif isinstance(event, RegionBox):
            self._boxes.append(event)
        elif isinstance(event, Heatmap):
            self._heatmaps.append(event)
        elif isinstance(event, Score):
            self._scores.append(event)
        elif isinstance(event, Regions):
            self._regions = event.regions
        elif isinstance(event, Done):
            self._done = event

    def text(self) -> str:
        """The explanation so far."""
        return "".join(self._text)

    def build(self) -> Result:
        primary = self._scores[0] if self._scores else None
        maps = self._primary_heatmaps()
        value_map = next((h for h in maps if h.encoding in (HeatmapEncoding.RAW_F32_LE, HeatmapEncoding.PNG8)), None)
        overlay = next((h for h in maps if h.encoding is HeatmapEncoding.OVERLAY_PNG), None)
        if primary is not None:
            mode = primary.mode
        else:
            mode = self._started.mode if self._started else HeadsMode.UNSPECIFIED
        return Result(
            score=primary.score if primary else None,
            mode=mode,
            summary=self._done.summary if self._done else "",
            heatmap=decode_heatmap(value_map) if value_map else None,
            overlay=decode_overlay(overlay) if overlay else None,
            overlay_png=overlay.data if overlay else None,
            explanation=self.text(),
            sections={s: "".join(parts) for s, parts in self._sections.items()},
            boxes=tuple(self._boxes),
            regions=self._regions,
            band=primary.band if primary else "",
            levels=primary.levels if primary else (),
            scores=tuple(self._scores),
            heatmaps=tuple(self._heatmaps),
            started=self._started,
            done=self._done,
        )

    def _primary_heatmaps(self) -> list[Heatmap]:
        if not self._heatmaps:
            return []
        source = self._heatmaps[0].source
        return [h for h in self._heatmaps if h.source == source]


def require_score(result: Result) -> Result:
    """Raises when a finished single evaluation has no score (the contract promises one)."""
    if result.score is None:
        reason = result.finish_reason.name
        raise ProtocolError(f"the evaluation ended without a score (finish reason {reason})")
    return result


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, an ellipsis marking the cut (for a caption shorter
    than the server's summary)."""
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)].rstrip() + "…"
