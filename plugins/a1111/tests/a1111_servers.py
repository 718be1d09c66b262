"""Fixtures of the extension's tests: real ``heie serve --http`` processes on the tiny fixture model.
Test modules import the fixtures they use from here (not a conftest.py: plugins/python's tests import
the shared ``conftest`` module by name, and a second conftest.py would shadow it).

The extension talks only HTTP/JSON, so these servers expose ``--http`` (every port chosen by the server
and read from its start-up lines). Starting them is plugins/conftest.py's (``serving``, on
tests/python/heie_process.py). One llama.cpp thread: its worker threads spin-wait and CI machines are small.
"""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

import pytest

from conftest import SLOW_STEP_MS, _binary, _free_port, serving, step_delay_env  # plugins/conftest.py

EXTENSION = Path(__file__).resolve().parents[1]
API_KEY = "a1111-test-key"

if str(EXTENSION) not in sys.path:
    sys.path.insert(0, str(EXTENSION))


@dataclass(frozen=True)
class HttpServer:
    address: str
    """host:port of the HTTP API."""
    log: Path
    metrics_address: str

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def metric(self, name: str) -> float:
        """The value of a Prometheus metric, ``name`` with its labels if it has any (0 when absent)."""
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=10) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


def _http_server(tmp: Path, api_key: Optional[str], extra_env: Optional[Mapping[str, str]] = None,
                 extra_args: tuple[str, ...] = ()) -> Iterator[HttpServer]:
    args = ["--addr", "127.0.0.1:0", "--http", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--threads", "1",
            "--max-tokens", "8", "--max-tiles", "1", "--shutdown-grace", "1", *extra_args]
    if api_key:
        args += ["--api-key", api_key]
    with serving(args, tmp / "serve.log", extra_env) as served:
        assert served.http_address and served.metrics_address
        yield HttpServer(served.http_address, served.log, served.metrics_address)


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    yield from _http_server(tmp_path_factory.mktemp("heie-http"), None)


REFERENCE_COT = EXTENSION.parents[1] / "tests" / "fixtures" / "reference-cot" / "hand-and-sign.txt"
"""A chain of thought with two grounding boxes (a hand, a sign): the random fixture model never writes
grounding markup, so the server's test-only hook feeds it to every evaluation (tests/README.md)."""


@pytest.fixture(scope="session")
def grounding_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A server whose every evaluation flags the reference chain of thought's regions (a hand and a sign)."""
    yield from _http_server(tmp_path_factory.mktemp("heie-http-regions"), None,
                            {"HEIE_FAULT_REFERENCE_COT": str(REFERENCE_COT)})


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A server that requires ``Authorization: Bearer a1111-test-key``."""
    yield from _http_server(tmp_path_factory.mktemp("heie-http-key"), API_KEY)


@pytest.fixture(scope="session")
def slow_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Every decode step lasts at least ``SLOW_STEP_MS`` longer (the server's test-only hook): an evaluation takes
    dozens of steps or more, so it outlasts a short time limit, or an interrupt, on however fast a machine."""
    yield from _http_server(tmp_path_factory.mktemp("heie-http-slow"), None, step_delay_env(_binary(), SLOW_STEP_MS))


@pytest.fixture(scope="session")
def full_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """One slot and one waiting place, every decode step slowed: two long evaluations fill it, so a third is
    refused busy (429, RESOURCE_EXHAUSTED) on however fast a machine."""
    yield from _http_server(tmp_path_factory.mktemp("heie-http-full"), None, step_delay_env(_binary(), SLOW_STEP_MS),
                            ("--parallel", "1", "--max-queue", "1"))


@pytest.fixture()
def free_address() -> str:
    """An address where nothing listens (the port was free a moment ago)."""
    return f"127.0.0.1:{_free_port()}"
