"""The HEIE nodes called the way ComfyUI calls them, against a real server, with stand-ins for the
host modules ComfyUI would provide (comfy.model_management, comfy.utils, server, comfy_execution)."""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from heie_nodes import HeieEvaluate, HeieFilter, HeieRerank
from heie_nodes.nodes import NothingPassed

PACK = Path(__file__).resolve().parents[1]


class InterruptProcessingException(Exception):
    """Stand-in for comfy.model_management.InterruptProcessingException."""


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
        if fake.interrupted:
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw  # type: ignore[attr-defined]
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total: int) -> None:
            self.total = total

        def update_absolute(self, value: int, total: int) -> None:
            fake.progress.append((value, total))

    utils.ProgressBar = ProgressBar  # type: ignore[attr-defined]
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=fake)  # type: ignore[attr-defined]
    comfy_pkg = types.ModuleType("comfy")
    for name, module in {"comfy": comfy_pkg, "comfy.model_management": mm, "comfy.utils": utils, "server": server}.items():
        monkeypatch.setitem(sys.modules, name, module)
    yield fake


def _images(batch: int, h: int = 16, w: int = 16) -> np.ndarray:
    rng = np.random.default_rng(batch * 100 + h)
    return rng.random((batch, h, w, 3), dtype=np.float32)


def _latent(batch: int) -> dict[str, Any]:
    samples = np.stack([np.full((4, 2, 2), i, np.float32) for i in range(batch)])
    return {"samples": samples, "batch_index": list(range(batch))}


def test_pack_loads_the_way_comfyui_loads_it() -> None:
    spec = importlib.util.spec_from_file_location("heie_pack_under_test", PACK / "__init__.py",
                                                  submodule_search_locations=[str(PACK)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert set(module.NODE_CLASS_MAPPINGS) == {"HeieEvaluate", "HeieFilter", "HeieRerank"}
    assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(module.NODE_CLASS_MAPPINGS)
    for cls in module.NODE_CLASS_MAPPINGS.values():
        inputs = cls.INPUT_TYPES()
        assert inputs["required"]["images"] == ("IMAGE",)
        assert inputs["required"]["address"][1]["default"] == "127.0.0.1:50051"
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_IS_LIST)
        assert callable(getattr(cls, cls.FUNCTION))


def test_evaluate_node_with_numpy(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    images = _images(2, 16, 24)
    scores, heatmaps, overlays, explanations = HeieEvaluate().evaluate(
        images, explanation=True, address=heie_server.address, timeout=120, max_tokens=4, unique_id="7")
    assert isinstance(scores, list) and len(scores) == 2 and all(isinstance(s, float) and 0 <= s <= 1 for s in scores)
    assert isinstance(heatmaps, np.ndarray) and heatmaps.shape == (2, 16, 24) and heatmaps.dtype == np.float32
    assert isinstance(overlays, np.ndarray) and overlays.shape == (2, 16, 24, 3) and overlays.dtype == np.float32
    assert 0.0 <= overlays.min() and overlays.max() <= 1.0
    assert len(explanations) == 2 and all("### Image Description" in e for e in explanations)
    assert comfy.texts and all(node == "7" for _, node in comfy.texts) and "score" in comfy.texts[-1][0]
    assert comfy.progress[-1] == (2, 2)


def test_evaluate_node_with_torch(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    images = torch.from_numpy(_images(1, 16, 16))
    scores, heatmaps, overlays, _ = HeieEvaluate().evaluate(
        images, explanation=False, address=heie_server.address, timeout=120, max_tokens=2)
    assert isinstance(heatmaps, torch.Tensor) and tuple(heatmaps.shape) == (1, 16, 16)
    assert isinstance(overlays, torch.Tensor) and tuple(overlays.shape) == (1, 16, 16, 3)
    assert len(scores) == 1


def test_filter_keeps_latent_and_mask_in_step(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    images, latent = _images(3), _latent(3)
    mask = np.stack([np.full((16, 16), i, np.float32) for i in range(3)])
    common = dict(stop_if_none_pass=False, explanation=False, address=heie_server.address, timeout=120,
                  latent=latent, mask=mask, max_tokens=2)
    passed, rejected, scores, passed_latent, passed_mask = HeieFilter().filter(images, threshold=0.0, **common)
    assert passed.shape == (3, 16, 16, 3) and rejected.shape == (0, 16, 16, 3) and len(scores) == 3
    threshold = (max(scores) + min(scores)) / 2 if max(scores) > min(scores) else max(scores)
    passed, rejected, scores2, passed_latent, passed_mask = HeieFilter().filter(images, threshold=threshold, **common)
    assert scores2 == pytest.approx(scores, abs=1e-5)
    keep = [i for i, s in enumerate(scores2) if s >= threshold]
    drop = [i for i, s in enumerate(scores2) if s < threshold]
    assert len(keep) >= 1
    np.testing.assert_array_equal(passed, images[keep])
    np.testing.assert_array_equal(rejected, images[drop])
    assert [float(s[0, 0, 0]) for s in passed_latent["samples"]] == keep
    assert passed_latent["batch_index"] == keep
    assert [float(m[0, 0]) for m in passed_mask] == keep


def test_filter_stops_the_workflow_when_nothing_passes(heie_server, comfy: FakeComfy, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    images = _images(2)
    args = dict(threshold=1.0, stop_if_none_pass=True, explanation=False, address=heie_server.address, timeout=120, max_tokens=2)
    with pytest.raises(NothingPassed):  # no ComfyUI executor: a clear error
        HeieFilter().filter(images, **args)

    class ExecutionBlocker:
        def __init__(self, message: object) -> None:
            self.message = message

    graph = types.ModuleType("comfy_execution.graph")
    graph.ExecutionBlocker = ExecutionBlocker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy_execution", types.ModuleType("comfy_execution"))
    monkeypatch.setitem(sys.modules, "comfy_execution.graph", graph)
    passed, rejected, scores, passed_latent, _ = HeieFilter().filter(images, **args)
    assert isinstance(passed, ExecutionBlocker) and isinstance(passed_latent, ExecutionBlocker)
    assert rejected.shape == (2, 16, 16, 3) and len(scores) == 2


def test_rerank_returns_the_best_k_in_order(heie_server, comfy: FakeComfy) -> None:  # type: ignore[no-untyped-def]
    images, latent = _images(4), _latent(4)
    best, best_latent, scores, order = HeieRerank().rerank(
        images, top_k=2, fast=True, address=heie_server.address, timeout=120, latent=latent, max_tokens=2)
    assert best.shape == (2, 16, 16, 3) and len(scores) == 2 and len(order) == 2
    assert scores == sorted(scores, reverse=True) and all(isinstance(i, int) for i in order)
    np.testing.assert_array_equal(best, images[order])
    assert [float(s[0, 0, 0]) for s in best_latent["samples"]] == order


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
