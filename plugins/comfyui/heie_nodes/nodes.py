"""The HEIE nodes: Evaluate, Filter and Rerank. ComfyUI calls ``FUNCTION`` with the inputs as keyword
arguments; outputs follow ``RETURN_TYPES`` (lists where ``OUTPUT_IS_LIST`` says so)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from heie_client import DEFAULT_ADDRESS, EvaluateOptions, HeatmapEncoding, Result

from .evaluation import evaluate_images, scores_of
from .host import ComfyHost
from .tensors import batch_size, like, select, select_latent, select_mask, to_numpy

CATEGORY = "HEIE"


class NothingPassed(RuntimeError):
    """HEIE Filter rejected every image and was asked to stop the workflow (outside ComfyUI, where no
    ExecutionBlocker exists, this is raised instead)."""


def _server_inputs() -> dict[str, Any]:
    return {
        "address": ("STRING", {"default": DEFAULT_ADDRESS, "tooltip": "host:port of heie serve; several separated by commas"}),
        "timeout": ("FLOAT", {"default": 300.0, "min": 0.0, "max": 86400.0, "step": 1.0, "tooltip": "seconds per call; 0 = none"}),
    }


def _optional_inputs() -> dict[str, Any]:
    return {
        "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "the generation prompt, as context for the judge"}),
        "max_tokens": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": "tokens per explanation section; 0 = server default"}),
    }


class _HeieNode:
    CATEGORY = CATEGORY

    def host(self, unique_id: Optional[str]) -> ComfyHost:
        return ComfyHost(unique_id)


class HeieEvaluate(_HeieNode):
    """Scores, heatmaps, overlays and explanations for every image of a batch."""

    DESCRIPTION = "Judges each image for implausibility: score (1 = looks real), heatmap of the defects, explanation."
    RETURN_TYPES = ("FLOAT", "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("scores", "heatmaps", "overlays", "explanations")
    OUTPUT_IS_LIST = (True, False, False, True)
    FUNCTION = "evaluate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",), "explanation": ("BOOLEAN", {"default": True}), **_server_inputs()},
            "optional": _optional_inputs(),
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def evaluate(self, images: Any, explanation: bool, address: str, timeout: float, prompt: str = "",
                 max_tokens: int = 0, unique_id: Optional[str] = None) -> tuple[Any, ...]:
        options = EvaluateOptions(
            explanation=explanation, max_tokens_per_section=max_tokens,
            heatmap_encodings=(HeatmapEncoding.RAW_F32_LE, HeatmapEncoding.OVERLAY_PNG),
        )
        results = evaluate_images(images, address, timeout, options, self.host(unique_id), prompt)
        frames = to_numpy(images)
        heatmaps = np.stack([_heatmap(r, frames.shape[1:3]) for r in results])
        overlays = np.stack([_overlay(r, frames[i]) for i, r in enumerate(results)])
        explanations = [r.explanation if r.ok else f"error: {r.error}" for r in results]
        return scores_of(results), like(images, heatmaps), like(images, overlays), explanations


class HeieFilter(_HeieNode):
    """Keeps the images whose score reaches the threshold; LATENT and MASK follow the images."""

    DESCRIPTION = "Passes images scoring at least the threshold and rejects the rest, with the reasons streamed."
    RETURN_TYPES = ("IMAGE", "IMAGE", "FLOAT", "LATENT", "MASK")
    RETURN_NAMES = ("passed", "rejected", "scores", "passed_latent", "passed_mask")
    OUTPUT_IS_LIST = (False, False, True, False, False)
    FUNCTION = "filter"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                "stop_if_none_pass": ("BOOLEAN", {"default": True, "tooltip": "skip the nodes fed by 'passed' when nothing passes"}),
                "explanation": ("BOOLEAN", {"default": True}),
                **_server_inputs(),
            },
            "optional": {"latent": ("LATENT",), "mask": ("MASK",), **_optional_inputs()},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def filter(self, images: Any, threshold: float, stop_if_none_pass: bool, explanation: bool, address: str,
               timeout: float, latent: Optional[dict[str, Any]] = None, mask: Optional[Any] = None, prompt: str = "",
               max_tokens: int = 0, unique_id: Optional[str] = None) -> tuple[Any, ...]:
        host = self.host(unique_id)
        options = EvaluateOptions(explanation=explanation, max_tokens_per_section=max_tokens, heatmap_encodings=())
        scores = scores_of(evaluate_images(images, address, timeout, options, host, prompt))
        batch = batch_size(images)
        passed = [i for i, s in enumerate(scores) if s >= threshold]
        rejected = [i for i, s in enumerate(scores) if s < threshold]
        if not passed and stop_if_none_pass:
            blocker = host.blocker()
            if blocker is None:
                raise NothingPassed(f"no image reached the threshold {threshold:.3f}; scores {scores}")
            return blocker, select(images, rejected), scores, blocker, blocker
        return (select(images, passed), select(images, rejected), scores,
                select_latent(latent, passed, batch), select_mask(mask, passed, batch))


class HeieRerank(_HeieNode):
    """The best k images of a batch (with their LATENT), best first."""

    DESCRIPTION = "Generate many, keep the best k: orders the batch by plausibility score."
    RETURN_TYPES = ("IMAGE", "LATENT", "FLOAT", "INT")
    RETURN_NAMES = ("best", "best_latent", "scores", "order")
    OUTPUT_IS_LIST = (False, False, True, True)
    FUNCTION = "rerank"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                "top_k": ("INT", {"default": 4, "min": 1, "max": 1024}),
                "fast": ("BOOLEAN", {"default": True, "tooltip": "short analysis only (much faster)"}),
                **_server_inputs(),
            },
            "optional": {"latent": ("LATENT",), **_optional_inputs()},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def rerank(self, images: Any, top_k: int, fast: bool, address: str, timeout: float,
               latent: Optional[dict[str, Any]] = None, prompt: str = "", max_tokens: int = 0,
               unique_id: Optional[str] = None) -> tuple[Any, ...]:
        options = EvaluateOptions(explanation=not fast, max_tokens_per_section=max_tokens, heatmap_encodings=())
        scores = scores_of(evaluate_images(images, address, timeout, options, self.host(unique_id), prompt))
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: max(1, top_k)]
        batch = batch_size(images)
        return select(images, order), select_latent(latent, order, batch), [scores[i] for i in order], order


def _heatmap(result: Result, size: tuple[int, int]) -> np.ndarray:
    if result.heatmap is not None and result.heatmap.shape == tuple(size):
        return result.heatmap
    return np.zeros(size, np.float32)


def _overlay(result: Result, frame: np.ndarray) -> np.ndarray:
    if result.overlay is not None and result.overlay.shape[:2] == frame.shape[:2]:
        return result.overlay.astype(np.float32) / 255.0
    return np.asarray(frame[..., :3], np.float32)


NODE_CLASS_MAPPINGS = {"HeieEvaluate": HeieEvaluate, "HeieFilter": HeieFilter, "HeieRerank": HeieRerank}
NODE_DISPLAY_NAME_MAPPINGS = {"HeieEvaluate": "HEIE Evaluate", "HeieFilter": "HEIE Filter", "HeieRerank": "HEIE Rerank"}
