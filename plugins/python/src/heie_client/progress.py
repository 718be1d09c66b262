"""A one-line progress bar on a text stream (stderr), redrawn in place; no dependency."""

from __future__ import annotations

import threading
import time
from typing import Optional, TextIO

BAR_WIDTH = 24
# Redrawing more often than this only costs time (and floods terminals over slow links).
MIN_REDRAW_S = 0.1


class ProgressBar:
    """``update()`` from any thread after each file; ``close()`` ends the line.

    Shows done/total, the share, failures, images per second and the estimated time left.
    """

    def __init__(self, total: int, stream: TextIO, label: str = "heie-score") -> None:
        self._total = total
        self._stream = stream
        self._label = label
        self._done = 0
        self._failed = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn: tuple[int, int] = (-1, -1)
        self._lock = threading.Lock()
        self._draw(force=True)

    def update(self, failed: bool = False) -> None:
        with self._lock:
            self._done += 1
            self._failed += 1 if failed else 0
            self._draw(force=self._done == self._total)

    def close(self) -> None:
        with self._lock:
            if self._drawn != (self._done, self._failed):  # the last counts are on screen already
                self._draw(force=True)
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < MIN_REDRAW_S:
            return
        self._last_draw = now
        self._drawn = (self._done, self._failed)
        share = self._done / self._total if self._total else 1.0
        filled = int(round(share * BAR_WIDTH))
        elapsed = now - self._start
        rate = self._done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self._label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self._done}/{self._total} {share:4.0%}"]
        if self._failed:
            parts.append(f"{self._failed} failed")
        if self._done:
            parts.append(f"{rate:.2f} img/s")
            left: Optional[float] = (self._total - self._done) / rate if rate > 0 else None
            if left is not None and self._done < self._total:
                parts.append(f"ETA {_clock(left)}")
        self._stream.write("\r" + " · ".join(parts) + "\x1b[K")
        self._stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


__all__ = ["ProgressBar"]
