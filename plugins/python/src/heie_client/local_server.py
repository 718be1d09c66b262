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

While it starts, the host hears what the server does (``progress``: a line for its status text), how far
the model download is (``download``: a :class:`DownloadProgress` for each of the server's download lines,
see ``server/src/cli/download_progress.rs``), and is asked whether its user cancelled (``cancelled``):
then the start is abandoned (the server killed and reaped) and :class:`StartCancelled` raised; the next
call starts again, resuming a download where it stopped.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
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

from .errors import Cancelled

AUTO = "auto"
#: Loading the default model from a warm cache takes seconds; a first download of ~2.3 GB far longer.
DEFAULT_START_TIMEOUT_S = 1800.0
STOP_TIMEOUT_S = 20.0
_POLL_S = 0.25

#: ``progress(message)`` is told what the server is doing while it starts (a line for the host's
#: status bar / progress text).
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DownloadProgress:
    """How much of one model file the starting server has downloaded."""

    file: str
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """0..1 (1 for an empty file)."""
        return min(1.0, self.done / self.total) if self.total else 1.0

    def describe(self) -> str:
        """The line a host shows, e.g. ``downloading model.gguf: 42% of 2.4 GB``."""
        return f"downloading {self.file}: {self.fraction:.0%} of {_size(self.total)}"


#: ``download(progress)`` hears each step of the model download (fractions rise to 1, per file).
DownloadCallback = Callable[[DownloadProgress], None]
#: ``cancelled()`` is polled while the server starts: True abandons the start.
CancelCheck = Callable[[], bool]

#: The server's download line (``server/src/cli/download_progress.rs``).
_DOWNLOAD_LINE = re.compile(r"^downloading (?P<file>.+): (?P<done>\d+) of (?P<total>\d+) bytes$")


def parse_download_line(line: str) -> Optional[DownloadProgress]:
    """The progress a server log line reports, or None for any other line."""
    match = _DOWNLOAD_LINE.match(line.strip())
    if match is None:
        return None
    return DownloadProgress(match["file"], int(match["done"]), int(match["total"]))


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


class LocalServerError(RuntimeError):
    """Starting or reaching the local server failed; the message says what to do."""


class StartCancelled(Cancelled):
    """The host's user cancelled while the local server was starting; that start was abandoned (a
    :class:`~heie_client.errors.Cancelled`, so hosts treat it as any cancelled call)."""


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
                    progress: Optional[Progress] = None, download: Optional[DownloadCallback] = None,
                    cancelled: Optional[CancelCheck] = None) -> str:
    """``address`` itself, or for ``"auto"`` (any case, surrounding spaces) the HTTP address of the shared
    local server, started first if none is running (the callbacks: see the module doc)."""
    if address.strip().lower() != AUTO:
        return address
    return shared_server(settings or LocalServerSettings(), progress, download, cancelled).address


_lock = threading.Lock()
_shared: Optional["LocalServer"] = None


def shared_server(settings: LocalServerSettings, progress: Optional[Progress] = None,
                  download: Optional[DownloadCallback] = None,
                  cancelled: Optional[CancelCheck] = None) -> "LocalServer":
    """The process's one local server, started (or restarted: died, or other settings) when needed."""
    global _shared
    with _lock:
        if _shared is not None and _shared.settings == settings and _shared.healthy():
            return _shared
        if _shared is not None:
            _shared.stop()
            _shared = None
        _shared = LocalServer.start(settings, progress, download, cancelled)
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


def _spawn_from_keeper_thread(command: list[str], **popen: object) -> subprocess.Popen:
    """Starts the server from a thread of its own that lives exactly as long as the server. Linux sends
    the parent-death signal when the *thread* that started a child ends, not its process; hosts call us
    from worker threads that end (the WebUI's request threads idle out after seconds), which would stop
    the server behind their back."""
    started: "queue.Queue[object]" = queue.Queue()

    def keep() -> None:
        try:
            process = subprocess.Popen(command, **popen)  # type: ignore[call-overload]
        except BaseException as err:  # noqa: BLE001 - handed to the caller, who raises it
            started.put(err)
            return
        started.put(process)
        process.wait()

    threading.Thread(target=keep, name="heie-local-server", daemon=True).start()
    outcome = started.get()
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome  # type: ignore[return-value]


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
    def start(cls, settings: LocalServerSettings, progress: Optional[Progress] = None,
              download: Optional[DownloadCallback] = None, cancelled: Optional[CancelCheck] = None) -> "LocalServer":
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
            process = _spawn_from_keeper_thread(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        server = cls(settings, process, http_port, log_path)
        if progress:
            progress("starting the HEIE server" + ("" if settings.model else
                     " (the default model is downloaded into the Hugging Face cache on first use)"))
        server._wait_until_serving(settings.start_timeout_s, progress, download, cancelled)
        return server

    def _wait_until_serving(self, timeout_s: float, progress: Optional[Progress],
                            download: Optional[DownloadCallback], cancelled: Optional[CancelCheck]) -> None:
        deadline = time.monotonic() + timeout_s
        log = _LogFollower(self.log_path)
        last_line = ""
        while time.monotonic() < deadline:
            if cancelled is not None and cancelled():
                self.abandon()
                raise StartCancelled(f"cancelled while the local HEIE server was starting (its log: {self.log_path})")
            if self.process.poll() is not None:
                raise LocalServerError(f"the local HEIE server stopped while starting ({self.last_log_line() or 'no output'}); "
                                       f"see {self.log_path}")
            serving = self.healthy()  # asked before the log is read: no line written before serving is missed
            other = ""
            for line in log.new_lines():  # every download step is told; of the other lines, the newest
                step = parse_download_line(line)
                if step is None:
                    other = line
                    continue
                if download is not None:
                    download(step)
                if progress is not None:
                    progress(step.describe())
                last_line = ""
            if progress is not None and other and other != last_line:
                progress(other)
                last_line = other
            if serving:
                return
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

    def abandon(self) -> None:
        """Ends a server that is still starting at once (SIGKILL: nothing to drain, a half-done download
        resumes on the next start) and reaps it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

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


class _LogFollower:
    """The lines a log file gained since the last look (a line still being written waits for its end)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except OSError:
            return []
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).replace(b"\r", b"\n").split(b"\n")
        return [line.decode("utf-8", "replace").strip() for line in complete if line.strip()]
