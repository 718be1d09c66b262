"""The pack installs as ComfyUI-Manager installs it: its exported folder in ``custom_nodes/`` plus
``pip install -r requirements.txt`` in a fresh venv (nothing of this repository, no heie-client, no
grpcio) is enough for ComfyUI to load its nodes, with the bundled client."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACK = Path(__file__).resolve().parents[1]


def _load_export_tool():  # type: ignore[no-untyped-def]
    """tools/export_repo.py under a name of its own: the A1111 extension's tool has the same file name."""
    spec = importlib.util.spec_from_file_location("comfyui_export_repo", PACK / "tools" / "export_repo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_repo = _load_export_tool()

#: ComfyUI's loader in short: the pack's folder imported as a package named after the folder.
LOAD_LIKE_COMFYUI = """
import importlib.util, sys
pack = sys.argv[1]
spec = importlib.util.spec_from_file_location("heie", pack + "/__init__.py", submodule_search_locations=[pack])
module = importlib.util.module_from_spec(spec)
sys.modules["heie"] = module
spec.loader.exec_module(module)
import heie_client
print(sorted(module.NODE_CLASS_MAPPINGS))
print(heie_client.__file__)
print(module.NODE_CLASS_MAPPINGS["HeieEvaluate"].INPUT_TYPES()["required"]["address"][1]["default"])
"""


def test_the_exported_pack_loads_in_a_fresh_venv_with_only_its_requirements(tmp_path: Path) -> None:
    pack = tmp_path / "custom_nodes" / "heie"
    written = export_repo.export(pack)
    assert Path("heie_client/local_server.py") in written and Path("requirements.txt") in written
    assert not any(p.is_symlink() for p in pack.rglob("*"))  # a git repository of the pack holds files

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(pack / "requirements.txt")],
                               capture_output=True, text=True)
    if installed.returncode != 0 and "NewConnectionError" in installed.stdout + installed.stderr:
        pytest.skip("pip cannot reach a package index from this machine")
    assert installed.returncode == 0, installed.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    assert "heie" not in listed and "grpcio" not in listed, listed

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    loaded = subprocess.run([str(python), "-c", LOAD_LIKE_COMFYUI, str(pack)], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stderr
    nodes, client_file, default_address = loaded.stdout.splitlines()
    assert nodes == "['HeieEvaluate', 'HeieFilter', 'HeieRegions', 'HeieRerank']"
    assert Path(client_file).resolve().is_relative_to(pack.resolve())  # the bundled client, not another
    assert default_address == "auto"


def test_export_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("keep me")
    with pytest.raises(SystemExit, match="is not empty"):
        export_repo.export(tmp_path)
    assert (tmp_path / "something").read_text() == "keep me"
