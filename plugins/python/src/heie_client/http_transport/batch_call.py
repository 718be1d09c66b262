"""``EvaluateBatch`` for the HTTP API, which has no batch route: one ``/v1/evaluate`` per image to the same
server, all at once, as one :class:`~heie_client.transport.Call`.

Events come in arrival order as ``BatchEvent(index, event)``. Any image's failure (a bad image, busy,
down, key, deadline) fails the whole batch and cancels the other calls, as ``EvaluateBatch`` refuses a
batch with a bad image as a whole. The last item is the ``Ranking`` the server
would send: images with a score, best first, ties by index."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional, Union

from ..errors import HeieError
from ..events import BatchEvent, Ranking, Score
from .convert import ranking_of

_END = object()


class BatchCall:
    def __init__(self, count: int, start_one: Callable[[int], Any]) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._calls: list[Any] = []
        self._lock = threading.Lock()
        self._cancelled = False
        self._scores: dict[int, float] = {}
        self._left = count
        self._finished = False
        self._threads = [threading.Thread(target=self._run, args=(i, start_one), name=f"heie-batch-{i}", daemon=True)
                         for i in range(count)]
        for thread in self._threads:
            thread.start()
        if count == 0:
            self._queue.put(_END)

    def _run(self, index: int, start_one: Callable[[int], Any]) -> None:
        try:
            with self._lock:
                if self._cancelled:
                    return
            call = start_one(index)
            with self._lock:
                self._calls.append(call)
                if self._cancelled:
                    call.cancel()
            while True:
                try:
                    event = next(call)
                except StopIteration:
                    break
                if event is not None:
                    self._queue.put(BatchEvent(index, event))
        except HeieError as err:
            self._queue.put(err)
        finally:
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self._queue.put(_END)

    def __next__(self) -> Optional[Union[BatchEvent, Ranking]]:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._finished = True
            return ranking_of(self._scores)
        if isinstance(item, HeieError):
            self.cancel()
            self._finished = True
            raise item
        if isinstance(item.event, Score) and item.index not in self._scores:
            self._scores[item.index] = item.event.score  # the first score is the image's verdict
        return item  # type: ignore[no-any-return]

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()


__all__ = ["BatchCall"]
