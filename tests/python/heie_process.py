"""Starting and stopping ``heie serve`` processes for Python tests and local tools: the one place that
knows where the binary is, which environment it gets, how to tell that it serves and how to stop it.

It lives in ``tests/`` beside the fixture models it runs on, because every user of it is a client of the
server, none the owner of another: the plugins' pytest fixtures (``plugins/conftest.py``, the A1111
extension's ``a1111_servers.py``), the deploy checks (``deploy/tests/test_manifests.py``) and the
scale-out launcher (``deploy/local/replicas.py``) put this folder on ``sys.path`` and import it. It needs
only the standard library (no pytest), so the launcher can use it outside a test run.
"""

from __future__ import annotations

import mmap
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "tests" / "fixtures" / "models"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
#: Printed on stderr once the model is loaded and health says SERVING (server/src/cli/serve.rs).
SERVING_MARKER = "heie: serving on "
METRICS_MARKER = "heie: metrics on "
HTTP_MARKER = "heie: HTTP API and page on "
#: The server's test-only slowness hook (server/src/engine/liveness.rs, feature ``fault-injection``): every decode
#: step sleeps this many milliseconds first, so a test can make work last without assuming the machine is slow.
STEP_DELAY_VARIABLE = "HEIE_FAULT_STEP_DELAY_MS"


class MissingHook(RuntimeError):
    """The binary was built without the ``fault-injection`` feature a slow server needs."""


def heie_binary() -> Path:
    """$HEIE_BIN, else ``debug/heie`` under $CARGO_TARGET_DIR or this repository's ``target/``, built with
    the ``fault-injection`` feature (as ``cargo test`` builds it) when missing."""
    env = os.environ.get("HEIE_BIN")
    if env:
        return Path(env)
    # cargo honours CARGO_TARGET_DIR, so the binary it built lives there when it is set.
    binary = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "heie"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--locked", "-p", "heie-server", "--bin", "heie", "--features", "fault-injection"],
                       cwd=REPO, check=True)
    return binary


def fixture_model_args(suffix: str = "") -> list[str]:
    """``--model``/``--mmproj`` of the tiny random-weight fixture pair."""
    return ["--model", str(MODELS / f"tiny-llm{suffix}.gguf"), "--mmproj", str(MODELS / "tiny-mmproj.gguf")]


def server_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """This process's environment less the HEIE_* variables (the server reads them as its flags, and a
    developer's must not leak into a test server), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIE_")}
    env.update(extra or {})
    return env


def step_delay_env(binary: Path, step_ms: int) -> dict[str, str]:
    """``extra`` for :func:`server_env` that makes every decode step of ``binary`` at least ``step_ms`` longer.
    Raises :class:`MissingHook` when the binary lacks the hook: the variable would be ignored, and a test that
    needs slow work would silently test nothing on a fast machine."""
    with binary.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as image:
        if image.find(STEP_DELAY_VARIABLE.encode()) < 0:
            raise MissingHook(f"{binary} has no {STEP_DELAY_VARIABLE} hook: build it with "
                              "`cargo build -p heie-server --features fault-injection` (what `cargo test` builds)")
    return {STEP_DELAY_VARIABLE: str(step_ms)}


def read_metrics(metrics_url: str) -> str:
    """The Prometheus exposition a server's ``/metrics`` answers."""
    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        return reply.read().decode()


def metric_value(metrics_url: str, line_prefix: str) -> float:
    """Value of the first ``/metrics`` line that starts with ``line_prefix`` (0 when absent)."""
    for line in read_metrics(metrics_url).splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on a moment ago (for an address that must be dead, or one the server is told)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def heie_children() -> dict[int, str]:
    """pid → state of every child process of this one named heie (Linux ``/proc``; a zombie, an exited
    child nobody reaped, has state Z). Compare with an earlier call: the session's own servers are here too."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue  # gone meanwhile
        fields = tail.split()
        if head.split("(", 1)[1] == "heie" and int(fields[1]) == os.getpid():
            found[int(stat.parent.name)] = fields[0]
    return found


@dataclass
class ServeProcess:
    """One running ``heie serve``: its gRPC address, and its metrics and HTTP addresses when it has them."""

    process: subprocess.Popen[bytes]
    address: str
    log: Path
    metrics_address: Optional[str] = None
    http_address: Optional[str] = None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}/metrics"

    def metrics(self) -> str:
        return read_metrics(self.metrics_url)

    def metric(self, line_prefix: str) -> float:
        """Value of the first /metrics line that starts with ``line_prefix`` (0 when absent)."""
        return metric_value(self.metrics_url, line_prefix)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Sends ``sig`` (a graceful stop by default), kills the process when it outlives ``timeout``; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_serve(args: Sequence[str], log: Path, extra_env: Optional[Mapping[str, str]] = None,
                binary: Optional[Path] = None, timeout: float = START_TIMEOUT_S) -> ServeProcess:
    """Runs ``heie serve ARGS`` (stdout and stderr to ``log``, environment :func:`server_env` plus ``extra_env``)
    and returns once it serves (the model loaded): the addresses are read from its own start-up lines, so
    ``--addr``, ``--http`` and ``--metrics-addr`` may all use port 0. Raises ``RuntimeError`` with the log's
    tail when it exits or does not serve within ``timeout``."""
    command = [str(binary or heie_binary()), "serve", *args]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=server_env(extra_env))
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        found = {marker: line[len(marker):].strip() for line in text.splitlines()
                 for marker in (SERVING_MARKER, METRICS_MARKER, HTTP_MARKER) if line.startswith(marker)}
        if SERVING_MARKER in found:
            metrics = found.get(METRICS_MARKER, "").removeprefix("http://").removesuffix("/metrics") or None
            http = found.get(HTTP_MARKER, "").split("://", 1)[-1].rstrip("/") or None
            return ServeProcess(process, found[SERVING_MARKER], log, metrics, http)
        if process.poll() is not None:
            raise RuntimeError(f"heie serve exited with {process.returncode}:\n{text[-4000:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"heie serve did not start within {timeout:.0f} s:\n{text[-4000:]}")
        time.sleep(0.1)


__all__ = [
    "MODELS", "MissingHook", "REPO", "STEP_DELAY_VARIABLE", "ServeProcess", "fixture_model_args", "free_port",
    "heie_binary", "server_env", "start_serve", "step_delay_env",
]
