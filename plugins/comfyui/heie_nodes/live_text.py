"""The text shown on a node while it runs (ComfyUI's progress text): one line per image, the tail of its
explanation as it is written, then its score (or why it has none) once it is finished.

A frame is sent only when it differs from the last one sent and is not empty, and at most every
``INTERVAL_S`` while text streams; a finished image always sends at once, so the last frame holds every
image's outcome exactly once."""

from __future__ import annotations

import time
from typing import Optional, Protocol

from heie_client import Event, Score, TextDelta

from .markers import for_people, score_in_words

INTERVAL_S = 0.25
TAIL_CHARS = 240


class TextSink(Protocol):
    def progress(self, value: int, total: int) -> None: ...
    def text(self, text: str) -> None: ...


class LiveText:
    def __init__(self, total: int, host: TextSink) -> None:
        self._host = host
        self._total = total
        self._text = [""] * total
        self._score: list[Optional[float]] = [None] * total
        self._outcome: list[Optional[str]] = [None] * total
        self._final_scores: list[Optional[float]] = [None] * total
        self._cancelled = ""
        self._finished = 0
        self._last_sent_at = 0.0
        self._last_frame = ""

    def add(self, index: int, event: Event) -> None:
        """One streamed event of image ``index`` (0-based)."""
        if isinstance(event, TextDelta):
            self._text[index] += event.text
        elif isinstance(event, Score) and self._score[index] is None:
            self._score[index] = event.score
        else:
            return
        if time.monotonic() - self._last_sent_at >= INTERVAL_S:
            self._send()

    def finish(self, index: int, score: Optional[float], failure: str, band: str = "") -> None:
        """Image ``index`` is done: its line becomes its score and band, or ``failure`` when it has none."""
        self._outcome[index] = (f"score {score_in_words(score, band)}" if score is not None
                                else f"no score: {failure or 'no answer'}")
        self._final_scores[index] = score
        self._finished += 1
        self._host.progress(self._finished, self._total)
        self._send()

    def cancelled(self) -> None:
        """The run was cancelled: the last frame is every image's line, then a line saying so."""
        judged = sum(1 for score in self._final_scores if score is not None)
        self._cancelled = f"cancelled: {judged} of {self._total} image{'s' if self._total != 1 else ''} judged"
        self._send()

    def render(self) -> str:
        lines = []
        for i in range(self._total):
            if self._outcome[i] is not None:
                lines.append(f"#{i + 1}: {self._outcome[i]}")
            elif self._text[i]:
                shown = for_people(self._text[i], self._score[i])
                tail = " ".join("".join(c if c.isprintable() else " " for c in shown).split())[-TAIL_CHARS:]
                lines.append(f"#{i + 1}: …{tail}")
        if self._cancelled:
            lines.append(self._cancelled)
        return "\n".join(lines)

    def _send(self) -> None:
        frame = self.render()
        if not frame or frame == self._last_frame:
            return
        self._last_frame = frame
        self._last_sent_at = time.monotonic()
        self._host.text(frame)
