"""Shared pytest fixtures: one real ``heie serve`` process on the tiny fixture model per test session,
and a slow one (every decode step made longer) for the tests whose work must outlast a deadline.

Starting, stopping and finding the binary is ``tests/python/heie_process.py``'s, shared with the deploy
checks and the scale-out launcher. The fixture model writes noise, but the whole protocol (events,
heatmaps, scores) is real.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

import pytest

PLUGINS = Path(__file__).resolve().parent
REPO = PLUGINS.parent
if str(REPO / "tests" / "python") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "python"))

import heie_process  # noqa: E402  (tests/python/heie_process.py: the one server-process helper)
from heie_process import MODELS, STEP_DELAY_VARIABLE, MissingHook, ServeProcess, fixture_model_args, metric_value, read_metrics, server_env  # noqa: E402,F401

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
    http_address: Optional[str] = None

    def metrics(self) -> str:
        return read_metrics(self.metrics_url)

    def metric(self, line_prefix: str) -> float:
        """Value of the first metrics line that starts with ``line_prefix`` (0 when absent)."""
        return metric_value(self.metrics_url, line_prefix)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Polls ``condition`` until it holds; fails the test naming ``what`` when it never does within ``timeout_s``.
    Tests wait on the server's state (its metrics) this way instead of sleeping a guessed time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not {what} after {timeout_s:.0f} s", pytrace=False)
        time.sleep(0.05)


def _binary() -> Path:
    return heie_process.heie_binary()


def step_delay_env(binary: Path, step_ms: int) -> dict[str, str]:
    """``extra_env`` that slows every decode step; fails the test when the binary lacks the hook."""
    try:
        return heie_process.step_delay_env(binary, step_ms)
    except MissingHook as err:
        pytest.fail(str(err), pytrace=False)


def _free_port() -> int:
    return heie_process.free_port()


@contextmanager
def serving(args: Sequence[str], log: Path, extra_env: Optional[Mapping[str, str]] = None) -> Iterator[ServeProcess]:
    """Runs ``heie serve ARGS`` on the fixture model for the block; yields the running process (``.address`` is
    the gRPC address it serves on, ``.http_address`` the HTTP one with ``--http``, ``.metric()`` reads /metrics)."""
    served = heie_process.start_serve([*fixture_model_args(), *args], log, extra_env)
    try:
        yield served
    finally:
        served.stop()


@contextmanager
def running_serve(args: Sequence[str], log: Path, extra_env: Optional[Mapping[str, str]] = None) -> Iterator[str]:
    """As :func:`serving`; yields the gRPC address it serves on."""
    with serving(args, log, extra_env) as served:
        yield served.address


def _fixture_server(folder: Path, extra_args: Sequence[str] = (),
                    extra_env: Optional[Mapping[str, str]] = None) -> Iterator[HeieServer]:
    args = ["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--max-tokens", "8", "--max-tiles", "1",
            "--parallel", "4", "--shutdown-grace", "1", *extra_args]
    with serving(args, folder / "serve.log", extra_env) as served:
        yield HeieServer(served.address, served.metrics_url, served.log, served.http_address)


@pytest.fixture(scope="session")
def heie_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeieServer]:
    """The fixture server, with its HTTP API on too (``http_address``), so both transports reach the same engine."""
    yield from _fixture_server(tmp_path_factory.mktemp("heie-serve"), ("--http", "127.0.0.1:0"))


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeieServer]:
    """As ``heie_server``, but every decode step lasts at least ``SLOW_STEP_MS`` longer: an evaluation takes dozens of
    steps, so it outlasts a short deadline, or a cancel, on however fast a machine."""
    yield from _fixture_server(tmp_path_factory.mktemp("heie-serve-slow"), ("--threads", "1", "--http", "127.0.0.1:0"),
                               step_delay_env(_binary(), SLOW_STEP_MS))


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
