"""What HEIE Evaluate hands to the nodes that act on its verdict (HEIE Regions): the IMAGE batch it
judged, as it was given, and each image's verdict in the same order, so masks are made at the size of
the very images the verdicts are about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .evaluation import Verdict

#: The ComfyUI type name of the output and input that carry a :class:`JudgedBatch`.
HEIE_RESULT = "HEIE_RESULT"


@dataclass(frozen=True)
class JudgedBatch:
    images: Any
    """The judged IMAGE batch, [B,H,W,C] (torch or numpy, as ComfyUI gave it)."""
    verdicts: tuple[Verdict, ...]
    """One per image, in batch order."""
