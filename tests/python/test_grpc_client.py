"""``heie serve`` seen by a client nobody here wrote: Google's ``grpcio`` with stubs generated at test
time by ``grpcio-tools`` from ``proto/heie/v1/evaluator.proto``, ``grpcio-health-checking`` and
``grpcio-reflection``.

Run by ``tests/service_python.rs`` (``cargo test``), which starts the server and passes its address in
``HEIE_TEST_SERVER``.
"""

from __future__ import annotations

import importlib
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]
SERVICE = "heie.v1.Evaluator"


class Stubs(NamedTuple):
    pb2: ModuleType
    grpc: ModuleType


@pytest.fixture(scope="session")
def address() -> str:
    value = os.environ.get("HEIE_TEST_SERVER")
    if not value:
        pytest.fail("HEIE_TEST_SERVER is not set: run this through `cargo test --test service_python`")
    return value


@pytest.fixture(scope="session")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="session")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Stubs:
    """Generates the Python stubs from the repository's .proto into a temporary folder."""
    out = tmp_path_factory.mktemp("stubs")
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO / 'proto'}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "heie/v1/evaluator.proto",
        ]
    )
    assert status == 0, "protoc failed on proto/heie/v1/evaluator.proto"
    sys.path.insert(0, str(out))
    return Stubs(importlib.import_module("heie.v1.evaluator_pb2"), importlib.import_module("heie.v1.evaluator_pb2_grpc"))


def png(width: int, height: int) -> bytes:
    """A small RGB PNG (gradient), written by hand so the test needs no imaging library."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in ((x * 255) // width, (y * 255) // height, 96))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_health_reports_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as error:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def list_services(replies: Iterator[reflection_pb2.ServerReflectionResponse]) -> set[str]:
    reply = next(iter(replies))
    return {s.name for s in reply.list_services_response.service}


def test_reflection_lists_and_describes_the_service(channel: grpc.Channel) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    # v1alpha through grpcio-reflection's own stub.
    v1alpha = reflection_pb2_grpc.ServerReflectionStub(channel)
    services = list_services(v1alpha.ServerReflectionInfo(iter([request]), timeout=10))
    assert {SERVICE, "grpc.health.v1.Health"} <= services, services
    # v1: the same messages on the v1 method path.
    v1 = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    assert SERVICE in list_services(v1(iter([request]), timeout=10))
    # The full schema comes over reflection: a client can build the service from it alone.
    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(SERVICE)
    assert {m.name for m in service.methods} == {"Evaluate", "EvaluateBatch", "Rerank", "GetInfo"}
    assert service.methods_by_name["Evaluate"].output_type.full_name == "heie.v1.EvaluateEvent"


def test_streamed_evaluate_completes_with_a_score(channel: grpc.Channel, stubs: Stubs) -> None:
    pb2 = stubs.pb2
    client = stubs.grpc.EvaluatorStub(channel)
    info = client.GetInfo(pb2.GetInfoRequest(), timeout=10)
    assert info.llm_width == 64 and info.heads_mode == pb2.HEADS_MODE_ZERO_SHOT
    request = pb2.EvaluateRequest(
        image=pb2.Image(encoded=png(160, 120), generation_prompt="a gradient"),
        options=pb2.Options(max_tokens_per_section=6, heatmap_width=40, heatmap_height=30),
    )
    events = list(client.Evaluate(request, timeout=60))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done", kinds
    assert kinds.index("heatmap") > max(i for i, k in enumerate(kinds) if k == "text_delta")
    started = events[0].started
    assert (started.image_width, started.image_height) == (160, 120)
    text = "".join(e.text_delta.text for e in events if e.WhichOneof("event") == "text_delta")
    assert "### Image Description" in text and "[SCORE]" in text
    heatmap = next(e.heatmap for e in events if e.WhichOneof("event") == "heatmap")
    assert heatmap.encoding == pb2.HEATMAP_ENCODING_PNG8
    assert png_size(heatmap.data) == (40, 30) == (heatmap.width, heatmap.height)
    score = next(e.score for e in events if e.WhichOneof("event") == "score")
    assert 0.0 <= score.score <= 1.0
    assert abs(sum(level.probability for level in score.levels) - 1.0) < 1e-4
    done = events[-1].done
    assert done.finish_reason in (pb2.FINISH_REASON_COMPLETED, pb2.FINISH_REASON_LENGTH)
    assert done.tokens.generated_tokens > 0 and done.timings.total_ms > 0


def test_bad_input_and_deadlines_get_their_status_codes(channel: grpc.Channel, stubs: Stubs) -> None:
    pb2 = stubs.pb2
    client = stubs.grpc.EvaluatorStub(channel)
    bad = pb2.EvaluateRequest(image=pb2.Image(raw=pb2.RawImage(width=4, height=4, channels=3, pixels=b"\0" * 47)))
    with pytest.raises(grpc.RpcError) as error:
        list(client.Evaluate(bad, timeout=10))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("image.raw.pixels:"), error.value.details()
    # grpcio's own grpc-timeout encoding: the server answers DEADLINE_EXCEEDED by itself.
    slow = pb2.EvaluateRequest(
        image=pb2.Image(encoded=png(64, 64)),
        options=pb2.Options(max_tokens_per_section=1100, temperature=5.0, seed=7),
    )
    with pytest.raises(grpc.RpcError) as error:
        list(client.Evaluate(slow, timeout=0.15))
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server still answers.
    reply = client.Rerank(pb2.RerankRequest(images=[pb2.Image(encoded=png(64, 48))], fast=True), timeout=60)
    assert list(reply.order) == [0] and 0.0 <= reply.scores[0] <= 1.0
