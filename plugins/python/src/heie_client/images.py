"""Turning user images (PIL, numpy, torch, bytes, paths) into wire ``Image`` messages.

Decoded pixels (numpy arrays, tensors, PIL images) travel as raw RGB/RGBA so the server decodes
nothing; files and bytes travel encoded, exactly as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from ._generated.heie.v1 import evaluator_pb2 as pb
from .errors import InvalidImage

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageLike = Union["PILImage.Image", np.ndarray, bytes, bytearray, memoryview, str, "os.PathLike[str]", Any]
"""Anything :func:`to_wire` accepts (``Any`` covers array-likes such as torch tensors)."""


def to_pixels(image: Any) -> np.ndarray:
    """Returns an H×W×C uint8 array (C = 3 or 4) for a PIL image, numpy array or tensor.

    Float arrays are taken as values in [0, 1] (clipped); grayscale (H×W or H×W×1) becomes RGB.
    """
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


def to_wire(image: ImageLike, prompt: Optional[str] = None) -> pb.Image:
    """Builds the wire ``Image`` for one user image, with the generation prompt if given."""
    message = pb.Image()
    if isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise InvalidImage("empty image bytes")
        message.encoded = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            message.encoded = path.read_bytes()
        except OSError as err:
            raise InvalidImage(f"cannot read {path}: {err}") from err
    else:
        pixels = to_pixels(image)
        height, width, channels = pixels.shape
        message.raw.CopyFrom(pb.RawImage(width=width, height=height, channels=channels, pixels=pixels.tobytes()))
    if prompt:
        message.generation_prompt = prompt
    return message


def _is_pil(image: Any) -> bool:
    try:
        from PIL import Image as PILImage
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(image, PILImage.Image)
