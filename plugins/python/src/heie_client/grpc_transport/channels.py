"""One gRPC channel per address (TLS when asked), with its stubs.

A plain address is one channel; a replica set (``dns:///name:port``, ``ipv4:a:p,b:q``) is one channel that
gRPC balances itself (see :mod:`heie_client.balancing`) and is tried again on failover, landing on another
replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import grpc
from grpc_health.v1 import health_pb2_grpc

from .._generated.heie.v1 import evaluator_pb2_grpc as pb_grpc
from ..balancing import channel_options, grpc_target, is_balanced
from ..security import TlsSettings

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class GrpcEndpoint:
    """One server, or one balanced replica set: its address, channel and stubs."""

    address: str
    channel: grpc.Channel
    evaluator: pb_grpc.EvaluatorStub
    health: health_pb2_grpc.HealthStub
    balanced: bool = False


def credentials(tls: Optional[TlsSettings]) -> Optional[grpc.ChannelCredentials]:
    if tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_cert, private_key=tls.client_key, certificate_chain=tls.client_cert
    )


def open_endpoints(addresses: Sequence[str], max_message_bytes: int, tls: Optional[TlsSettings]) -> list[GrpcEndpoint]:
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    creds = credentials(tls)
    endpoints = []
    for address in addresses:
        target = grpc_target(address)
        target_options = options + channel_options(target)
        channel = (
            grpc.secure_channel(target, creds, options=target_options)
            if creds is not None
            else grpc.insecure_channel(target, options=target_options)
        )
        endpoints.append(
            GrpcEndpoint(address, channel, pb_grpc.EvaluatorStub(channel), health_pb2_grpc.HealthStub(channel),
                         balanced=is_balanced(target))
        )
    return endpoints
