"""The HTTP API's wire form, the proto3 JSON of ``heie.v1`` (lowerCamelCase names, enums by name, bytes
as base64, 64-bit integers as strings), to and from the core types: the only module that reads or
writes those bodies. Fields the server leaves out read as their proto3 defaults."""

from __future__ import annotations

import base64
import struct
from typing import Any, Optional, Sequence, TypeVar, Union

from ..events import (
    BatchEvent, Done, Event, FinishReason, HeadsMode, Heatmap, HeatmapEncoding, HeatmapSource, LevelProbability,
    PromptMode, RankedImage, Ranking, Region, RegionBox, RegionCategory, Regions, RegionSource, Score, Section, Started,
    TextDelta, Tiles, Timings, TokenCounts,
)
from ..images import WireImage
from ..info import Limits, Reranked, ServerInfo
from ..options import EvaluateOptions

Json = dict[str, Any]
N = TypeVar("N", HeadsMode, PromptMode, Section, HeatmapEncoding, HeatmapSource, FinishReason, RegionCategory,
            RegionSource)

#: proto3 JSON writes an enum value by its full name: ``HEADS_MODE_ZERO_SHOT`` is ``HeadsMode.ZERO_SHOT``.
_PREFIX = {HeadsMode: "HEADS_MODE_", PromptMode: "PROMPT_MODE_", Section: "SECTION_",
           HeatmapEncoding: "HEATMAP_ENCODING_", HeatmapSource: "HEATMAP_SOURCE_", FinishReason: "FINISH_REASON_",
           RegionCategory: "REGION_CATEGORY_", RegionSource: "REGION_SOURCE_"}


def _enum(kind: type[N], value: Any) -> N:
    """A wire enum value (its name, or a number, which proto3 JSON also allows); unknown ones are UNSPECIFIED."""
    if isinstance(value, int):
        return kind(value)
    name = str(value or "")
    prefix = _PREFIX[kind]
    return kind.__members__.get(name[len(prefix):] if name.startswith(prefix) else name, kind(0))  # type: ignore[return-value]


def _enum_name(value: Union[HeadsMode, PromptMode, Section, HeatmapEncoding, HeatmapSource, FinishReason]) -> str:
    return _PREFIX[type(value)] + value.name


def _f32(value: Any) -> float:
    """A ``float`` field as gRPC gives it: JSON writes the shortest decimal of the 32-bit value, and this
    turns it back into that value exactly, so both transports return equal numbers."""
    return float(struct.unpack("<f", struct.pack("<f", float(value or 0.0)))[0])


def _int(value: Any) -> int:
    return int(value or 0)  # 64-bit integers come as strings


def _b64(text: Any) -> bytes:
    return base64.b64decode(text or "")


def image_json(image: WireImage) -> Json:
    body: Json = {}
    if image.encoded is not None:
        body["encoded"] = base64.b64encode(image.encoded).decode("ascii")
    elif image.raw is not None:
        r = image.raw
        body["raw"] = {"width": r.width, "height": r.height, "channels": r.channels,
                       "pixels": base64.b64encode(r.pixels).decode("ascii")}
    if image.generation_prompt:
        body["generationPrompt"] = image.generation_prompt
    return body


def options_json(options: EvaluateOptions) -> Json:
    width, height = options.heatmap_size or (0, 0)
    body: Json = {
        "explanation": options.explanation,
        "maxTokensPerSection": options.max_tokens_per_section,
        "heatmapWidth": width,
        "heatmapHeight": height,
        "heatmapEncodings": [_enum_name(e) for e in options.heatmap_encodings],
        "temperature": options.temperature,
        "maxTiles": options.max_tiles,
    }
    if options.seed is not None:
        body["seed"] = str(options.seed)
    return body


def evaluate_request(image: WireImage, options: EvaluateOptions) -> Json:
    return {"image": image_json(image), "options": options_json(options)}


def rerank_request(images: Sequence[WireImage], top_k: int, fast: bool, options: EvaluateOptions) -> Json:
    return {"images": [image_json(i) for i in images], "topK": top_k, "fast": fast, "options": options_json(options)}


def event_from_json(case: str, body: Json) -> Optional[Event]:
    """One ``EvaluateEvent`` (``body`` is the whole event, ``{case: {...}}``); ``None`` for a case this client
    does not know."""
    m = body.get(case)
    if not isinstance(m, dict):
        return None
    if case == "started":
        t = m.get("tiles") or {}
        return Started(
            request_id=str(m.get("requestId", "")),
            tiles=Tiles(_int(t.get("cols")), _int(t.get("rows")), bool(t.get("hasThumbnail", False)), _int(t.get("tileSize"))),
            mode=_enum(HeadsMode, m.get("mode")),
            prompt_mode=_enum(PromptMode, m.get("promptMode")),
            image_width=_int(m.get("imageWidth")),
            image_height=_int(m.get("imageHeight")),
        )
    if case == "textDelta":
        return TextDelta(_enum(Section, m.get("section")), str(m.get("text", "")))
    if case == "regionBox":
        return _region_box(m)
    if case == "heatmap":
        return Heatmap(_int(m.get("width")), _int(m.get("height")), _enum(HeatmapEncoding, m.get("encoding")),
                       _b64(m.get("data")), _enum(HeatmapSource, m.get("source")))
    if case == "score":
        return Score(
            score=_f32(m.get("score")),
            mode=_enum(HeadsMode, m.get("mode")),
            levels=tuple(LevelProbability(str(lv.get("level", "")), _f32(lv.get("probability"))) for lv in m.get("levels", [])),
            s_token=_f32(m["sToken"]) if m.get("sToken") is not None else None,
            s_map=_f32(m["sMap"]) if m.get("sMap") is not None else None,
            band=str(m.get("band", "")),
            uncalibrated_score=_f32(m["uncalibratedScore"]) if m.get("uncalibratedScore") is not None else None,
        )
    if case == "regions":
        return Regions(tuple(
            Region(
                id=_int(r.get("id")),
                label=str(r.get("label", "")),
                sentences=tuple(str(t) for t in r.get("sentences", [])),
                category=_enum(RegionCategory, r.get("category")),
                box=_region_box(r.get("box") or {}),
                severity=_f32(r.get("severity")),
                mask_png=_b64(r.get("maskPng")),
                source=_enum(RegionSource, r.get("source")),
            )
            for r in m.get("regions", [])
        ))
    if case == "done":
        t, n = m.get("timings") or {}, m.get("tokens") or {}
        names = ("preprocessMs", "imageEncodeMs", "prefillMs", "decodeMs", "decodeTokensPerS", "totalMs",
                 "timeToFirstTokenMs", "queueMs", "headsMs")
        return Done(
            timings=Timings(*(float(t.get(k, 0.0)) for k in names), image_cached=bool(t.get("imageCached", False))),
            tokens=TokenCounts(_int(n.get("promptTokens")), _int(n.get("imageTokens")), _int(n.get("generatedTokens"))),
            finish_reason=_enum(FinishReason, m.get("finishReason")),
            device=str(m.get("device", "")),
            message=str(m.get("message", "")),
            summary=str(m.get("summary", "")),
        )
    return None


def _region_box(m: Json) -> RegionBox:
    return RegionBox(str(m.get("label", "")), _f32(m.get("x1")), _f32(m.get("y1")), _f32(m.get("x2")), _f32(m.get("y2")),
                     _int(m.get("pixelX1")), _int(m.get("pixelY1")), _int(m.get("pixelX2")), _int(m.get("pixelY2")))


def batch_event(index: int, event: Event) -> BatchEvent:
    return BatchEvent(index, event)


def ranking_of(scores: dict[int, float]) -> Ranking:
    """The ranking ``EvaluateBatch`` ends with: images with a score, best first, ties by input index."""
    return Ranking(tuple(RankedImage(i, scores[i]) for i in sorted(scores, key=lambda i: (-scores[i], i))))


def server_info_from_json(m: Json) -> ServerInfo:
    lim = m.get("limits") or {}
    return ServerInfo(
        llm_model=str(m.get("llmModel", "")),
        mmproj_model=str(m.get("mmprojModel", "")),
        llm_width=_int(m.get("llmWidth")),
        tile_size=_int(m.get("tileSize")),
        tokens_per_tile=_int(m.get("tokensPerTile")),
        heads_mode=_enum(HeadsMode, m.get("headsMode")),
        prompt_mode=_enum(PromptMode, m.get("promptMode")),
        limits=Limits(
            max_pixels=_int(lim.get("maxPixels")),
            max_batch=_int(lim.get("maxBatch")),
            parallel_slots=_int(lim.get("parallelSlots")),
            max_message_bytes=_int(lim.get("maxMessageBytes")),
            max_tiles=_int(lim.get("maxTiles")),
            max_queue=_int(lim.get("maxQueue")),
            max_heatmap_side=_int(lim.get("maxHeatmapSide")),
            max_generation_prompt_bytes=_int(lim.get("maxGenerationPromptBytes")),
            max_tokens_per_section=_int(lim.get("maxTokensPerSection")),
            default_max_tokens_per_section=_int(lim.get("defaultMaxTokensPerSection")),
            context_tokens=_int(lim.get("contextTokens")),
            max_temperature=_f32(lim.get("maxTemperature")),
            stall_timeout_ms=_int(lim.get("stallTimeoutMs")),
        ),
        version=str(m.get("version", "")),
        device=str(m.get("device", "")),
    )


def reranked_from_json(m: Json) -> Reranked:
    return Reranked(tuple(_f32(s) for s in m.get("scores", [])), tuple(_int(i) for i in m.get("order", [])),
                    tuple(_int(i) for i in m.get("topKIndices", [])), float(m.get("totalMs", 0.0)))
