"""Typed views of GetInfo and health answers, and the Rerank reply."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from .events import HeadsMode, PromptMode


@dataclass(frozen=True)
class Limits:
    """Every limit of the server a request can hit (``GetInfo.limits``); widgets take their ranges here."""

    max_pixels: int
    max_batch: int
    parallel_slots: int
    max_message_bytes: int
    max_tiles: int
    max_queue: int
    #: Largest heatmap side a request may ask for (trained mode scales a default one down to it).
    max_heatmap_side: int = 0
    #: Largest ``generation_prompt``, in UTF-8 bytes (always read as plain text).
    max_generation_prompt_bytes: int = 0
    #: Largest ``max_tokens_per_section``, and what 0 (unset) means on this server.
    max_tokens_per_section: int = 0
    default_max_tokens_per_section: int = 0
    #: Context tokens per request: (tiles + thumbnail) x tokens_per_tile + prompt + sections x max tokens must fit.
    context_tokens: int = 0
    max_temperature: float = 0.0
    #: A stream whose client reads nothing for this long is cancelled (0 = never).
    stall_timeout_ms: int = 0


@dataclass(frozen=True)
class ServerInfo:
    llm_model: str
    mmproj_model: str
    llm_width: int
    tile_size: int
    tokens_per_tile: int
    heads_mode: HeadsMode
    prompt_mode: PromptMode
    limits: Limits
    version: str
    device: str


class HealthStatus(enum.IntEnum):
    """Serving status (grpc.health.v1's values; the HTTP API's ``/healthz`` says SERVING or NOT_SERVING)."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3

    @classmethod
    def _missing_(cls, value: object) -> "HealthStatus":
        return cls.UNKNOWN


@dataclass(frozen=True)
class Reranked:
    """Rerank reply: ``scores[i]`` belongs to input ``i``; ``order`` is every index, best first."""

    scores: tuple[float, ...]
    order: tuple[int, ...]
    top_k: tuple[int, ...]
    total_ms: float
