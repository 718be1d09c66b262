"""The HEIE nodes called the way ComfyUI calls them, against a real server, with stand-ins for the
host modules ComfyUI would provide (comfy.model_management, comfy.utils, server, comfy_execution): CI has
no torch, so ComfyUI itself cannot run here; torch tensors are torch_standin.py's there (real torch where it is
installed). tools/check_real_comfyui.sh runs the same nodes in a real ComfyUI."""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import json
import socket
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import (  # the plugins' shared server helpers
    SLOW_STEP_MS, HeieServer, _binary, running_serve, serving, step_delay_env,
)
from heie_nodes import HeieEvaluate, HeieFilter, HeieRerank
from heie_nodes.failures import HeieNodeError
from heie_nodes.markers import for_people, separating_decimals, summary_in_words
from heie_nodes.nodes import MAX_TOKENS, NothingPassed

import torch_standin  # tests/torch_standin.py: the nodes' torch path without torch

PACK = Path(__file__).resolve().parents[1]
#: The server's score bands, worst first (server/src/pipeline/score_band.rs).
BANDS = ("badly flawed", "flawed", "typical", "good", "very plausible")
DECODE_STEPS = "heie_decode_steps_total"
NO_TORCH = ("torch is not installed; CI does not install it (PyPI's torch for Linux pulls the CUDA packages, "
            "gigabytes): the same code path runs there through tests/torch_standin.py")


class InterruptProcessingException(Exception):
    """Stand-in for comfy.model_management.InterruptProcessingException."""


class ExecutionBlocker:
    """Stand-in for comfy_execution.graph.ExecutionBlocker (same constructor)."""

    def __init__(self, message: object) -> None:
        self.message = message


@dataclass
class FakeComfy:
    texts: list[tuple[str, str]] = field(default_factory=list)
    progress: list[tuple[int, int]] = field(default_factory=list)
    interrupt_on_text: bool = False
    interrupted: bool = False

    def send_progress_text(self, text: str, node_id: str) -> None:
        self.texts.append((text, node_id))
        if self.interrupt_on_text and text:
            self.interrupted = True


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeComfy]:
    fake = FakeComfy()
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException  # type: ignore[attr-defined]
    mm.processing_interrupted = lambda: fake.interrupted  # type: ignore[attr-defined]

    def throw() -> None:
        if fake.interrupted:  # as ComfyUI: the flag is cleared by the throw
            fake.interrupted = False
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw  # type: ignore[attr-defined]
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total: int) -> None:
            self.total = total

        def update_absolute(self, value: int, total: int) -> None:
            fake.progress.append((value, total))
            throw()  # ComfyUI's progress hook (main.py's hijack_progress) raises the interrupt from here

    utils.ProgressBar = ProgressBar  # type: ignore[attr-defined]
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=fake)  # type: ignore[attr-defined]
    comfy_pkg = types.ModuleType("comfy")
    for name, module in {"comfy": comfy_pkg, "comfy.model_management": mm, "comfy.utils": utils, "server": server}.items():
        monkeypatch.setitem(sys.modules, name, module)
    yield fake


@pytest.fixture
def blocker(monkeypatch: pytest.MonkeyPatch) -> type[ExecutionBlocker]:
    """ComfyUI's comfy_execution.graph as the nodes see it inside ComfyUI."""
    graph = types.ModuleType("comfy_execution.graph")
    graph.ExecutionBlocker = ExecutionBlocker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy_execution", types.ModuleType("comfy_execution"))
    monkeypatch.setitem(sys.modules, "comfy_execution.graph", graph)
    return ExecutionBlocker


@pytest.fixture
def closed_address() -> Iterator[str]:
    """An address where nothing listens: the port stays bound (never listening) for the whole test, so
    no other server on this machine can take it in the meantime."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"


def _images(batch: int, h: int = 16, w: int = 16) -> np.ndarray:
    rng = np.random.default_rng(batch * 100 + h)
    return rng.random((batch, h, w, 3), dtype=np.float32)


def _latent(batch: int) -> dict[str, Any]:
    samples = np.stack([np.full((4, 2, 2), i, np.float32) for i in range(batch)])
    return {"samples": samples, "batch_index": list(range(batch))}


def _result(out: Any) -> tuple[Any, ...]:
    """The outputs of a node's return value, after checking it has the shape ComfyUI expects."""
    assert isinstance(out, dict) and set(out) == {"ui", "result"}
    assert isinstance(out["ui"]["text"], list) and all(isinstance(t, str) and t for t in out["ui"]["text"])
    return out["result"]


# -- the pack as ComfyUI loads it -------------------------------------------------------------------

def test_pack_loads_the_way_comfyui_loads_it() -> None:
    spec = importlib.util.spec_from_file_location("heie_pack_under_test", PACK / "__init__.py",
                                                  submodule_search_locations=[str(PACK)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert set(module.NODE_CLASS_MAPPINGS) == {"HeieEvaluate", "HeieFilter", "HeieRegions", "HeieRerank"}
    assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(module.NODE_CLASS_MAPPINGS)
    for name, cls in module.NODE_CLASS_MAPPINGS.items():
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_IS_LIST) == len(cls.OUTPUT_TOOLTIPS)
        if name == "HeieRegions":  # judges nothing itself: it reads HEIE Evaluate's verdicts
            continue
        inputs = cls.INPUT_TYPES()
        assert inputs["required"]["images"] == ("IMAGE",)
        assert inputs["required"]["address"][1]["default"] == "auto"  # a local server started on demand
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_IS_LIST) == len(cls.OUTPUT_TOOLTIPS)
        assert callable(getattr(cls, cls.FUNCTION))
        # A default server (--ctx-size 4096) refuses an explained request far below its advertised 2048.
        assert inputs["optional"]["max_tokens"][1]["max"] == MAX_TOKENS == 512
        assert inputs["optional"]["ca_cert"][1]["default"] == ""
        # No widget holds a key: widget values are saved in workflows and in every PNG ComfyUI writes.
        names = [n for group in ("required", "optional") for n in inputs.get(group, {})]
        assert not [n for n in names if "key" in n or "token" in n.replace("max_tokens", "")], names
    threshold = HeieFilter.INPUT_TYPES()["required"]["threshold"][1]
    assert (threshold["min"], threshold["max"]) == (0.0, 1.0)


# -- Evaluate -------------------------------------------------------------------------------------

def test_evaluate_node_with_numpy(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    images = _images(2, 16, 24)
    out = HeieEvaluate().evaluate(images, explanation=True, address=heie_server.address, timeout=120, max_tokens=4,
                                  unique_id="7")
    scores, heatmaps, overlays, explanations, results, prefix, judged = _result(out)
    assert isinstance(scores, list) and len(scores) == 2 and all(isinstance(s, float) and 0 <= s <= 1 for s in scores)
    assert isinstance(heatmaps, np.ndarray) and heatmaps.shape == (2, 16, 24) and heatmaps.dtype == np.float32
    assert isinstance(overlays, np.ndarray) and overlays.shape == (2, 16, 24, 3) and overlays.dtype == np.float32
    assert 0.0 <= overlays.min() and overlays.max() <= 1.0
    assert len(explanations) == 2 and all("### Image Description" in e for e in explanations)
    # Results stay on the node: score and explanation per image, numbered from 1.
    ui = out["ui"]["text"]
    assert len(ui) == 2
    digits = separating_decimals(scores)
    for i, (text, score) in enumerate(zip(ui, scores)):
        assert text.startswith(f"#{i + 1}: score {score:.{digits}f}") and "### Image Description" in text
    # The raw text, markers and all, is in the JSON for code.
    parsed = json.loads(results)
    assert [e["image"] for e in parsed] == [1, 2] and [e["score"] for e in parsed] == pytest.approx(scores)
    assert all(e["error"] is None and "### Image Description" in e["explanation"] for e in parsed)
    # The server writes the [MAP]/[SCORE] markers; people get the heatmap reference and the score.
    assert all("[MAP]" in e["explanation"] and "[SCORE]" in e["explanation"] for e in parsed)
    for text, explanation, score in zip(ui, explanations, scores):
        for shown in (text, explanation):
            assert "[MAP]" not in shown and "[SCORE]" not in shown
            assert "shown in the heatmap" in shown and f"plausibility score for this image is {score:.{digits}f}" in shown
    # Live text: never an empty frame, never the same frame twice in a row; the last one is the report.
    frames = [text for text, node in comfy.texts]
    assert frames and all(node == "7" for _, node in comfy.texts) and all(frames)
    assert all(a != b for a, b in zip(frames, frames[1:]))
    assert frames[-1].startswith("#1: score ") and "#2: score " in frames[-1]
    assert comfy.progress[-1] == (2, 2)


def test_evaluate_node_with_torch(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    images = torch.from_numpy(_images(1, 16, 16))
    scores, heatmaps, overlays, _, _, _, _ = _result(HeieEvaluate().evaluate(
        images, explanation=False, address=heie_server.address, timeout=120, max_tokens=2))
    assert isinstance(heatmaps, torch.Tensor) and tuple(heatmaps.shape) == (1, 16, 16)
    assert isinstance(overlays, torch.Tensor) and tuple(overlays.shape) == (1, 16, 16, 3)
    assert len(scores) == 1


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """tests/torch_standin.py as ``torch``: the nodes' torch path (tensors.py) runs without torch installed."""
    module = torch_standin.module()
    monkeypatch.setitem(sys.modules, "torch", module)
    return module


def test_evaluate_node_takes_and_gives_torch_tensors(heie_server: HeieServer, comfy: FakeComfy,
                                                     fake_torch: types.ModuleType, closed_address: str) -> None:
    """A tensor on a GPU that requires grad (the strictest input) is read through detach().cpu(); the heatmaps and
    overlays come back as tensors, also for an empty batch."""
    images = torch_standin.on(_images(2), "cuda:0", requires_grad=True)
    scores, heatmaps, overlays, _, _, _, _ = _result(HeieEvaluate().evaluate(
        images, explanation=False, address=heie_server.address, timeout=120, max_tokens=2))
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert isinstance(heatmaps, fake_torch.Tensor) and heatmaps.shape == (2, 16, 16)  # type: ignore[attr-defined]
    assert isinstance(overlays, fake_torch.Tensor) and overlays.shape == (2, 16, 16, 3)  # type: ignore[attr-defined]
    assert 0.0 <= float(torch_standin.data_of(overlays).min()) and float(torch_standin.data_of(overlays).max()) <= 1.0
    empty = torch_standin.on(_images(1)[:0], "cuda:0")
    _, heatmaps, overlays, _, _, _, _ = _result(HeieEvaluate().evaluate(empty, explanation=False, address=closed_address, timeout=5))
    assert isinstance(heatmaps, fake_torch.Tensor) and heatmaps.shape == (0, 16, 16)  # type: ignore[attr-defined]
    assert isinstance(overlays, fake_torch.Tensor) and overlays.shape == (0, 16, 16, 3)  # type: ignore[attr-defined]


def test_filter_and_rerank_pick_rows_of_torch_tensors(heie_server: HeieServer, comfy: FakeComfy,
                                                      fake_torch: types.ModuleType) -> None:
    """Filter and Rerank select rows of IMAGE, LATENT and MASK tensors on their own device, an empty selection
    (nothing rejected) and a reordering (best first) too."""
    pixels = _images(3)
    images = torch_standin.on(pixels, "cuda:0")
    latent = {"samples": torch_standin.on(_latent(3)["samples"], "cuda:0"), "batch_index": [0, 1, 2]}
    mask = torch_standin.on(np.stack([np.full((16, 16), i, np.float32) for i in range(3)]), "cuda:0")
    passed, rejected, _, passed_latent, passed_mask = _result(HeieFilter().filter(
        images, threshold=0.0, stop_if_none_pass=False, explanation=False, address=heie_server.address, timeout=120,
        latent=latent, mask=mask, max_tokens=2))
    for tensor in (passed, rejected, passed_latent["samples"], passed_mask):
        assert isinstance(tensor, fake_torch.Tensor) and tensor.device == "cuda:0"  # type: ignore[attr-defined]
    np.testing.assert_array_equal(torch_standin.data_of(passed), pixels)
    assert rejected.shape == (0, 16, 16, 3)
    assert [float(s[0, 0, 0]) for s in torch_standin.data_of(passed_latent["samples"])] == [0, 1, 2]
    assert [float(m[0, 0]) for m in torch_standin.data_of(passed_mask)] == [0, 1, 2]
    best, best_latent, scores, order, _ = _result(HeieRerank().rerank(
        images, top_k=2, fast=True, address=heie_server.address, timeout=120, latent=latent, max_tokens=2))
    index = list(order)  # 0-based, as ComfyUI's batch_index
    assert len(index) == 2 and scores == sorted(scores, reverse=True)
    for tensor in (best, best_latent["samples"]):
        assert isinstance(tensor, fake_torch.Tensor) and tensor.device == "cuda:0"  # type: ignore[attr-defined]
    np.testing.assert_array_equal(torch_standin.data_of(best), pixels[index])
    assert [float(s[0, 0, 0]) for s in torch_standin.data_of(best_latent["samples"])] == index


def _read_png(path: Path) -> np.ndarray:
    """The pixels of a PNG written by preview.py (8-bit RGB, filter 0 on every row), read back by hand."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        size = struct.unpack(">I", data[at:at + 4])[0]
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + size]
        assert struct.unpack(">I", data[at + 8 + size:at + 12 + size])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + size
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, 3)


def test_evaluate_is_an_output_node_showing_its_overlays(heie_server, comfy: FakeComfy,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alone on an image Evaluate runs (an output node) and shows what Preview Image would: the overlays, as
    files in ComfyUI's temp folder named in ``ui.images``; the ui text has the score and the server's summary."""
    assert HeieEvaluate.OUTPUT_NODE is True
    assert not getattr(HeieFilter, "OUTPUT_NODE", False) and not getattr(HeieRerank, "OUTPUT_NODE", False)
    paths = types.ModuleType("folder_paths")
    paths.get_temp_directory = lambda: str(tmp_path / "temp")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "folder_paths", paths)
    images = _images(2, 16, 24)
    out = HeieEvaluate().evaluate(images, explanation=False, address=heie_server.address, timeout=120, max_tokens=4,
                                  unique_id="12")
    scores, _, overlays, _, results, _, _ = _result(out)
    previews = out["ui"]["images"]
    assert [p["type"] for p in previews] == ["temp", "temp"] and all(p["subfolder"] == "" for p in previews)
    assert len({p["filename"] for p in previews}) == 2
    for preview, overlay in zip(previews, overlays):
        pixels = _read_png(tmp_path / "temp" / preview["filename"])
        np.testing.assert_array_equal(pixels, np.rint(overlay * 255).astype(np.uint8))
    assert not list((tmp_path / "temp").glob("*.part"))
    # A second run writes files of its own: the first run's previews (in the history) stay what they were.
    again = HeieEvaluate().evaluate(images, explanation=False, address=heie_server.address, timeout=120,
                                    max_tokens=4, unique_id="12")
    assert not {p["filename"] for p in again["ui"]["images"]} & {p["filename"] for p in previews}
    summaries = [e["summary"] for e in json.loads(results)]
    bands = [e["band"] for e in json.loads(results)]
    digits = separating_decimals(scores)
    for i, (text, score, summary, band) in enumerate(zip(out["ui"]["text"], scores, summaries, bands)):
        head, second = text.split("\n")[:2]
        # Every score shown has its band beside it (the server names one for every score).
        assert band in BANDS and head == f"#{i + 1}: score {score:.{digits}f} \u2014 {band} (zero-shot)"
        assert summary.startswith("score ") and second == summary_in_words(" ".join(for_people(summary, score).split()), band)
        assert f"\u2014 {band}" in second
        assert "Image Description" not in text  # fast mode: the heading of the empty section is dropped
    # The node's text starts with every score line.
    assert comfy.texts[-1][0].split("\n")[:2] == [t.split("\n")[0] for t in out["ui"]["text"]]


def test_evaluate_outside_comfyui_writes_no_preview(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    out = HeieEvaluate().evaluate(_images(1), explanation=False, address=heie_server.address, timeout=120,
                                  max_tokens=2)
    assert "images" not in out["ui"]


def test_filter_shows_the_digits_that_decided(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    """A score just under the threshold is not shown as equal to it."""
    images = _images(1)
    args = dict(stop_if_none_pass=False, explanation=False, address=heie_server.address, timeout=120, max_tokens=2)
    _, _, (score,), _, _ = _result(HeieFilter().filter(images, threshold=0.0, **args))
    threshold = score + 0.00004
    out = HeieFilter().filter(images, threshold=threshold, **args)
    text = out["ui"]["text"][0]
    assert text.startswith("#1 (rejected, score under ")
    shown = text.split("): score ", 1)[1].split(" ", 1)[0]
    assert float(shown) < float(f"{threshold:.{len(shown) - 2}f}"), (shown, threshold)


def test_evaluate_empty_batch_contacts_no_server(closed_address: str, comfy: FakeComfy) -> None:
    empty = _images(2)[:0]
    out = HeieEvaluate().evaluate(empty, explanation=True, address=closed_address, timeout=5)
    scores, heatmaps, overlays, explanations, results, prefix, judged = _result(out)
    assert scores == [] and explanations == [] and json.loads(results) == []
    assert heatmaps.shape == (0, 16, 16) and overlays.shape == (0, 16, 16, 3)
    assert "empty batch" in out["ui"]["text"][0]
    assert prefix == "heie_no-score" and judged.verdicts == () and judged.images is empty


def test_evaluate_empty_batch_blocks_its_outputs_in_comfyui(closed_address: str, comfy: FakeComfy,
                                                            blocker: type) -> None:
    outputs = _result(HeieEvaluate().evaluate(_images(1)[:0], explanation=False, address=closed_address, timeout=5))
    assert len(outputs) == len(HeieEvaluate.RETURN_TYPES) and all(isinstance(o, blocker) for o in outputs)
    assert all(o.message is None for o in outputs)  # None = skip silently, no error shown


# -- Filter ---------------------------------------------------------------------------------------

def test_filter_keeps_latent_and_mask_in_step(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    images, latent = _images(3), _latent(3)
    mask = np.stack([np.full((16, 16), i, np.float32) for i in range(3)])
    common = dict(stop_if_none_pass=False, explanation=False, address=heie_server.address, timeout=120,
                  latent=latent, mask=mask, max_tokens=2)
    passed, rejected, scores, passed_latent, passed_mask = _result(HeieFilter().filter(images, threshold=0.0, **common))
    assert passed.shape == (3, 16, 16, 3) and rejected.shape == (0, 16, 16, 3) and len(scores) == 3
    threshold = (max(scores) + min(scores)) / 2 if max(scores) > min(scores) else max(scores)
    out = HeieFilter().filter(images, threshold=threshold, **common)
    passed, rejected, scores2, passed_latent, passed_mask = _result(out)
    assert scores2 == pytest.approx(scores, abs=1e-5)
    keep = [i for i, s in enumerate(scores2) if s >= threshold]
    drop = [i for i, s in enumerate(scores2) if s < threshold]
    assert len(keep) >= 1
    np.testing.assert_array_equal(passed, images[keep])
    np.testing.assert_array_equal(rejected, images[drop])
    assert [float(s[0, 0, 0]) for s in passed_latent["samples"]] == keep
    assert passed_latent["batch_index"] == keep
    assert [float(m[0, 0]) for m in passed_mask] == keep
    under = f"score under {threshold:.{separating_decimals([*scores2, threshold])}f}"  # why each is rejected
    notes = ["(passed)" if i in keep else f"(rejected, {under})" for i in range(3)]
    assert [t.split(":", 1)[0] for t in out["ui"]["text"]] == [f"#{i + 1} {n}" for i, n in enumerate(notes)]


def test_filter_all_pass_blocks_rejected(heie_server, comfy: FakeComfy, blocker: type) -> None:  # type: ignore[no-untyped-def]
    images = _images(2)
    passed, rejected, scores, passed_latent, _ = _result(HeieFilter().filter(
        images, threshold=0.0, stop_if_none_pass=True, explanation=False, address=heie_server.address, timeout=120,
        latent=_latent(2), max_tokens=2))
    np.testing.assert_array_equal(passed, images)
    assert isinstance(rejected, blocker) and rejected.message is None  # Save Image on it is skipped, not crashed
    assert len(scores) == 2 and passed_latent["samples"].shape[0] == 2


def test_filter_none_pass_without_stop_blocks_only_passed(heie_server, comfy: FakeComfy, blocker: type) -> None:  # type: ignore[no-untyped-def]
    images = _images(2)
    passed, rejected, scores, passed_latent, passed_mask = _result(HeieFilter().filter(
        images, threshold=1.0, stop_if_none_pass=False, explanation=False, address=heie_server.address, timeout=120,
        latent=_latent(2), mask=np.ones((2, 16, 16), np.float32), max_tokens=2))
    assert all(isinstance(o, blocker) for o in (passed, passed_latent, passed_mask))
    np.testing.assert_array_equal(rejected, images)
    assert len(scores) == 2 and all(s < 1.0 for s in scores)


def test_filter_none_pass_outside_comfyui_gives_empty_batches(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    passed, rejected, _, passed_latent, _ = _result(HeieFilter().filter(
        _images(2), threshold=1.0, stop_if_none_pass=False, explanation=False, address=heie_server.address,
        timeout=120, latent=_latent(2), max_tokens=2))
    assert passed.shape == (0, 16, 16, 3) and rejected.shape == (2, 16, 16, 3)
    assert passed_latent["samples"].shape == (0, 4, 2, 2)


def test_filter_never_passes_an_image_without_a_score(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    """Threshold 0 passes every scored image, but an image whose timeout ran out has no score: rejected."""
    images = _images(2)
    out = HeieFilter().filter(images, threshold=0.0, stop_if_none_pass=False, explanation=True,
                              address=heie_server.address, timeout=0.001, max_tokens=64, latent=_latent(2))
    passed, rejected, scores, passed_latent, _ = _result(out)
    assert scores == [0.0, 0.0]
    assert passed.shape == (0, 16, 16, 3) and passed_latent["samples"].shape[0] == 0
    np.testing.assert_array_equal(rejected, images)
    assert [t.split(":", 1)[0] for t in out["ui"]["text"]] == ["#1 (rejected)", "#2 (rejected)"], out["ui"]["text"]
    with pytest.raises(NothingPassed):
        HeieFilter().filter(images, threshold=0.0, stop_if_none_pass=True, explanation=True,
                            address=heie_server.address, timeout=0.001, max_tokens=64)


def test_filter_stops_the_workflow_when_nothing_passes(heie_server, comfy: FakeComfy, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    images = _images(2)
    args = dict(threshold=1.0, stop_if_none_pass=True, explanation=False, address=heie_server.address, timeout=120, max_tokens=2)
    with pytest.raises(NothingPassed):  # no ComfyUI executor: a clear error
        HeieFilter().filter(images, **args)
    graph = types.ModuleType("comfy_execution.graph")
    graph.ExecutionBlocker = ExecutionBlocker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy_execution", types.ModuleType("comfy_execution"))
    monkeypatch.setitem(sys.modules, "comfy_execution.graph", graph)
    out = HeieFilter().filter(images, **args)
    assert all(isinstance(o, ExecutionBlocker) for o in _result(out))  # every branch of the Filter is skipped
    texts = out["ui"]["text"]
    assert len(texts) == 2 and all(t.startswith(f"#{i + 1} (rejected, score under 1.000") for i, t in enumerate(texts))


# -- Rerank ---------------------------------------------------------------------------------------

def test_rerank_returns_the_best_k_in_order(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    images, latent = _images(4), _latent(4)
    out = HeieRerank().rerank(images, top_k=2, fast=True, address=heie_server.address, timeout=120, latent=latent,
                              max_tokens=2)
    best, best_latent, scores, order, _ = _result(out)
    assert best.shape == (2, 16, 16, 3) and len(scores) == 2 and len(order) == 2
    assert scores == sorted(scores, reverse=True) and all(isinstance(i, int) for i in order)
    # order is 0-based, as ComfyUI's batch_index inputs (Image From Batch …); the text numbers from 1.
    assert all(0 <= n < 4 for n in order)
    index = list(order)  # 0-based, as ComfyUI's batch_index
    np.testing.assert_array_equal(best, images[index])
    assert [float(s[0, 0, 0]) for s in best_latent["samples"]] == index
    texts = out["ui"]["text"]
    shown = [t.split(": score ", 1)[1].split(" ", 1)[0] for t in texts]
    for rank, n in enumerate(order, start=1):
        digits = len(shown[n]) - 2
        assert digits >= separating_decimals(scores)
        assert texts[n].startswith(f"#{n + 1} (rank {rank}, batch_index {n}): score {scores[rank - 1]:.{digits}f}")
    assert sum("not kept" in t for t in texts) == 2
    # Shown with the digits that decided: every kept score reads higher than every score not kept.
    kept = [float(shown[n]) for n in order]
    dropped = [float(v) for i, v in enumerate(shown) if i not in order]
    assert min(kept) >= max(dropped), shown  # equal only for a true tie (broken by input order)


# -- deadlines, errors, cancel --------------------------------------------------------------------

def test_an_image_past_its_deadline_loses_only_its_own_verdict(slow_server: HeieServer, comfy: FakeComfy) -> None:
    # On the slow server an image's evaluation lasts dozens of decode steps of SLOW_STEP_MS or more: past 0.3 s.
    out = HeieEvaluate().evaluate(_images(2), explanation=True, address=slow_server.address, timeout=0.3,
                                  max_tokens=64, unique_id="5")
    scores, heatmaps, _, explanations, results, _, _ = _result(out)
    assert scores == [0.0, 0.0] and heatmaps.shape == (2, 16, 16)
    assert all("no verdict within the node's timeout of 0.3 s" in e["error"] for e in json.loads(results))
    assert all(t.startswith(f"#{i + 1}: no score: no verdict within") for i, t in enumerate(out["ui"]["text"]))
    assert all(e.startswith("no score: ") for e in explanations)


def test_no_server_is_a_clear_node_error(closed_address: str, comfy: FakeComfy) -> None:
    with pytest.raises(HeieNodeError) as caught:
        HeieFilter().filter(_images(1), threshold=0.5, stop_if_none_pass=True, explanation=False,
                            address=closed_address, timeout=10)
    message = str(caught.value)
    assert closed_address in message and "heie serve" in message, message
    assert "failed to connect" not in message and "UNAVAILABLE" not in message, message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def _admitted(address: str, max_tokens: int) -> bool:
    """Whether the server admits an explained request with ``max_tokens`` per section (its first event
    comes back; the call is then cancelled, so nothing is decoded to the end)."""
    from heie_client import Client, EvaluateOptions, InvalidArgument

    pixels = (_images(1)[0] * 255).astype(np.uint8)
    options = EvaluateOptions(explanation=True, max_tokens_per_section=max_tokens, heatmap_encodings=())
    with Client(address, timeout=60) as client:
        try:
            with client.evaluate_stream(pixels, options) as stream:
                next(iter(stream))
        except InvalidArgument:
            return False
    return True


def test_the_max_tokens_widget_is_what_a_default_server_takes(heie_server) -> None:  # type: ignore[no-untyped-def]
    """The fixture server runs with the default --ctx-size; its images are one tile, so it takes more
    than the widget's top (a 6-tile InternVL3 image leaves room for about 580)."""
    assert _admitted(heie_server.address, MAX_TOKENS)


def test_max_tokens_the_server_cannot_take_is_named_as_the_widget(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    """Past what the server's context takes (it advertises that, not the option's ceiling of 2048): the
    node refuses in the widget's terms, with the most the server takes, which is admitted and one more is not."""
    with pytest.raises(HeieNodeError) as caught:
        HeieEvaluate().evaluate(_images(1), explanation=True, address=heie_server.address, timeout=30,
                                max_tokens=2000)
    message = str(caught.value)
    assert message.startswith(f"HEIE: max_tokens 2000 is more than the server at {heie_server.address} can take")
    assert "max_tokens_per_section" not in message, message
    most = int(message.rsplit("at most ", 1)[1].split(",", 1)[0])
    assert _admitted(heie_server.address, most) and not _admitted(heie_server.address, most + 1), message


def test_max_tokens_past_the_servers_cap_is_refused_before_any_image(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HeieNodeError) as caught:  # a script can pass more than the widget allows
        HeieEvaluate().evaluate(_images(2), explanation=False, address=heie_server.address, timeout=30,
                                max_tokens=2049)
    message = str(caught.value)
    from heie_client import Client

    with Client(heie_server.address) as client:
        cap = client.info().limits.max_tokens_per_section
    assert 0 < cap < 2049
    assert message.startswith("HEIE: max_tokens 2049 is more than the server") and f"at most {cap}," in message, message
    assert "max_tokens_per_section" not in message, message


def test_interrupt_mid_stream_cancels_the_call(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    cancelled_before = heie_server.metric('heie_sequences_total{outcome="cancelled"}')
    comfy.interrupt_on_text = True
    started = time.monotonic()
    with pytest.raises(InterruptProcessingException):
        HeieEvaluate().evaluate(_images(1), explanation=True, address=heie_server.address, timeout=300,
                                max_tokens=400, unique_id="3")
    assert time.monotonic() - started < 60
    deadline = time.monotonic() + 20
    while heie_server.metric('heie_sequences_total{outcome="cancelled"}') <= cancelled_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert heie_server.metric('heie_sequences_total{outcome="cancelled"}') > cancelled_before


def _evaluate_calls(server) -> float:  # type: ignore[no-untyped-def]
    """Evaluate calls the server has finished, whatever their status."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in server.metrics().splitlines()
               if line.startswith('heie_requests_total{method="Evaluate"'))


def test_after_cancel_no_image_is_sent_and_the_text_says_cancelled(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    """8 images on a 4-slot server: 4 calls run at once; Cancel comes with the first text, so the other
    4 images are never sent, and the node's last text ends with a line saying the run was cancelled."""
    calls_before = _evaluate_calls(heie_server)
    comfy.interrupt_on_text = True
    with pytest.raises(InterruptProcessingException):
        HeieEvaluate().evaluate(_images(8), explanation=True, address=heie_server.address, timeout=300,
                                max_tokens=400, unique_id="4")
    deadline = time.monotonic() + 10  # the server counts a call once it has ended
    while _evaluate_calls(heie_server) - calls_before < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    assert _evaluate_calls(heie_server) - calls_before == 4
    last = comfy.texts[-1][0].splitlines()
    assert last[-1] == "cancelled: 0 of 8 images judged", last
    assert [line.split(":", 1)[0] for line in last[:-1]] == [f"#{i}" for i in range(1, 9)], last
    assert all(line.endswith("cancelled before it was sent") for line in last[4:8]), last


def test_live_text_is_escaped_for_the_page(comfy: FakeComfy) -> None:
    """ComfyUI's frontend inserts progress text as HTML; model output must arrive as text."""
    from heie_nodes.host import ComfyHost

    host = ComfyHost("9")
    host.text('<img src=x onerror="alert(1)"> & more')
    host.text('<img src=x onerror="alert(1)"> & more')  # the same frame again: not sent
    host.text("")  # an empty frame would blank the node: not sent
    assert comfy.texts == [('&lt;img src=x onerror="alert(1)"&gt; &amp; more', "9")]


# -- a server with TLS, an API key and one slot ---------------------------------------------------

KEY = "comfy-test-key"


@pytest.fixture(scope="module")
def ca_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem and server.pem/.key (127.0.0.1) signed by it."""
    folder = tmp_path_factory.mktemp("comfy-pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, key, public_key, ca: bool, sans=()):  # type: ignore[no-untyped-def]
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "comfy test CA")]))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    (folder / "ca.pem").write_bytes(certificate("comfy test CA", ca_key, ca_key.public_key(), True))
    other_key = ec.generate_private_key(ec.SECP256R1())  # same name, another key: signed nothing here
    (folder / "other-ca.pem").write_bytes(certificate("comfy test CA", other_key, other_key.public_key(), True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    (folder / "server.pem").write_bytes(certificate(
        "localhost", ca_key, server_key.public_key(), False, (x509.IPAddress(ipaddress.ip_address("127.0.0.1")),)))
    (folder / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem"


@pytest.fixture(scope="module")
def secure_server(ca_cert: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real server: TLS and an API key."""
    pki = ca_cert.parent
    args = ["--addr", "127.0.0.1:0", "--max-tokens", "4", "--max-tiles", "1", "--parallel", "1", "--threads", "1",
            "--shutdown-grace", "1", "--api-key", KEY, "--tls-cert", str(pki / "server.pem"),
            "--tls-key", str(pki / "server.key")]
    with running_serve(args, tmp_path_factory.mktemp("comfy-secure") / "serve.log") as address:
        yield address


def test_api_key_is_read_from_the_environment(secure_server: str, ca_cert: Path, comfy: FakeComfy,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEIE_API_KEY", raising=False)
    with pytest.raises(HeieNodeError) as caught:
        HeieRerank().rerank(_images(1), top_k=1, fast=True, address=secure_server, timeout=30, ca_cert=str(ca_cert))
    assert "HEIE_API_KEY" in str(caught.value) and secure_server in str(caught.value)
    monkeypatch.setenv("HEIE_API_KEY", KEY)
    _, _, scores, order, _ = _result(HeieRerank().rerank(_images(1), top_k=1, fast=True, address=secure_server,
                                                      timeout=60, ca_cert=str(ca_cert)))
    assert order == [0] and len(scores) == 1


def test_ca_cert_makes_the_node_speak_tls(secure_server: str, ca_cert: Path, comfy: FakeComfy,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEIE_API_KEY", KEY)
    with pytest.raises(HeieNodeError) as caught:  # plaintext to a TLS server: no answer
        HeieRerank().rerank(_images(1), top_k=1, fast=True, address=secure_server, timeout=30)
    assert secure_server in str(caught.value)
    with pytest.raises(HeieNodeError) as caught:
        HeieRerank().rerank(_images(1), top_k=1, fast=True, address=secure_server, timeout=30,
                            ca_cert=str(ca_cert.parent / "missing.pem"))
    assert "ca_cert" in str(caught.value) and "missing.pem" in str(caught.value)


def test_a_tls_failure_says_what_failed(secure_server: str, heie_server, ca_cert: Path, comfy: FakeComfy,  # type: ignore[no-untyped-def]
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """gRPC reports all three as UNAVAILABLE, like a port where nothing listens; the node tells them apart."""
    monkeypatch.delenv("HEIE_API_KEY", raising=False)

    def failure(address: str, ca: str = "") -> str:
        with pytest.raises(HeieNodeError) as caught:
            HeieRerank().rerank(_images(1), top_k=1, fast=True, address=address, timeout=30, ca_cert=ca)
        message = str(caught.value)
        assert address in message and "heie serve`" not in message and "no server answers" not in message, message
        return message

    message = failure(secure_server)  # no ca_cert against a TLS server
    assert "speaks TLS" in message and "ca_cert" in message, message
    wrong_ca = str(ca_cert.parent / "other-ca.pem")
    message = failure(secure_server, wrong_ca)
    assert "not trusted" in message and wrong_ca in message, message
    message = failure(heie_server.address, str(ca_cert))  # ca_cert against a plaintext server
    assert "speaks plaintext" in message and "ca_cert" in message, message


@pytest.fixture(scope="module")
def one_slot_slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeieServer]:
    """One parallel slot (the images of a batch are judged one after the other) and every decode step at least
    ``SLOW_STEP_MS`` longer (the server's test-only hook), so an image's time is set by its decode steps."""
    log = tmp_path_factory.mktemp("comfy-one-slot") / "serve.log"
    args = ["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--max-tokens", "4", "--max-tiles", "1",
            "--parallel", "1", "--threads", "1", "--shutdown-grace", "1"]
    with serving(args, log, step_delay_env(_binary(), SLOW_STEP_MS)) as served:
        yield HeieServer(served.address, served.metrics_url, log)


def test_timeout_is_per_image(one_slot_slow_server: HeieServer, comfy: FakeComfy) -> None:
    """The deadline is each image's, not the batch's. One image takes S decode steps, each at least SLOW_STEP_MS:
    with a timeout of three times that, every image of a batch of 6 (the same picture, so the same S, judged one
    after the other) is scored, although the batch lasts at least 6·S steps, twice the timeout — a deadline for the
    whole batch would cut it. Both bounds come from the server's step counter and its step delay, not from timing
    this machine."""
    server = one_slot_slow_server
    node = HeieEvaluate()
    image = _images(1)
    args = dict(explanation=False, address=server.address, max_tokens=2)
    _result(node.evaluate(image, timeout=0, **args))  # the first call also computes the cached system prompt
    before = server.metric(DECODE_STEPS)
    _result(node.evaluate(image, timeout=0, **args))
    steps = server.metric(DECODE_STEPS) - before
    timeout = 3 * steps * SLOW_STEP_MS / 1000
    started = time.monotonic()
    scores, _, _, _, results, _, _ = _result(node.evaluate(np.repeat(image, 6, axis=0), timeout=timeout, **args))
    whole = time.monotonic() - started
    assert [e["error"] for e in json.loads(results)] == [None] * 6, (steps, timeout, whole)
    assert whole > timeout  # guaranteed by the step delay (at least twice): the batch outlasted one image's deadline


def test_the_address_widget_takes_every_form_the_client_balances_over() -> None:
    from heie_nodes.connection import addresses

    assert addresses(" 10.0.0.1:50051, 10.0.0.2:50051 ") == ["10.0.0.1:50051", "10.0.0.2:50051"]
    # One balanced set: its own commas must reach the client whole (round_robin over both).
    assert addresses("ipv4:127.0.0.1:50051,127.0.0.1:50052") == ["ipv4:127.0.0.1:50051,127.0.0.1:50052"]
    assert addresses("dns:///heie-headless.default.svc:50051") == ["dns:///heie-headless.default.svc:50051"]
    with pytest.raises(ValueError, match="empty"):
        addresses("  ")
    with pytest.raises(ValueError, match="stray comma"):
        addresses("10.0.0.1:50051,,10.0.0.2:50051")
