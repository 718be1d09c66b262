"""The extension brings nothing into the WebUI's Python, and its export has the layout the WebUI's
"Install from URL" clones."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION / "tools"))

import export_repo  # noqa: E402

# What the WebUI's Python always has: the standard library, plus the WebUI's own modules and packages
# that only scripts/heie.py (the adapter) and the tests touch. PIL and numpy come with every WebUI;
# heie_client ships inside the extension.
ALLOWED_OUTSIDE_STDLIB = {"PIL", "numpy", "heie_client"}
CLIENT_ALLOWED = {"PIL", "numpy", "heie_client"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_logic_imports_only_the_standard_library() -> None:
    for path in sorted((EXTENSION / "heie_a1111").glob("*.py")):
        outside = {n for n in _imports(path) if n not in sys.stdlib_module_names and n != "heie_a1111"}
        assert outside <= ALLOWED_OUTSIDE_STDLIB, f"{path.name} imports {outside}"
    client = EXTENSION / "heie_client"
    assert client.is_symlink() and (client / "client.py").is_file(), "the in-tree link to plugins/python's package"
    assert _imports(EXTENSION / "scripts" / "heie.py") - sys.stdlib_module_names == {"gradio", "modules", "heie_a1111"}


def test_nothing_is_installed_into_the_webui() -> None:
    # The WebUI runs install.py and reads requirements files of an extension at start; none must exist.
    for name in ("install.py", "requirements.txt", "preload.py"):
        assert not (EXTENSION / name).exists(), name


def test_export_has_the_install_from_url_layout(tmp_path: Path) -> None:
    files = export_repo.export(tmp_path / "heie-a1111")
    names = {str(f) for f in files}
    assert "scripts/heie.py" in names and "heie_a1111/__init__.py" in names and "README.md" in names
    assert "javascript/heie.js" in names and "style.css" in names, "the verdict panel's script and style (the WebUI loads both)"
    assert {p.parts[0] for p in files} <= {"scripts", "javascript", "heie_a1111", "heie_client", "style.css", "README.md", "LICENSE"}
    assert not any("__pycache__" in p.parts or p.parts[0] in ("tests", "tools") for p in files)
    for name in ("heie_a1111/hooks.py", "scripts/heie.py", "heie_client/client.py", "heie_client/http_transport/sse.py"):
        assert (tmp_path / "heie-a1111" / name).read_bytes() == (EXTENSION / name).read_bytes()
    # The package's source is copied, not linked, and without the gRPC transport (protobuf >= 7).
    assert not (tmp_path / "heie-a1111" / "heie_client").is_symlink()
    assert not any(p.parts[0] == "heie_client" and p.parts[1] in ("_generated", "grpc_transport") for p in files)
    for path in sorted((tmp_path / "heie-a1111" / "heie_client").rglob("*.py")):
        outside = {n for n in _imports(path) if n not in sys.stdlib_module_names}
        assert outside <= CLIENT_ALLOWED, f"{path} imports {outside}"


def test_the_export_runs_without_protobuf_or_grpc(tmp_path: Path) -> None:
    """The WebUI pins protobuf 3.20: the exported extension imports and builds its client with protobuf and
    grpcio unimportable, and nothing of them is loaded."""
    root = tmp_path / "heie-a1111"
    export_repo.export(root)
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('grpc', 'google', 'grpc_health'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "import heie_a1111, heie_client\n"
        f"assert heie_client.__file__.startswith({str(root)!r}), heie_client.__file__\n"
        "from heie_a1111.hooks import default_client\n"
        "from heie_a1111.settings import Settings\n"
        "client = default_client(Settings(address='127.0.0.1:8080'))\n"
        "assert client.transport == 'http' and client.addresses == ['http://127.0.0.1:8080']\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_export_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not empty"):
        export_repo.export(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_exported_repository_clones_like_install_from_url(tmp_path: Path) -> None:
    source = tmp_path / "export"
    export_repo.export(source, commit=True)

    def commits() -> list[str]:
        return subprocess.run(["git", "log", "--format=%H"], cwd=source, capture_output=True, text=True, check=True).stdout.split()

    first = commits()
    export_repo.export(source, commit=True)  # nothing changed: no commit (the WebUI would report "new commits")
    assert commits() == first and len(first) == 1
    (source / "scripts" / "stale.py").write_text("")  # an earlier export's file the extension no longer has
    subprocess.run(["git", "add", "-A"], cwd=source, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "older"], cwd=source, check=True)
    export_repo.export(source, commit=True)  # a changed tree: replaced files, history kept, one commit more
    assert not (source / "scripts" / "stale.py").exists() and len(commits()) == 3
    status = subprocess.run(["git", "status", "--porcelain"], cwd=source, capture_output=True, text=True, check=True).stdout
    assert status == ""
    # modules/ui_extensions.py install_extension_from_url clones the URL (git.Repo.clone_from) into
    # extensions/NAME and the WebUI then loads NAME/scripts/*.py.
    target = tmp_path / "extensions" / "heie-a1111"
    subprocess.run(["git", "clone", "-q", source.as_uri(), str(target)], check=True)
    assert (target / "scripts" / "heie.py").is_file() and (target / "heie_a1111" / "hooks.py").is_file()
