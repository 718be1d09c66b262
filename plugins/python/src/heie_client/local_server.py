"""A ``heie serve`` started on demand: with the address left at ``"auto"``, a host (the ComfyUI pack, the
A1111/Forge extension, ``heie-score``) gets a server without anyone opening a terminal.

One server per host process, shared by every node and run: the first ``resolve_address("auto", …)``
starts it, later calls health-check it and get the same address (a server that died is started again).
It is stopped when the host exits (``atexit``; on Linux the kernel also ends it if the host is killed). Its
output goes to a log file the error messages name. Anything that goes wrong raises
:class:`LocalServerError` whose message says, in one sentence, what to do.

Where the binary comes from, in order: the setting, ``$HEIE_BIN``, the ``heie`` next to this Python (what
``pip install heie-server`` puts in the venv), then ``PATH``. The model: the setting's GGUF pair, else
the server's default model, which ``heie serve`` downloads into the Hugging Face cache on first use.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

AUTO = "auto"
#: Loading the default model from a warm cache takes seconds; a first download of ~2.3 GB far longer.
DEFAULT_START_TIMEOUT_S = 1800.0
STOP_TIMEOUT_S = 20.0
_POLL_S = 0.25

#: ``progress(message)`` is told what the server is doing while it starts (a line for the host's
#: status bar / progress text).
Progress = Callable[[str], None]


class LocalServerError(RuntimeError):
    """Starting or reaching the local server failed; the message says what to do."""


@dataclass(frozen=True)
class LocalServerSettings:
    """How to start the local server; empty fields take the defaults described in the module doc."""

    binary: str = ""
    model: str = ""
    mmproj: str = ""
    #: Folder of ``heie-serve.log``; '' = ``$XDG_CACHE_HOME/heie/logs`` (``~/.cache/heie/logs``).
    log_dir: str = ""
    #: llama.cpp threads; 0 = the server's default (all cores).
    threads: int = 0
    extra_args: tuple[str, ...] = field(default=())
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S


def resolve_address(address: str, settings: Optional[LocalServerSettings] = None,
                    progress: Optional[Progress] = None) -> str:
    """``address`` itself, or for ``"auto"`` (any case, surrounding spaces) the HTTP address of the shared
    local server, started first if none is running."""
    if address.strip().lower() != AUTO:
        return address
    return shared_server(settings or LocalServerSettings(), progress).address


_lock = threading.Lock()
_shared: Optional["LocalServer"] = None


def shared_server(settings: LocalServerSettings, progress: Optional[Progress] = None) -> "LocalServer":
    """The process's one local server, started (or restarted: died, or other settings) when needed."""
    global _shared
    with _lock:
        if _shared is not None and _shared.settings == settings and _shared.healthy():
            return _shared
        if _shared is not None:
            _shared.stop()
        _shared = LocalServer.start(settings, progress)
        return _shared


def stop_shared() -> None:
    """Stops the shared server, if any (also run at interpreter exit)."""
    global _shared
    with _lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


atexit.register(stop_shared)


def find_binary(setting: str = "") -> Path:
    candidates = [setting, os.environ.get("HEIE_BIN", ""), str(Path(sys.executable).parent / "heie")]
    for candidate in filter(None, candidates):
        path = Path(candidate).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        if candidate == setting:
            raise LocalServerError(f"the HEIE binary setting points at {path}, which is not an executable file; "
                                   "fix the setting or clear it to use the installed heie")
    found = shutil.which("heie")
    if found:
        return Path(found)
    raise LocalServerError("no heie binary found to start a local server: run `pip install heie-server` in this "
                           f"Python environment ({sys.prefix}), or set the address to a running HEIE server")


def default_log_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "heie" / "logs"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the host process dies, even by SIGKILL (no orphans holding
    the GPU); elsewhere ``atexit`` is the only guard."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class LocalServer:
    """One ``heie serve`` child process with its HTTP API on a free loopback port."""

    def __init__(self, settings: LocalServerSettings, process: subprocess.Popen, http_port: int, log_path: Path):
        self.settings = settings
        self.process = process
        self.http_port = http_port
        self.log_path = log_path

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def start(cls, settings: LocalServerSettings, progress: Optional[Progress] = None) -> "LocalServer":
        binary = find_binary(settings.binary)
        if bool(settings.model) != bool(settings.mmproj):
            raise LocalServerError("set both the model and the mmproj file (a GGUF pair), or neither for the default model")
        for name, value in (("model", settings.model), ("mmproj", settings.mmproj)):
            if value and not Path(value).expanduser().is_file():
                raise LocalServerError(f"the {name} setting points at {value}, which is not a file; "
                                       "pick an existing GGUF or clear it for the default model")
        log_dir = Path(settings.log_dir).expanduser() if settings.log_dir else default_log_dir()
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "heie-serve.log"
        if log_path.exists():  # keep the previous run's log beside the new one
            log_path.replace(log_dir / "heie-serve.previous.log")
        http_port, grpc_port = _free_port(), _free_port()
        command = [str(binary), "serve", "--addr", f"127.0.0.1:{grpc_port}", "--http", f"127.0.0.1:{http_port}"]
        if settings.model:
            command += ["--model", str(Path(settings.model).expanduser()),
                        "--mmproj", str(Path(settings.mmproj).expanduser())]
        if settings.threads:
            command += ["--threads", str(settings.threads)]
        command += list(settings.extra_args)
        # HEIE_* variables are the server's flags: a host's stray ones must not change this server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEIE_") or k == "HEIE_LOG"}
        with log_path.open("wb") as log:
            log.write((" ".join(command) + "\n").encode())
            log.flush()
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True,
                                       preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        server = cls(settings, process, http_port, log_path)
        if progress:
            progress("starting the HEIE server" + ("" if settings.model else
                     " (the default model is downloaded into the Hugging Face cache on first use)"))
        server._wait_until_serving(settings.start_timeout_s, progress)
        return server

    def _wait_until_serving(self, timeout_s: float, progress: Optional[Progress]) -> None:
        deadline = time.monotonic() + timeout_s
        last_line = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalServerError(f"the local HEIE server stopped while starting ({self.last_log_line() or 'no output'}); "
                                       f"see {self.log_path}")
            if self.healthy():
                return
            line = self.last_log_line()
            if progress and line and line != last_line:
                progress(line)
                last_line = line
            time.sleep(_POLL_S)
        self.stop()
        raise LocalServerError(f"the local HEIE server was not ready after {timeout_s:.0f} s; see {self.log_path}")

    def healthy(self) -> bool:
        """Running, and its ``/healthz`` says SERVING."""
        if self.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{self.address}/healthz", timeout=2.0) as reply:
                return json.loads(reply.read()).get("status") == "SERVING"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def last_log_line(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
                lines = [l for l in log.read().decode("utf-8", "replace").replace("\r", "\n").splitlines() if l.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def stop(self) -> None:
        """SIGTERM (the server drains), then SIGKILL after ``STOP_TIMEOUT_S``."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
