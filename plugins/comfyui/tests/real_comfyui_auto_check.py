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
   stops ComfyUI as a user does (Ctrl-C: SIGINT) and checks that the server is gone.

    python3 plugins/comfyui/tests/real_comfyui_auto_check.py --comfyui /path/to/ComfyUI \\
        --python /path/to/fresh-venv/bin/python --wheel /path/to/heie_server-*.whl --shots /work/shots

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
from pathlib import Path
from typing import Any

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


def run_template_from_page(base: str, shots: Path) -> None:
    png = shots / "comfyui-auto-judge.png"
    ran = subprocess.run(["node", str(PACK / "tests" / "comfyui_page.mjs"), "template-run", base, PACK_NAME, TEMPLATE,
                          str(png)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "HEIE_BROWSER_DIR": str(REPO / "tests" / "browser")})
    print(ran.stdout[-3000:], ran.stderr[-2000:], sep="\n", flush=True)
    reports = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    loaded = next((r["loaded"] for r in reports if "loaded" in r), [])
    texts = next((r["texts"] for r in reports if "texts" in r), [])
    check(ran.returncode == 0 and "HeieFilter" in loaded, "the Templates browser opened the judge workflow", loaded)
    evaluate = [t.get("text") or "" for t in texts if t["type"] == "HeieEvaluate"]
    check(bool(evaluate) and evaluate[0].startswith("#1: score "), "the page's run shows the verdict on HEIE Evaluate",
          texts)
    check(png.is_file(), f"screenshots saved: {png} and {png.with_name(png.stem + '-browser.png')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout (main.py)")
    parser.add_argument("--python", required=True, help="the Python of ComfyUI's (fresh) venv")
    parser.add_argument("--wheel", type=Path, required=True, help="the heie-server wheel (deploy/wheel/build.sh)")
    parser.add_argument("--shots", type=Path, default=Path(tempfile.gettempdir()), help="folder for the screenshots")
    args = parser.parse_args()
    pack = args.comfyui / "custom_nodes" / PACK_NAME
    if pack.exists() or pack.is_symlink():
        raise SystemExit(f"{pack} exists: move it away first (this check installs a clean copy and removes it)")
    args.shots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="heie-comfy-auto-"))
    comfy = None
    try:
        subprocess.run([sys.executable, str(PACK / "tools" / "export_repo.py"), str(pack)], check=True)
        install(args.python, pack, args.wheel)
        env = {k: v for k, v in os.environ.items() if k not in ("HEIE_BIN", "HEIE_COMFY_BINARY")}
        env.update(HEIE_COMFY_MODEL=str(MODELS / "tiny-llm.gguf"), HEIE_COMFY_MMPROJ=str(MODELS / "tiny-mmproj.gguf"),
                   HEIE_COMFY_THREADS="1")
        # No heie on PATH but the venv's: the server can only come from the wheel.
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if not (Path(p) / "heie").exists())
        (work / "user").mkdir()  # ComfyUI's own (fresh) user folder: the server's log goes to its heie/
        port, log = free_port(), work / "comfyui.log"
        with log.open("wb") as sink:
            comfy = subprocess.Popen([args.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                      "--output-directory", str(work / "output"), "--temp-directory", str(work),
                                      "--user-directory", str(work / "user")],
                                     cwd=args.comfyui, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env)
        wait_for_line(log, "To see the GUI go to", comfy, 300)
        print(f"ComfyUI at http://127.0.0.1:{port} (log {log})", flush=True)
        check(not heie_children(comfy.pid), "no heie server before the first HEIE node runs")
        run_template_from_page(f"http://127.0.0.1:{port}", args.shots)
        servers = heie_children(comfy.pid)
        venv_heie = str(Path(args.python).parent / "heie")
        check(len(servers) == 1 and servers[0][2] in (venv_heie, os.path.realpath(venv_heie)),
              f"one heie serve runs as ComfyUI's child, from the venv ({venv_heie})", servers)
        server_log = work / "user" / "heie" / "heie-serve.log"
        check(server_log.is_file() and "serving on" in server_log.read_text(errors="replace"),
              f"the server's log is in ComfyUI's user folder: {server_log}")
        comfy.send_signal(signal.SIGINT)  # Ctrl-C in ComfyUI's terminal
        comfy.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid, _, _ in servers) and time.monotonic() < deadline:
            time.sleep(0.2)
        check(not any(alive(pid) for pid, _, _ in servers), "stopping ComfyUI (Ctrl-C) stopped the server", servers)
    finally:
        if comfy is not None and comfy.poll() is None:
            comfy.kill()
            comfy.wait()
        shutil.rmtree(pack, ignore_errors=True)
    print(f"{len(FAILURES)} failed" if FAILURES else "every check passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
