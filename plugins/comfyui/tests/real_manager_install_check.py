"""Manual check (not collected by pytest: it needs ComfyUI, ComfyUI-Manager, Chromium and a heie binary):
the pack installed by the real ComfyUI-Manager from a git URL, as a user does with "Install via Git URL",
then loaded by ComfyUI and run.

1. exports the pack as its own git repository (``tools/export_repo.py``, one commit) and serves it over
   plain HTTP on 127.0.0.1 (git's dumb protocol), so the Manager clones it from a URL like a GitHub one;
2. starts ComfyUI ``--cpu --listen 127.0.0.1`` with a fresh user folder whose Manager ``config.ini``
   says ``allow_git_url_install = true`` (what the Manager's security policy asks for a URL that is not
   in its registry) and ``network_mode = offline`` (this machine reaches no GitHub);
3. posts the Manager's own ``/customnode/install/git_url`` request (what its "Install via Git URL"
   button sends): the Manager clones into ``custom_nodes/heie`` and pip-installs ``requirements.txt``;
4. restarts ComfyUI (Ctrl-C, start), checks that ``/object_info`` has the four HEIE nodes and that the
   Manager's ``/customnode/installed`` lists the pack (screenshot of its Custom Nodes Manager, which
   lists only packs in the Manager's database);
5. opens the judge template in the page and runs it (address "auto", ``HEIE_COMFY_BINARY`` and the
   fixture GGUFs), reads the verdict on HEIE Evaluate (screenshot), and removes ``custom_nodes/heie``.

    python3 plugins/comfyui/tests/real_manager_install_check.py --comfyui /path/to/ComfyUI-copy \\
        --python /path/to/its-venv/bin/python --heie target/debug/heie --shots /work/shots

``--comfyui`` must be a git checkout (the Manager dates ComfyUI by its commit and blocks most actions on a
checkout it cannot date), hold ComfyUI-Manager in ``custom_nodes/`` (cloned there and its requirements
installed, as its README says) and no ``custom_nodes/heie``. Prints one ``ok:``/``FAIL:`` line per check;
exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_comfyui_auto_check as auto  # noqa: E402  (its helpers: checks, ports, the page driver)

check, PACK, REPO, MODELS = auto.check, auto.PACK, auto.REPO, auto.MODELS
HEIE_NODES = ("HeieEvaluate", "HeieFilter", "HeieRerank", "HeieRegions")
MANAGER_CONFIG = """[default]
security_level = normal
network_mode = offline
allow_git_url_install = true
"""


def manager_folder(comfyui: Path) -> str:
    """Where the Manager keeps its config.ini under the user folder: ``__manager`` on a ComfyUI with the
    system-user API (``folder_paths.get_system_user_directory``), ``default/ComfyUI-Manager`` before it."""
    newer = "get_system_user_directory" in (comfyui / "folder_paths.py").read_text()
    return "__manager" if newer else "default/ComfyUI-Manager"


def exported_repo(work: Path) -> Path:
    """The pack as a bare git repository ``heie.git`` (the folder name the Manager clones into is ``heie``),
    ready for git's dumb HTTP protocol."""
    tree = work / "heie-export"
    subprocess.run([sys.executable, str(PACK / "tools" / "export_repo.py"), str(tree)], check=True)
    git = ["git", "-c", "user.name=heie", "-c", "user.email=heie@localhost", "-C", str(tree)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "HEIE node pack"], check=True)
    bare = work / "served" / "heie.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(tree), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)  # what dumb HTTP reads
    return bare


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per git object is noise
        pass


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on a free loopback port; yields its base URL."""
    handler = functools.partial(QuietFiles, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def comfyui(args: argparse.Namespace, work: Path, log_name: str) -> Iterator[str]:
    """ComfyUI ``--cpu`` on a loopback port with the user folder ``work/user``; stopped with Ctrl-C."""
    port, log = auto.free_port(), work / log_name
    env = {**os.environ, "HEIE_COMFY_BINARY": str(args.heie), "HEIE_COMFY_THREADS": "1",
           "HEIE_COMFY_MODEL": str(MODELS / "tiny-llm.gguf"), "HEIE_COMFY_MMPROJ": str(MODELS / "tiny-mmproj.gguf")}
    with log.open("wb") as sink:
        process = subprocess.Popen([args.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                    "--output-directory", str(work / "output"), "--temp-directory", str(work),
                                    "--user-directory", str(work / "user")],
                                   cwd=args.comfyui, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
    try:
        auto.wait_for_line(log, "To see the GUI go to", process, 300)
        print(f"ComfyUI at http://127.0.0.1:{port} (log {log})", flush=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as answer:
        return json.load(answer)


def install_with_manager(base: str, git_url: str, log: Path, target: Path) -> None:
    """The request the Manager's "Install via Git URL" button sends, and what the Manager then did."""
    request = urllib.request.Request(f"{base}/customnode/install/git_url", method="POST",
                                     data=json.dumps({"url": git_url}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    text = log.read_text(errors="replace")
    check(status == 200, f"the Manager answered 200 to install {git_url}", f"status {status}; see {log}")
    check(f"CLONE into '{target}'" in text and (target / ".git").is_dir(),
          f"the Manager cloned the pack into {target}", text[-2000:])
    check("Install: pip packages" in text, "the Manager ran pip on the pack's requirements.txt", text[-2000:])
    remote = subprocess.run(["git", "-C", str(target), "remote", "get-url", "origin"], capture_output=True, text=True)
    check(remote.stdout.strip() == git_url, f"the clone's origin is {git_url}", remote.stdout + remote.stderr)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout with ComfyUI-Manager installed")
    parser.add_argument("--python", required=True, help="the Python of that ComfyUI's venv")
    parser.add_argument("--heie", type=Path, required=True, help="the heie binary for the address auto")
    parser.add_argument("--shots", type=Path, required=True, help="folder for the screenshots")
    args = parser.parse_args(argv)
    args.comfyui, args.heie = args.comfyui.resolve(), args.heie.resolve()
    manager = [p for p in (args.comfyui / "custom_nodes").iterdir() if (p / "cm-cli.py").is_file()]
    if not manager:
        raise SystemExit(f"no ComfyUI-Manager in {args.comfyui / 'custom_nodes'}; clone it there first")
    target = args.comfyui / "custom_nodes" / "heie"
    if target.exists():
        raise SystemExit(f"{target} exists already; remove it (this check installs the pack itself)")
    version = subprocess.run(["git", "-C", str(manager[0]), "log", "-1", "--format=%H %cs"], capture_output=True, text=True)
    print(f"ComfyUI-Manager at {manager[0]}: commit {version.stdout.strip()}", flush=True)
    args.shots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="heie-manager-"))
    config = work / "user" / manager_folder(args.comfyui) / "config.ini"
    config.parent.mkdir(parents=True)
    config.write_text(MANAGER_CONFIG)
    try:
        bare = exported_repo(work)
        with served(bare.parent) as host:
            git_url = f"{host}/heie.git"
            with comfyui(args, work, "comfyui-install.log") as base:
                check(not any(t in get_json(f"{base}/object_info") for t in HEIE_NODES), "no HEIE node before the install")
                install_with_manager(base, git_url, work / "comfyui-install.log", target)
        with comfyui(args, work, "comfyui-restarted.log") as base:
            registered = get_json(f"{base}/object_info")
            check(all(t in registered for t in HEIE_NODES), f"after the restart /object_info has {', '.join(HEIE_NODES)}",
                  [t for t in HEIE_NODES if t not in registered])
            installed = get_json(f"{base}/customnode/installed")
            check("heie" in installed, "the Manager's /customnode/installed lists heie", list(installed)[:20])
            png = args.shots / "manager-installed.png"
            png.unlink(missing_ok=True)
            ran = subprocess.run(["node", str(PACK / "tests" / "comfyui_page.mjs"), "manager-installed", base, str(png)],
                                 capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "HEIE_BROWSER_DIR": str(REPO / "tests" / "browser")})
            print(ran.stdout[-1500:], ran.stderr[-1500:], sep="\n", flush=True)
            rows = next((json.loads(line)["installed"] for line in ran.stdout.splitlines() if line.startswith("{")), "")
            check(ran.returncode == 0 and png.is_file(), f"the Manager's Custom Nodes Manager opened (screenshot {png})",
                  ran.stderr[-500:])
            # Not a check: the dialog lists only packs of the Manager's database (custom-node-list.json or the
            # registry), so a pack installed from a git URL that is in neither shows in /customnode/installed
            # (checked above) but not there.
            print(f"note: its Installed list {'shows' if 'heie' in rows.lower() else 'does not show'} heie", flush=True)
            auto.run_template_from_page(base, args.shots / "manager-judge.png")
    finally:
        shutil.rmtree(target, ignore_errors=True)  # the checkout is left as it was given
        print(f"logs in {work}", flush=True)
    print(f"{len(auto.FAILURES)} check(s) failed" if auto.FAILURES else "all checks passed", flush=True)
    return 1 if auto.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
