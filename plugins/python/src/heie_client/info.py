"""Typed views of GetInfo and health answers, and the Rerank reply."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._generated.heie.v1 import evaluator_pb2 as pb
from .events import HeadsMode, PromptMode


@dataclass(frozen=True)
class Limits:
    max_pixels: int
    max_batch: int
    parallel_slots: int
    max_message_bytes: int
    max_tiles: int
    max_queue: int


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

    @classmethod
    def from_pb(cls, m: pb.ServerInfo) -> "ServerInfo":
        lim = m.limits
        return cls(
            llm_model=m.llm_model,
            mmproj_model=m.mmproj_model,
            llm_width=m.llm_width,
            tile_size=m.tile_size,
            tokens_per_tile=m.tokens_per_tile,
            heads_mode=HeadsMode(m.heads_mode),
            prompt_mode=PromptMode(m.prompt_mode),
            limits=Limits(lim.max_pixels, lim.max_batch, lim.parallel_slots, lim.max_message_bytes,
                          lim.max_tiles, lim.max_queue),
            version=m.version,
            device=m.device,
        )


class HealthStatus(enum.IntEnum):
    """grpc.health.v1 serving status."""

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

    @classmethod
    def from_pb(cls, m: pb.RerankResponse) -> "Reranked":
        return cls(tuple(m.scores), tuple(m.order), tuple(m.top_k_indices), m.total_ms)
