"""Manual check of issue 28's "Done when" in a real ComfyUI (not collected by pytest: it needs ComfyUI,
its venv, Chromium and a built wheel): from the pack installed as ComfyUI-Manager does to a verdict, with
no terminal and no server started by hand.

1. exports the pack (``tools/export_repo.py``) into ``custom_nodes/heie`` of the ComfyUI checkout (a
   clean copy, removed again at the end) and runs ``pip install -r requirements.txt`` from it, then
   ``pip install`` the heie-server wheel, both with ComfyUI's Python (a fresh venv is the point);
2. starts ComfyUI ``--cpu`` with ``HEIE_COMFY_MODEL``/``HEIE_COMFY_MMPROJ`` at the fixture GGUFs and no
   ``HEIE_COMFY_BINARY``/``HEIE_BIN`` (the binary must come from the venv);
3. in headless Chromium, opens the Templates browser, picks the pack's judge workflow (address "auto")
   as a person clicks it, queues it from the page and reads the HEIE nodes' texts (screenshots saved);
4. checks with ``/proc`` that a ``heie serve`` from the venv's ``bin/`` runs as ComfyUI's child, then
   stops ComfyUI as a user does (Ctrl-C: SIGINT) and checks that the server is gone;
5. with ``--download``, a second ComfyUI with no model set: the server downloads its default model from
   a Hugging Face Hub stand-in (``tests/python/hf_mirror.py``, the fixture GGUFs under the default
   names, held halfway): the node shows the download (screenshot), Cancel ends the node and leaves no
   server, and the next run resumes the download and judges.

    python3 plugins/comfyui/tests/real_comfyui_auto_check.py --comfyui /path/to/ComfyUI \\
        --python /path/to/fresh-venv/bin/python --wheel /path/to/heie_server-*.whl --shots /work/shots [--download]

Prints one ``ok:``/``FAIL:`` line per check; exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PACK = Path(__file__).resolve().parents[1]
REPO = PACK.parents[1]
MODELS = REPO / "tests" / "fixtures" / "models"
PACK_NAME = "heie"  # the folder under custom_nodes: the Templates browser's category
TEMPLATE = "heie_judge_images"
FAILURES: list[str] = []


def check(condition: bool, what: str, detail: Any = "") -> bool:
    print(f"ok: {what}" if condition else f"FAIL: {what} {detail}", flush=True)
    if not condition:
        FAILURES.append(what)
    return condition


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def heie_children(parent: int) -> list[tuple[int, str, str]]:
    """(pid, state, executable) of every process named heie whose parent is ``parent``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
            fields = tail.split()
            if head.split("(", 1)[1] == "heie" and int(fields[1]) == parent:
                exe = os.readlink(stat.parent / "exe") if fields[0] != "Z" else ""
                found.append((int(stat.parent.name), fields[0], exe))
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for_line(log: Path, marker: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise SystemExit(f"ComfyUI exited before {marker!r}; see {log}")
        time.sleep(0.5)
    raise SystemExit(f"no {marker!r} in {log} within {timeout:.0f} s")


def install(python: str, pack: Path, wheel: Path) -> None:
    """What ComfyUI-Manager does with a pack (its requirements.txt), then the wheel the README names."""
    for args in (["-r", str(pack / "requirements.txt")], [str(wheel)]):
        ran = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
                             capture_output=True, text=True)
        check(ran.returncode == 0, f"pip install {' '.join(args)} into ComfyUI's venv", ran.stderr[-1500:])
    heie = Path(python).parent / "heie"
    version = subprocess.run([str(heie), "--version"], capture_output=True, text=True)
    check(version.returncode == 0, f"the wheel put {heie} in the venv: {version.stdout.strip()}", version.stderr)


def page(mode: str, base: str, png: Path) -> tuple[int, list[str], list[dict[str, Any]]]:
    """Runs comfyui_page.mjs MODE on the judge template; its exit status, the node types the Templates
    browser opened and the HEIE nodes' texts."""
    ran = subprocess.run(["node", str(PACK / "tests" / "comfyui_page.mjs"), mode, base, PACK_NAME, TEMPLATE, str(png)],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "HEIE_BROWSER_DIR": str(REPO / "tests" / "browser")})
    print(ran.stdout[-1500:], ran.stderr[-2000:], sep="\n", flush=True)
    reports = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    loaded = next((r["loaded"] for r in reports if "loaded" in r), [])
    texts = next((r["texts"] for r in reports if "texts" in r), [])
    return ran.returncode, loaded, texts


def run_template_from_page(base: str, png: Path) -> None:
    for old in (png, png.with_name(png.stem + "-browser.png")):
        old.unlink(missing_ok=True)  # a screenshot of an earlier run must not count
    status, loaded, texts = page("template-run", base, png)
    check(status == 0 and "HeieFilter" in loaded, "the Templates browser opened the judge workflow", loaded)
    evaluate = [t.get("text") or "" for t in texts if t["type"] == "HeieEvaluate"]
    check(bool(evaluate) and evaluate[0].startswith("#1: score "), "the page's run shows the verdict on HEIE Evaluate",
          texts)
    check(png.is_file(), f"screenshots saved: {png} and {png.with_name(png.stem + '-browser.png')}")


@contextmanager
def running_comfyui(args: argparse.Namespace, env: dict[str, str], work: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """ComfyUI ``--cpu`` with a fresh user folder in ``work``; yields the process and its URL and, at the
    end, stops it as a user does (Ctrl-C: SIGINT) and checks that its heie server went with it."""
    (work / "user").mkdir(parents=True)  # ComfyUI's own (fresh) user folder: the server's log goes to its heie/
    port, log = free_port(), work / "comfyui.log"
    with log.open("wb") as sink:
        comfy = subprocess.Popen([args.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                  "--output-directory", str(work / "output"), "--temp-directory", str(work),
                                  "--user-directory", str(work / "user")],
                                 cwd=args.comfyui, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env)
    servers: list[tuple[int, str, str]] = []
    try:
        wait_for_line(log, "To see the GUI go to", comfy, 300)
        print(f"ComfyUI at http://127.0.0.1:{port} (log {log})", flush=True)
        check(not heie_children(comfy.pid), "no heie server before the first HEIE node runs")
        yield comfy, f"http://127.0.0.1:{port}"
        servers = heie_children(comfy.pid)
        comfy.send_signal(signal.SIGINT)  # Ctrl-C in ComfyUI's terminal
        comfy.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid, _, _ in servers) and time.monotonic() < deadline:
            time.sleep(0.2)
        check(bool(servers) and not any(alive(pid) for pid, _, _ in servers),
              "stopping ComfyUI (Ctrl-C) stopped the server", servers)
    finally:
        if comfy.poll() is None:
            comfy.kill()
            comfy.wait()


def check_server_from_venv(comfy: subprocess.Popen[bytes], python: str, work: Path) -> None:
    servers = heie_children(comfy.pid)
    venv_heie = str(Path(python).parent / "heie")
    check(len(servers) == 1 and servers[0][2] in (venv_heie, os.path.realpath(venv_heie)),
          f"one heie serve runs as ComfyUI's child, from the venv ({venv_heie})", servers)
    server_log = work / "user" / "heie" / "heie-serve.log"
    check(server_log.is_file() and "serving on" in server_log.read_text(errors="replace"),
          f"the server's log is in ComfyUI's user folder: {server_log}")


def host_env() -> dict[str, str]:
    """ComfyUI's environment: no HEIE binary named and no heie on PATH, so the server can only come
    from the venv (the wheel)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HEIE_BIN", "HEIE_COMFY_BINARY")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not (Path(p) / "heie").exists())
    env["HEIE_COMFY_THREADS"] = "1"
    return env


def with_fixture_model(args: argparse.Namespace, work: Path) -> None:
    """The Done-when run: the model settings at the fixture GGUFs, the judge template from the page."""
    env = {**host_env(), "HEIE_COMFY_MODEL": str(MODELS / "tiny-llm.gguf"), "HEIE_COMFY_MMPROJ": str(MODELS / "tiny-mmproj.gguf")}
    with running_comfyui(args, env, work) as (comfy, base):
        run_template_from_page(base, args.shots / "comfyui-auto-judge.png")
        check_server_from_venv(comfy, args.python, work)


def with_default_model_download(args: argparse.Namespace, work: Path) -> None:
    """No model set: the server downloads its default model (the fixture GGUFs from a Hugging Face Hub
    stand-in, held halfway): the node shows the download, Cancel abandons the start (no server left),
    and the next run resumes the download and judges."""
    sys.path.insert(0, str(REPO / "tests" / "python"))
    from hf_mirror import HfMirror

    with HfMirror() as hub:
        hub.hold_at(0.5)
        env = {**host_env(), "HF_ENDPOINT": hub.url, "HF_HOME": str(work / "hf-home")}
        with running_comfyui(args, env, work) as (comfy, base):
            png = args.shots / "comfyui-auto-download-cancelled.png"
            png.with_name(png.stem + "-downloading.png").unlink(missing_ok=True)
            status, _, texts = page("template-cancel", base, png)
            check(status == 0 and png.with_name(png.stem + "-downloading.png").is_file(),
                  f"the node showed the download (screenshot {png.with_name(png.stem + '-downloading.png')})")
            check(any("cancelled while the local server was starting" in (t.get("text") or "") for t in texts),
                  "Cancel during the download ended the node, which says so", texts)
            left = [child for child in heie_children(comfy.pid) if child[1] != "Z"]
            check(not left, "the abandoned server is gone (killed and reaped)", left)
            hub.release()
            run_template_from_page(base, args.shots / "comfyui-auto-after-download.png")
            check_server_from_venv(comfy, args.python, work)
            snapshots = list((work / "hf-home" / "hub").glob("models--*/snapshots/*/*.gguf"))
            check(len(snapshots) == 2, "the default model's two files are in the Hugging Face cache", snapshots)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout (main.py)")
    parser.add_argument("--python", required=True, help="the Python of ComfyUI's (fresh) venv")
    parser.add_argument("--wheel", type=Path, required=True, help="the heie-server wheel (deploy/wheel/build.sh)")
    parser.add_argument("--shots", type=Path, default=Path(tempfile.gettempdir()), help="folder for the screenshots")
    parser.add_argument("--download", action="store_true",
                        help="also the first download of the default model (from a local Hub stand-in) and Cancel during it")
    args = parser.parse_args()
    pack = args.comfyui / "custom_nodes" / PACK_NAME
    if pack.exists() or pack.is_symlink():
        raise SystemExit(f"{pack} exists: move it away first (this check installs a clean copy and removes it)")
    args.shots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="heie-comfy-auto-"))
    try:
        subprocess.run([sys.executable, str(PACK / "tools" / "export_repo.py"), str(pack)], check=True)
        install(args.python, pack, args.wheel)
        with_fixture_model(args, work / "fixture-model")
        if args.download:
            with_default_model_download(args, work / "default-model")
    finally:
        shutil.rmtree(pack, ignore_errors=True)
    print(f"{len(FAILURES)} failed" if FAILURES else "every check passed")
    return 1 if FAILURES else 0

if __name__ == "__main__":
    sys.exit(main())
