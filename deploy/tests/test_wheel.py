"""The heie-server wheel (deploy/wheel): built with the same script as the release workflow's Linux job,
it carries a manylinux tag auditwheel agrees with, and once pip-installed into a fresh venv puts a
working ``heie`` on that venv's PATH — ``heie --version`` and ``heie eval`` on the fixture run from there,
with no Rust toolchain involved.

The build uses the dev profile (CI has just built the debug binary; a release build takes 10–15 minutes
on CI's machine); the release workflow builds the same pyproject with ``--release``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [str(ROOT / "deploy" / "wheel" / "build.sh"), str(out), "--profile", "dev"],
        capture_output=True, text=True, timeout=1800,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    path = Path(built.stdout.strip().splitlines()[-1])
    assert path.is_file(), built.stdout
    # build.sh printed auditwheel's verdict on stderr: the tag it names must be the wheel's own.
    verdict = re.search(r'platform tag to "(manylinux_\d+_\d+_x86_64)"', " ".join(built.stderr.split()))
    assert verdict, built.stderr[-3000:]
    assert path.name.endswith(f"-py3-none-{verdict.group(1)}.whl"), (path.name, verdict.group(1))
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel installed (from the file; no index)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return env_dir


def test_the_wheel_carries_the_binary_and_the_projects_metadata(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert f"heie_server-{version}.data/scripts/heie" in names, names
    metadata = zipfile.ZipFile(wheel).read(f"heie_server-{version}.dist-info/METADATA").decode()
    assert "Name: heie-server" in metadata and f"Version: {version}" in metadata


def test_heie_runs_from_the_venv_path_it_was_installed_into(installed: Path, tmp_path: Path):
    # Only the venv's bin on PATH: the heie that answers is the wheel's, not a cargo build's.
    env = {**os.environ, "PATH": f"{installed / 'bin'}:/usr/bin:/bin"}
    env.pop("HEIE_BIN", None)
    version = subprocess.run(["heie", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("heie "), version.stdout

    evaluated = subprocess.run(
        ["heie", "eval", str(FIXTURES / "images" / "example.png"),
         "--model", str(FIXTURES / "models" / "tiny-llm.gguf"),
         "--mmproj", str(FIXTURES / "models" / "tiny-mmproj.gguf"),
         "--threads", "1", "--max-tokens", "16", "--json", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert 0.0 <= report["score"] <= 1.0, report
    assert (tmp_path / "example.json").is_file()
