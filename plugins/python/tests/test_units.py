"""Client logic that needs no server: image conversion, heatmap decoding, result folding, errors."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from heie_client import (
    Cancelled, Done, FinishReason, HeadsMode, HeieError, Heatmap, HeatmapEncoding, HeatmapSource, InvalidArgument,
    InvalidImage, ProtocolError, RegionBox, Score, Section, Started, TextDelta, decode_heatmap, to_pixels, to_wire,
)
from heie_client import StatusCode
from heie_client._generated.heie.v1 import evaluator_pb2 as pb
from heie_client.events import Tiles, Timings, TokenCounts
from heie_client.grpc_transport.convert import event_from_pb
from heie_client.grpc_transport.errors import from_rpc_error
from heie_client.result import ResultBuilder, clip


def test_numpy_float_and_uint8_become_raw_rgb() -> None:
    floats = np.zeros((4, 6, 3), np.float32)
    floats[0, 0] = (1.0, 0.5, 2.0)
    wire = to_wire(floats, prompt="a cat")
    assert wire.raw is not None and wire.encoded is None
    assert (wire.raw.width, wire.raw.height, wire.raw.channels) == (6, 4, 3)
    assert wire.raw.pixels[:3] == bytes([255, 128, 255])
    assert wire.generation_prompt == "a cat"
    rgba = to_wire(np.full((2, 3, 4), 7, np.uint8))
    assert rgba.raw.channels == 4 and len(rgba.raw.pixels) == 2 * 3 * 4


def test_grayscale_and_pil_inputs() -> None:
    assert to_pixels(np.ones((5, 5), np.float64)).shape == (5, 5, 3)
    assert to_pixels(np.ones((5, 5, 1), np.uint8)).shape == (5, 5, 3)
    assert to_pixels(Image.new("L", (7, 3), 9)).shape == (3, 7, 3)
    assert to_pixels(Image.new("RGBA", (2, 2))).shape == (2, 2, 4)


def test_bytes_and_paths_travel_encoded(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    path = tmp_path / "x.png"
    path.write_bytes(buffer.getvalue())
    assert to_wire(buffer.getvalue()).encoded == buffer.getvalue()
    assert to_wire(path).encoded == buffer.getvalue()
    assert to_wire(str(path)).encoded == buffer.getvalue()


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.int64),
            np.full((2, 2, 3), np.nan, np.float32), b"", "/nonexistent/image.png"],
)
def test_bad_images_are_rejected_in_the_client(bad: object) -> None:
    with pytest.raises(InvalidImage) as info:
        to_wire(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, HeieError)


def test_heatmap_decoding() -> None:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    raw = Heatmap(2, 2, HeatmapEncoding.RAW_F32_LE, values.astype("<f4").tobytes(), HeatmapSource.ZERO_SHOT)
    np.testing.assert_array_equal(decode_heatmap(raw), values)
    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 255], [128, 64]], np.uint8), "L").save(buffer, format="PNG")
    png = Heatmap(2, 2, HeatmapEncoding.PNG8, buffer.getvalue(), HeatmapSource.FUSED)
    decoded = decode_heatmap(png)
    assert decoded.dtype == np.float32 and decoded.shape == (2, 2)
    assert decoded[0, 1] == 1.0 and abs(decoded[1, 0] - 128 / 255) < 1e-6
    with pytest.raises(ProtocolError):
        decode_heatmap(Heatmap(3, 3, HeatmapEncoding.RAW_F32_LE, b"\0" * 8, HeatmapSource.FUSED))


def _started(mode: HeadsMode) -> Started:
    return Started("1", Tiles(1, 1, False, 56), mode, 1, 2, 2)  # type: ignore[arg-type]


def _done(reason: FinishReason = FinishReason.COMPLETED, message: str = "", summary: str = "") -> Done:
    return Done(Timings(*([0.0] * 9)), TokenCounts(0, 0, 0), reason, "cpu", message, summary)


def test_primary_score_and_heatmap_come_first() -> None:
    trained = np.full((2, 2), 0.75, "<f4").tobytes()
    zero_shot = np.zeros((2, 2), "<f4").tobytes()
    builder = ResultBuilder()
    for event in [
        _started(HeadsMode.TRAINED),
        TextDelta(Section.DESCRIPTION, "### Image Description\nA hand."),
        TextDelta(Section.REGIONS, "\nSo, the potential problematic regions in the image are [MAP]"),
        RegionBox("left hand", 0, 0, 500, 500, 0, 0, 1, 1),
        TextDelta(Section.ANALYSIS, "\n### Analysis of Issues\nSix\x12 fingers.\nBased on the overall analysis, "
                                    "the plausibility score for this image is [SCORE]."),
        Heatmap(2, 2, HeatmapEncoding.RAW_F32_LE, trained, HeatmapSource.FUSED),
        Heatmap(2, 2, HeatmapEncoding.RAW_F32_LE, zero_shot, HeatmapSource.ZERO_SHOT),
        Score(0.2, HeadsMode.TRAINED, (), 0.1, 0.3),
        Score(0.6, HeadsMode.ZERO_SHOT, (), None, None),
        _done(summary="score 0.200 (trained): Six fingers."),
    ]:
        builder.add(event)
    result = builder.build()
    assert result.score == pytest.approx(0.2) and result.mode is HeadsMode.TRAINED
    assert result.heatmap is not None and float(result.heatmap[0, 0]) == 0.75
    assert len(result.scores) == 2 and len(result.heatmaps) == 2
    assert result.explanation.startswith("### Image Description")
    assert result.sections[Section.REGIONS].endswith("[MAP]")
    assert result.boxes[0].label == "left hand"
    assert result.summary == "score 0.200 (trained): Six fingers."  # the server's line, as sent
    assert clip(result.summary, 4) == "sco…" and clip("Six fingers.", 40) == "Six fingers."
    assert result.ok and result.finish_reason is FinishReason.COMPLETED


def test_failed_batch_image_has_its_error() -> None:
    builder = ResultBuilder()
    builder.add(_done(FinishReason.ERROR, "images[1]: not an image"))
    result = builder.build()
    assert not result.ok and result.score is None and "not an image" in result.error


def test_unknown_enum_values_and_cases_are_tolerated() -> None:
    event = pb.EvaluateEvent(score=pb.Score(score=0.5, mode=99))
    converted = event_from_pb(event)
    assert isinstance(converted, Score) and converted.mode is HeadsMode.UNSPECIFIED
    assert event_from_pb(pb.EvaluateEvent()) is None


class _FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    # grpc.Call's other abstract methods are not used by the mapping.
    def initial_metadata(self): ...  # type: ignore[no-untyped-def]
    def trailing_metadata(self): ...  # type: ignore[no-untyped-def]
    def is_active(self): ...  # type: ignore[no-untyped-def]
    def time_remaining(self): ...  # type: ignore[no-untyped-def]
    def cancel(self): ...  # type: ignore[no-untyped-def]
    def add_callback(self, callback): ...  # type: ignore[no-untyped-def]


def test_status_codes_map_to_typed_errors() -> None:
    error = from_rpc_error(_FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "image.raw.pixels: too short"), "h:1")
    assert isinstance(error, InvalidArgument)
    assert error.code is StatusCode.INVALID_ARGUMENT and error.message == "image.raw.pixels: too short"
    assert "h:1" in str(error)
    assert isinstance(from_rpc_error(_FakeRpcError(grpc.StatusCode.CANCELLED, "x")), Cancelled)
    other = from_rpc_error(_FakeRpcError(grpc.StatusCode.DATA_LOSS, "x"))
    assert type(other) is HeieError and other.code is StatusCode.DATA_LOSS


def test_raw_le_layout_matches_the_contract() -> None:
    data = struct.pack("<2f", 0.5, 1.0)
    assert decode_heatmap(Heatmap(2, 1, HeatmapEncoding.RAW_F32_LE, data, HeatmapSource.ZERO_SHOT)).tolist() == [[0.5, 1.0]]
