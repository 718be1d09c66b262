"""HEIE repair: a rejected image gets one inpainting pass over the regions the server flagged, is judged
again, and the better of the two (the higher score) is kept, as ADetailer does for faces.

What is host-free lives here: the options of the txt2img/img2img accordion, which regions are repaired,
the mask (their union, grown by the padding), the decision, and what the image's infotext and the API
say about it. The inpainting pass itself is the WebUI's (``scripts/heie.py`` passes it in as
``inpaint(image, mask)``), so nothing here imports the WebUI. A failure anywhere in a repair leaves the
original image and its verdict, with a note saying why; it never loses the image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from heie_client import HeieError
from heie_client.verdict_rules import CATEGORIES, category_name

from .verdict import Verdict, region_summary

log = logging.getLogger("heie")

ACCORDION_ARGS = ("enabled", "padding", "denoising", "categories", "min_severity")
"""The repair widgets' values, in the order the accordion passes them after its on/off checkbox (and an
API caller in ``alwayson_scripts["heie"]["args"]``)."""

PARAM_DENOISING = "HEIE repair denoising"
PARAM_PADDING = "HEIE repair padding"
PARAM_CATEGORIES = "HEIE repair categories"
PARAM_MIN_SEVERITY = "HEIE repair min severity"
GENERATION_PARAMS = (PARAM_DENOISING, PARAM_PADDING, PARAM_CATEGORIES, PARAM_MIN_SEVERITY)
"""The job's repair options in the infotext (only when repair is on), so "paste" restores them."""

MAX_PADDING = 256


@dataclass(frozen=True)
class RepairOptions:
    enabled: bool = False
    padding: int = 16
    """Pixels the union of the regions' masks grows by on every side: the inpainting also redraws the
    seam around a defect (a region's mask hugs the defect)."""
    denoising: float = 0.4
    """How much of the masked area is redrawn (the img2img denoising strength)."""
    categories: tuple[str, ...] = CATEGORIES
    """Only regions of these categories are repaired."""
    min_severity: float = 0.0
    """Only regions at least this severe (0..1) are repaired."""

    @classmethod
    def from_args(cls, args: Sequence[Any]) -> "RepairOptions":
        """The accordion's values in :data:`ACCORDION_ARGS` order; missing ones (an API call that passes
        fewer args) keep their defaults. A bad value is a ValueError naming the option."""
        values = dict(zip(ACCORDION_ARGS, args))
        defaults = cls()
        try:
            enabled = bool(values.get("enabled", defaults.enabled))
            padding = int(values.get("padding", defaults.padding))
            denoising = float(values.get("denoising", defaults.denoising))
            min_severity = float(values.get("min_severity", defaults.min_severity))
        except (TypeError, ValueError) as err:
            raise ValueError(f"HEIE repair: an option is not a number ({err}); expected "
                             f"{', '.join(ACCORDION_ARGS)}") from None
        raw = values.get("categories", defaults.categories)
        names = [raw] if isinstance(raw, str) else list(raw or ())
        categories = tuple(str(n).strip().lower() for n in names if str(n).strip())
        unknown = [n for n in categories if n not in CATEGORIES]
        if unknown:
            raise ValueError(f"HEIE repair categories: {', '.join(unknown)} is not a region category; "
                             f"use {', '.join(CATEGORIES)}")
        if not 0 <= padding <= MAX_PADDING:
            raise ValueError(f"HEIE repair padding must be 0..{MAX_PADDING} px, got {padding}")
        if not (math.isfinite(denoising) and 0.0 < denoising <= 1.0):
            raise ValueError(f"HEIE repair denoising strength must be above 0 and at most 1, got {denoising}")
        if not (math.isfinite(min_severity) and 0.0 <= min_severity <= 1.0):
            raise ValueError(f"HEIE repair minimum severity must be 0..1, got {min_severity}")
        return cls(enabled, padding, denoising, categories, min_severity)

    def generation_params(self) -> dict[str, str]:
        """The job's infotext entries for these options (none when repair is off)."""
        if not self.enabled:
            return {}
        return {PARAM_DENOISING: f"{self.denoising:g}", PARAM_PADDING: str(self.padding),
                PARAM_CATEGORIES: ",".join(self.categories) or "none", PARAM_MIN_SEVERITY: f"{self.min_severity:g}"}


def selected_regions(regions: Sequence[Any], options: RepairOptions) -> list[Any]:
    """The regions to repair: of a chosen category and at least the minimum severity."""
    return [r for r in regions if category_name(r) in options.categories and r.severity >= options.min_severity]


def region_mask(region: Any, size: tuple[int, int]) -> np.ndarray:
    """H×W bool of one region at image ``size`` (width, height): its mask, or its pixel box when the
    server sent no mask."""
    width, height = size
    if getattr(region, "mask_png", b""):
        mask = np.asarray(region.mask(), dtype=bool)
        if mask.shape == (height, width):
            return mask
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
        return np.asarray(resized) > 127
    mask = np.zeros((height, width), dtype=bool)
    box = region.box
    mask[max(0, box.pixel_y1):max(0, box.pixel_y2), max(0, box.pixel_x1):max(0, box.pixel_x2)] = True
    return mask


def grow(mask: np.ndarray, padding: int) -> np.ndarray:
    """``mask`` grown by ``padding`` pixels on every side (a square neighbourhood), from an integral
    image: linear in the pixels whatever the padding."""
    if padding <= 0 or not mask.any():
        return mask.copy()
    height, width = mask.shape
    integral = np.zeros((height + 1, width + 1), dtype=np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(height) - padding, 0, height)
    y1 = np.clip(np.arange(height) + padding + 1, 0, height)
    x0 = np.clip(np.arange(width) - padding, 0, width)
    x1 = np.clip(np.arange(width) + padding + 1, 0, width)
    window = (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])
    return window > 0


def repair_mask(regions: Sequence[Any], size: tuple[int, int], padding: int) -> Image.Image:
    """The inpainting mask: the regions' union grown by ``padding``, 8-bit, 255 = redraw (the WebUI's
    inpaint mask convention)."""
    union = np.zeros((size[1], size[0]), dtype=bool)
    for region in regions:
        union |= region_mask(region, size)
    return Image.fromarray(grow(union, padding).astype(np.uint8) * 255, mode="L")


@dataclass(frozen=True)
class RepairReport:
    """What a repair did to one image: the original's verdict, the repaired one's (None when the pass or
    its judgement failed), whether the repaired image was kept, the categories repaired, and else why not."""

    before: Verdict
    after: Optional[Verdict] = None
    kept: bool = False
    categories: tuple[str, ...] = ()
    note: str = ""
    regions: tuple[Any, ...] = field(default=(), repr=False)
    """The regions the mask was made of (the original image's)."""

    def infotext(self) -> dict[str, str]:
        """Kept: ``HEIE score before repair`` and ``HEIE repaired`` (the image's own score is its
        ``HEIE score``). Not kept: ``HEIE repair result`` saying why, with the repaired score when there
        is one."""
        if self.kept and self.after is not None:  # both scores with the digits that tell them apart
            return {"HEIE score": self.after.score_beside(self.before), "HEIE score before repair": self.before.score_beside(self.after),
                    "HEIE repaired": ",".join(self.categories)}
        return {"HEIE repair result": self.note}

    def structured(self) -> dict[str, Any]:
        return {"repaired": self.kept, "repair_categories": list(self.categories),
                "repaired_regions": [region_summary(r) for r in self.regions],
                "score_before_repair": self.before.score if self.kept else None,
                "score_after_repair": self.after.score if self.after is not None else None,
                "repair_note": self.note or None}


def repair(image: Any, verdict: Verdict, options: RepairOptions, inpaint: Callable[[Any, Image.Image], Any],
           judge_again: Callable[[Any], Verdict]) -> tuple[Any, Verdict, RepairReport]:
    """One repair of a rejected ``image``: the kept image, its verdict, and the report. ``inpaint(image,
    mask)`` is the WebUI's inpainting pass; ``judge_again(image)`` judges the result (raises HeieError)."""
    regions = selected_regions(verdict.regions, options)
    if not regions:
        wanted = ", ".join(options.categories) or "no category"
        seen = ", ".join(f"{category_name(r)} {r.severity:.2f}" for r in verdict.regions) or "none"
        note = (f"skipped: no flagged region of {wanted} at severity ≥ {options.min_severity:g} "
                f"(regions: {seen}); original kept")
        return image, verdict, RepairReport(verdict, note=note)
    categories = tuple(dict.fromkeys(category_name(r) for r in regions))
    mask = repair_mask(regions, image.size, options.padding)
    try:
        repaired = inpaint(image, mask)
    except Exception as err:  # noqa: BLE001 - the WebUI's pass may fail any way; the image must survive it
        log.warning("HEIE: the repair pass failed; original kept", exc_info=True)
        return image, verdict, RepairReport(verdict, categories=categories, regions=tuple(regions),
                                            note=f"failed: the inpainting pass raised {type(err).__name__}: {err}; original kept")
    if repaired is None or getattr(repaired, "size", None) != image.size:
        got = getattr(repaired, "size", None)
        return image, verdict, RepairReport(verdict, categories=categories, regions=tuple(regions),
                                            note=f"failed: the inpainting pass gave no image of {image.size[0]}×{image.size[1]} "
                                                 f"(got {got}); original kept")
    try:
        after = judge_again(repaired)
    except HeieError as err:
        return image, verdict, RepairReport(verdict, categories=categories, regions=tuple(regions),
                                            note=f"failed: the repaired image was not judged ({err.message}); original kept")
    if after.score > verdict.score:
        return repaired, after, RepairReport(verdict, after, kept=True, categories=categories, regions=tuple(regions))
    note = (f"not kept: the repaired image ({','.join(categories)}) scored "
            f"{after.score_beside(verdict)}, not higher than {verdict.score_beside(after)}")
    return image, verdict, RepairReport(verdict, after, categories=categories, regions=tuple(regions), note=note)
