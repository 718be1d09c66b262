"""The pixels of a flagged region as an inpainting mask: which regions (categories, lowest severity), the
region's own pixels at the image's size, grown and feathered outwards.

Inpainting wants the whole defect covered and a soft edge outside it, so growing and feathering only
ever add pixels around the region: the region itself stays at 1, ``grow`` px around it are 1 too, and
the next ``feather`` px fall off linearly to 0. Distances are counted in steps of the 8 neighbours (a
square grows into a bigger square), which is what a ComfyUI user sees in Grow Mask as well.

Everything is numpy on the CPU; the work for one region is done in a window around it, so a small
region of a large image costs little."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from heie_client.verdict_rules import CATEGORIES, category_name

#: The categories widget's value that selects every region.
ALL = "all"


class RegionSelectionError(ValueError):
    """A categories text that names no known category; the message lists the accepted names."""


def parse_categories(text: str) -> Optional[frozenset[str]]:
    """``"hand, face"`` → ``{"hand", "face"}``; ``"all"`` (or nothing) → None, meaning every category."""
    names = [part.strip().lower() for part in text.replace(";", ",").split(",") if part.strip()]
    if not names or names == [ALL]:
        return None
    unknown = [name for name in names if name not in CATEGORIES]
    if unknown or ALL in names:
        bad = ", ".join(repr(n) for n in (unknown or [ALL]))
        raise RegionSelectionError(
            f"categories: {bad} {'is' if len(unknown) <= 1 else 'are'} not a region category here; write "
            f"'{ALL}' alone or a comma list of {', '.join(CATEGORIES)}")
    return frozenset(names)


def selected(regions: Iterable[Any], categories: Optional[frozenset[str]], min_severity: float) -> list[Any]:
    """The regions of the chosen categories (None: all) with at least ``min_severity``, in the server's order."""
    return [r for r in regions
            if (categories is None or category_name(r) in categories) and r.severity >= min_severity]


def region_pixels(region: Any, height: int, width: int) -> np.ndarray:
    """The region's own pixels, H×W bool at the image's size: its mask when the server sent one, else
    its box (x2/y2 exclusive)."""
    if region.mask_png:
        pixels = np.asarray(region.mask(), dtype=bool)
        if pixels.shape != (height, width):
            raise ValueError(f"region {region.id} ({region.label!r}) has a {pixels.shape[1]}×{pixels.shape[0]} "
                             f"mask for a {width}×{height} image; the server's masks are at the image's size")
        return pixels
    pixels = np.zeros((height, width), dtype=bool)
    box = region.box
    x1, x2 = sorted((_clamp(box.pixel_x1, width), _clamp(box.pixel_x2, width)))
    y1, y2 = sorted((_clamp(box.pixel_y1, height), _clamp(box.pixel_y2, height)))
    pixels[y1:y2, x1:x2] = True
    return pixels


@dataclass(frozen=True)
class ShapedMask:
    """A region's inpainting mask: ``values`` H×W float32 in [0, 1] at the image's size, and ``extent``,
    the (x1, y1, x2, y2) of its non-zero pixels (x2/y2 exclusive; None when it has none)."""

    values: np.ndarray
    extent: Optional[tuple[int, int, int, int]]


def shaped(pixels: np.ndarray, grow: int, feather: int) -> ShapedMask:
    """``pixels`` (H×W bool) grown by ``grow`` px and then fading to 0 over ``feather`` px."""
    if grow < 0 or feather < 0:
        raise ValueError(f"grow and feather are pixels outwards, at least 0 (got grow {grow}, feather {feather})")
    height, width = pixels.shape
    values = np.zeros((height, width), np.float32)
    core = extent(pixels)
    if core is None:
        return ShapedMask(values, None)
    reach = grow + feather
    x1, y1 = max(0, core[0] - reach), max(0, core[1] - reach)
    x2, y2 = min(width, core[2] + reach), min(height, core[3] + reach)
    window = pixels[y1:y2, x1:x2]
    shaped_window = window.astype(np.float32)
    reached = window
    for step in range(1, reach + 1):
        grown = _dilate_once(reached)
        ring = grown & ~reached
        # grow px are covered fully; the feather rings after them fade: 1 - k/(feather+1) for ring k.
        shaped_window[ring] = 1.0 if step <= grow else 1.0 - (step - grow) / (feather + 1)
        reached = grown
    values[y1:y2, x1:x2] = shaped_window
    return ShapedMask(values, extent(values > 0))


def union(masks: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """The pixel-wise maximum of ``masks`` (all-zero H×W when there are none)."""
    if not masks:
        return np.zeros((height, width), np.float32)
    return np.maximum.reduce([np.asarray(m, np.float32) for m in masks])


def _dilate_once(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one pixel towards its 8 neighbours."""
    rows = mask.copy()
    rows[1:, :] |= mask[:-1, :]
    rows[:-1, :] |= mask[1:, :]
    grown = rows.copy()
    grown[:, 1:] |= rows[:, :-1]
    grown[:, :-1] |= rows[:, 1:]
    return grown


def extent(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) of the true pixels of ``mask`` (x2/y2 exclusive); None when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _clamp(value: int, limit: int) -> int:
    return min(max(int(value), 0), limit)
