"""Exports the node pack as a folder of its own: what a repository of the pack holds, what ComfyUI-Manager
clones into ``custom_nodes/`` and installs with ``pip install -r requirements.txt``. Run

    python3 plugins/comfyui/tools/export_repo.py DEST

then commit and push DEST (or copy it into ComfyUI's ``custom_nodes/``). DEST must be empty or absent.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PACK = Path(__file__).resolve().parents[1]
REPO = PACK.parents[1]
SHIPPED = ("__init__.py", "heie_nodes", "heie_client", "example_workflows", "requirements.txt", "pyproject.toml",
           "README.md")
"""What ComfyUI loads; tests, tools and the API-format workflows stay in the monorepo. ``heie_client`` is
a link to ``plugins/python/src/heie_client`` here: the export copies the package's files at export time
(its gRPC transport included, used only when grpcio is installed), so the pack never carries a hand-kept
copy."""
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def export(dest: Path) -> list[Path]:
    """Copies the pack into ``dest``; returns the files written, relative to ``dest``."""
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"export_repo: {dest} is not empty; give an empty or new folder")
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        source = PACK / name
        if source.is_dir():  # a link (heie_client) is copied as the files it points at
            shutil.copytree(source.resolve(), dest / name, ignore=_SKIP)
        else:
            shutil.copy2(source, dest / name)
    if (REPO / "LICENSE").is_file():
        shutil.copy2(REPO / "LICENSE", dest / "LICENSE")
    return sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder to export into (empty or absent)")
    args = parser.parse_args(argv)
    written = export(args.dest)
    print(f"exported {len(written)} files to {args.dest.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
