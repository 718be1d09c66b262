"""Fixtures of the extension's tests: real ``heie serve --http`` processes on the tiny fixture model.
Test modules import the fixtures they use from here (not a conftest.py: plugins/python's tests import
the shared ``conftest`` module by name, and a second conftest.py would shadow it).

The extension talks only HTTP/JSON, so these servers expose ``--http`` on a free port (gRPC on port 0,
unused). The binary, the servers' environment and the step-delay hook are plugins/conftest.py's. One
llama.cpp thread: its worker threads spin-wait and CI machines are small.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

import pytest

from conftest import SLOW_STEP_MS, _binary, server_env, step_delay_env  # plugins/conftest.py

EXTENSION = Path(__file__).resolve().parents[1]
REPO = EXTENSION.parents[1]
MODELS = REPO / "tests" / "fixtures" / "models"
START_TIMEOUT_S = 120.0
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp: Path, api_key: Optional[str],
           extra_env: Optional[Mapping[str, str]] = None) -> tuple[subprocess.Popen[bytes], HttpServer]:
    address = f"127.0.0.1:{_free_port()}"
    metrics_address = f"127.0.0.1:{_free_port()}"
    command = [
        str(_binary()), "serve",
        "--addr", "127.0.0.1:0",
        "--http", address,
        "--metrics-addr", metrics_address,
        "--model", str(MODELS / "tiny-llm.gguf"),
        "--mmproj", str(MODELS / "tiny-mmproj.gguf"),
        "--threads", "1",
        "--max-tokens", "8",
        "--max-tiles", "1",
        "--shutdown-grace", "1",
    ]
    if api_key:
        command += ["--api-key", api_key]
    env = server_env(extra_env)  # without a developer's HEIE_* variables, which the server would read as flags
    log = tmp / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    server = HttpServer(address, log, metrics_address)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"heie serve exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return process, server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"heie serve --http did not become ready within {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    process, server = _start(tmp_path_factory.mktemp("heie-http"), None)
    try:
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A server that requires ``Authorization: Bearer a1111-test-key``."""
    process, server = _start(tmp_path_factory.mktemp("heie-http-key"), API_KEY)
    try:
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def slow_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Every decode step lasts at least ``SLOW_STEP_MS`` longer (the server's test-only hook): an evaluation takes
    dozens of steps or more, so it outlasts a short time limit, or an interrupt, on however fast a machine."""
    process, server = _start(tmp_path_factory.mktemp("heie-http-slow"), None, step_delay_env(_binary(), SLOW_STEP_MS))
    try:
        yield server
    finally:
        _stop(process)


@pytest.fixture()
def free_address() -> str:
    """An address where nothing listens (the port was free a moment ago)."""
    return f"127.0.0.1:{_free_port()}"
