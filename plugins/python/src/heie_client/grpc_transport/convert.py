"""gRPC's wire form (the generated ``heie.v1`` protobuf classes) to and from the core types: the only
module that reads or builds those messages."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from .._generated.heie.v1 import evaluator_pb2 as pb
from ..events import (
    BatchEvent, Done, Event, FinishReason, HeadsMode, Heatmap, HeatmapEncoding, HeatmapSource, LevelProbability,
    PromptMode, RankedImage, Ranking, Region, RegionBox, RegionCategory, Regions, RegionSource, Score, Section, Started,
    TextDelta, Tiles, Timings, TokenCounts,
)
from ..images import WireImage
from ..info import Limits, Reranked, ServerInfo
from ..options import EvaluateOptions


def image_to_pb(image: WireImage) -> pb.Image:
    message = pb.Image()
    if image.encoded is not None:
        message.encoded = image.encoded
    elif image.raw is not None:
        r = image.raw
        message.raw.CopyFrom(pb.RawImage(width=r.width, height=r.height, channels=r.channels, pixels=r.pixels))
    if image.generation_prompt:
        message.generation_prompt = image.generation_prompt
    return message


def options_to_pb(options: EvaluateOptions) -> pb.Options:
    width, height = options.heatmap_size or (0, 0)
    message = pb.Options(
        explanation=options.explanation,
        max_tokens_per_section=options.max_tokens_per_section,
        heatmap_width=width,
        heatmap_height=height,
        heatmap_encodings=[int(e) for e in options.heatmap_encodings],
        temperature=options.temperature,
        max_tiles=options.max_tiles,
    )
    if options.seed is not None:
        message.seed = options.seed
    return message


def evaluate_request(image: WireImage, options: EvaluateOptions) -> pb.EvaluateRequest:
    return pb.EvaluateRequest(image=image_to_pb(image), options=options_to_pb(options))


def batch_request(images: Sequence[WireImage], options: EvaluateOptions) -> pb.EvaluateBatchRequest:
    return pb.EvaluateBatchRequest(images=[image_to_pb(i) for i in images], options=options_to_pb(options))


def rerank_request(images: Sequence[WireImage], top_k: int, fast: bool, options: EvaluateOptions) -> pb.RerankRequest:
    return pb.RerankRequest(images=[image_to_pb(i) for i in images], top_k=top_k, fast=fast,
                            options=options_to_pb(options))


def event_from_pb(message: pb.EvaluateEvent) -> Optional[Event]:
    """Converts one wire event; ``None`` for a case this client does not know."""
    kind = message.WhichOneof("event")
    if kind == "started":
        s = message.started
        return Started(
            request_id=s.request_id,
            tiles=Tiles(s.tiles.cols, s.tiles.rows, s.tiles.has_thumbnail, s.tiles.tile_size),
            mode=HeadsMode(s.mode),
            prompt_mode=PromptMode(s.prompt_mode),
            image_width=s.image_width,
            image_height=s.image_height,
        )
    if kind == "text_delta":
        return TextDelta(Section(message.text_delta.section), message.text_delta.text)
    if kind == "region_box":
        return _region_box(message.region_box)
    if kind == "heatmap":
        h = message.heatmap
        return Heatmap(h.width, h.height, HeatmapEncoding(h.encoding), bytes(h.data), HeatmapSource(h.source))
    if kind == "score":
        s = message.score
        return Score(
            score=s.score,
            mode=HeadsMode(s.mode),
            levels=tuple(LevelProbability(lv.level, lv.probability) for lv in s.levels),
            s_token=s.s_token if s.HasField("s_token") else None,
            s_map=s.s_map if s.HasField("s_map") else None,
            band=s.band,
            uncalibrated_score=s.uncalibrated_score if s.HasField("uncalibrated_score") else None,
        )
    if kind == "regions":
        return Regions(tuple(
            Region(
                id=r.id,
                label=r.label,
                sentences=tuple(r.sentences),
                category=RegionCategory(r.category),
                box=_region_box(r.box),
                severity=r.severity,
                mask_png=bytes(r.mask_png),
                source=RegionSource(r.source),
            )
            for r in message.regions.regions
        ))
    if kind == "done":
        d = message.done
        t = d.timings
        return Done(
            timings=Timings(
                t.preprocess_ms, t.image_encode_ms, t.prefill_ms, t.decode_ms, t.decode_tokens_per_s,
                t.total_ms, t.time_to_first_token_ms, t.queue_ms, t.heads_ms, t.image_cached,
            ),
            tokens=TokenCounts(d.tokens.prompt_tokens, d.tokens.image_tokens, d.tokens.generated_tokens),
            finish_reason=FinishReason(d.finish_reason),
            device=d.device,
            message=d.message,
            summary=d.summary,
        )
    return None


def _region_box(b: pb.RegionBox) -> RegionBox:
    return RegionBox(b.label, b.x1, b.y1, b.x2, b.y2, b.pixel_x1, b.pixel_y1, b.pixel_x2, b.pixel_y2)


def batch_event_from_pb(message: pb.BatchEvent) -> Optional[Union[BatchEvent, Ranking]]:
    """Converts one batch event; ``None`` for a case this client does not know."""
    kind = message.WhichOneof("payload")
    if kind == "ranking":
        return Ranking(tuple(RankedImage(e.index, e.score) for e in message.ranking.entries))
    if kind == "event":
        event = event_from_pb(message.event)
        return None if event is None else BatchEvent(message.index, event)
    return None


def server_info_from_pb(m: pb.ServerInfo) -> ServerInfo:
    lim = m.limits
    return ServerInfo(
        llm_model=m.llm_model,
        mmproj_model=m.mmproj_model,
        llm_width=m.llm_width,
        tile_size=m.tile_size,
        tokens_per_tile=m.tokens_per_tile,
        heads_mode=HeadsMode(m.heads_mode),
        prompt_mode=PromptMode(m.prompt_mode),
        limits=Limits(
            max_pixels=lim.max_pixels,
            max_batch=lim.max_batch,
            parallel_slots=lim.parallel_slots,
            max_message_bytes=lim.max_message_bytes,
            max_tiles=lim.max_tiles,
            max_queue=lim.max_queue,
            max_heatmap_side=lim.max_heatmap_side,
            max_generation_prompt_bytes=lim.max_generation_prompt_bytes,
            max_tokens_per_section=lim.max_tokens_per_section,
            default_max_tokens_per_section=lim.default_max_tokens_per_section,
            context_tokens=lim.context_tokens,
            max_temperature=lim.max_temperature,
            stall_timeout_ms=lim.stall_timeout_ms,
        ),
        version=m.version,
        device=m.device,
    )


def reranked_from_pb(m: pb.RerankResponse) -> Reranked:
    return Reranked(tuple(m.scores), tuple(m.order), tuple(m.top_k_indices), m.total_ms)
