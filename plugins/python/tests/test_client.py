"""Every kind of client call against a real ``heie serve`` on the fixture model."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from conftest import HeieServer, wait_until  # plugins/conftest.py: the test servers and waiting on their metrics
from heie_client import (
    BatchEvent, Cancelled, Client, DeadlineExceeded, Done, EvaluateOptions, FinishReason, HeadsMode, HealthStatus,
    Heatmap, HeatmapEncoding, InvalidArgument, Ranking, Regions, Score, Section, Started, StatusCode, TextDelta,
    Unavailable,
)

FAST = EvaluateOptions(max_tokens_per_section=4)
CANCELLED = 'heie_sequences_total{outcome="cancelled"}'
COMPLETED = 'heie_sequences_total{outcome="completed"}'


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def test_info_and_health(client: Client) -> None:
    info = client.info()
    assert info.heads_mode is HeadsMode.ZERO_SHOT
    assert info.tile_size > 0 and info.limits.max_batch >= 4 and info.version
    # Every limit a request can hit is reported, so clients and widgets can range their inputs.
    lim = info.limits
    assert (lim.max_heatmap_side, lim.max_generation_prompt_bytes) == (8192, 4096)
    # The token cap is what the server's context takes for the smallest request, never above 2048.
    assert 0 < lim.max_tokens_per_section <= 2048
    assert lim.context_tokens >= 256 and 0 < lim.default_max_tokens_per_section <= lim.max_tokens_per_section
    assert lim.max_temperature == 5.0 and lim.stall_timeout_ms > 0
    assert client.health() is HealthStatus.SERVING


def test_evaluate_stream_events_in_contract_order(client: Client) -> None:
    options = EvaluateOptions(
        max_tokens_per_section=4,
        heatmap_encodings=(HeatmapEncoding.RAW_F32_LE, HeatmapEncoding.PNG8, HeatmapEncoding.OVERLAY_PNG),
    )
    events = list(client.evaluate_stream(_noise(24, 40, 1), options, prompt="a red car"))
    kinds = [type(e).__name__ for e in events]
    assert isinstance(events[0], Started) and isinstance(events[-1], Done)
    assert events[0].image_width == 40 and events[0].image_height == 24
    first_map = kinds.index("Heatmap")
    assert all(k in ("TextDelta", "RegionBox") for k in kinds[1:first_map])
    sections = [e.section for e in events if isinstance(e, TextDelta)]
    assert sections == sorted(sections) and Section.DESCRIPTION in sections
    maps = [e for e in events if isinstance(e, Heatmap)]
    assert [m.encoding for m in maps][:3] == list(options.heatmap_encodings)
    assert all((m.width, m.height) == (40, 24) for m in maps)
    assert isinstance(events[-3], Score) and 0.0 <= events[-3].score <= 1.0
    # The flagged regions come once, after the scores and before Done (none here: the fixture writes no boxes).
    assert isinstance(events[-2], Regions) and kinds.count("Regions") == 1
    assert events[-1].finish_reason in (FinishReason.COMPLETED, FinishReason.LENGTH)


def test_evaluate_returns_a_result(client: Client) -> None:
    image = Image.fromarray((_noise(20, 28, 2) * 255).astype(np.uint8))
    options = EvaluateOptions(max_tokens_per_section=4, heatmap_size=(16, 8),
                              heatmap_encodings=(HeatmapEncoding.PNG8, HeatmapEncoding.OVERLAY_PNG))
    seen: list[object] = []
    result = client.evaluate(image, options, on_event=seen.append)
    assert result.score is not None and 0.0 <= result.score <= 1.0
    assert result.mode is HeadsMode.ZERO_SHOT and result.ok
    assert result.heatmap is not None and result.heatmap.shape == (8, 16) and result.heatmap.dtype == np.float32
    assert 0.0 <= float(result.heatmap.min()) and float(result.heatmap.max()) <= 1.0
    assert result.overlay is not None and result.overlay.shape == (8, 16, 3)
    assert "### Image Description" in result.explanation
    assert set(result.sections) >= {Section.DESCRIPTION, Section.REGIONS, Section.ANALYSIS}
    assert result.explanation == "".join(e.text for e in seen if isinstance(e, TextDelta))
    assert result.levels and abs(sum(lv.probability for lv in result.levels) - 1.0) < 1e-3
    assert result.done is not None and result.started is not None


def test_evaluate_batch_with_every_input_kind(client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    Image.fromarray((_noise(16, 16, 3) * 255).astype(np.uint8)).save(buffer, format="PNG")
    path = tmp_path / "img.png"
    path.write_bytes(buffer.getvalue())
    images = [buffer.getvalue(), path, (_noise(16, 20, 4) * 255).astype(np.uint8), Image.new("RGB", (12, 18), "red")]
    events: list[BatchEvent] = []
    results = client.evaluate_batch(images, FAST, on_event=events.append)
    assert len(results) == 4 and all(r.ok for r in results)
    assert {e.index for e in events} == {0, 1, 2, 3}
    assert results[3].heatmap is not None and results[3].heatmap.shape == (18, 12)
    assert results[0].score == pytest.approx(results[1].score, abs=1e-4)  # same pixels, two transports


def test_batch_stream_ends_with_a_consistent_ranking(client: Client) -> None:
    items = list(client.evaluate_batch_stream([_noise(16, 16, 5), _noise(16, 16, 6)], EvaluateOptions(explanation=False, max_tokens_per_section=2)))
    ranking = items[-1]
    assert isinstance(ranking, Ranking) and len(ranking.entries) == 2
    scores = {i.index: i.event.score for i in items if isinstance(i, BatchEvent) and isinstance(i.event, Score)}
    assert [e.index for e in ranking.entries] == sorted(scores, key=lambda i: (-scores[i], i))


def test_rerank_orders_best_first(client: Client) -> None:
    images = [_noise(16, 16, s) for s in (7, 8, 9)]
    reply = client.rerank(images, top_k=2, fast=True, options=EvaluateOptions(max_tokens_per_section=2, heatmap_encodings=()))
    assert len(reply.scores) == 3 and sorted(reply.order) == [0, 1, 2]
    assert reply.top_k == reply.order[:2]
    ordered = [reply.scores[i] for i in reply.order]
    assert ordered == sorted(ordered, reverse=True)


def test_server_errors_are_typed(client: Client) -> None:
    with pytest.raises(InvalidArgument) as info:
        client.evaluate(b"definitely not an image")
    assert info.value.code is StatusCode.INVALID_ARGUMENT and "image" in info.value.message


def test_round_robin_fails_over_past_a_dead_server(heie_server, dead_address: str) -> None:  # type: ignore[no-untyped-def]
    with Client([dead_address, heie_server.address], timeout=30, token="secret") as both:
        for _ in range(3):  # the rotation starts at the dead server at least once
            assert both.info().tile_size > 0
        with pytest.raises(InvalidArgument):  # a stream reaches the live server too
            list(both.evaluate_stream(b"garbage"))
    with Client([dead_address], timeout=5) as dead:
        with pytest.raises(Unavailable) as info:
            dead.info()
        assert info.value.code is StatusCode.UNAVAILABLE


def test_cancel_mid_stream_stops_the_server_work(slow_server: HeieServer) -> None:
    """On the slow server the whole request lasts minutes, so only the cancel can end it: the engine counts the
    sequence cancelled (never completed) and frees its slot."""
    cancelled_before = slow_server.metric(CANCELLED)
    completed_before = slow_server.metric(COMPLETED)
    with Client(slow_server.address, timeout=180) as client:
        stream = client.evaluate_stream(_noise(16, 16, 10), EvaluateOptions(max_tokens_per_section=200))
        with pytest.raises(Cancelled):
            for event in stream:
                if isinstance(event, TextDelta):
                    stream.cancel()
        wait_until(lambda: slow_server.metric(CANCELLED) > cancelled_before, "counted as cancelled by the engine")
        wait_until(lambda: slow_server.metric("heie_active_sequences") == 0, "out of its slot")
        assert slow_server.metric(COMPLETED) == completed_before
        assert client.health() is HealthStatus.SERVING


def test_deadline_is_typed(slow_server: HeieServer) -> None:
    """The evaluation lasts dozens of slowed decode steps (at least SLOW_STEP_MS each), so a 0.3 s deadline ends it
    first on any machine: the client raises DeadlineExceeded, and the server's work ends with the call (which of
    the two ends it first, the server's timer or the client's cancel at its deadline, depends on the machine)."""
    completed_before = slow_server.metric(COMPLETED)
    with Client(slow_server.address, timeout=0.3) as hurried:
        with pytest.raises(DeadlineExceeded):
            hurried.evaluate(_noise(16, 16, 11), EvaluateOptions(max_tokens_per_section=200))
    wait_until(lambda: slow_server.metric("heie_active_sequences") == 0, "out of its slot")
    assert slow_server.metric(COMPLETED) == completed_before


def test_a_stream_cancelled_before_it_starts_is_never_sent(client: Client, heie_server) -> None:  # type: ignore[no-untyped-def]
    """A host that was interrupted before an image's turn: the call must not reach the server."""
    def evaluate_calls() -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in heie_server.metrics().splitlines()
                   if line.startswith('heie_requests_total{method="Evaluate"'))

    before = evaluate_calls()
    with pytest.raises(Cancelled, match="before the call started"):
        with client.evaluate_stream(_noise(16, 16, 3), EvaluateOptions(max_tokens_per_section=4),
                                    cancel_when=lambda: True) as stream:
            list(stream)
    time.sleep(0.3)
    assert evaluate_calls() == before
