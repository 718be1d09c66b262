"""Typed, immutable events of an evaluation: plain dataclasses and enums, the same whichever transport
brought them (each transport converts its wire form into these, once: ``grpc_transport/convert.py``,
``http_transport/convert.py``).

Enums map unknown wire values to ``UNSPECIFIED`` and unknown event cases are skipped, as the contract
asks of clients (``heie.v1`` only grows compatibly).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    import numpy as np


class _WireEnum(enum.IntEnum):
    @classmethod
    def _missing_(cls, value: object) -> "_WireEnum":
        return cls(0)


class HeadsMode(_WireEnum):
    """Which machinery produced a score or ran an evaluation."""

    UNSPECIFIED = 0
    ZERO_SHOT = 1
    TRAINED = 2


class PromptMode(_WireEnum):
    UNSPECIFIED = 0
    GUIDED = 1
    NATIVE = 2


class Section(_WireEnum):
    """Sections of the chain of thought, in writing order."""

    UNSPECIFIED = 0
    DESCRIPTION = 1
    REGIONS = 2
    ANALYSIS = 3
    RATING = 4


class HeatmapEncoding(_WireEnum):
    UNSPECIFIED = 0
    RAW_F32_LE = 1
    PNG8 = 2
    OVERLAY_PNG = 3


class HeatmapSource(_WireEnum):
    UNSPECIFIED = 0
    FUSED = 1
    ZERO_SHOT = 2


class FinishReason(_WireEnum):
    UNSPECIFIED = 0
    COMPLETED = 1
    CANCELLED = 2
    LENGTH = 3
    ERROR = 4


@dataclass(frozen=True)
class Tiles:
    cols: int
    rows: int
    has_thumbnail: bool
    tile_size: int


@dataclass(frozen=True)
class Started:
    """First event: the request was admitted and the image tiled."""

    request_id: str
    tiles: Tiles
    mode: HeadsMode
    prompt_mode: PromptMode
    image_width: int
    image_height: int


@dataclass(frozen=True)
class TextDelta:
    """A piece of explanation text (headings and ``[MAP]``/``[SCORE]`` markers included as sent)."""

    section: Section
    text: str


@dataclass(frozen=True)
class RegionBox:
    """A problematic region: 0..1000 normalised corners and pixel corners (x2/y2 exclusive)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    pixel_x1: int
    pixel_y1: int
    pixel_x2: int
    pixel_y2: int


class RegionCategory(_WireEnum):
    """The kind of defect a region shows; its user-facing name is the member name in lower case."""

    UNSPECIFIED = 0
    HAND = 1
    FACE = 2
    BODY = 3
    TEXT = 4
    OBJECT = 5
    PHYSICS = 6
    BACKGROUND = 7
    OTHER = 8


class RegionSource(_WireEnum):
    """Where a region came from: a grounding box (zero-shot) or a heatmap component (trained heads)."""

    UNSPECIFIED = 0
    GROUNDED_BOX = 1
    HEATMAP_COMPONENT = 2


@dataclass(frozen=True)
class Region:
    """One flagged region as data a host can act on (README, "Regions")."""

    id: int
    """1-based, in list order (grounding order; components largest first)."""
    label: str
    """What the model called it, e.g. "the left hand"; may be empty."""
    sentences: tuple[str, ...]
    """The explanation's sentences about it, in order (at most five)."""
    category: RegionCategory
    box: RegionBox
    severity: float
    """(1 − primary score) × mean of the primary heatmap over the mask, in [0, 1]."""
    mask_png: bytes = field(repr=False)
    """The mask at image size: an 8-bit grayscale PNG, 255 inside the region."""
    source: RegionSource

    def mask(self) -> np.ndarray:
        """The mask as an H×W bool array at the image's size (numpy and Pillow are imported here)."""
        from .heatmaps import decode_mask

        return decode_mask(self.mask_png)


@dataclass(frozen=True)
class Regions:
    """Every flagged region of one image, sent after the scores and before Done (possibly none)."""

    regions: tuple[Region, ...]


@dataclass(frozen=True)
class Heatmap:
    """One encoding of the implausibility heatmap; decode with :mod:`heie_client.heatmaps`."""

    width: int
    height: int
    encoding: HeatmapEncoding
    data: bytes = field(repr=False)
    source: HeatmapSource


@dataclass(frozen=True)
class LevelProbability:
    level: str
    probability: float


@dataclass(frozen=True)
class Score:
    """The plausibility verdict: 1 = looks real, 0 = badly implausible."""

    score: float
    mode: HeadsMode
    levels: tuple[LevelProbability, ...]
    s_token: Optional[float]
    s_map: Optional[float]
    band: str = ""
    """What the score means in words: its band among ``ServerInfo.score_bands`` ("badly flawed", "flawed",
    "typical", "good", "very plausible")."""
    uncalibrated_score: Optional[float] = None
    """The heads' own score when the server applied a user calibration to ``score``; None otherwise."""


@dataclass(frozen=True)
class Timings:
    preprocess_ms: float
    image_encode_ms: float
    prefill_ms: float
    decode_ms: float
    decode_tokens_per_s: float
    total_ms: float
    time_to_first_token_ms: float
    queue_ms: float
    heads_ms: float
    image_cached: bool = False
    """Every tile's vision features came from the server's image cache (the image was judged before)."""


@dataclass(frozen=True)
class TokenCounts:
    prompt_tokens: int
    image_tokens: int
    generated_tokens: int


@dataclass(frozen=True)
class Done:
    """Last event of one image's evaluation."""

    timings: Timings
    tokens: TokenCounts
    finish_reason: FinishReason
    device: str
    message: str
    summary: str = ""
    """The server's one-line summary: ``score 0.254 (zero-shot): <first sentence of the analysis>``."""


@dataclass(frozen=True)
class RankedImage:
    index: int
    score: float


@dataclass(frozen=True)
class Ranking:
    """Last event of a batch: images with a score, best first."""

    entries: tuple[RankedImage, ...]


Event = Union[Started, TextDelta, RegionBox, Heatmap, Score, Regions, Done]


@dataclass(frozen=True)
class BatchEvent:
    """An event of image ``index`` in an EvaluateBatch stream."""

    index: int
    event: Event
