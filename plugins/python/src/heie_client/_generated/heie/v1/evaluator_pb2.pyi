from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeadsMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEADS_MODE_UNSPECIFIED: _ClassVar[HeadsMode]
    HEADS_MODE_ZERO_SHOT: _ClassVar[HeadsMode]
    HEADS_MODE_TRAINED: _ClassVar[HeadsMode]

class PromptMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROMPT_MODE_UNSPECIFIED: _ClassVar[PromptMode]
    PROMPT_MODE_GUIDED: _ClassVar[PromptMode]
    PROMPT_MODE_NATIVE: _ClassVar[PromptMode]

class Section(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECTION_UNSPECIFIED: _ClassVar[Section]
    SECTION_DESCRIPTION: _ClassVar[Section]
    SECTION_REGIONS: _ClassVar[Section]
    SECTION_ANALYSIS: _ClassVar[Section]
    SECTION_RATING: _ClassVar[Section]

class HeatmapEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEATMAP_ENCODING_UNSPECIFIED: _ClassVar[HeatmapEncoding]
    HEATMAP_ENCODING_RAW_F32_LE: _ClassVar[HeatmapEncoding]
    HEATMAP_ENCODING_PNG8: _ClassVar[HeatmapEncoding]
    HEATMAP_ENCODING_OVERLAY_PNG: _ClassVar[HeatmapEncoding]

class HeatmapSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEATMAP_SOURCE_UNSPECIFIED: _ClassVar[HeatmapSource]
    HEATMAP_SOURCE_FUSED: _ClassVar[HeatmapSource]
    HEATMAP_SOURCE_ZERO_SHOT: _ClassVar[HeatmapSource]

class RegionCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGION_CATEGORY_UNSPECIFIED: _ClassVar[RegionCategory]
    REGION_CATEGORY_HAND: _ClassVar[RegionCategory]
    REGION_CATEGORY_FACE: _ClassVar[RegionCategory]
    REGION_CATEGORY_BODY: _ClassVar[RegionCategory]
    REGION_CATEGORY_TEXT: _ClassVar[RegionCategory]
    REGION_CATEGORY_OBJECT: _ClassVar[RegionCategory]
    REGION_CATEGORY_PHYSICS: _ClassVar[RegionCategory]
    REGION_CATEGORY_BACKGROUND: _ClassVar[RegionCategory]
    REGION_CATEGORY_OTHER: _ClassVar[RegionCategory]

class RegionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGION_SOURCE_UNSPECIFIED: _ClassVar[RegionSource]
    REGION_SOURCE_GROUNDED_BOX: _ClassVar[RegionSource]
    REGION_SOURCE_HEATMAP_COMPONENT: _ClassVar[RegionSource]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_COMPLETED: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ERROR: _ClassVar[FinishReason]
HEADS_MODE_UNSPECIFIED: HeadsMode
HEADS_MODE_ZERO_SHOT: HeadsMode
HEADS_MODE_TRAINED: HeadsMode
PROMPT_MODE_UNSPECIFIED: PromptMode
PROMPT_MODE_GUIDED: PromptMode
PROMPT_MODE_NATIVE: PromptMode
SECTION_UNSPECIFIED: Section
SECTION_DESCRIPTION: Section
SECTION_REGIONS: Section
SECTION_ANALYSIS: Section
SECTION_RATING: Section
HEATMAP_ENCODING_UNSPECIFIED: HeatmapEncoding
HEATMAP_ENCODING_RAW_F32_LE: HeatmapEncoding
HEATMAP_ENCODING_PNG8: HeatmapEncoding
HEATMAP_ENCODING_OVERLAY_PNG: HeatmapEncoding
HEATMAP_SOURCE_UNSPECIFIED: HeatmapSource
HEATMAP_SOURCE_FUSED: HeatmapSource
HEATMAP_SOURCE_ZERO_SHOT: HeatmapSource
REGION_CATEGORY_UNSPECIFIED: RegionCategory
REGION_CATEGORY_HAND: RegionCategory
REGION_CATEGORY_FACE: RegionCategory
REGION_CATEGORY_BODY: RegionCategory
REGION_CATEGORY_TEXT: RegionCategory
REGION_CATEGORY_OBJECT: RegionCategory
REGION_CATEGORY_PHYSICS: RegionCategory
REGION_CATEGORY_BACKGROUND: RegionCategory
REGION_CATEGORY_OTHER: RegionCategory
REGION_SOURCE_UNSPECIFIED: RegionSource
REGION_SOURCE_GROUNDED_BOX: RegionSource
REGION_SOURCE_HEATMAP_COMPONENT: RegionSource
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_COMPLETED: FinishReason
FINISH_REASON_CANCELLED: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ERROR: FinishReason

class Image(_message.Message):
    __slots__ = ("encoded", "raw", "generation_prompt")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    GENERATION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    generation_prompt: str
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ..., generation_prompt: _Optional[str] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("width", "height", "channels", "pixels")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    channels: int
    pixels: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., pixels: _Optional[bytes] = ...) -> None: ...

class Options(_message.Message):
    __slots__ = ("explanation", "max_tokens_per_section", "heatmap_width", "heatmap_height", "heatmap_encodings", "temperature", "seed", "max_tiles")
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_SECTION_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_TILES_FIELD_NUMBER: _ClassVar[int]
    explanation: bool
    max_tokens_per_section: int
    heatmap_width: int
    heatmap_height: int
    heatmap_encodings: _containers.RepeatedScalarFieldContainer[HeatmapEncoding]
    temperature: float
    seed: int
    max_tiles: int
    def __init__(self, explanation: _Optional[bool] = ..., max_tokens_per_section: _Optional[int] = ..., heatmap_width: _Optional[int] = ..., heatmap_height: _Optional[int] = ..., heatmap_encodings: _Optional[_Iterable[_Union[HeatmapEncoding, str]]] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., max_tiles: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: Image
    options: Options
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class EvaluateEvent(_message.Message):
    __slots__ = ("started", "text_delta", "region_box", "heatmap", "score", "done", "regions")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    REGION_BOX_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    started: Started
    text_delta: TextDelta
    region_box: RegionBox
    heatmap: Heatmap
    score: Score
    done: Done
    regions: Regions
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., text_delta: _Optional[_Union[TextDelta, _Mapping]] = ..., region_box: _Optional[_Union[RegionBox, _Mapping]] = ..., heatmap: _Optional[_Union[Heatmap, _Mapping]] = ..., score: _Optional[_Union[Score, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., regions: _Optional[_Union[Regions, _Mapping]] = ...) -> None: ...

class Tiles(_message.Message):
    __slots__ = ("cols", "rows", "has_thumbnail", "tile_size")
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    HAS_THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    cols: int
    rows: int
    has_thumbnail: bool
    tile_size: int
    def __init__(self, cols: _Optional[int] = ..., rows: _Optional[int] = ..., has_thumbnail: _Optional[bool] = ..., tile_size: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("request_id", "tiles", "mode", "prompt_mode", "image_width", "image_height")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_MODE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tiles: Tiles
    mode: HeadsMode
    prompt_mode: PromptMode
    image_width: int
    image_height: int
    def __init__(self, request_id: _Optional[str] = ..., tiles: _Optional[_Union[Tiles, _Mapping]] = ..., mode: _Optional[_Union[HeadsMode, str]] = ..., prompt_mode: _Optional[_Union[PromptMode, str]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("section", "text")
    SECTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    section: Section
    text: str
    def __init__(self, section: _Optional[_Union[Section, str]] = ..., text: _Optional[str] = ...) -> None: ...

class RegionBox(_message.Message):
    __slots__ = ("label", "x1", "y1", "x2", "y2", "pixel_x1", "pixel_y1", "pixel_x2", "pixel_y2")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    PIXEL_X1_FIELD_NUMBER: _ClassVar[int]
    PIXEL_Y1_FIELD_NUMBER: _ClassVar[int]
    PIXEL_X2_FIELD_NUMBER: _ClassVar[int]
    PIXEL_Y2_FIELD_NUMBER: _ClassVar[int]
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    pixel_x1: int
    pixel_y1: int
    pixel_x2: int
    pixel_y2: int
    def __init__(self, label: _Optional[str] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ..., pixel_x1: _Optional[int] = ..., pixel_y1: _Optional[int] = ..., pixel_x2: _Optional[int] = ..., pixel_y2: _Optional[int] = ...) -> None: ...

class Heatmap(_message.Message):
    __slots__ = ("width", "height", "encoding", "data", "source")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    encoding: HeatmapEncoding
    data: bytes
    source: HeatmapSource
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., encoding: _Optional[_Union[HeatmapEncoding, str]] = ..., data: _Optional[bytes] = ..., source: _Optional[_Union[HeatmapSource, str]] = ...) -> None: ...

class LevelProbability(_message.Message):
    __slots__ = ("level", "probability")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    level: str
    probability: float
    def __init__(self, level: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Score(_message.Message):
    __slots__ = ("score", "mode", "levels", "s_token", "s_map", "band", "uncalibrated_score")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    S_TOKEN_FIELD_NUMBER: _ClassVar[int]
    S_MAP_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    UNCALIBRATED_SCORE_FIELD_NUMBER: _ClassVar[int]
    score: float
    mode: HeadsMode
    levels: _containers.RepeatedCompositeFieldContainer[LevelProbability]
    s_token: float
    s_map: float
    band: str
    uncalibrated_score: float
    def __init__(self, score: _Optional[float] = ..., mode: _Optional[_Union[HeadsMode, str]] = ..., levels: _Optional[_Iterable[_Union[LevelProbability, _Mapping]]] = ..., s_token: _Optional[float] = ..., s_map: _Optional[float] = ..., band: _Optional[str] = ..., uncalibrated_score: _Optional[float] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("id", "label", "sentences", "category", "box", "severity", "mask_png", "source")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: int
    label: str
    sentences: _containers.RepeatedScalarFieldContainer[str]
    category: RegionCategory
    box: RegionBox
    severity: float
    mask_png: bytes
    source: RegionSource
    def __init__(self, id: _Optional[int] = ..., label: _Optional[str] = ..., sentences: _Optional[_Iterable[str]] = ..., category: _Optional[_Union[RegionCategory, str]] = ..., box: _Optional[_Union[RegionBox, _Mapping]] = ..., severity: _Optional[float] = ..., mask_png: _Optional[bytes] = ..., source: _Optional[_Union[RegionSource, str]] = ...) -> None: ...

class Regions(_message.Message):
    __slots__ = ("regions",)
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    def __init__(self, regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("preprocess_ms", "image_encode_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s", "total_ms", "time_to_first_token_ms", "queue_ms", "heads_ms", "image_cached")
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    HEADS_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CACHED_FIELD_NUMBER: _ClassVar[int]
    preprocess_ms: float
    image_encode_ms: float
    prefill_ms: float
    decode_ms: float
    decode_tokens_per_s: float
    total_ms: float
    time_to_first_token_ms: float
    queue_ms: float
    heads_ms: float
    image_cached: bool
    def __init__(self, preprocess_ms: _Optional[float] = ..., image_encode_ms: _Optional[float] = ..., prefill_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., total_ms: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., heads_ms: _Optional[float] = ..., image_cached: _Optional[bool] = ...) -> None: ...

class TokenCounts(_message.Message):
    __slots__ = ("prompt_tokens", "image_tokens", "generated_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    image_tokens: int
    generated_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., image_tokens: _Optional[int] = ..., generated_tokens: _Optional[int] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("timings", "tokens", "finish_reason", "device", "message", "summary")
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    timings: Timings
    tokens: TokenCounts
    finish_reason: FinishReason
    device: str
    message: str
    summary: str
    def __init__(self, timings: _Optional[_Union[Timings, _Mapping]] = ..., tokens: _Optional[_Union[TokenCounts, _Mapping]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., device: _Optional[str] = ..., message: _Optional[str] = ..., summary: _Optional[str] = ...) -> None: ...

class EvaluateBatchRequest(_message.Message):
    __slots__ = ("images", "options")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    options: Options
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class BatchEvent(_message.Message):
    __slots__ = ("index", "event", "ranking")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    index: int
    event: EvaluateEvent
    ranking: Ranking
    def __init__(self, index: _Optional[int] = ..., event: _Optional[_Union[EvaluateEvent, _Mapping]] = ..., ranking: _Optional[_Union[Ranking, _Mapping]] = ...) -> None: ...

class RankedImage(_message.Message):
    __slots__ = ("index", "score")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class Ranking(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[RankedImage]
    def __init__(self, entries: _Optional[_Iterable[_Union[RankedImage, _Mapping]]] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("images", "top_k", "fast", "options")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FAST_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    top_k: int
    fast: bool
    options: Options
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., top_k: _Optional[int] = ..., fast: _Optional[bool] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("scores", "order", "top_k_indices", "total_ms")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    TOP_K_INDICES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    order: _containers.RepeatedScalarFieldContainer[int]
    top_k_indices: _containers.RepeatedScalarFieldContainer[int]
    total_ms: float
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., order: _Optional[_Iterable[int]] = ..., top_k_indices: _Optional[_Iterable[int]] = ..., total_ms: _Optional[float] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_pixels", "max_batch", "parallel_slots", "max_message_bytes", "max_tiles", "max_queue", "max_heatmap_side", "max_generation_prompt_bytes", "max_tokens_per_section", "default_max_tokens_per_section", "context_tokens", "max_temperature", "stall_timeout_ms")
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TILES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_HEATMAP_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_GENERATION_PROMPT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_SECTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_TOKENS_PER_SECTION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    STALL_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    max_pixels: int
    max_batch: int
    parallel_slots: int
    max_message_bytes: int
    max_tiles: int
    max_queue: int
    max_heatmap_side: int
    max_generation_prompt_bytes: int
    max_tokens_per_section: int
    default_max_tokens_per_section: int
    context_tokens: int
    max_temperature: float
    stall_timeout_ms: int
    def __init__(self, max_pixels: _Optional[int] = ..., max_batch: _Optional[int] = ..., parallel_slots: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_tiles: _Optional[int] = ..., max_queue: _Optional[int] = ..., max_heatmap_side: _Optional[int] = ..., max_generation_prompt_bytes: _Optional[int] = ..., max_tokens_per_section: _Optional[int] = ..., default_max_tokens_per_section: _Optional[int] = ..., context_tokens: _Optional[int] = ..., max_temperature: _Optional[float] = ..., stall_timeout_ms: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("llm_model", "mmproj_model", "llm_width", "tile_size", "tokens_per_tile", "heads_mode", "prompt_mode", "limits", "version", "device", "calibration", "score_bands")
    LLM_MODEL_FIELD_NUMBER: _ClassVar[int]
    MMPROJ_MODEL_FIELD_NUMBER: _ClassVar[int]
    LLM_WIDTH_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_TILE_FIELD_NUMBER: _ClassVar[int]
    HEADS_MODE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_MODE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    SCORE_BANDS_FIELD_NUMBER: _ClassVar[int]
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
    calibration: Calibration
    score_bands: _containers.RepeatedCompositeFieldContainer[ScoreBand]
    def __init__(self, llm_model: _Optional[str] = ..., mmproj_model: _Optional[str] = ..., llm_width: _Optional[int] = ..., tile_size: _Optional[int] = ..., tokens_per_tile: _Optional[int] = ..., heads_mode: _Optional[_Union[HeadsMode, str]] = ..., prompt_mode: _Optional[_Union[PromptMode, str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., version: _Optional[str] = ..., device: _Optional[str] = ..., calibration: _Optional[_Union[Calibration, _Mapping]] = ..., score_bands: _Optional[_Iterable[_Union[ScoreBand, _Mapping]]] = ...) -> None: ...

class ScoreBand(_message.Message):
    __slots__ = ("name", "lower", "meaning")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    MEANING_FIELD_NUMBER: _ClassVar[int]
    name: str
    lower: float
    meaning: str
    def __init__(self, name: _Optional[str] = ..., lower: _Optional[float] = ..., meaning: _Optional[str] = ...) -> None: ...

class Calibration(_message.Message):
    __slots__ = ("name", "examples", "auc_before", "auc_after")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    AUC_BEFORE_FIELD_NUMBER: _ClassVar[int]
    AUC_AFTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    examples: int
    auc_before: float
    auc_after: float
    def __init__(self, name: _Optional[str] = ..., examples: _Optional[int] = ..., auc_before: _Optional[float] = ..., auc_after: _Optional[float] = ...) -> None: ...
