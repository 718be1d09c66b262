"""HEIE Regions: the regions the judge flagged (a mangled hand, melted text …) as masks to repair them
with — one MASK for inpainting, one mask per region, and the Impact Pack's SEGS for its detailers.

It reads HEIE Evaluate's ``result`` output, so it sends nothing to the server: the masks are made from
the verdicts already there, at the size of the images they are about (one verdict per image of the
batch)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .failures import HeieNodeError
from .judged_batch import HEIE_RESULT, JudgedBatch
from .region_masks import (
    ALL, RegionSelectionError, extent, parse_categories, region_pixels, selected, shaped, union,
)
from .segs import segs_of_image
from .tensors import like, to_numpy

#: Widget limit of grow and feather, in pixels (the work grows with them: each pixel is one pass).
MAX_PIXELS = 256


class HeieRegions:
    """Masks and SEGS of the flagged regions of each judged image."""

    CATEGORY = "HEIE"
    DESCRIPTION = ("Masks of the regions the judge flagged (from HEIE Evaluate's result): one mask to inpaint them, "
                   "one mask per region, SEGS for the Impact Pack's detailers. Sends nothing to the server.")
    RETURN_TYPES = ("MASK", "MASK", "SEGS", "INT")
    RETURN_NAMES = ("mask", "region_masks", "segs", "count")
    # One SEGS per image: the Impact Pack's SEGS describes a single image ((height, width) and its pieces).
    OUTPUT_IS_LIST = (False, False, True, False)
    OUTPUT_TOOLTIPS = (
        "per image the union of its selected regions (B×H×W, at the judged images' size; all 0 where none): "
        "wire into VAE Encode (for Inpainting) or Set Latent Noise Mask",
        "one mask per selected region (image 1's regions first, each image's in the server's order, worst "
        "first); when no region is selected, a single all-zero mask of the image's size",
        "the selected regions in the Impact Pack's SEGS format, one SEGS per image (label = category, "
        "confidence = severity)",
        "how many regions are selected, over the whole batch",
    )
    FUNCTION = "regions"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "result": (HEIE_RESULT, {"tooltip": "HEIE Evaluate's result output"}),
                "grow": ("INT", {"default": 8, "min": 0, "max": MAX_PIXELS, "step": 1,
                                 "tooltip": "pixels added around each region (fully masked)"}),
                "feather": ("INT", {"default": 8, "min": 0, "max": MAX_PIXELS, "step": 1,
                                    "tooltip": "pixels after the grown edge over which the mask fades to 0"}),
                "categories": ("STRING", {"default": ALL,
                                          "tooltip": "'all', or which regions: a comma list of hand, face, body, "
                                                     "text, object, physics, background, other"}),
                "min_severity": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "regions less severe than this are left out (0 keeps all)"}),
            },
        }

    def regions(self, result: JudgedBatch, grow: int, feather: int, categories: str,
                min_severity: float) -> tuple[Any, ...]:
        if not isinstance(result, JudgedBatch):
            raise HeieNodeError("HEIE Regions: its result input takes HEIE Evaluate's result output")
        try:
            chosen = parse_categories(categories)
        except RegionSelectionError as err:
            raise HeieNodeError(f"HEIE Regions: {err}") from None
        frames = to_numpy(result.images)
        if frames.ndim != 4 or frames.shape[0] != len(result.verdicts):
            raise HeieNodeError(f"HEIE Regions: {len(result.verdicts)} verdicts for an IMAGE batch of shape "
                                f"{tuple(frames.shape)}; wire HEIE Evaluate's result output unchanged")
        height, width = int(frames.shape[1]), int(frames.shape[2])
        unions, per_region, all_segs = [], [], []
        for index, verdict in enumerate(result.verdicts):
            pieces = []
            for region in selected(verdict.regions, chosen, min_severity):
                try:
                    own = region_pixels(region, height, width)
                except ValueError as err:
                    raise HeieNodeError(f"HEIE Regions: image #{index + 1}: {err}") from None
                mask = shaped(own, grow, feather)
                if mask.extent is None:
                    continue  # a region without pixels (an empty box) masks nothing
                pieces.append((region, mask.values, mask.extent, extent(own)))
            unions.append(union([p[1] for p in pieces], height, width))
            per_region.extend(p[1] for p in pieces)
            all_segs.append(segs_of_image(result.images, frames[index], pieces))
        count = len(per_region)
        if not per_region:  # a MASK batch of none is no mask to ComfyUI's nodes: one blank one says "nothing"
            per_region.append(np.zeros((height, width), np.float32))
        masks = np.stack(unions) if unions else np.zeros((0, height, width), np.float32)
        return (like(result.images, masks), like(result.images, np.stack(per_region)), all_segs, count)


NODE_CLASS_MAPPINGS = {"HeieRegions": HeieRegions}
NODE_DISPLAY_NAME_MAPPINGS = {"HeieRegions": "HEIE Regions"}
