"""Which server a call goes to: a rotation over the endpoints, and moving on while a server cannot take
the call (the same rule on both transports).

Consecutive calls start one endpoint further on, so they spread over the servers. A server that answers
UNAVAILABLE (down, loading, draining) or RESOURCE_EXHAUSTED (its queue full) before the call started is
skipped for the next; a balanced replica set appears up to ``BALANCED_ATTEMPTS`` times, as each try lands
on its next replica. When every try failed, a full server's answer wins over a missing one's: busy is
worth retrying later, down is not.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, Sequence, TypeVar

from .balancing import BALANCED_ATTEMPTS
from .errors import HeieError, ResourceExhausted, Unavailable
from .transport import Endpoint

E = TypeVar("E", bound=Endpoint)
T = TypeVar("T")


def try_elsewhere(error: HeieError) -> bool:
    """Whether a call refused with ``error`` before it started may go to the next server."""
    return isinstance(error, (Unavailable, ResourceExhausted))


def final_error(errors: Sequence[HeieError]) -> HeieError:
    """The error to raise when every server refused: the last busy one, else the last one."""
    busy = [e for e in errors if isinstance(e, ResourceExhausted)]
    return busy[-1] if busy else errors[-1]


class Rotation(Generic[E]):
    """Hands out the endpoints, starting one further on each time."""

    def __init__(self, endpoints: Sequence[E]) -> None:
        if not endpoints:
            raise ValueError("at least one server address is needed")
        self.endpoints = list(endpoints)
        self._lock = threading.Lock()
        self._next = 0

    def order(self) -> list[E]:
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.endpoints)
        order = self.endpoints[start:] + self.endpoints[:start]
        balanced = [e for e in order if e.balanced]
        attempts = max(len(order), BALANCED_ATTEMPTS) if balanced else len(order)
        # Further tries go to the replica sets only: a plain address that just failed stays failed.
        while len(order) < attempts:
            order.append(balanced[(len(order) - len(self.endpoints)) % len(balanced)])
        return order

    def call(self, fn: Callable[[E], T]) -> T:
        """Runs a unary call on the next endpoint, moving on while servers cannot take it."""
        errors: list[HeieError] = []
        for endpoint in self.order():
            try:
                return fn(endpoint)
            except HeieError as err:
                if not try_elsewhere(err):
                    raise
                errors.append(err)
        raise final_error(errors)


__all__ = ["Rotation", "final_error", "try_elsewhere"]
