"""Regions as the Impact Pack's SEGS, so its detailers and SEGS tools work on the defects the judge found.

The format (as the Impact Pack's nodes read it): ``SEGS = ((height, width), [SEG, …])`` for one image,
each SEG a named tuple ``(cropped_image, cropped_mask, confidence, crop_region, bbox, label,
control_net_wrapper)``: ``crop_region`` and ``bbox`` are ``[x1, y1, x2, y2]`` pixel corners (x2/y2
exclusive), ``cropped_mask`` a float32 numpy array of the crop region's size, ``cropped_image`` the
image's pixels there as an IMAGE batch of one ([1, h, w, 3]). Its nodes read the fields by name, so a
named tuple with the same field names is all they need; the pack itself is never imported.

Here ``crop_region`` is the extent of the region's grown and feathered mask (all of the mask lies inside
it), ``bbox`` the region's own pixels, ``confidence`` its severity and ``label`` its category ("hand",
"face" …), which is what the Impact Pack's label filters match."""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Sequence

import numpy as np

from heie_client.verdict_rules import category_name

from .tensors import like

SEG = namedtuple(
    "SEG", ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper"],
    defaults=[None],
)


def segs_of_image(template: Any, frame: np.ndarray, pieces: Sequence[tuple[Any, np.ndarray,
                  tuple[int, int, int, int], tuple[int, int, int, int]]]) -> tuple[tuple[int, int], list[SEG]]:
    """One image's SEGS. ``frame``: its H×W×C pixels; ``template``: the IMAGE batch it came from (the
    crops are torch tensors when it is one); ``pieces``: per region ``(region, mask H×W float32,
    crop_region, bbox)``."""
    height, width = int(frame.shape[0]), int(frame.shape[1])
    segs = []
    for region, mask, crop, bbox in pieces:
        x1, y1, x2, y2 = crop
        segs.append(SEG(
            cropped_image=like(template, frame[None, y1:y2, x1:x2, :3]),
            cropped_mask=np.ascontiguousarray(mask[y1:y2, x1:x2], np.float32),
            confidence=float(region.severity),
            crop_region=[x1, y1, x2, y2],
            bbox=list(bbox),
            label=category_name(region),
        ))
    return (height, width), segs
