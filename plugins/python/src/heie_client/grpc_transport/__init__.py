"""The gRPC transport (``pip install 'heie-client[grpc]'``): protobuf + grpcio and the generated stubs.

Imported only when a client is given a gRPC address, so the core runs without either package."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

try:
    import grpc
    from grpc_health.v1 import health_pb2
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "a gRPC address (host:port, grpc://, dns:///, ipv4:, unix:) needs the gRPC transport: "
        "pip install 'heie-client[grpc]', or give an http(s):// address of `heie serve --http`"
    ) from err

from .._generated.heie.v1 import evaluator_pb2 as pb
from ..errors import HeieError
from ..images import WireImage
from ..info import HealthStatus, Reranked, ServerInfo
from ..options import EvaluateOptions
from ..security import TlsSettings
from . import convert
from .channels import DEFAULT_MAX_MESSAGE_BYTES, GrpcEndpoint, open_endpoints
from .errors import from_rpc_error


class _GrpcCall:
    """A server-streaming gRPC call as a core :class:`~heie_client.transport.Call`."""

    def __init__(self, call: Any, convert_message: Callable[[Any], Any], address: str, tls: bool) -> None:
        self._call = call
        self._iter: Iterator[Any] = call
        self._convert = convert_message
        self._address = address
        self._tls = tls

    def __next__(self) -> Any:
        try:
            return self._convert(next(self._iter))
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._address, self._tls) from None

    def cancel(self) -> None:
        self._call.cancel()


class GrpcTransport:
    """``heie.v1.Evaluator`` and ``grpc.health.v1`` over gRPC channels."""

    def __init__(self, addresses: Sequence[str], tls: Optional[TlsSettings], token: Optional[str],
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.endpoints = open_endpoints(addresses, max_message_bytes, tls)
        self.tls = tls is not None
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()

    def _unary(self, endpoint: GrpcEndpoint, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except grpc.RpcError as err:
            raise from_rpc_error(err, endpoint.address, self.tls) from None

    def evaluate(self, endpoint: GrpcEndpoint, image: WireImage, options: EvaluateOptions,
                 timeout: Optional[float]) -> _GrpcCall:
        call = endpoint.evaluator.Evaluate(convert.evaluate_request(image, options), timeout=timeout,
                                           metadata=self._metadata)
        return _GrpcCall(call, convert.event_from_pb, endpoint.address, self.tls)

    def evaluate_batch(self, endpoint: GrpcEndpoint, images: Sequence[WireImage], options: EvaluateOptions,
                       timeout: Optional[float]) -> _GrpcCall:
        call = endpoint.evaluator.EvaluateBatch(convert.batch_request(images, options), timeout=timeout,
                                                metadata=self._metadata)
        return _GrpcCall(call, convert.batch_event_from_pb, endpoint.address, self.tls)

    def rerank(self, endpoint: GrpcEndpoint, images: Sequence[WireImage], top_k: int, fast: bool,
               options: EvaluateOptions, timeout: Optional[float]) -> Reranked:
        request = convert.rerank_request(images, top_k, fast, options)
        return convert.reranked_from_pb(self._unary(
            endpoint, lambda: endpoint.evaluator.Rerank(request, timeout=timeout, metadata=self._metadata)))

    def info(self, endpoint: GrpcEndpoint, timeout: Optional[float]) -> ServerInfo:
        return convert.server_info_from_pb(self._unary(
            endpoint, lambda: endpoint.evaluator.GetInfo(pb.GetInfoRequest(), timeout=timeout, metadata=self._metadata)))

    def health(self, endpoint: GrpcEndpoint, service: str, timeout: Optional[float]) -> HealthStatus:
        request = health_pb2.HealthCheckRequest(service=service)
        reply = self._unary(endpoint, lambda: endpoint.health.Check(request, timeout=timeout, metadata=self._metadata))
        return HealthStatus(reply.status)

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.channel.close()


__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "GrpcTransport", "HeieError"]
