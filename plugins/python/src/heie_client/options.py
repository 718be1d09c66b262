"""How to evaluate: a typed mirror of the wire ``Options``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ._generated.heie.v1 import evaluator_pb2 as pb
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

    def to_pb(self) -> pb.Options:
        width, height = self.heatmap_size or (0, 0)
        message = pb.Options(
            explanation=self.explanation,
            max_tokens_per_section=self.max_tokens_per_section,
            heatmap_width=width,
            heatmap_height=height,
            heatmap_encodings=[int(e) for e in self.heatmap_encodings],
            temperature=self.temperature,
            max_tiles=self.max_tiles,
        )
        if self.seed is not None:
            message.seed = self.seed
        return message
