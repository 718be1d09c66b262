"""Scoring many image files so that one bad file costs one row, never the others' scores.

The server refuses a whole ``EvaluateBatch`` when one of its images cannot be decoded, so a folder is
scored either one image per ``Evaluate`` call with several calls in flight (the default: each file
succeeds or fails alone, and the server still runs ``parallel_slots`` images at once), or in batches
that are re-sent one image per call when the batch as a whole is refused.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from .client import Client
from .errors import HeieError, InsecureTransport, ResourceExhausted, Unauthenticated, Unavailable
from .options import EvaluateOptions
from .result import Result

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})

# Errors that say the server cannot be used at all: scoring the other files would fail the same way.
FATAL_ERRORS = (Unavailable, Unauthenticated, InsecureTransport)
# A busy server (queue full) is asked again after a pause, this many times.
BUSY_RETRIES = 6
BUSY_FIRST_PAUSE_S = 0.5


@dataclass(frozen=True)
class FileVerdict:
    """What happened to one file: a result with a score, or the reason it has none."""

    path: Path
    result: Optional[Result]
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok and not self.error


def find_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files of ``folder`` (PNG, JPEG, WebP by suffix), sorted by path."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def score_files(
    client: Client,
    files: Sequence[Path],
    options: EvaluateOptions,
    jobs: int,
    batch_size: int = 0,
    on_done: Optional[Callable[[FileVerdict], None]] = None,
) -> Iterator[FileVerdict]:
    """Yields one verdict per file, in the order of ``files``.

    ``jobs`` single-image calls run at once (``batch_size`` 0), or batches of ``batch_size`` images are
    sent one after another. ``on_done`` sees each verdict as soon as it exists (for a progress bar).
    Raises the first fatal error (server unreachable, key refused); verdicts yielded before it stand.
    """
    notify = on_done or (lambda verdict: None)
    if batch_size > 0:
        for start in range(0, len(files), batch_size):
            yield from _score_batch(client, files[start : start + batch_size], options, jobs, notify)
        return
    yield from _score_one_by_one(client, files, options, jobs, notify)


def _score_one_by_one(
    client: Client,
    files: Sequence[Path],
    options: EvaluateOptions,
    jobs: int,
    notify: Callable[[FileVerdict], None],
) -> Iterator[FileVerdict]:
    # A window of a few calls per worker keeps the server fed without holding a future per file.
    window = max(1, jobs) * 2
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="heie-score") as pool:
        pending: deque[Future[FileVerdict]] = deque()
        queued = iter(files)

        def submit_next() -> None:
            path = next(queued, None)
            if path is not None:
                future = pool.submit(_score_one, client, path, options)
                future.add_done_callback(_notify_when_scored(notify))
                pending.append(future)

        for _ in range(window):
            submit_next()
        try:
            while pending:
                verdict = pending.popleft().result()
                submit_next()
                yield verdict
        finally:
            for future in pending:
                future.cancel()


def _notify_when_scored(notify: Callable[[FileVerdict], None]) -> Callable[["Future[FileVerdict]"], None]:
    def done(future: "Future[FileVerdict]") -> None:
        if not future.cancelled() and future.exception() is None:
            notify(future.result())

    return done


def _score_one(client: Client, path: Path, options: EvaluateOptions) -> FileVerdict:
    pause = BUSY_FIRST_PAUSE_S
    for attempt in range(BUSY_RETRIES + 1):
        try:
            return FileVerdict(path, client.evaluate(path, options))
        except FATAL_ERRORS:
            raise
        except ResourceExhausted as err:
            if attempt == BUSY_RETRIES:
                return FileVerdict(path, None, f"server busy: {err}")
            time.sleep(pause)
            pause *= 2
        except HeieError as err:
            return FileVerdict(path, None, str(err))
    raise AssertionError("unreachable")


def _score_batch(
    client: Client,
    files: Sequence[Path],
    options: EvaluateOptions,
    jobs: int,
    notify: Callable[[FileVerdict], None],
) -> Iterator[FileVerdict]:
    try:
        results = client.evaluate_batch(list(files), options)
    except FATAL_ERRORS:
        raise
    except HeieError:
        # The whole call was refused (typically one undecodable image): each file on its own.
        yield from _score_one_by_one(client, files, options, jobs, notify)
        return
    for path, result in zip(files, results):
        verdict = FileVerdict(path, result, "" if result.ok else (result.error or "no score"))
        notify(verdict)
        yield verdict


__all__ = ["FATAL_ERRORS", "FileVerdict", "IMAGE_SUFFIXES", "find_images", "score_files"]
