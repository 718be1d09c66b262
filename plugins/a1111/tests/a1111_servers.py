"""Fixtures of the extension's tests: real ``heie serve --http`` processes on the tiny fixture model.
Test modules import the fixtures they use from here (not a conftest.py: plugins/python's tests import
the shared ``conftest`` module by name, and a second conftest.py would shadow it).

The extension talks only HTTP/JSON, so these servers expose ``--http`` on a free port (gRPC on port 0,
unused). The binary is $HEIE_BIN, else target/debug/heie (built when missing). One
llama.cpp thread: its worker threads spin-wait and CI machines are small.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

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
        """The value of an unlabelled Prometheus metric (0 when absent)."""
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=10) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> Path:
    env = os.environ.get("HEIE_BIN")
    if env:
        return Path(env)
    # As plugins/conftest.py: cargo's target folder, built when missing.
    binary = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "heie"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--locked", "--bin", "heie"], cwd=REPO, check=True)
    return binary


def _start(tmp: Path, api_key: Optional[str]) -> tuple[subprocess.Popen[bytes], HttpServer]:
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
    # The server reads HEIE_* variables too; the test must not inherit a developer's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIE_")}
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


@pytest.fixture()
def free_address() -> str:
    """An address where nothing listens (the port was free a moment ago)."""
    return f"127.0.0.1:{_free_port()}"
