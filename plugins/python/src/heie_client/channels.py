"""Channels to one or several servers, used round-robin with failover on UNAVAILABLE.

A plain address is one channel; a replica set (``dns:///name:port``, ``ipv4:a:p,b:q``) is one channel that
gRPC balances itself (see :mod:`.balancing`) and is tried again on failover, landing on another replica."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc

from ._generated.heie.v1 import evaluator_pb2_grpc as pb_grpc
from .balancing import BALANCED_ATTEMPTS, channel_options, is_balanced
from .errors import HeieError, Unavailable, from_rpc_error

T = TypeVar("T")

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class Endpoint:
    """One server, or one balanced replica set: its address, channel and stubs."""

    address: str
    channel: grpc.Channel
    evaluator: pb_grpc.EvaluatorStub
    health: health_pb2_grpc.HealthStub
    balanced: bool = False


class EndpointPool:
    """Owns one channel per address (TLS when ``credentials`` are given). :meth:`rotation` hands out all endpoints starting one further on
    each call, so consecutive calls spread over the servers and a call can fail over to the next; a
    balanced replica set appears up to ``BALANCED_ATTEMPTS`` times, as each try goes to its next replica."""

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
            target_options = options + channel_options(address)
            channel = (
                grpc.secure_channel(address, credentials, options=target_options)
                if credentials is not None
                else grpc.insecure_channel(address, options=target_options)
            )
            self._endpoints.append(
                Endpoint(
                    address, channel, pb_grpc.EvaluatorStub(channel), health_pb2_grpc.HealthStub(channel),
                    balanced=is_balanced(address),
                )
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
        order = self._endpoints[start:] + self._endpoints[:start]
        balanced = [e for e in order if e.balanced]
        attempts = max(len(order), BALANCED_ATTEMPTS) if balanced else len(order)
        # Further tries go to the replica sets only: a plain address that just failed stays failed.
        while len(order) < attempts:
            order.append(balanced[(len(order) - len(self._endpoints)) % len(balanced)])
        return order

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
