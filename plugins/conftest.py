"""Shared pytest fixtures: one real ``heie serve`` process on the tiny fixture model per test session.

The binary is $HEIE_BIN, else ``debug/heie`` under $CARGO_TARGET_DIR or this repository's ``target/`` (built with ``cargo build`` when
missing). The fixture model writes noise, but the whole protocol (events, heatmaps, scores) is real.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

PLUGINS = Path(__file__).resolve().parent
REPO = PLUGINS.parent
MODELS = REPO / "tests" / "fixtures" / "models"
START_TIMEOUT_S = 120.0

# The host-free parts of the node pack and the extension are importable as plain packages.
for folder in (PLUGINS / "comfyui", PLUGINS / "a1111"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@dataclass(frozen=True)
class HeieServer:
    address: str
    metrics_url: str
    log: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:
            return reply.read().decode()

    def metric(self, line_prefix: str) -> float:
        """Value of the first metrics line that starts with ``line_prefix`` (0 when absent)."""
        for line in self.metrics().splitlines():
            if line.startswith(line_prefix):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def _binary() -> Path:
    env = os.environ.get("HEIE_BIN")
    if env:
        return Path(env)
    # cargo honours CARGO_TARGET_DIR, so the binary it built lives there when it is set.
    binary = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "heie"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--locked", "--bin", "heie"], cwd=REPO, check=True)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def heie_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeieServer]:
    log = tmp_path_factory.mktemp("heie-serve") / "serve.log"
    metrics_addr = f"127.0.0.1:{_free_port()}"
    command = [
        str(_binary()), "serve",
        "--addr", "127.0.0.1:0",
        "--metrics-addr", metrics_addr,
        "--model", str(MODELS / "tiny-llm.gguf"),
        "--mmproj", str(MODELS / "tiny-mmproj.gguf"),
        "--max-tokens", "8",
        "--max-tiles", "1",
        "--parallel", "4",
        "--shutdown-grace", "1",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        address = _wait_for_serving(process, log)
        yield HeieServer(address, f"http://{metrics_addr}/metrics", log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_serving(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    marker = "heie: serving on "
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith(marker):
                return line[len(marker):].strip()
        if process.poll() is not None:
            raise RuntimeError(f"heie serve exited with {process.returncode}:\n{text[-4000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"heie serve did not start within {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="session")
def client(heie_server: HeieServer):  # type: ignore[no-untyped-def]
    from heie_client import Client

    with Client(heie_server.address, timeout=180) as c:
        c.wait_until_serving(30)
        yield c


@pytest.fixture(scope="session")
def dead_address() -> str:
    """An address where nothing listens (the port was free a moment ago)."""
    return f"127.0.0.1:{_free_port()}"
