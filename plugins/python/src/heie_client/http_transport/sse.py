"""Reading a ``text/event-stream`` body (server-sent events) message by message (``POST /v1/evaluate``).

Only what ``heie serve``'s ``POST /v1/evaluate`` sends is needed, but the reader follows the SSE rules
that matter for it: ``event:`` names the message, ``data:`` lines are joined with newlines, a blank line
ends a message, lines starting with ``:`` are comments (the server's keep-alives) and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator


@dataclass(frozen=True)
class Message:
    event: str
    data: str


def read_messages(body: BinaryIO) -> Iterator[Message]:
    """Yields each complete message of ``body`` (any object with ``readline()``); a message cut off by
    the end of the body is dropped, as the SSE rules say."""
    event, data = "", []  # type: str, list[str]
    while True:
        raw = body.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data or event:
                yield Message(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        # id: and retry: do not matter for one request's stream.
