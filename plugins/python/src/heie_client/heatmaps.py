"""Decoding wire heatmaps into arrays (numpy and Pillow are imported when a heatmap is decoded, not before)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from .errors import ProtocolError
from .events import Heatmap, HeatmapEncoding

if TYPE_CHECKING:
    import numpy as np


def decode_heatmap(heatmap: Heatmap) -> np.ndarray:
    """Returns the map as an H×W float32 array in [0, 1] (1 = most implausible).

    Works for RAW_F32_LE and PNG8; an OVERLAY_PNG is a picture for people, see :func:`decode_overlay`.
    """
    import numpy as np

    h, w = heatmap.height, heatmap.width
    if heatmap.encoding is HeatmapEncoding.RAW_F32_LE:
        if len(heatmap.data) != h * w * 4:
            raise ProtocolError(f"raw heatmap has {len(heatmap.data)} bytes, expected {h * w * 4} for {w}x{h}")
        values = np.frombuffer(heatmap.data, dtype="<f4").reshape(h, w).astype(np.float32)
        return np.clip(values, 0.0, 1.0)
    if heatmap.encoding is HeatmapEncoding.PNG8:
        gray = _png_array(heatmap.data, "L")
        if gray.shape != (h, w):
            raise ProtocolError(f"PNG heatmap is {gray.shape[1]}x{gray.shape[0]}, expected {w}x{h}")
        return gray.astype(np.float32) / np.float32(255.0)
    raise ProtocolError(f"heatmap encoding {heatmap.encoding.name} is not a value map")


def decode_overlay(heatmap: Heatmap) -> np.ndarray:
    """Returns an OVERLAY_PNG heatmap as an H×W×3 uint8 RGB array."""
    if heatmap.encoding is not HeatmapEncoding.OVERLAY_PNG:
        raise ProtocolError(f"heatmap encoding {heatmap.encoding.name} is not an overlay")
    return _png_array(heatmap.data, "RGB")


def decode_mask(png: bytes) -> np.ndarray:
    """A region's mask PNG as an H×W bool array (True inside the region)."""
    return _png_array(png, "L", "region mask") > 127


def _png_array(data: bytes, mode: str, what: str = "heatmap") -> np.ndarray:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ProtocolError(f"{what} PNG does not decode: {err}") from err
