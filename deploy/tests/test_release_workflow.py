"""The release workflow (.github/workflows/release.yml), checked offline: it is a valid GitHub Actions
workflow (the schema check-jsonschema ships), it builds a wheel and a plain binary for every platform the
README promises, the container images from the Dockerfiles that exist, and its Linux CPU job builds with
the script test_wheel.py runs for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_workflow_is_valid_against_the_github_workflow_schema():
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True, text=True, timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_platform_gets_a_wheel_and_a_binary():
    text = WORKFLOW.read_text()
    jobs = _workflow()["jobs"]
    arches = {entry["arch"] for entry in jobs["wheels-linux"]["strategy"]["matrix"]["include"]}
    assert arches == {"x86_64", "aarch64"}
    assert "--features metal" in str(jobs["wheels-macos"]["steps"]) and "macos-14" in jobs["wheels-macos"]["runs-on"]
    assert jobs["wheels-windows"]["runs-on"].startswith("windows")
    assert "--features cuda" in str(jobs["wheels-cuda"]["steps"])
    for archive in ["heie-linux-", "heie-macos-arm64", "heie-windows-x86_64", "heie-linux-x86_64-cuda"]:
        assert archive in text, archive
    # Every job that builds a wheel builds deploy/wheel's pyproject (one packaging, no second build).
    for name in ["wheels-linux", "wheels-macos", "wheels-windows", "wheels-cuda"]:
        assert "deploy/wheel" in str(jobs[name]["steps"]), name


def test_the_images_are_built_from_the_dockerfiles_in_the_tree():
    matrix = _workflow()["jobs"]["containers"]["strategy"]["matrix"]["include"]
    for entry in matrix:
        assert (ROOT / entry["dockerfile"]).is_file(), entry
    assert {entry["variant"] for entry in matrix} == {"cpu", "cuda"}


def test_publishing_waits_for_every_build_and_runs_only_on_a_tag():
    jobs = _workflow()["jobs"]
    publish = jobs["publish"]
    assert set(publish["needs"]) == set(jobs) - {"publish"}
    assert "refs/tags/" in publish["if"]
