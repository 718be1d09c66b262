"""heie-client: a typed Python client for the HEIE image-implausibility server (``heie serve``).

>>> from heie_client import Client
>>> with Client("127.0.0.1:50051") as client:          # doctest: +SKIP   (gRPC; "http://h:8080" = HTTP API)
...     result = client.evaluate("image.png")
...     print(result.score, result.heatmap.shape, result.summary)

Importing it needs only the standard library: protobuf and grpcio are loaded when a client is given a
gRPC address, numpy and Pillow when pixels or heatmaps are converted.
"""

from .client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, Client
from .connection_failures import ConnectionFailure, connection_failure
from .errors import (
    Cancelled, DeadlineExceeded, HeieError, InsecureTransport, Internal, InvalidArgument, InvalidImage, ProtocolError,
    ResourceExhausted, Unauthenticated, Unavailable,
)
from .events import (
    BatchEvent, Done, Event, FinishReason, HeadsMode, Heatmap, HeatmapEncoding, HeatmapSource,
    LevelProbability, PromptMode, RankedImage, Ranking, Region, RegionBox, RegionCategory, Regions, RegionSource, Score,
    Section, Started, TextDelta,
)
from .heatmaps import decode_heatmap, decode_mask, decode_overlay
from .images import RawPixels, WireImage, to_pixels, to_wire
from .info import HealthStatus, Limits, Reranked, ServerInfo
from .options import EvaluateOptions
from .result import Result
from .status import StatusCode
from .stream import EventStream

__version__ = "0.1.0"

__all__ = [
    "BatchEvent", "Cancelled", "Client", "ConnectionFailure", "DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "DeadlineExceeded", "Done",
    "EvaluateOptions", "Event", "EventStream", "FinishReason", "HeadsMode", "HealthStatus", "Heatmap",
    "HeatmapEncoding", "HeatmapSource", "HeieError", "InsecureTransport", "Internal", "InvalidArgument", "InvalidImage",
    "LevelProbability", "Limits", "PromptMode", "ProtocolError", "RankedImage", "Ranking", "Region", "RegionBox",
    "RegionCategory", "RegionSource", "Regions",
    "RawPixels", "Reranked", "ResourceExhausted", "Result", "Score", "Section", "ServerInfo", "Started", "StatusCode",
    "TextDelta", "WireImage",
    "Unauthenticated", "Unavailable", "connection_failure", "decode_heatmap", "decode_mask", "decode_overlay", "to_pixels", "to_wire",
]
