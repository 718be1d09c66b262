"""Address forms and the failover order of the endpoint pool (no server needed)."""

from __future__ import annotations

import json

import pytest

from heie_client import Client, InsecureTransport
from heie_client.balancing import BALANCED_ATTEMPTS, channel_options, is_balanced, split_targets


@pytest.mark.parametrize(
    ("given", "targets"),
    [
        ("127.0.0.1:50051", ["127.0.0.1:50051"]),
        ("gpu1:50051, gpu2:50051", ["gpu1:50051", "gpu2:50051"]),
        (["a:1,b:2", "c:3"], ["a:1", "b:2", "c:3"]),
        ("dns:///heie-headless.ml.svc:50051", ["dns:///heie-headless.ml.svc:50051"]),
        ("dns://10.0.0.10/heie:50051", ["dns://10.0.0.10/heie:50051"]),
        # gRPC's own multi-address syntax keeps its commas: one balanced channel, not a list.
        ("ipv4:127.0.0.1:1,127.0.0.1:2", ["ipv4:127.0.0.1:1,127.0.0.1:2"]),
        ("ipv6:[::1]:1,[::1]:2", ["ipv6:[::1]:1,[::1]:2"]),
        ("[::1]:7", ["[::1]:7"]),
        ("unix:/run/heie.sock", ["unix:/run/heie.sock"]),
    ],
)
def test_address_forms(given: object, targets: list[str]) -> None:
    assert split_targets(given) == targets  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("a:1,,b:2", "empty server address"),
        ("", "empty server address"),
        ([], "at least one"),
        ("heie", "expected host:port"),
        ("heie:0", "port must be"),
        ("heie:http", "port must be"),
        ("dns:///heie", "expected host:port"),
        ("dns://resolver", "expected dns:///host:port"),
        ("ipv4:127.0.0.1:1,", "expected host:port"),
        ("ftp://heie:50051", "unsupported scheme"),
        ("http://heie:8080/v1", "no path"),
        ("unix:", "no socket path"),
        ("a:1 b:2", "whitespace"),
    ],
)
def test_bad_addresses_are_refused_with_the_reason(given: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_targets(given)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=why):  # the client refuses them before connecting
        Client(given)  # type: ignore[arg-type]


def test_replica_sets_balance_round_robin_and_skip_draining_replicas() -> None:
    assert is_balanced("dns:///h:1") and is_balanced("ipv4:1.2.3.4:5") and not is_balanced("h:1")
    assert channel_options("h:1") == []
    options = dict(channel_options("dns:///h:1"))
    config = json.loads(str(options["grpc.service_config"]))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    # A member list is not a valid :authority (the server would reset the stream): the first member is.
    assert dict(channel_options("ipv4:127.0.0.1:1,127.0.0.1:2"))["grpc.default_authority"] == "127.0.0.1:1"
    assert "grpc.default_authority" not in options


def test_failover_order_tries_a_replica_set_again() -> None:
    with Client(["10.0.0.1:1", "dns:///judges:2"]) as client:
        order = [e.address for e in client._rotation.order()]
        # Both once, then the replica set again (round_robin sends each try to its next replica);
        # the plain address that failed is not tried twice.
        assert order[:2] == ["10.0.0.1:1", "dns:///judges:2"] and len(order) == BALANCED_ATTEMPTS
        assert order[2:] == ["dns:///judges:2"] * (BALANCED_ATTEMPTS - 2)
        assert [e.address for e in client._rotation.order()][0] == "dns:///judges:2"
    with Client("a:1,b:2,c:3,d:4") as plain:
        assert len(plain._rotation.order()) == 4


def test_a_token_is_refused_in_plaintext_unless_every_replica_is_loopback() -> None:
    Client("ipv4:127.0.0.1:1,127.0.0.2:2", token="k").close()
    with pytest.raises(InsecureTransport, match="10.0.0.2:2"):
        Client("ipv4:127.0.0.1:1,10.0.0.2:2", token="k")
    with pytest.raises(InsecureTransport):
        Client("dns:///judges:50051", token="k")
    Client("dns:///judges:50051", token="k", tls=True).close()
