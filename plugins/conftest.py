"""Shared pytest fixtures: one real ``heie serve`` process on the tiny fixture model per test session,
and a slow one (every decode step made longer) for the tests whose work must outlast a deadline.

The binary is $HEIE_BIN, else ``debug/heie`` under $CARGO_TARGET_DIR or this repository's ``target/`` (built with ``cargo build`` when
missing, with the ``fault-injection`` feature that ``cargo test`` gives it too). The fixture model writes noise, but the whole
protocol (events, heatmaps, scores) is real.
"""

from __future__ import annotations

import mmap
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

import pytest

PLUGINS = Path(__file__).resolve().parent
REPO = PLUGINS.parent
MODELS = REPO / "tests" / "fixtures" / "models"
START_TIMEOUT_S = 120.0
#: The server's test-only slowness hook (server/src/engine/liveness.rs, feature ``fault-injection``): every decode
#: step sleeps this many milliseconds first, so a test can make work last without assuming the machine is slow.
STEP_DELAY_VARIABLE = "HEIE_FAULT_STEP_DELAY_MS"
#: The slow server's step delay: a whole evaluation takes many steps, so it lasts seconds on any machine.
SLOW_STEP_MS = 100
#: How long :func:`wait_until` waits for a server to reach a state: a bound against hanging, not a speed claim.
SETTLE_TIMEOUT_S = 60.0

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


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Polls ``condition`` until it holds; fails the test naming ``what`` when it never does within ``timeout_s``.
    Tests wait on the server's state (its metrics) this way instead of sleeping a guessed time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not {what} after {timeout_s:.0f} s", pytrace=False)
        time.sleep(0.05)


def _binary() -> Path:
    env = os.environ.get("HEIE_BIN")
    if env:
        return Path(env)
    # cargo honours CARGO_TARGET_DIR, so the binary it built lives there when it is set.
    binary = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "heie"
    if not binary.exists():
        # The same features as the binary `cargo test` builds (its dev-dependency turns fault-injection on).
        subprocess.run(["cargo", "build", "--locked", "-p", "heie-server", "--bin", "heie", "--features", "fault-injection"],
                       cwd=REPO, check=True)
    return binary


def server_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment of a test server: this process's, less the HEIE_* variables (the server reads them as its
    flags, and a developer's must not leak in), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIE_")}
    env.update(extra or {})
    return env


def step_delay_env(binary: Path, step_ms: int) -> dict[str, str]:
    """``extra`` for :func:`server_env` that makes every decode step of ``binary`` at least ``step_ms`` longer. Fails the
    test when the binary was built without the hook: the variable would be ignored, and a test that needs slow work
    would silently test nothing on a fast machine."""
    with binary.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as image:
        if image.find(STEP_DELAY_VARIABLE.encode()) < 0:
            pytest.fail(f"{binary} has no {STEP_DELAY_VARIABLE} hook: build it with "
                        "`cargo build -p heie-server --features fault-injection` (what `cargo test` builds)", pytrace=False)
    return {STEP_DELAY_VARIABLE: str(step_ms)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_serve(args: Sequence[str], log: Path, extra_env: Optional[Mapping[str, str]] = None) -> Iterator[str]:
    """Runs ``heie serve ARGS`` on the fixture model (output to ``log``, environment :func:`server_env` plus
    ``extra_env``) for the block; yields the gRPC address it serves on."""
    command = [str(_binary()), "serve", "--model", str(MODELS / "tiny-llm.gguf"), "--mmproj", str(MODELS / "tiny-mmproj.gguf"),
               *args]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=server_env(extra_env))
    try:
        yield _wait_for_serving(process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _fixture_server(folder: Path, extra_args: Sequence[str] = (),
                    extra_env: Optional[Mapping[str, str]] = None) -> Iterator[HeieServer]:
    log = folder / "serve.log"
    metrics_addr = f"127.0.0.1:{_free_port()}"
    args = ["--addr", "127.0.0.1:0", "--metrics-addr", metrics_addr, "--max-tokens", "8", "--max-tiles", "1",
            "--parallel", "4", "--shutdown-grace", "1", *extra_args]
    with running_serve(args, log, extra_env) as address:
        yield HeieServer(address, f"http://{metrics_addr}/metrics", log)


@pytest.fixture(scope="session")
def heie_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeieServer]:
    yield from _fixture_server(tmp_path_factory.mktemp("heie-serve"))


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeieServer]:
    """As ``heie_server``, but every decode step lasts at least ``SLOW_STEP_MS`` longer: an evaluation takes dozens of
    steps, so it outlasts a short deadline, or a cancel, on however fast a machine."""
    yield from _fixture_server(tmp_path_factory.mktemp("heie-serve-slow"), ("--threads", "1"),
                               step_delay_env(_binary(), SLOW_STEP_MS))


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
