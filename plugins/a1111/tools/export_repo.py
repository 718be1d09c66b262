"""Exports the extension as a repository of its own, the layout the WebUI's "Install from URL" clones
(``scripts/`` at the repository root, beside ``heie_a1111/``).

The WebUI clones the URL it is given into ``extensions/NAME`` and loads ``NAME/scripts/*.py``; this
monorepo keeps the extension in ``plugins/a1111/``, so its own URL cannot be installed that way. Run

    python3 plugins/a1111/tools/export_repo.py DEST [--commit]

then push DEST (``--commit`` makes it a git repository with one commit, ready to push or to install from
``file://DEST`` directly; an export whose files did not change makes no commit) and give the pushed repository's URL to Extensions → Install from URL. DEST
must be empty or absent, or an earlier export (a git work tree: its files are replaced, history kept).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

EXTENSION = Path(__file__).resolve().parents[1]
REPO = EXTENSION.parents[1]
SHIPPED = ("scripts", "javascript", "heie_a1111", "heie_client", "style.css", "README.md")
"""What the WebUI needs; tests and tools stay in the monorepo (they need its server and fixtures).
``heie_client`` is a link to ``plugins/python/src/heie_client`` here: the export copies the package's
source at export time, so the extension never carries a hand-kept copy."""
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")
#: The extension speaks HTTP only; the gRPC transport and its stubs would need protobuf >= 7, which the
#: WebUI (protobuf 3.20) cannot import, so they stay out of the export.
_SKIP_CLIENT = shutil.ignore_patterns("__pycache__", "*.pyc", "_generated", "grpc_transport")


def export(dest: Path, commit: bool = False) -> list[Path]:
    """Copies the extension into ``dest``; returns the files written, relative to ``dest``."""
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        if not (dest / ".git").is_dir():
            raise SystemExit(f"export_repo: {dest} is not empty and not an earlier export (no .git); refusing to overwrite")
        for entry in dest.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        source = EXTENSION / name
        if source.is_dir():
            # A link (heie_client) is copied as the files it points at.
            shutil.copytree(source.resolve(), dest / name, ignore=_SKIP_CLIENT if name == "heie_client" else _SKIP)
        else:
            shutil.copy2(source, dest / name)
    license_file = REPO / "LICENSE"
    if license_file.is_file():
        shutil.copy2(license_file, dest / "LICENSE")
    written = sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file() and ".git" not in p.relative_to(dest).parts)
    if commit:
        _commit(dest)
    return written


def _commit(dest: Path) -> bool:
    """Commits the export when its tree changed; returns whether it did. An unchanged export makes no
    commit: the WebUI's Extensions tab would report "new commits" with nothing new."""
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=dest, check=True, stdout=subprocess.DEVNULL)

    if not (dest / ".git").is_dir():
        git("init", "-q", "-b", "main")
    git("add", "-A")
    has_head = subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=dest, capture_output=True).returncode == 0
    if has_head and subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=dest).returncode == 0:
        return False
    source = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=EXTENSION, capture_output=True, text=True)
    message = f"HEIE extension exported from plugins/a1111 at {source.stdout.strip() or 'a work tree'}"
    git("-c", "user.name=HEIE export", "-c", "user.email=heie-export@localhost", "commit", "-q", "-m", message)
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder to export into (empty, absent, or an earlier export)")
    parser.add_argument("--commit", action="store_true", help="make DEST a git repository and commit the export")
    args = parser.parse_args(argv)
    files = export(args.dest, args.commit)
    print(f"exported {len(files)} files to {args.dest.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
