"""The committed stubs must be exactly what scripts/gen_stubs.py makes from proto/ now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "scripts" / "gen_stubs.py"
COMMITTED = HERE.parent / "src" / "heie_client" / "_generated"


def _load_generator():
    spec = importlib.util.spec_from_file_location("heie_gen_stubs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the [test] extra) regenerates the stubs")
    _load_generator().generate(tmp_path)
    fresh = _tree(tmp_path / "heie_client" / "_generated")
    committed = _tree(COMMITTED)
    assert sorted(fresh) == sorted(committed), "generated file set changed: run scripts/gen_stubs.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}: run `python plugins/python/scripts/gen_stubs.py` and commit"


def test_a_changed_proto_is_detected(tmp_path: Path) -> None:
    """The comparison above really notices a contract change."""
    pytest.importorskip("grpc_tools")
    proto_root = tmp_path / "proto"
    source = HERE.parents[2] / "proto" / "heie" / "v1" / "evaluator.proto"
    target = proto_root / "heie" / "v1" / "evaluator.proto"
    target.parent.mkdir(parents=True)
    target.write_text(source.read_text().replace("message GetInfoRequest {}", "message GetInfoRequest { bool verbose = 1; }"))
    _load_generator().generate(tmp_path / "out", proto_root)
    fresh = (tmp_path / "out" / "heie_client" / "_generated" / "heie" / "v1" / "evaluator_pb2.py").read_bytes()
    assert fresh != (COMMITTED / "heie" / "v1" / "evaluator_pb2.py").read_bytes()
