"""Evaluating an IMAGE batch: one call per image, so the node's ``timeout`` is each image's deadline (a
slow image loses only its own verdict), with the explanation streamed onto the node and ComfyUI's
interrupt cancelling every call in flight.

The calls run on worker threads, as many at once as the server has parallel slots (more would only
queue on the server, where their deadlines would run out while waiting); every event comes back to the
node's thread through a queue, so the host (progress bar, progress text, interrupt) is only touched from
the thread ComfyUI runs the node on."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np
from heie_client import Cancelled, DeadlineExceeded, EvaluateOptions, HeieError, Region, Result
from heie_client.local_server import StartCancelled
from heie_client.result import ResultBuilder

from .connection import open_client, server_address
from .failures import HeieNodeError, explain, too_many_tokens
from .live_text import LiveText
from .tensors import batch_size, to_numpy

POLL_S = 0.05
#: Deadline of the GetInfo call that precedes the images (the node's timeout is for judging an image).
INFO_TIMEOUT_S = 30.0
#: The progress bar's steps for the model's first download (per mille: a smooth bar for any file size).
DOWNLOAD_STEPS = 1000


class Host(Protocol):
    def interrupted(self) -> bool: ...
    def raise_if_interrupted(self) -> None: ...
    def progress(self, value: int, total: int) -> None: ...
    def text(self, text: str) -> None: ...
    def log_folder(self) -> str: ...


@dataclass(frozen=True)
class Verdict:
    """What the server said about one image, or why it said nothing (``error``)."""

    result: Optional[Result]
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok and not self.error

    @property
    def score(self) -> Optional[float]:
        return self.result.score if self.ok and self.result is not None else None

    @property
    def band(self) -> str:
        """The score's band in words ("badly flawed" … "very plausible"); '' without a score."""
        return self.result.band if self.ok and self.result is not None else ""

    @property
    def regions(self) -> tuple[Region, ...]:
        """The flagged regions (heie_client ``Region``), worst first as the server sent them; () without a verdict."""
        return self.result.regions if self.ok and self.result is not None else ()

    @property
    def failure(self) -> str:
        """Why the image has no verdict ('' when it has one)."""
        if self.error:
            return self.error
        if self.result is None:
            return "no answer"
        if not self.result.ok:
            return self.result.error or f"the evaluation ended without a score ({self.result.finish_reason.name})"
        return ""


_FINISHED = object()
#: Why an image has no verdict when Cancel came before its call was sent.
NOT_SENT = "cancelled before it was sent"


def evaluate_images(
    images: Any,
    address: str,
    timeout: float,
    options: EvaluateOptions,
    host: Host,
    prompt: str = "",
    ca_cert: str = "",
) -> list[Verdict]:
    """A verdict for every image of an IMAGE batch, in order. An image that misses its deadline gets a
    failed verdict; any other server failure raises :class:`HeieNodeError`; an interrupt cancels every
    call and raises ComfyUI's interrupt exception."""
    frames = to_numpy(images)
    total = batch_size(frames)
    if total == 0:
        return []
    host.raise_if_interrupted()
    live = LiveText(total, host)
    events: "queue.Queue[tuple[int, Any]]" = queue.Queue()
    stop = threading.Event()
    fatal: list[HeieError] = []
    verdicts: list[Optional[Verdict]] = [None] * total

    try:
        # "auto": the first node of the process starts the local server: what it does shows as the node's
        # text, the model's first download in ComfyUI's progress bar, and Cancel abandons the start.
        address = server_address(address, host.log_folder(), lambda line: host.text(f"HEIE: {line}"),
                                 lambda step: host.progress(round(step.fraction * DOWNLOAD_STEPS), DOWNLOAD_STEPS),
                                 host.interrupted)
        client = open_client(address, INFO_TIMEOUT_S, ca_cert)
    except StartCancelled:
        host.text("HEIE: cancelled while the local server was starting; the next run starts it again")
        host.raise_if_interrupted()
        raise HeieNodeError("HEIE: cancelled while the local server was starting") from None
    except ValueError as err:  # a bad address widget or "auto" server, an unreadable CA file, a key refused over plaintext
        raise HeieNodeError(f"HEIE: {err}") from None
    with client:
        asked = options.max_tokens_per_section
        try:
            limits = client.info().limits
        except HeieError as err:
            raise explain(err, address, client.tls, ca_cert, asked) from None
        if limits.max_tokens_per_section and asked > limits.max_tokens_per_section:  # refuse before any image
            raise too_many_tokens(asked, address, limits.max_tokens_per_section,
                                  f"it writes at most {limits.max_tokens_per_section} tokens per section")
        workers = max(1, min(total, limits.parallel_slots or 1))
        client.timeout = timeout or None  # from here on: the node's deadline, for each image's call

        def judge(index: int) -> None:
            builder = ResultBuilder()
            try:
                if stop.is_set():  # Cancel (or a fatal error) came before this image's turn: never send it
                    verdicts[index] = Verdict(None, NOT_SENT)
                    return
                stream = client.evaluate_stream(np.asarray(frames[index]), options, prompt or None, stop.is_set)
                with stream:
                    for event in stream:
                        builder.add(event)
                        events.put((index, event))
                verdicts[index] = Verdict(builder.build())
            except DeadlineExceeded:
                verdicts[index] = Verdict(builder.build(), f"no verdict within the node's timeout of {timeout:g} s")
            except Cancelled:
                verdicts[index] = Verdict(None, "cancelled")
            except HeieError as err:
                fatal.append(err)
                stop.set()  # the other images would fail the same way: stop their work on the server
                verdicts[index] = Verdict(None, str(err))
            except BaseException as err:  # never leave the node's thread waiting on a lost worker
                fatal.append(HeieError(f"{type(err).__name__}: {err}"))
                stop.set()
                verdicts[index] = Verdict(None, str(err))
            finally:
                events.put((index, _FINISHED))

        finished = 0
        interrupted = False
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="heie-image") as pool:
            for index in range(total):
                pool.submit(judge, index)
            try:
                while finished < total:
                    if not stop.is_set() and host.interrupted():
                        interrupted = True
                        stop.set()
                    try:
                        index, event = events.get(timeout=POLL_S)
                    except queue.Empty:
                        continue
                    if event is _FINISHED:
                        finished += 1
                        verdict = verdicts[index]
                        live.finish(index, verdict.score if verdict else None, verdict.failure if verdict else "",
                                    verdict.band if verdict else "")
                    else:
                        live.add(index, event)
            except BaseException:
                stop.set()  # the pool waits for its workers: make them cancel their calls first
                raise
        if interrupted or host.interrupted():
            live.cancelled()  # the node's last text says so, under each image's outcome
        host.raise_if_interrupted()
        if fatal:
            raise explain(fatal[0], address, client.tls, ca_cert, asked) from None
    return [v if v is not None else Verdict(None, "no answer") for v in verdicts]


def scores_of(verdicts: list[Verdict]) -> list[float]:
    """Scores, with 0.0 for an image without a verdict (it never passes a filter)."""
    return [v.score if v.score is not None else 0.0 for v in verdicts]
