"""Preview images: the overlays written as PNG files into ComfyUI's temp folder and named in the node's
``ui`` as ``{"filename", "subfolder", "type": "temp"}``, which is how ComfyUI's frontend finds the images
it shows on a node (``/view?filename=…&type=temp``) and what it keeps in the history. ComfyUI empties its
temp folder when it starts.

The PNG is written here (8-bit RGB, no filter, one zlib stream): the pack needs no imaging library."""

from __future__ import annotations

import os
import secrets
import struct
import zlib
from typing import Optional

import numpy as np

#: zlib level: previews are written on every run and read once; speed over size (Preview Image's choice too).
COMPRESS_LEVEL = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(rgb: np.ndarray) -> bytes:
    """An H×W×3 image (float in [0, 1], or uint8) as PNG bytes."""
    pixels = np.asarray(rgb)
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + width * 3), np.uint8)  # each row: filter type 0, then its RGB bytes
    rows[:, 1:] = pixels.reshape(height, width * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return (PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), COMPRESS_LEVEL))
            + chunk(b"IEND", b""))


def save_previews(overlays: np.ndarray, folder: Optional[str], node_id: Optional[str] = None) -> list[dict[str, str]]:
    """Writes each overlay of a B×H×W×3 batch into ``folder`` (ComfyUI's temp folder) under a name of
    this run's own, and returns the ui entries naming them, in batch order; nothing without a folder
    (outside ComfyUI)."""
    if folder is None or len(overlays) == 0:
        return []
    os.makedirs(folder, exist_ok=True)
    run = secrets.token_hex(4)
    node = "".join(c for c in str(node_id or "") if c.isalnum())
    entries = []
    for number, overlay in enumerate(overlays, start=1):
        name = f"heie_evaluate_{node + '_' if node else ''}{run}_{number:03}.png"
        path = os.path.join(folder, name)
        with open(path + ".part", "wb") as out:
            out.write(png_bytes(overlay))
        os.replace(path + ".part", path)
        entries.append({"filename": name, "subfolder": "", "type": "temp"})
    return entries
