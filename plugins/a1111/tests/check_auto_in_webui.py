"""Manual check of issue 28's "Done when" in a real AUTOMATIC1111 WebUI or Forge (not collected by pytest):
the heie-server wheel installed into the WebUI's venv, the extension cloned as "Install from URL" does,
the address left at "auto" with the model/mmproj settings at the fixture GGUFs and no binary setting: a
generation is judged by a ``heie serve`` the extension started from the venv, which stops with the WebUI.

    python3 plugins/a1111/tests/check_auto_in_webui.py --webui /path/to/webui --python /path/to/venv/bin/python \\
        --wheel /path/to/heie_server-*.whl [--shots DIR] [--launch-arg=--always-cpu]

The sampler is stubbed as in check_in_webui.py (its helper extension runs the WebUI's real processing
pieces). The wheel is uninstalled again at the end when the venv did not have heie-server before; the
WebUI's config.json and extensions are restored. Prints PASS/FAIL per step; exit status 0 when all passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the harness lies beside it
from check_in_webui import HELPER, wait_ready  # noqa: E402
from webui_harness import EXTENSION, Report, free_port, get_json, restored_webui, running_webui  # noqa: E402

MODELS = EXTENSION.parents[1] / "tests" / "fixtures" / "models"


def heie_children(parent: int) -> list[tuple[int, str]]:
    """(pid, executable) of every live process named heie whose parent is ``parent``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
            fields = tail.split()
            if head.split("(", 1)[1] == "heie" and int(fields[1]) == parent and fields[0] != "Z":
                found.append((int(stat.parent.name), os.readlink(stat.parent / "exe")))
        except (OSError, ValueError, IndexError):
            continue
    return found


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (launch.py runs the WebUI as its child)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pip(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webui", type=Path, required=True)
    parser.add_argument("--python", required=True, help="the WebUI venv's python")
    parser.add_argument("--wheel", type=Path, required=True, help="the heie-server wheel (deploy/wheel/build.sh)")
    parser.add_argument("--shots", type=Path, default=None, help="screenshot the judged image's PNG Info into this folder")
    parser.add_argument("--launch-arg", action="append", default=[], metavar="ARG")
    args = parser.parse_args()
    webui: Path = args.webui.resolve()
    work = Path(tempfile.mkdtemp(prefix="heie-webui-auto-"))
    report = Report()
    had_wheel = pip(args.python, "show", "heie-server").returncode == 0
    installed = pip(args.python, "install", "-q", "--disable-pip-version-check", str(args.wheel))
    venv_heie = Path(args.python).parent / "heie"
    report.check(f"the wheel installed into the WebUI's venv ({venv_heie})",
                 installed.returncode == 0 and venv_heie.is_file(), installed.stderr[-800:])
    try:
        with restored_webui(webui, ("heie", "heie-check")):
            sys.path.insert(0, str(EXTENSION / "tools"))
            import export_repo

            export = work / "heie-a1111-export"
            export_repo.export(export, commit=True)
            subprocess.run(["git", "clone", "-q", export.as_uri(), str(webui / "extensions" / "heie")], check=True)
            (webui / "extensions" / "heie-check" / "scripts").mkdir(parents=True)
            (webui / "extensions" / "heie-check" / "scripts" / "heie_check.py").write_text(HELPER)
            port, log = free_port(), work / "webui.log"
            # No heie on PATH and no HEIE_BIN: the server can only come from the venv (running_webui's
            # environment drops every HEIE_* variable).
            path_before = os.environ.get("PATH", "")
            os.environ["PATH"] = os.pathsep.join(p for p in path_before.split(os.pathsep) if not (Path(p) / "heie").exists())
            try:
                with running_webui(webui, args.python, port, log, args.launch_arg) as process:
                    base = f"http://127.0.0.1:{port}"
                    up = wait_ready(f"{base}/heie-check/ready", 600, process)
                    if not report.check("the WebUI serves with the extension", up):
                        print(log.read_text(errors="replace")[-3000:])
                        return report.finish()
                    family = descendants(process.pid)
                    report.check("no heie server before the first judged image",
                                 not [c for pid in family for c in heie_children(pid)])
                    opts = {"heie_address": "auto", "heie_explanation": False, "heie_max_tokens": 2,
                            "heie_timeout": 300.0, "heie_overlay_in_gallery": False,
                            "heie_server_model": str(MODELS / "tiny-llm.gguf"),
                            "heie_server_mmproj": str(MODELS / "tiny-mmproj.gguf"), "heie_server_binary": ""}
                    t0 = time.monotonic()
                    out = get_json(f"{base}/heie-check/run", {"folder": str(work / "out"), "n_iter": 1, "batch_size": 1,
                                                              "opts": opts})
                    params = out["parsed"][-1]  # type: ignore[index]
                    report.check(f"a generation with the address auto is judged ({time.monotonic() - t0:.0f} s)",
                                 "HEIE score" in params and "HEIE error" not in params, json.dumps(params))
                    print(f"   progress text: {out['progress']}", flush=True)  # type: ignore[index]
                    servers = [c for pid in descendants(process.pid) for c in heie_children(pid)]
                    report.check(f"one heie serve runs under the WebUI, from the venv ({venv_heie})",
                                 len(servers) == 1 and Path(servers[0][1]).resolve() == venv_heie.resolve(), str(servers))
                    server_log = Path.home() / ".cache" / "heie" / "logs" / "heie-serve.log"
                    report.check(f"its log: {server_log}", "serving on" in server_log.read_text(errors="replace"))
                    if args.shots is not None:
                        args.shots.mkdir(parents=True, exist_ok=True)
                        shot = subprocess.run(["node", str(Path(__file__).with_name("webui_screenshot.mjs")), base,
                                               out["saved"][-1], str(args.shots)],  # type: ignore[index]
                                              capture_output=True, text=True, timeout=600)
                        report.check(f"screenshots in {args.shots}", shot.returncode == 0, (shot.stdout + shot.stderr)[-600:])
            finally:
                os.environ["PATH"] = path_before
            deadline = time.monotonic() + 30  # running_webui stopped the WebUI (SIGTERM to its group)
            while any(alive(pid) for pid, _ in servers) and time.monotonic() < deadline:
                time.sleep(0.2)
            report.check("stopping the WebUI stopped the server", not any(alive(pid) for pid, _ in servers), str(servers))
    finally:
        if not had_wheel:
            pip(args.python, "uninstall", "-y", "-q", "heie-server")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
