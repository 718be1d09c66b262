"""A stand-in for the Hugging Face Hub on loopback, for tests and host checks of the default model's
first download: it serves local files under hf-hub's URL layout (``/{repo}/resolve/{revision}/{file}``)
with the headers hf-hub reads (``etag``, ``x-repo-commit``, ``Content-Range`` for its ``Range``
requests), so ``heie serve`` without ``--model`` downloads the fixture GGUFs under the default model's
names. Point ``HF_ENDPOINT`` at :attr:`HfMirror.url` and ``HF_HOME`` at a fresh folder.

``hold_at(fraction)`` makes it stop each transfer after that share of the file until :meth:`release`:
a download that is certainly still running, for the tests of cancelling it."""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping, Optional

from heie_process import MODELS

#: The server's default model (``server/src/cli/default_model.rs``).
DEFAULT_REPO = "ggml-org/InternVL3-2B-Instruct-GGUF"
DEFAULT_FILES = {
    "InternVL3-2B-Instruct-Q8_0.gguf": MODELS / "tiny-llm.gguf",
    "mmproj-InternVL3-2B-Instruct-Q8_0.gguf": MODELS / "tiny-mmproj.gguf",
}
#: Any 40-hex commit: hf-hub files the download under it.
COMMIT = "0123456789abcdef0123456789abcdef01234567"
#: Bytes per write: many small reads, so the download reports many steps.
CHUNK = 8192


class HfMirror:
    """``files`` (name in the repo → local path) of one ``repo``, served until :meth:`close`."""

    def __init__(self, repo: str = DEFAULT_REPO, files: Optional[Mapping[str, Path]] = None):
        self.repo = repo
        self.files = {name: Path(path) for name, path in (files or DEFAULT_FILES).items()}
        #: (path, Range header) of every request, in order.
        self.requests: list[tuple[str, str]] = []
        self._hold_at: Optional[float] = None
        self._released = threading.Event()
        self.held = threading.Event()  # set when a transfer reached the hold
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="hf-mirror").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def hold_at(self, fraction: float) -> None:
        self._hold_at = fraction
        self._released.clear()

    def release(self) -> None:
        self._hold_at = None
        self._released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "HfMirror":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler(self) -> type:
        mirror = self
        route = re.compile(rf"^/{re.escape(self.repo)}/resolve/[^/]+/(?P<file>.+)$")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the test output is the server's
                pass

            def do_GET(self) -> None:
                mirror.requests.append((self.path, self.headers.get("Range", "")))
                match = route.match(self.path)
                path = mirror.files.get(match["file"]) if match else None
                if path is None:
                    self.send_error(404, "no such file in this repo")
                    return
                data = path.read_bytes()
                start, end = 0, len(data) - 1
                ranged = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
                if ranged:
                    start = int(ranged[1])
                    end = min(end, int(ranged[2])) if ranged[2] else end
                body = data[start:end + 1]
                self.send_response(206 if ranged else 200)
                self.send_header("etag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("x-repo-commit", COMMIT)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                hold = mirror._hold_at
                held_at = int(len(data) * hold) if hold is not None and len(body) > 1 else None
                try:
                    for offset in range(0, len(body), CHUNK):
                        if held_at is not None and start + offset >= held_at:
                            mirror.held.set()
                            mirror._released.wait()
                            held_at = None
                        self.wfile.write(body[offset:offset + CHUNK])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the downloader went away (killed on purpose by a test)

        return Handler
