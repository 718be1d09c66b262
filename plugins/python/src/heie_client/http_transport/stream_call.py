"""``POST /v1/evaluate`` as a core :class:`~heie_client.transport.Call`: the server-sent events of one
evaluation, each named after its ``EvaluateEvent`` case with the event's proto3 JSON as data; a failure
after the stream started is a last ``error`` event. Cancelling closes the connection, which the server
takes as the client leaving: it stops the evaluation within one decode step."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any, Iterator, Optional

from ..errors import DeadlineExceeded, Unavailable, error_for
from ..events import Event
from ..status import StatusCode
from .connection import IDLE_READ_TIMEOUT_S, HttpEndpoint
from .convert import event_from_json
from .sse import Message, read_messages


class EvaluateCall:
    def __init__(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 endpoint: HttpEndpoint) -> None:
        self._connection = connection
        self._messages: Iterator[Message] = read_messages(response)
        self._endpoint = endpoint
        self._done = False
        self._lock = threading.Lock()

    def __next__(self) -> Optional[Event]:
        if self._done:
            raise StopIteration
        address = str(self._endpoint)
        try:
            message = next(self._messages, None)
            if message is None:
                raise Unavailable("the evaluation stream ended before its done event", address=address)
            body: Any = json.loads(message.data)
        except (OSError, http.client.HTTPException, ValueError) as err:
            self.close()
            if isinstance(err, (socket.timeout, TimeoutError)):
                raise DeadlineExceeded(f"no answer for {IDLE_READ_TIMEOUT_S:.0f} s", address=address) from None
            raise Unavailable(f"the evaluation stream broke off: {err}", address=address) from None
        except Unavailable:
            self.close()
            raise
        if message.event == "error":
            self.close()
            raise error_for(StatusCode.from_name(str(body.get("code", "UNKNOWN"))), str(body.get("message", "")), address)
        if message.event == "done":
            self._done = True
            self.close()
        return event_from_json(message.event, body) if isinstance(body, dict) else None

    def cancel(self) -> None:
        # Shutting the socket down wakes a reader blocked on it; close() alone would not.
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._connection.close()
