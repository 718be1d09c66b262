"""Turning user images (PIL, numpy, torch, bytes, paths) into :class:`WireImage`, the request's image
in a form both transports write (gRPC as ``heie.v1.Image``, HTTP as its proto3 JSON).

Decoded pixels (numpy arrays, tensors, PIL images) travel as raw RGB/RGBA so the server decodes
nothing; files and bytes travel encoded, exactly as they are. numpy is imported only for pixels, so
a host that sends encoded files needs nothing outside the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .errors import InvalidImage

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

ImageLike = Union["PILImage.Image", "np.ndarray", bytes, bytearray, memoryview, str, "os.PathLike[str]", Any]
"""Anything :func:`to_wire` accepts (``Any`` covers array-likes such as torch tensors)."""


@dataclass(frozen=True)
class RawPixels:
    """Decoded pixels, row-major, ``channels`` (3 = RGB, 4 = RGBA) bytes a pixel."""

    width: int
    height: int
    channels: int
    pixels: bytes = field(repr=False)


@dataclass(frozen=True)
class WireImage:
    """One image of a request: ``encoded`` file bytes (PNG/JPEG/WebP) or ``raw`` pixels, and the prompt it
    was generated from (context for the judge)."""

    encoded: Optional[bytes] = field(default=None, repr=False)
    raw: Optional[RawPixels] = None
    generation_prompt: Optional[str] = None


def to_pixels(image: Any) -> np.ndarray:
    """Returns an H×W×C uint8 array (C = 3 or 4) for a PIL image, numpy array or tensor.

    Float arrays are taken as values in [0, 1] (clipped); grayscale (H×W or H×W×1) becomes RGB.
    """
    import numpy as np

    if _is_pil(image):
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        return np.asarray(image, dtype=np.uint8)
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor, without importing torch
        image = image.detach().cpu().numpy()
    try:
        array = np.asarray(image)
    except (TypeError, ValueError) as err:
        raise InvalidImage(f"cannot read {type(image).__name__} as pixels: {err}") from err
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidImage(f"expected H×W×C pixels with C in 1, 3 or 4, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidImage(f"empty image of shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InvalidImage("float pixels contain NaN or infinity")
        return np.ascontiguousarray(np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8))
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array.astype(np.uint8) * 255)
    raise InvalidImage(f"unsupported pixel type {array.dtype}; use uint8 or float in [0, 1]")


def to_wire(image: ImageLike, prompt: Optional[str] = None) -> WireImage:
    """Builds the request's image for one user image, with the generation prompt if given."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise InvalidImage("empty image bytes")
        return WireImage(encoded=bytes(image), generation_prompt=prompt or None)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            return WireImage(encoded=path.read_bytes(), generation_prompt=prompt or None)
        except OSError as err:
            raise InvalidImage(f"cannot read {path}: {err}") from err
    pixels = to_pixels(image)
    height, width, channels = pixels.shape
    return WireImage(raw=RawPixels(width, height, channels, pixels.tobytes()), generation_prompt=prompt or None)


def _is_pil(image: Any) -> bool:
    try:
        from PIL import Image as PILImage
    except ImportError:  # a host without Pillow has no PIL images either
        return False
    return isinstance(image, PILImage.Image)
