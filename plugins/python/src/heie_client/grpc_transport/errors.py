"""grpcio's failures as core errors: the status code by name, the detail as the message, and, for a call
that never reached a server, why (read from gRPC C-core's detail text)."""

from __future__ import annotations

import grpc

from ..connection_failures import grpc_detail_failure
from ..errors import HeieError, error_for
from ..status import StatusCode


def from_rpc_error(error: grpc.RpcError, address: str = "", tls: bool = False) -> HeieError:
    """Turns a grpc error into the matching :class:`HeieError` subclass."""
    grpc_code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    code = StatusCode.from_name(grpc_code.name)
    failure = grpc_detail_failure(details, tls) if code is StatusCode.UNAVAILABLE else None
    return error_for(code, details, address, failure)
