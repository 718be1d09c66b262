"""What the client needs of a transport: the calls of ``heie.v1`` on one endpoint, in the core's types.

Two implement it: ``grpc_transport`` (protobuf + grpcio, the ``[grpc]`` extra) and ``http_transport``
(the standard library, ``heie serve --http``). Each converts its wire form to and from the core types
once, and maps its failures to :class:`~heie_client.errors.HeieError` with gRPC's status codes; the
client above does the rotation, failover, retries and cancellation the same way for both.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence

from .images import WireImage
from .info import HealthStatus, Reranked, ServerInfo
from .options import EvaluateOptions


class Endpoint(Protocol):
    """One server, or one replica set a transport balances itself (tried again on failover)."""

    address: str
    balanced: bool


class Call(Protocol):
    """One streaming call in progress: ``next()`` gives the next core event (``None`` for a case this client
    does not know), raises ``StopIteration`` at the end and :class:`HeieError` on failure; ``cancel()`` may be
    called from any thread and stops the server's work."""

    def __next__(self) -> Any: ...

    def cancel(self) -> None: ...


class Transport(Protocol):
    endpoints: Sequence[Endpoint]
    tls: bool

    def evaluate(self, endpoint: Any, image: WireImage, options: EvaluateOptions, timeout: Optional[float]) -> Call:
        """Starts ``Evaluate``; the call yields ``Event``s."""

    def evaluate_batch(self, endpoint: Any, images: Sequence[WireImage], options: EvaluateOptions,
                       timeout: Optional[float]) -> Call:
        """Starts ``EvaluateBatch``; the call yields ``BatchEvent``s and a last ``Ranking``."""

    def rerank(self, endpoint: Any, images: Sequence[WireImage], top_k: int, fast: bool, options: EvaluateOptions,
               timeout: Optional[float]) -> Reranked: ...

    def info(self, endpoint: Any, timeout: Optional[float]) -> ServerInfo: ...

    def health(self, endpoint: Any, service: str, timeout: Optional[float]) -> HealthStatus: ...

    def close(self) -> None: ...


__all__ = ["Call", "Endpoint", "Transport"]
