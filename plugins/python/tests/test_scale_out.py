"""Scale-out with real parts: two `heie serve` replicas on loopback behind a real nginx (`grpc_pass` to an
upstream of both, HTTP/2), and the client balancing over the replicas itself. One address serves all;
both replicas work; a replica stopped with SIGTERM mid-run loses no request; a replica killed with
SIGKILL fails only the calls it had in flight, which the client's retry completes on the other."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from heie_client import Client, EvaluateOptions

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import dnsmasq_server as local_dns  # noqa: E402  (deploy/local/dnsmasq_server.py: dnsmasq answering one name with several replicas)
import replicas as local  # noqa: E402  (deploy/local/replicas.py: the same launcher as the bench)
from conftest import _binary  # noqa: E402  (plugins/conftest.py: $HEIE_BIN or target/debug/heie)

MODELS = REPO / "tests" / "fixtures" / "models"
# Long enough that a stop lands while calls run (about a second each), short enough for CI.
OPTIONS = EvaluateOptions(max_tokens_per_section=24, heatmap_size=(16, 16))
SERVE_ARGS = [
    "--model", str(MODELS / "tiny-llm.gguf"), "--mmproj", str(MODELS / "tiny-mmproj.gguf"),
    "--threads", "1", "--max-tiles", "1", "--parallel", "4", "--max-tokens", "24",
    # SIGTERM: NOT_SERVING at once, keep accepting 1 s (the proxy and clients move away), then finish.
    "--drain-delay", "1", "--shutdown-grace", "30",
]


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[local.Fleet]:
    started = local.start_fleet(_binary(), 2, SERVE_ARGS, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def _run_all(client: Client, count: int, in_flight: int, evaluate: Callable[[Client, int], Any]) -> list[Any]:
    with ThreadPoolExecutor(in_flight) as pool:
        return list(pool.map(lambda i: evaluate(client, i), range(count)))


def _wait_until_busy(replica: local.Replica, timeout: float = 30.0) -> float:
    """Blocks until ``replica`` has a sequence in a slot; returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = replica.metric("heie_active_sequences ")
        if active > 0:
            return active
        time.sleep(0.02)
    raise AssertionError("the replica never got work")


def test_one_proxy_address_serves_all_and_both_replicas_work(fleet: local.Fleet) -> None:
    assert fleet.proxy is not None
    with Client(fleet.proxy.address, timeout=120) as client:
        client.wait_until_serving(30)
        results = _run_all(client, 12, 6, lambda c, i: c.evaluate(_image(i), OPTIONS))
    assert all(r.ok and r.score is not None for r in results)
    served = [r.evaluations_ok() for r in fleet.replicas]
    assert sum(served) == 12 and min(served) >= 2, f"calls per replica: {served}"


def test_client_side_round_robin_over_a_replica_set(fleet: local.Fleet) -> None:
    target = "ipv4:" + ",".join(r.address for r in fleet.replicas)
    with Client(target, timeout=120) as client:
        client.wait_until_serving(30)
        results = _run_all(client, 8, 4, lambda c, i: c.evaluate(_image(100 + i), OPTIONS))
    assert all(r.ok for r in results)
    served = [r.evaluations_ok() for r in fleet.replicas]
    assert sum(served) == 8 and min(served) >= 2, f"round_robin should spread calls: {served}"
    port = fleet.replicas[0].address.rsplit(":", 1)[1]
    with Client(f"dns:///localhost:{port}", timeout=60) as by_name:
        assert by_name.evaluate(_image(7), OPTIONS).ok


def test_dns_name_of_two_replicas_balances_and_drains(tmp_path: Path) -> None:
    """A real DNS server answers one name with two loopback replicas (a headless Service in small): the
    client spreads calls over both, and when one is stopped with SIGTERM mid-run (health NOT_SERVING
    first) no call is lost."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = local.shared_port(hosts)
    fleet = local.start_fleet(_binary(), 2, SERVE_ARGS, tmp_path, proxy=False, binds=[f"{h}:{port}" for h in hosts])
    dns = local_dns.start_dns("judges.heie.test", hosts, tmp_path / "dns")
    try:
        target = dns.target("judges.heie.test", port)
        with Client(target, timeout=120) as client:
            client.wait_until_serving(30)
            first = _run_all(client, 8, 4, lambda c, i: c.evaluate(_image(400 + i), OPTIONS))
            served = [r.evaluations_ok() for r in fleet.replicas]
            assert all(r.ok for r in first) and sum(served) == 8 and min(served) >= 2, f"calls per replica: {served}"
            leaving = fleet.replicas[0]
            stopper = threading.Thread(target=lambda: (_wait_until_busy(leaving), leaving.stop(signal.SIGTERM)))
            stopper.start()
            second = _run_all(client, 12, 4, lambda c, i: c.evaluate(_image(500 + i), OPTIONS))
            stopper.join()
        assert all(r.ok and r.score is not None for r in second)
        assert leaving.process.returncode == 0
    finally:
        dns.stop()
        fleet.stop()


def test_sigterm_mid_run_loses_no_request(fleet: local.Fleet) -> None:
    assert fleet.proxy is not None
    leaving, staying = fleet.replicas
    exit_code: list[int] = []

    def stop_when_busy() -> None:
        _wait_until_busy(leaving)
        exit_code.append(leaving.stop(signal.SIGTERM))

    with Client(fleet.proxy.address, timeout=120) as client:
        client.wait_until_serving(30)
        stopper = threading.Thread(target=stop_when_busy)
        stopper.start()
        results = _run_all(client, 16, 6, lambda c, i: c.evaluate(_image(200 + i), OPTIONS))
        stopper.join()
    assert all(r.ok and r.score is not None for r in results), "every call completed"
    assert exit_code == [0], "the stopped replica drained (its calls in flight finished) and exited cleanly"
    assert staying.evaluations_ok() >= 1


def test_sigkill_fails_only_in_flight_calls_and_the_retry_completes_them(
    fleet: local.Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    assert fleet.proxy is not None
    victim, survivor = fleet.replicas
    held: list[float] = []

    def kill_when_busy() -> None:
        _wait_until_busy(victim)
        held.append(victim.metric("heie_active_sequences ") + victim.metric("heie_queue_depth "))
        victim.stop(signal.SIGKILL)

    with Client(fleet.proxy.address, timeout=120) as client:
        client.wait_until_serving(30)
        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        with caplog.at_level(logging.WARNING, logger="heie_client"):
            results = _run_all(client, 16, 6, lambda c, i: c.evaluate(_image(300 + i), OPTIONS))
        killer.join()
    assert all(r.ok and r.score is not None for r in results), "every call completed in the end"
    lost = [r.getMessage() for r in caplog.records if "lost mid-stream" in r.getMessage()]
    # Only the calls the victim held when it died were lost (and each was run again on the survivor):
    # at least one (it was busy), at most what it held a moment before the kill plus what nginx sent
    # it in that moment, never more than the 6 in flight.
    assert 1 <= len(lost) <= 6, lost
    assert len(lost) <= held[0] + 2, (lost, held)
    assert survivor.evaluations_ok() >= 16 - len(lost)
