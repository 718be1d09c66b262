"""The example workflows: what ComfyUI's Templates browser needs (UI format, a same-named .jpg beside
each file in example_workflows/), and the same graph as the API-format copy that scripts queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heie_nodes import NODE_CLASS_MAPPINGS

PACK = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((PACK / "example_workflows").glob("*.json"))


def test_every_example_has_an_api_twin_and_the_other_way_round() -> None:
    assert [p.name for p in EXAMPLES] == sorted(p.name for p in (PACK / "api_workflows").glob("*.json"))
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_a_ui_workflow_with_a_thumbnail(path: Path) -> None:
    workflow = json.loads(path.read_text())
    # The editor refuses a file without "version" ("Workflow does not contain a valid version").
    assert isinstance(workflow["version"], (int, float)) and workflow["nodes"] and workflow["links"]
    thumbnail = path.with_suffix(".jpg")  # the frontend asks for <name>.jpg beside <name>.json
    assert thumbnail.read_bytes()[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_the_same_graph_as_its_api_twin(path: Path) -> None:
    ui = json.loads(path.read_text())
    api = json.loads((PACK / "api_workflows" / path.name).read_text())
    assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
    ui_links = {(str(l[1]), l[2], str(l[3])) for l in ui["links"]}
    api_links = {(v[0], v[1], node) for node, spec in api.items() for v in spec["inputs"].values() if isinstance(v, list)}
    assert ui_links == api_links
    for node in ui["nodes"]:
        if node["type"] in NODE_CLASS_MAPPINGS:  # every HEIE widget value is the API file's
            values = node["widgets_values"]
            inputs = api[str(node["id"])]["inputs"]
            widgets = [v for v in inputs.values() if not isinstance(v, list)]
            assert sorted(map(_plain, values)) == sorted(map(_plain, widgets)), node["type"]


def _plain(value: object) -> str:
    """300 and 300.0 are the same widget value (the editor saves whole floats as integers)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
