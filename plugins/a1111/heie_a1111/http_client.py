"""A small client of ``heie serve``'s HTTP/JSON API (``heie serve --http ADDR``) on the standard library
alone. The WebUI pins its own packages (protobuf 3.20, its gradio, …) and reinstalls them at start, so
the extension brings no dependency into the WebUI's Python at all: ``urllib``-level ``http.client``,
``json`` and ``base64`` are all it needs.

Routes used: ``POST /v1/evaluate`` (server-sent events, read with :mod:`.sse`), ``POST /v1/rerank``,
``GET /v1/info``. With ``--api-key`` on the server, every ``/v1`` request carries
``Authorization: Bearer KEY``. Bodies are the proto3 JSON of ``heie.v1`` (lowerCamelCase, enums by name,
bytes as base64).
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from .sse import read_messages

# The server sends a keep-alive comment every 5 s while a request waits in its queue, so a silent
# socket for this long means the server or the network is gone, whatever the request's own deadline.
IDLE_READ_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
CANCEL_POLL_S = 0.2
# Busy (queue full) and loading are worth trying on the next address; anything else is the answer.
_RETRY_ELSEWHERE = {429, 503}

START_HINT = "is `heie serve --http HOST:PORT` running there? (Settings → HEIE → server address)"


class HeieError(Exception):
    """A failed call. ``code`` is the gRPC status name the server gave (``INVALID_ARGUMENT``,
    ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``CANCELLED``, …) or ``UNAVAILABLE`` when no server answered."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, address: str) -> "Endpoint":
        """``host:port``, ``http://host:port`` or ``https://host:port`` (a path is not allowed)."""
        text = address.strip()
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"HEIE server address {address!r}: expected host:port or http(s)://host:port")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as err:
            raise ValueError(f"HEIE server address {address!r}: {err}") from None
        return cls(parts.scheme, parts.hostname, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


@dataclass
class Evaluation:
    """What one ``/v1/evaluate`` stream said about an image."""

    score: Optional[float] = None
    """The verdict: the first Score event (1 = looks real)."""
    mode: str = ""
    """``zero_shot`` or ``trained`` (the heads that produced the score)."""
    sections: dict[str, str] = field(default_factory=dict)
    """Explanation text per section name (``DESCRIPTION``, ``REGIONS``, ``ANALYSIS``, ``RATING``)."""
    overlay_png: Optional[bytes] = field(default=None, repr=False)
    finish_reason: str = ""

    @property
    def explanation(self) -> str:
        return "".join(self.sections.values())

    def add(self, name: str, event: dict[str, Any]) -> None:
        body = event.get(name, {})
        if name == "textDelta":
            section = _enum_tail(body.get("section", ""), "SECTION_")
            self.sections[section] = self.sections.get(section, "") + str(body.get("text", ""))
        elif name == "heatmap" and body.get("encoding") == "HEATMAP_ENCODING_OVERLAY_PNG" and self.overlay_png is None:
            self.overlay_png = base64.b64decode(body.get("data", ""))
        elif name == "score" and self.score is None:  # the first score is the verdict, extras follow
            self.score = float(body.get("score", 0.0))
            self.mode = _enum_tail(body.get("mode", ""), "HEADS_MODE_").lower()
        elif name == "done":
            self.finish_reason = _enum_tail(body.get("finishReason", ""), "FINISH_REASON_")


def _enum_tail(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


class HttpClient:
    """Calls one of several servers: each call starts at the next address (round-robin) and moves on
    when one cannot be reached, is loading (503) or is full (429)."""

    def __init__(self, addresses: list[str], timeout: Optional[float] = None, api_key: Optional[str] = None) -> None:
        if not addresses:
            raise ValueError("HEIE server address: none given")
        self.endpoints = [Endpoint.parse(a) for a in addresses]
        self.timeout = timeout if timeout and timeout > 0 else None
        self._api_key = api_key or None
        self._next = itertools.count()

    def info(self) -> dict[str, Any]:
        return self._unary("GET", "/v1/info", None)

    def rerank(self, images: list[bytes], top_k: int = 0, fast: bool = True) -> dict[str, Any]:
        """Scores encoded images (PNG/JPEG/WebP bytes); the answer's ``order`` is best first."""
        body = {"images": [{"encoded": base64.b64encode(i).decode("ascii")} for i in images], "topK": top_k, "fast": fast}
        return self._unary("POST", "/v1/rerank", body)

    def evaluate(self, encoded: bytes, options: dict[str, Any], prompt: Optional[str] = None,
                 cancel_when: Optional[Callable[[], bool]] = None,
                 on_event: Optional[Callable[[str, dict[str, Any]], None]] = None) -> Evaluation:
        """Evaluates one encoded image, following the event stream to its ``done``. ``cancel_when`` is
        polled while waiting; when it turns true the connection is closed (the server then stops the
        work within one decode step) and ``HeieError("CANCELLED")`` is raised. ``on_event`` sees every
        event as it arrives (progress text)."""
        image: dict[str, Any] = {"encoded": base64.b64encode(encoded).decode("ascii")}
        if prompt:
            image["generationPrompt"] = prompt
        connection, response = self._open("POST", "/v1/evaluate", {"image": image, "options": options})
        cancelled = threading.Event()
        finished = threading.Event()
        if cancel_when is not None:
            threading.Thread(target=_close_when, args=(cancel_when, connection, cancelled, finished),
                             name="heie-cancel", daemon=True).start()
        result = Evaluation()
        try:
            for message in read_messages(response):
                event = json.loads(message.data)
                if message.event == "error":
                    raise HeieError(str(event.get("code", "UNKNOWN")), str(event.get("message", "")))
                result.add(message.event, event)
                if on_event is not None:
                    on_event(message.event, event)
                if message.event == "done":
                    return result
        except (OSError, http.client.HTTPException, ValueError) as err:
            if cancelled.is_set():
                raise HeieError("CANCELLED", "interrupted in the WebUI") from None
            if isinstance(err, (socket.timeout, TimeoutError)):
                raise HeieError("DEADLINE_EXCEEDED", f"no answer from {connection.host}:{connection.port} for {IDLE_READ_TIMEOUT_S:.0f} s") from None
            raise HeieError("UNAVAILABLE", f"the evaluation stream broke off: {err}") from None
        finally:
            finished.set()
            connection.close()
        if cancelled.is_set():
            raise HeieError("CANCELLED", "interrupted in the WebUI")
        raise HeieError("UNAVAILABLE", "the evaluation stream ended before its done event")

    # -- plumbing --------------------------------------------------------------------------------------

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if self.timeout:
            headers["X-Heie-Timeout-Ms"] = str(max(1, int(self.timeout * 1000)))
        return headers

    def _unary(self, method: str, path: str, body: Optional[dict[str, Any]]) -> dict[str, Any]:
        connection, response = self._open(method, path, body)
        try:
            return json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise HeieError("UNAVAILABLE", f"{method} {path}: the answer broke off: {err}") from None
        finally:
            connection.close()

    def _open(self, method: str, path: str, body: Optional[dict[str, Any]]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends the request to the first address that takes it; returns the connection and its 200
        response, or raises the server's error (or UNAVAILABLE naming every address tried)."""
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        start = next(self._next)
        failures = []
        for offset in range(len(self.endpoints)):
            endpoint = self.endpoints[(start + offset) % len(self.endpoints)]
            connection = endpoint.connect(CONNECT_TIMEOUT_S)
            try:
                connection.connect()
                connection.sock.settimeout(IDLE_READ_TIMEOUT_S)  # type: ignore[union-attr]
                connection.request(method, path, body=payload, headers=self._headers(payload is not None))
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as err:
                connection.close()
                failures.append(f"{endpoint}: {err}")
                continue
            if response.status == 200:
                return connection, response
            error = _error_of(response)
            connection.close()
            if response.status in _RETRY_ELSEWHERE:
                failures.append(f"{endpoint}: {error}")
                continue
            raise error
        raise HeieError("UNAVAILABLE", f"no HEIE server answered ({'; '.join(failures)}); {START_HINT}")


def _error_of(response: http.client.HTTPResponse) -> HeieError:
    """The server's ``{"error": {"code", "message"}}``; something else (another program on that port)
    is named by its HTTP status."""
    raw = response.read(65536)
    try:
        error = json.loads(raw)["error"]
        return HeieError(str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip().splitlines()[:1]
        return HeieError("UNAVAILABLE", f"HTTP {response.status} {response.reason} {text[0][:200] if text else ''}"
                                        f" — not a HEIE server? {START_HINT}")


def _close_when(cancel_when: Callable[[], bool], connection: http.client.HTTPConnection,
                cancelled: threading.Event, finished: threading.Event) -> None:
    """Closes the connection's socket as soon as ``cancel_when()`` says so, which unblocks the reader."""
    while not finished.wait(CANCEL_POLL_S):
        if cancel_when():
            cancelled.set()
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
