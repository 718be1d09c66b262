"""Evaluating an IMAGE batch with the explanation streamed to the node and ComfyUI's interrupt
cancelling the call."""

from __future__ import annotations

import time
from typing import Any, Optional, Protocol

import numpy as np
from heie_client import BatchEvent, Cancelled, Client, Done, EvaluateOptions, Result, Score, TextDelta

from .tensors import batch_size, to_numpy

TEXT_INTERVAL_S = 0.25
TAIL_CHARS = 240


class Host(Protocol):
    def interrupted(self) -> bool: ...
    def raise_if_interrupted(self) -> None: ...
    def progress(self, value: int, total: int) -> None: ...
    def text(self, text: str) -> None: ...


class LiveText:
    """The text shown on the node: one line per image, the tail of its explanation until its score."""

    def __init__(self, total: int, host: Host) -> None:
        self._host = host
        self._total = total
        self._text = [""] * total
        self._score: list[Optional[float]] = [None] * total
        self._done = 0
        self._last_sent = 0.0

    def add(self, offset: int, item: BatchEvent) -> None:
        index = offset + item.index
        event = item.event
        if isinstance(event, TextDelta):
            self._text[index] += event.text
        elif isinstance(event, Score) and self._score[index] is None:
            self._score[index] = event.score
        elif isinstance(event, Done):
            self._done += 1
            self._host.progress(self._done, self._total)
        now = time.monotonic()
        if now - self._last_sent >= TEXT_INTERVAL_S or isinstance(event, Done):
            self._last_sent = now
            self._host.text(self.render())

    def render(self) -> str:
        lines = []
        for i, (text, score) in enumerate(zip(self._text, self._score)):
            if score is not None:
                lines.append(f"#{i + 1}: score {score:.3f}")
            elif text:
                tail = " ".join("".join(c if c.isprintable() else " " for c in text).split())[-TAIL_CHARS:]
                lines.append(f"#{i + 1}: …{tail}")
        return "\n".join(lines)


def evaluate_images(
    images: Any,
    address: str,
    timeout: float,
    options: EvaluateOptions,
    host: Host,
    prompt: str = "",
) -> list[Result]:
    """Results for every image of an IMAGE batch, in order. Calls are chunked to the server's max batch;
    an interrupt cancels the running call and raises ComfyUI's interrupt exception."""
    frames = to_numpy(images)
    total = batch_size(frames)
    live = LiveText(total, host)
    results: list[Result] = []
    host.raise_if_interrupted()
    with Client([a.strip() for a in address.split(",") if a.strip()], timeout=timeout or None) as client:
        chunk = max(1, client.info().limits.max_batch)
        for start in range(0, total, chunk):
            batch = [np.asarray(frames[i]) for i in range(start, min(total, start + chunk))]
            try:
                results += client.evaluate_batch(
                    batch, options, prompts=[prompt or None] * len(batch),
                    on_event=lambda item, offset=start: live.add(offset, item),
                    cancel_when=host.interrupted,
                )
            except Cancelled:
                host.raise_if_interrupted()
                raise
    host.text(live.render())
    return results


def scores_of(results: list[Result]) -> list[float]:
    """Scores, with 0.0 for an image whose evaluation failed on the server (it never passes a filter)."""
    return [r.score if r.ok and r.score is not None else 0.0 for r in results]
