"""Channels to one or several servers, used round-robin with failover on UNAVAILABLE."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc

from ._generated.heie.v1 import evaluator_pb2_grpc as pb_grpc
from .errors import HeieError, Unavailable, from_rpc_error

T = TypeVar("T")

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class Endpoint:
    """One server: its address, channel and stubs."""

    address: str
    channel: grpc.Channel
    evaluator: pb_grpc.EvaluatorStub
    health: health_pb2_grpc.HealthStub


class EndpointPool:
    """Owns one channel per address (TLS when ``credentials`` are given). :meth:`rotation` hands out all endpoints starting one further on
    each call, so consecutive calls spread over the servers and a call can fail over to the next."""

    def __init__(
        self,
        addresses: Sequence[str],
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        credentials: Optional[grpc.ChannelCredentials] = None,
    ) -> None:
        if not addresses:
            raise ValueError("at least one server address is needed")
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._endpoints = []
        for address in addresses:
            channel = (
                grpc.secure_channel(address, credentials, options=options)
                if credentials is not None
                else grpc.insecure_channel(address, options=options)
            )
            self._endpoints.append(
                Endpoint(address, channel, pb_grpc.EvaluatorStub(channel), health_pb2_grpc.HealthStub(channel))
            )
        self._lock = threading.Lock()
        self._next = 0

    @property
    def addresses(self) -> list[str]:
        return [e.address for e in self._endpoints]

    def rotation(self) -> list[Endpoint]:
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self._endpoints)
        return self._endpoints[start:] + self._endpoints[:start]

    def call(self, fn: Callable[[Endpoint], T]) -> T:
        """Runs a unary call on the next endpoint, moving on while servers answer UNAVAILABLE."""
        last: Optional[HeieError] = None
        for endpoint in self.rotation():
            try:
                return fn(endpoint)
            except grpc.RpcError as err:
                error = from_rpc_error(err, endpoint.address)
                if not isinstance(error, Unavailable):
                    raise error from None
                last = error
        assert last is not None
        raise last

    def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.channel.close()
