"""A cancellable iterator over one server-streaming call, with failover before the first message; the
same for both transports (a transport's :class:`~heie_client.transport.Call` does the wire work)."""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from .errors import Cancelled, HeieError
from .failover import Rotation, final_error, try_elsewhere
from .transport import Call

E = TypeVar("E")

CancelCheck = Callable[[], bool]
"""Polled while a call runs; returning True cancels it (e.g. a host application's interrupt flag)."""

_NOTHING = object()


class EventStream(Generic[E]):
    """Iterates the typed events of one streaming call.

    ``cancel()`` (or leaving a ``with`` block early, or ``cancel_when`` turning true) cancels the call,
    which stops the server's work; iteration then raises :class:`~heie_client.errors.Cancelled`.
    Servers that cannot take the call (UNAVAILABLE, RESOURCE_EXHAUSTED) before their first message are
    skipped for the next address.
    """

    def __init__(
        self,
        rotation: Rotation[Any],
        start: Callable[[Any], Call],
        cancel_when: Optional[CancelCheck] = None,
        poll_interval: float = 0.05,
    ) -> None:
        self._rotation = rotation
        self._start = start
        self._lock = threading.Lock()
        self._call: Optional[Call] = None
        self._address = ""
        self._first: Any = _NOTHING
        self._opened = False
        self._finished = threading.Event()
        self._cancelled = False
        self._watcher: Optional[threading.Thread] = None
        if cancel_when is not None and cancel_when():
            self._cancelled = True  # already cancelled: the call is never sent (iteration raises Cancelled)
        elif cancel_when is not None:
            self._watcher = threading.Thread(
                target=self._watch, args=(cancel_when, poll_interval), name="heie-cancel-watch", daemon=True
            )
            self._watcher.start()

    @property
    def address(self) -> str:
        """The server that answers this call ('' before it is opened)."""
        return self._address

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            call = self._call
        if call is not None:
            call.cancel()

    def __iter__(self) -> Iterator[E]:
        return self

    def __next__(self) -> E:
        while True:
            try:
                if not self._opened:
                    self._open()
                if self._first is not _NOTHING:
                    message, self._first = self._first, _NOTHING
                else:
                    assert self._call is not None
                    message = next(self._call)
            except StopIteration:
                self._finished.set()
                raise
            except HeieError as err:
                self._finished.set()
                raise self._error(err) from None
            if message is not None:
                return message  # type: ignore[no-any-return]

    def __enter__(self) -> "EventStream[E]":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._finished.is_set():
            self.cancel()
        self._finished.set()

    def _open(self) -> None:
        errors: list[HeieError] = []
        for endpoint in self._rotation.order():
            with self._lock:
                if self._cancelled:
                    raise Cancelled("cancelled before the call started", address=endpoint.address)
                self._address = endpoint.address
            try:
                call = self._start(endpoint)
                with self._lock:
                    self._call = call
                    if self._cancelled:
                        call.cancel()
                self._first = next(call)
            except StopIteration:
                self._first = _NOTHING
                self._opened = True
                raise
            except HeieError as err:
                error = self._error(err)
                if try_elsewhere(error) and not self._cancelled:
                    errors.append(error)
                    continue
                raise error from None
            self._opened = True
            return
        raise final_error(errors)

    def _error(self, error: HeieError) -> HeieError:
        if self._cancelled and not isinstance(error, Cancelled):
            return Cancelled(f"cancelled by the client ({error.message})", address=error.address or self._address)
        return error

    def _watch(self, cancel_when: CancelCheck, interval: float) -> None:
        while not self._finished.is_set():
            if cancel_when():  # checked before the first wait too: a call opened just now is cancelled at once
                self.cancel()
                return
            self._finished.wait(interval)
