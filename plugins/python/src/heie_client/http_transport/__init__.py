"""The HTTP transport: the JSON API of ``heie serve --http`` on the standard library alone (``http.client``,
``ssl``, ``json``), so a host that pins its own protobuf (A1111 pins 3.20) needs nothing installed.

Routes: ``POST /v1/evaluate`` (server-sent events), ``POST /v1/rerank``, ``GET /v1/info``, ``GET /healthz``;
with an API key every ``/v1`` request carries ``Authorization: Bearer KEY``; the deadline travels as
``X-Heie-Timeout-Ms``. ``EvaluateBatch`` has no route: see :mod:`.batch_call`."""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from ..errors import Unavailable
from ..images import WireImage
from ..info import HealthStatus, Reranked, ServerInfo
from ..options import EvaluateOptions
from ..security import TlsSettings
from . import convert
from .batch_call import BatchCall
from .connection import HttpConnection, HttpEndpoint
from .stream_call import EvaluateCall


class HttpTransport:
    def __init__(self, addresses: Sequence[str], tls: Optional[TlsSettings], token: Optional[str]) -> None:
        self.endpoints = [HttpEndpoint.parse(a) for a in addresses]
        self.tls = tls is not None
        self._http = HttpConnection(tls, token)

    def _json(self, endpoint: HttpEndpoint, method: str, path: str, body: Optional[Any],
              timeout: Optional[float], ok: tuple[int, ...] = (200,)) -> Any:
        connection, response = self._http.open(endpoint, method, path, body, timeout, ok)
        try:
            return json.loads(response.read())
        except (OSError, ValueError) as err:
            raise Unavailable(f"{method} {path}: the answer broke off: {err}", address=str(endpoint)) from None
        finally:
            connection.close()

    def evaluate(self, endpoint: HttpEndpoint, image: WireImage, options: EvaluateOptions,
                 timeout: Optional[float]) -> EvaluateCall:
        connection, response = self._http.open(endpoint, "POST", "/v1/evaluate",
                                               convert.evaluate_request(image, options), timeout)
        return EvaluateCall(connection, response, endpoint)

    def evaluate_batch(self, endpoint: HttpEndpoint, images: Sequence[WireImage], options: EvaluateOptions,
                       timeout: Optional[float]) -> BatchCall:
        return BatchCall(len(images), lambda i: self.evaluate(endpoint, images[i], options, timeout))

    def rerank(self, endpoint: HttpEndpoint, images: Sequence[WireImage], top_k: int, fast: bool,
               options: EvaluateOptions, timeout: Optional[float]) -> Reranked:
        body = convert.rerank_request(images, top_k, fast, options)
        return convert.reranked_from_json(self._json(endpoint, "POST", "/v1/rerank", body, timeout))

    def info(self, endpoint: HttpEndpoint, timeout: Optional[float]) -> ServerInfo:
        return convert.server_info_from_json(self._json(endpoint, "GET", "/v1/info", None, timeout))

    def health(self, endpoint: HttpEndpoint, service: str, timeout: Optional[float]) -> HealthStatus:
        if service:
            raise ValueError("the HTTP API's /healthz reports the whole server: health(service='') only")
        # 503 with {"status": "NOT_SERVING"} is an answer (loading, draining), not a failure.
        body = self._json(endpoint, "GET", "/healthz", None, timeout, ok=(200, 503))
        return HealthStatus.__members__.get(str(body.get("status", "")), HealthStatus.UNKNOWN)

    def close(self) -> None:
        """Nothing to close: every call has its own connection."""


__all__ = ["HttpTransport"]
