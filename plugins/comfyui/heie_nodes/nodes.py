"""The HEIE nodes: Evaluate, Filter and Rerank. ComfyUI calls ``FUNCTION`` with the inputs as keyword
arguments; each returns ``{"ui": {"text": [...]}, "result": (...)}``: the outputs follow ``RETURN_TYPES``
(lists where ``OUTPUT_IS_LIST`` says so) and the ui text (score and explanation per image) stays on the
node and in ComfyUI's history after the run. Evaluate is also an output node: alone on an image it runs,
and its ui holds the overlays as preview ``images`` (files in ComfyUI's temp folder, as Preview Image's).

An output that would be an empty IMAGE batch (everything passed, nothing passed, an empty input) is an
``ExecutionBlocker`` inside ComfyUI, which skips the nodes it feeds: ComfyUI's own image nodes (Save
Image, Preview Image) index ``images[0]`` and fail on a 0-image batch. Outside ComfyUI (tests, scripts) the
same outputs are well-formed empty batches."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from heie_client import EvaluateOptions, HeatmapEncoding, Result
from heie_client.verdict_rules import (
    ANY, DEFAULT_REJECT_BELOW, RuleError, category_name, parse_reject_if, rejected_categories,
)

from .connection import DEFAULT_ADDRESS
from .evaluation import Verdict, evaluate_images, scores_of
from .filenames import filename_prefix
from .host import ComfyHost
from .judged_batch import HEIE_RESULT, JudgedBatch
from .preview import save_previews
from .failures import HeieNodeError
from .markers import for_people, format_score, separating_decimals
from .report import node_text, results_json, ui_text
from .tensors import batch_size, like, select, select_latent, select_mask, to_numpy

CATEGORY = "HEIE"
#: Top of the max_tokens widget: what a server with the default --ctx-size (4096 tokens per request)
#: takes with an explanation for a 6-tile InternVL3 image (7 views × 256 tokens + ~560 prompt tokens +
#: 3 sections × max_tokens must fit). GetInfo's limits.max_tokens_per_section (2048) is only the absolute
#: cap: a default server refuses an explained request long before it, for every image. A server with a
#: larger --ctx-size takes more (scripts may pass more); the node then says at once what the server takes.
MAX_TOKENS = 512
_REJECT_IF_TOOLTIP = ("also reject an image when one of its flagged regions is more severe than a limit, whatever "
                      "its score: e.g. hand>0.5,text>0.3 (categories hand, face, body, text, object, physics, "
                      "background, other; any>0.6 for all); empty = the score alone decides")
_FILENAME_TOOLTIP = ("for Save Image's filename_prefix (convert it to an input): heie_<score>_<band>, e.g. "
                     "heie_0.26_badly-flawed; a batch is named by its lowest score: heie_min0.26_badly-flawed")


class NothingPassed(RuntimeError):
    """HEIE Filter rejected every image and was asked to stop the workflow (outside ComfyUI, where no
    ExecutionBlocker exists, this is raised instead)."""


def _server_inputs() -> dict[str, Any]:
    return {
        "address": ("STRING", {"default": DEFAULT_ADDRESS, "tooltip": "auto = a local HEIE server started for you (model from HEIE_COMFY_MODEL/HEIE_COMFY_MMPROJ, "
                                                                       "else the default model); or host:port of heie serve, several separated by commas"}),
        "timeout": ("FLOAT", {"default": 300.0, "min": 0.0, "max": 86400.0, "step": 1.0,
                              "tooltip": "seconds allowed for each image; an image that takes longer gets no score, "
                                         "the others keep theirs; 0 = no limit"}),
    }


def _optional_inputs() -> dict[str, Any]:
    return {
        "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "the generation prompt, as context for the judge"}),
        "max_tokens": ("INT", {"default": 0, "min": 0, "max": MAX_TOKENS,
                               "tooltip": "tokens per explanation section; 0 = the server's default (192). How many "
                                          "a server takes depends on its --ctx-size and the image's size: when it "
                                          "cannot take this many, the node says so at once, with the most it takes"}),
        "ca_cert": ("STRING", {"default": "", "tooltip": "path of a PEM CA certificate: set, the node connects with TLS "
                                                         "verified by it. The API key is read from HEIE_API_KEY in "
                                                         "ComfyUI's environment, never stored in the workflow"}),
    }


def _node_result(host: ComfyHost, verdicts: list[Verdict], outputs: tuple[Any, ...],
                 notes: Optional[list[str]] = None, empty_text: str = "", decimals: Optional[int] = None,
                 summary: bool = False, images: Optional[list[dict[str, str]]] = None) -> dict[str, Any]:
    """The node's return value. The same report replaces the live text on the node, where ComfyUI's
    frontend keeps the last progress text after the run; ``ui`` keeps it in the history for the API.
    ``decimals``: the score's (default: enough to tell the batch's scores apart); ``images``: previews."""
    if decimals is None:
        decimals = separating_decimals(v.score for v in verdicts)
    text = ui_text(verdicts, notes, decimals, summary) if verdicts else [empty_text]
    host.text(node_text(text))
    ui: dict[str, Any] = {"text": text}
    if images:
        ui["images"] = images
    return {"ui": ui, "result": outputs}


class _HeieNode:
    CATEGORY = CATEGORY

    def host(self, unique_id: Optional[str]) -> ComfyHost:
        return ComfyHost(unique_id)


def _or_block(host: ComfyHost, value: Any, empty: bool) -> Any:
    """``value``, or ComfyUI's blocker when it is an empty batch and ComfyUI provides one."""
    if not empty:
        return value
    blocker = host.blocker()
    return value if blocker is None else blocker


class HeieEvaluate(_HeieNode):
    """Scores, heatmaps, overlays and explanations for every image of a batch; an output node, which shows
    the overlays on itself (as Preview Image does) with each image's score and the server's summary."""

    DESCRIPTION = ("Judges each image for implausibility: score (1 = looks real), heatmap of the defects, explanation. "
                   "Works alone: shows the heatmap over each image, its score and the server's summary on the node.")
    # Outputs are only ever added at the end: saved workflows link outputs by position.
    RETURN_TYPES = ("FLOAT", "MASK", "IMAGE", "STRING", "STRING", "STRING", HEIE_RESULT)
    RETURN_NAMES = ("scores", "heatmaps", "overlays", "explanations", "results", "filename_prefix", "result")
    OUTPUT_IS_LIST = (True, False, False, True, False, False, False)
    OUTPUT_TOOLTIPS = (
        "score per image, 1 = looks real (0.0 for an image without a verdict)",
        "defect heatmap per image, 1 = implausible",
        "heatmap drawn over each image",
        "explanation per image as people read it ([SCORE] and [MAP] filled in)",
        "JSON list, one entry per image: image (1-based), score, band, mode, raw explanation with its markers, "
        "boxes, error",
        _FILENAME_TOOLTIP,
        "the images and their verdicts, for HEIE Regions (masks of the flagged regions)",
    )
    FUNCTION = "evaluate"
    OUTPUT_NODE = True  # alone on an image it runs (no "Prompt has no outputs") and shows its verdict

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",), "explanation": ("BOOLEAN", {"default": True}), **_server_inputs()},
            "optional": _optional_inputs(),
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def evaluate(self, images: Any, explanation: bool, address: str, timeout: float, prompt: str = "",
                 max_tokens: int = 0, ca_cert: str = "", unique_id: Optional[str] = None) -> dict[str, Any]:
        host = self.host(unique_id)
        frames = to_numpy(images)
        options = EvaluateOptions(
            explanation=explanation, max_tokens_per_section=max_tokens,
            heatmap_encodings=(HeatmapEncoding.RAW_F32_LE, HeatmapEncoding.OVERLAY_PNG),
        )
        verdicts = evaluate_images(images, address, timeout, options, host, prompt, ca_cert)
        if not verdicts:
            empty = (
                [], like(images, np.zeros((0, *frames.shape[1:3]), np.float32)),
                like(images, np.zeros((0, *frames.shape[1:3], 3), np.float32)), [], results_json([]),
                filename_prefix([]), JudgedBatch(images, ()),
            )
            blocker = host.blocker()
            outputs = empty if blocker is None else (blocker,) * len(self.RETURN_TYPES)
            return _node_result(host, [], outputs, empty_text="no images to judge (empty batch)")
        heatmaps = np.stack([_heatmap(v.result, frames.shape[1:3]) for v in verdicts])
        overlays = np.stack([_overlay(v.result, frames[i]) for i, v in enumerate(verdicts)])
        decimals = separating_decimals(v.score for v in verdicts)
        explanations = [for_people(v.result.explanation, v.score, decimals) if v.ok and v.result is not None
                        else f"no score: {v.failure}" for v in verdicts]
        outputs = (scores_of(verdicts), like(images, heatmaps), like(images, overlays), explanations,
                   results_json(verdicts), filename_prefix([(v.score, v.band) for v in verdicts]),
                   JudgedBatch(images, tuple(verdicts)))
        previews = save_previews(overlays, host.preview_folder(), unique_id)
        return _node_result(host, verdicts, outputs, summary=True, images=previews)


class HeieFilter(_HeieNode):
    """Keeps the images whose score reaches the threshold and none of whose regions breaks a ``reject_if``
    rule; LATENT and MASK follow the images."""

    DESCRIPTION = ("Passes images scoring at least the threshold (none of whose flagged regions breaks a reject_if "
                   "rule) and rejects the rest, with the reasons streamed.")
    RETURN_TYPES = ("IMAGE", "IMAGE", "FLOAT", "LATENT", "MASK")
    RETURN_NAMES = ("passed", "rejected", "scores", "passed_latent", "passed_mask")
    OUTPUT_IS_LIST = (False, False, True, False, False)
    OUTPUT_TOOLTIPS = (
        "images scoring at least the threshold (nodes fed by it are skipped when there are none)",
        "images below the threshold (nodes fed by it are skipped when there are none)",
        "score of every input image, in input order",
        "the LATENT rows of the passed images",
        "the MASK rows of the passed images",
    )
    FUNCTION = "filter"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                # Scores lie in [0, 1]: 0 passes everything, 1 only a perfect score.
                # The default is the lower edge of the "typical" band (13/24): "flawed" and worse are rejected.
                # ComfyUI's page keeps a float widget to its step's decimals (whatever "round" says): with
                # step 0.001 the page shows and sends 0.542 (0.01 would make it 0.54); the API gets 13/24.
                "threshold": ("FLOAT", {"default": DEFAULT_REJECT_BELOW, "min": 0.0, "max": 1.0, "step": 0.001,
                                        "tooltip": "lowest score that passes (scores lie in 0..1); the default "
                                                   "13/24 ≈ 0.542 is where the band 'typical' starts"}),
                "stop_if_none_pass": ("BOOLEAN", {"default": True,
                                                  "tooltip": "when nothing passes, skip every node fed by this one "
                                                             "(off: only the passed branch is skipped)"}),
                "explanation": ("BOOLEAN", {"default": True}),
                **_server_inputs(),
            },
            # reject_if comes last: saved workflows list widget values by position, so new ones go at the end.
            "optional": {"latent": ("LATENT",), "mask": ("MASK",), **_optional_inputs(),
                         "reject_if": ("STRING", {"default": "", "tooltip": _REJECT_IF_TOOLTIP})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def filter(self, images: Any, threshold: float, stop_if_none_pass: bool, explanation: bool, address: str,
               timeout: float, latent: Optional[dict[str, Any]] = None, mask: Optional[Any] = None, prompt: str = "",
               max_tokens: int = 0, ca_cert: str = "", unique_id: Optional[str] = None,
               reject_if: str = "") -> dict[str, Any]:
        try:  # a rule that cannot be read stops the node before any image is sent
            rules = parse_reject_if(reject_if)
        except RuleError as err:
            raise HeieNodeError(f"HEIE Filter: reject_if: {err}") from None
        host = self.host(unique_id)
        options = EvaluateOptions(explanation=explanation, max_tokens_per_section=max_tokens, heatmap_encodings=())
        verdicts = evaluate_images(images, address, timeout, options, host, prompt, ca_cert)
        scores = scores_of(verdicts)
        batch = batch_size(images)
        if not verdicts:
            blocker = host.blocker()
            outputs = ((images, images, [], latent, mask) if blocker is None else (blocker,) * len(self.RETURN_TYPES))
            return _node_result(host, [], outputs, empty_text="no images to judge (empty batch)")
        decimals = separating_decimals([*(v.score for v in verdicts), threshold])
        notes = [_filter_note(v, threshold, rules, decimals) for v in verdicts]
        passed = [i for i, note in enumerate(notes) if note == PASSED]
        rejected = [i for i, note in enumerate(notes) if note != PASSED]
        if not passed and stop_if_none_pass:
            blocker = host.blocker()
            if blocker is None:
                raise NothingPassed(f"no image reached the threshold {threshold:.3f}; scores {scores}")
            return _node_result(host, verdicts, (blocker,) * len(self.RETURN_TYPES), notes, decimals=decimals)
        none_passed = not passed
        outputs = (
            _or_block(host, select(images, passed), none_passed),
            _or_block(host, select(images, rejected), not rejected),
            scores,
            _or_block(host, select_latent(latent, passed, batch), none_passed),
            _or_block(host, select_mask(mask, passed, batch), none_passed),
        )
        return _node_result(host, verdicts, outputs, notes, decimals=decimals)


class HeieRerank(_HeieNode):
    """The best k images of a batch (with their LATENT), best first."""

    DESCRIPTION = "Generate many, keep the best k: orders the batch by plausibility score."
    RETURN_TYPES = ("IMAGE", "LATENT", "FLOAT", "INT", "STRING")
    RETURN_NAMES = ("best", "best_latent", "scores", "order", "filename_prefix")
    OUTPUT_IS_LIST = (False, False, True, True, False)
    OUTPUT_TOOLTIPS = (
        "the best top_k images, best first",
        "their LATENT rows, in the same order",
        "their scores, best first",
        "their positions in the input batch, 0-based: wire one into a batch_index (e.g. Image From Batch's). "
        "Changed: this output used to be 1-based; the node text shows each kept image's batch_index "
        "beside its #n (numbered from 1)",
        _FILENAME_TOOLTIP + " (of the kept images)",
    )
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
               latent: Optional[dict[str, Any]] = None, prompt: str = "", max_tokens: int = 0, ca_cert: str = "",
               unique_id: Optional[str] = None) -> dict[str, Any]:
        host = self.host(unique_id)
        options = EvaluateOptions(explanation=not fast, max_tokens_per_section=max_tokens, heatmap_encodings=())
        verdicts = evaluate_images(images, address, timeout, options, host, prompt, ca_cert)
        if not verdicts:
            blocker = host.blocker()
            outputs = (images, latent, [], [], filename_prefix([])) if blocker is None else (blocker,) * len(self.RETURN_TYPES)
            return _node_result(host, [], outputs, empty_text="no images to rank (empty batch)")
        scores = scores_of(verdicts)
        best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: max(1, top_k)]
        batch = batch_size(images)
        rank = {index: place + 1 for place, index in enumerate(best)}
        notes = [f"rank {rank[i]}, batch_index {i}" if i in rank else "not kept" for i in range(len(scores))]
        outputs = (
            select(images, best),
            select_latent(latent, best, batch),
            [scores[i] for i in best],
            list(best),  # 0-based, as ComfyUI's batch_index inputs
            filename_prefix([(verdicts[i].score, verdicts[i].band) for i in best]),
        )
        return _node_result(host, verdicts, outputs, notes)


PASSED = "passed"


def _filter_note(verdict: Verdict, threshold: float, rules: dict[str, float], decimals: int) -> str:
    """``PASSED``, or why the Filter rejects the image. An image without a verdict (its timeout ran out)
    never passes, not even at threshold 0."""
    if verdict.score is None:
        return "rejected"
    reasons = []
    if verdict.score < threshold:
        reasons.append(f"score under {format_score(threshold, decimals)}")
    broken = rejected_categories(verdict.regions, rules)
    if broken:
        worst = {name: max(r.severity for r in verdict.regions if category_name(r) == name) for name in broken}
        reasons.extend(f"{name} {worst[name]:.2f} > {rules.get(name, rules.get(ANY))}" for name in broken)
    return f"rejected, {', '.join(reasons)}" if reasons else PASSED


def _heatmap(result: Optional[Result], size: tuple[int, int]) -> np.ndarray:
    if result is not None and result.heatmap is not None and result.heatmap.shape == tuple(size):
        return result.heatmap
    return np.zeros(size, np.float32)


def _overlay(result: Optional[Result], frame: np.ndarray) -> np.ndarray:
    if result is not None and result.overlay is not None and result.overlay.shape[:2] == frame.shape[:2]:
        return result.overlay.astype(np.float32) / 255.0
    return np.asarray(frame[..., :3], np.float32)


NODE_CLASS_MAPPINGS = {"HeieEvaluate": HeieEvaluate, "HeieFilter": HeieFilter, "HeieRerank": HeieRerank}
NODE_DISPLAY_NAME_MAPPINGS = {"HeieEvaluate": "HEIE Evaluate", "HeieFilter": "HEIE Filter", "HeieRerank": "HEIE Rerank"}
