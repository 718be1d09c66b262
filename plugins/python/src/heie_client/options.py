"""How to evaluate: a typed mirror of the wire ``Options`` (each transport writes it in its own form)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from .events import HeatmapEncoding


@dataclass(frozen=True)
class EvaluateOptions:
    """Options for every image of a call; the defaults are the server's, except that the heatmap comes
    back as raw float32 (exact values) unless ``heatmap_encodings`` says otherwise."""

    explanation: bool = True
    """Write the full chain of thought; False = short analysis and score (much faster)."""
    max_tokens_per_section: int = 0
    """Cap on generated tokens per section; 0 = server default."""
    heatmap_size: Optional[tuple[int, int]] = None
    """(width, height) of the returned heatmaps; None = the image's size."""
    heatmap_encodings: tuple[HeatmapEncoding, ...] = (HeatmapEncoding.RAW_F32_LE,)
    """One Heatmap event per listed encoding; add OVERLAY_PNG for a picture to show people."""
    temperature: float = 0.0
    """0 = greedy (deterministic text); scores do not depend on it."""
    seed: Optional[int] = None
    max_tiles: int = 0
    """Most InternVL tiles; 0 = server default."""
