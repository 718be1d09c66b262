"""Address forms for one server or many replicas, which transport each one picks, and how a gRPC one
becomes a channel.

The scheme picks the transport: ``http://host[:port]`` and ``https://host[:port]`` are the HTTP/JSON API
(``heie serve --http``; ``https`` = TLS; the port defaults to 80/443); everything else is gRPC. A Client
talks one transport: its addresses must agree.

gRPC forms (also inside a list, and comma-separated in one string):

- ``grpc://host:port`` — the same as ``host:port``, for those who like the transport spelled out;

- ``host:port`` / ``[v6]:port`` / ``unix:/path`` — one server, one channel;
- ``dns:///name:port`` (or ``dns://resolver/name:port``) — every address the name resolves to, one
  channel balanced with gRPC's ``round_robin`` (a Kubernetes headless Service gives one record per ready
  pod, so new pods join and drained ones leave as DNS is re-resolved);
- ``ipv4:a:p,b:q`` / ``ipv6:[a]:p,[b]:q`` — a fixed set of replicas on one balanced channel (gRPC's own
  syntax, so the commas belong to the target and are not a list separator).

A comma list of plain addresses (``"gpu1:50051,gpu2:50051"``) is one channel per server, used in turn by
the client's rotation.
"""

from __future__ import annotations

import json
from typing import Sequence, Union

from .errors import HeieError, Internal, Unavailable

#: Targets that gRPC resolves to several addresses; their channel balances with round_robin.
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")

#: How many times one balanced channel is tried for a call that fails UNAVAILABLE before it streamed:
#: round_robin picks the next ready replica for each attempt, so this is "this many replicas".
BALANCED_ATTEMPTS = 3


HTTP_SCHEMES = ("http://", "https://")


def is_http(target: str) -> bool:
    """Whether ``target`` is an address of the HTTP/JSON API (``http://`` or ``https://``)."""
    return target.lower().startswith(HTTP_SCHEMES)


def grpc_target(target: str) -> str:
    """``target`` as gRPC names it (``grpc://`` dropped)."""
    return target[len("grpc://"):] if target.lower().startswith("grpc://") else target


def is_balanced(target: str) -> bool:
    """Whether ``target`` names a set of replicas that one channel balances over."""
    return target.lower().startswith(BALANCED_SCHEMES)


def split_targets(address: Union[str, Sequence[str]]) -> list[str]:
    """The channel targets of ``address`` (a string, possibly a comma list, or a list of them),
    each checked; raises ``ValueError`` naming the bad one."""
    items = [address] if isinstance(address, str) else list(address)
    targets: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"server address must be a string, not {type(item).__name__}")
        # ipv4:/ipv6: targets carry their own comma-separated address list.
        parts = [item] if is_balanced(item) else item.split(",")
        for part in parts:
            target = part.strip()
            check_target(target)
            targets.append(target)
    if not targets:
        raise ValueError("at least one server address is needed")
    return targets


def check_target(target: str) -> None:
    """Raises ``ValueError`` when ``target`` is not one of the accepted address forms."""
    if not target:
        raise ValueError("empty server address (stray comma?)")
    if any(c.isspace() for c in target):
        raise ValueError(f"server address {target!r} contains whitespace")
    lower = target.lower()
    if lower.startswith(HTTP_SCHEMES):
        _check_http(target)
        return
    if lower.startswith("grpc://"):
        _check_host_port(target[len("grpc://"):], target)
        return
    if lower.startswith(("unix:", "unix-abstract:")):
        if len(target.split(":", 1)[1]) == 0:
            raise ValueError(f"server address {target!r} has no socket path")
        return
    if lower.startswith("dns:"):
        rest = target[4:]
        if rest.startswith("//"):
            # dns://[authority]/host:port — the authority (a DNS server) may be empty.
            slash = rest.find("/", 2)
            if slash < 0:
                raise ValueError(f"server address {target!r}: expected dns:///host:port")
            rest = rest[slash + 1 :]
        _check_host_port(rest, target)
        return
    if lower.startswith(("ipv4:", "ipv6:")):
        for member in target.split(":", 1)[1].split(","):
            _check_host_port(member, target)
        return
    if ":" in target.split("/", 1)[0] and "://" in target:
        raise ValueError(f"server address {target!r}: unsupported scheme (use host:port, grpc://, dns:///host:port, "
                         "ipv4:, unix:, or http(s):// for the HTTP API)")
    _check_host_port(target, target)


def _check_http(target: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(target)
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"server address {target!r}: expected http(s)://host[:port] (no path)")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"server address {target!r}: port must be 1..65535") from None


def _check_host_port(host_port: str, whole: str) -> None:
    if host_port.startswith("["):
        end = host_port.find("]")
        host, port = (host_port[1:end], host_port[end + 2 :]) if end > 0 and host_port[end + 1 : end + 2] == ":" else ("", "")
    else:
        host, _, port = host_port.rpartition(":")
    if not host:
        raise ValueError(f"server address {whole!r}: expected host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server address {whole!r}: port must be 1..65535")


def member_addresses(target: str) -> list[str]:
    """The ``host:port`` parts of ``target`` (one for most forms, every member of an ipv4:/ipv6: list),
    e.g. to decide whether every server is on this machine."""
    lower = target.lower()
    if lower.startswith(("ipv4:", "ipv6:")):
        return target.split(":", 1)[1].split(",")
    return [target]


def channel_options(target: str) -> list[tuple[str, object]]:
    """gRPC channel options for ``target``: for a replica set, round_robin over the resolved addresses,
    skipping replicas whose ``grpc.health.v1`` says NOT_SERVING (gRPC's client-side health checking:
    a draining ``heie serve`` turns NOT_SERVING on SIGTERM, so this client's new calls move away
    during ``--drain-delay``, before the replica stops accepting)."""
    if not is_balanced(target):
        return []
    config = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
    options: list[tuple[str, object]] = [("grpc.service_config", json.dumps(config))]
    members = member_addresses(target)
    if target.lower().startswith(("ipv4:", "ipv6:")):
        # gRPC would send the whole member list ("a:1,b:2") as :authority; a comma is not valid there
        # and the server's HTTP/2 layer resets such streams (PROTOCOL_ERROR).
        options.append(("grpc.default_authority", members[0]))
    return options


def replica_lost(error: HeieError) -> bool:
    """Whether ``error`` says the server or connection went away under a call (UNAVAILABLE, or the
    HTTP/2 stream reset by a proxy whose upstream died: INTERNAL "Stream removed (RST_STREAM…)"),
    rather than that the server judged the request and failed it."""
    if isinstance(error, Unavailable):
        return True
    return isinstance(error, Internal) and ("RST_STREAM" in error.message or "Stream removed" in error.message)


__all__ = [
    "BALANCED_ATTEMPTS", "BALANCED_SCHEMES", "HTTP_SCHEMES", "channel_options", "check_target", "grpc_target",
    "is_balanced", "is_http", "member_addresses", "replica_lost", "split_targets",
]
