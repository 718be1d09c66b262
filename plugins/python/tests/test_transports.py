"""The core without protobuf or grpcio, and the same answers through both transports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, HeieServer, serving
from heie_client import (
    Client, EvaluateOptions, HeatmapEncoding, InvalidArgument, Region, RegionCategory, RegionSource, StatusCode,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def test_import_heie_client_needs_neither_protobuf_nor_grpc() -> None:
    """``import heie_client`` and an HTTP client work with protobuf, grpcio (and numpy, Pillow) unimportable, and
    load none of them; a gRPC address then says which extra to install."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('grpc', 'google', 'grpc_health', 'numpy', 'PIL'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(SRC)!r})\n"
        "import heie_client\n"
        "from heie_client import Client, Result, Done, StatusCode, connection_failure\n"
        "client = Client('http://127.0.0.1:9')\n"
        "assert client.transport == 'http'\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'numpy', 'PIL')]\n"
        "try:\n"
        "    Client('127.0.0.1:50051')\n"
        "except ImportError as err:\n"
        "    assert \"heie-client[grpc]\" in str(err), err\n"
        "else:\n"
        "    raise AssertionError('a gRPC address without grpcio')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_address_picks_the_transport() -> None:
    assert Client("127.0.0.1:1").transport == "grpc" and Client("grpc://127.0.0.1:1").transport == "grpc"
    assert Client("http://127.0.0.1:1").transport == "http" and Client("https://127.0.0.1:1").tls
    with pytest.raises(ValueError, match="one transport"):
        Client(["127.0.0.1:1", "http://127.0.0.1:2"])
    with pytest.raises(ValueError, match="https://"):
        Client("http://127.0.0.1:1", tls=True)


def test_both_transports_give_the_same_results(heie_server: HeieServer) -> None:
    """One server, both ports, a fixed seed: the same events, scores, heatmap, boxes, text and summary."""
    assert heie_server.http_address
    image = np.random.default_rng(42).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    options = EvaluateOptions(max_tokens_per_section=6, temperature=0.7, seed=1234,
                              heatmap_encodings=(HeatmapEncoding.RAW_F32_LE, HeatmapEncoding.PNG8))
    with Client(heie_server.address, timeout=120) as grpc_client, \
            Client(f"http://{heie_server.http_address}", timeout=120) as http_client:
        a, b = (c.evaluate(image, options, prompt="a red car") for c in (grpc_client, http_client))
        assert a.score == b.score and a.mode is b.mode and a.levels == b.levels and a.scores == b.scores
        assert a.explanation == b.explanation and a.sections == b.sections and a.boxes == b.boxes
        assert a.summary == b.summary and a.summary
        assert a.heatmap is not None and b.heatmap is not None and np.array_equal(a.heatmap, b.heatmap)
        assert [h.data for h in a.heatmaps] == [h.data for h in b.heatmaps]
        assert a.finish_reason is b.finish_reason and a.done is not None and b.done is not None
        assert a.done.tokens == b.done.tokens and a.started is not None and b.started is not None
        # The second judgement of the same pixels took their tile features from the server's cache.
        assert b.done.timings.image_cached and b.done.timings.image_encode_ms == 0.0
        assert (a.started.tiles, a.started.image_width) == (b.started.tiles, b.started.image_width)
        assert grpc_client.info() == http_client.info()
        ra, rb = (c.rerank([image, image[::-1]], top_k=1, options=EvaluateOptions(max_tokens_per_section=2,
                                                                                 heatmap_encodings=()))
                  for c in (grpc_client, http_client))
        assert (ra.scores, ra.order, ra.top_k) == (rb.scores, rb.order, rb.top_k)
        # EvaluateBatch over HTTP (one /v1/evaluate per image): the same per-image results and ranking.
        fast = EvaluateOptions(explanation=False, max_tokens_per_section=2, seed=7)
        ba, bb = (c.evaluate_batch([image, image[:, ::-1]], fast) for c in (grpc_client, http_client))
        assert [r.score for r in ba] == [r.score for r in bb] and all(r.ok for r in bb)
        for client in (grpc_client, http_client):
            with pytest.raises(InvalidArgument):  # a bad image refuses the whole batch on both
                client.evaluate_batch([image, b"not an image"], fast)
            with pytest.raises(InvalidArgument) as caught:
                client.evaluate(b"not an image")
            assert caught.value.code is StatusCode.INVALID_ARGUMENT


#: A chain of thought with two grounding boxes; the server's test-only hook feeds it to every evaluation, because
#: the random fixture model never writes grounding markup itself.
REFERENCE_COT = REPO / "tests" / "fixtures" / "reference-cot" / "hand-and-sign.txt"
BANDS = ("badly flawed", "flawed", "typical", "good", "very plausible")


@pytest.fixture(scope="module")
def grounding_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("heie-serve-regions")
    args = ["--addr", "127.0.0.1:0", "--http", "127.0.0.1:0", "--max-tokens", "4", "--max-tiles", "1"]
    with serving(args, folder / "serve.log", {"HEIE_FAULT_REFERENCE_COT": str(REFERENCE_COT)}) as served:
        yield served


def test_regions_bands_and_masks_arrive_alike_over_both_transports(grounding_server) -> None:  # type: ignore[no-untyped-def]
    image = np.random.default_rng(7).integers(0, 255, (100, 200, 3), dtype=np.uint8)
    options = EvaluateOptions(max_tokens_per_section=4, heatmap_encodings=(HeatmapEncoding.RAW_F32_LE,))
    with Client(grounding_server.address, timeout=120) as grpc_client, \
            Client(f"http://{grounding_server.http_address}", timeout=120) as http_client:
        a, b = (c.evaluate(image, options) for c in (grpc_client, http_client))
    assert a.regions == b.regions and a.band == b.band
    assert a.band in BANDS and a.band == a.scores[0].band and a.scores[0].uncalibrated_score is None
    assert [r.label for r in a.regions] == ["the left hand", "the sign"]
    assert a.heatmap is not None and a.score is not None
    for i, region in enumerate(a.regions, start=1):
        assert isinstance(region, Region) and region.id == i
        assert region.source is RegionSource.GROUNDED_BOX and isinstance(region.category, RegionCategory)
        box = region.box
        mask = region.mask()
        assert mask.shape == (100, 200) and mask.dtype == bool
        # Zero-shot: the mask is exactly the grounding box.
        assert mask.sum() == (box.pixel_x2 - box.pixel_x1) * (box.pixel_y2 - box.pixel_y1)
        assert mask[box.pixel_y1:box.pixel_y2, box.pixel_x1:box.pixel_x2].all()
        # The severity formula, recomputed from the lossless heatmap.
        expected = (1.0 - a.score) * float(a.heatmap[mask].mean())
        assert region.severity == pytest.approx(expected, abs=1e-5)
    assert a.regions[0].sentences[-1] == "Hand: the left hand has six fingers that merge into the sign."
    assert "Sign: the letters of the sign are garbled." in a.regions[1].sentences
