"""heie-client's HTTP transport (what the extension uses, standard library only) against a real
``heie serve --http`` on the fixture model: the stream, rerank, info, health, the server's errors (a bad
image, a deadline, 401 without the key, 429 when full), failover, cancel, and what a wrong port says."""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import urllib.error
import urllib.request
from typing import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from heie_a1111.settings import Settings
from heie_a1111.verdict import encode_png
from heie_client import (
    Client, EvaluateOptions, Event, HealthStatus, HeatmapEncoding, HeadsMode, HeieError, ResourceExhausted, Section,
    StatusCode, TextDelta,
)
from heie_client.http_transport.connection import HttpEndpoint

from a1111_servers import (  # noqa: F401 (fixtures)
    API_KEY, HttpServer, free_address, full_http_server, http_server, keyed_server, slow_http_server,
)
from conftest import wait_until  # plugins/conftest.py

CANCELLED = 'heie_sequences_total{outcome="cancelled"}'
COMPLETED = 'heie_sequences_total{outcome="completed"}'
STEPS = "heie_decode_steps_total"
#: Decode steps the server may still run once the client has closed the connection: the README promises that
#: Interrupt stops the evaluation "within one decode step".
STEPS_AFTER_CLOSE = 1


def HttpClient(addresses: list[str], timeout: float = 300, api_key: str = "") -> Client:  # noqa: N802
    """The extension's client for these addresses (a bare host:port is the --http port)."""
    return Client(Settings(address=",".join(addresses)).http_addresses, timeout=timeout or None, token=api_key or None)


def _png(seed: int = 0, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return encode_png(Image.fromarray(pixels))


def test_evaluate_streams_every_event_and_returns_score_mode_text_and_overlay(http_server: HttpServer) -> None:
    seen: list[str] = []
    options = EvaluateOptions(max_tokens_per_section=2, heatmap_encodings=(HeatmapEncoding.OVERLAY_PNG,))
    result = HttpClient([http_server.address], timeout=120).evaluate(
        _png(1), options, prompt="a cat", on_event=lambda event: seen.append(type(event).__name__))
    assert seen[0] == "Started" and seen[-1] == "Done" and "Score" in seen and "TextDelta" in seen
    assert result.score is not None and 0.0 <= result.score <= 1.0
    assert result.mode is HeadsMode.ZERO_SHOT and result.finish_reason.name in ("LENGTH", "COMPLETED")
    assert set(result.sections) <= {Section.DESCRIPTION, Section.REGIONS, Section.ANALYSIS, Section.RATING}
    assert result.explanation and result.summary
    assert result.overlay_png is not None
    with Image.open(io.BytesIO(result.overlay_png)) as overlay:
        assert overlay.size == (16, 16) and overlay.mode == "RGB"


def test_info_and_rerank(http_server: HttpServer) -> None:
    client = HttpClient([f"http://{http_server.address}/"], timeout=120)
    info = client.info()
    assert info.heads_mode is HeadsMode.ZERO_SHOT and info.limits.max_batch >= 2 and info.limits.max_pixels > 0
    ranking = client.rerank([_png(2), _png(3), _png(4)], top_k=1)
    assert sorted(ranking.order) == [0, 1, 2] and len(ranking.scores) == 3 and len(ranking.top_k) == 1
    assert client.health() is HealthStatus.SERVING


def test_a_bad_image_is_the_servers_invalid_argument(http_server: HttpServer) -> None:
    with pytest.raises(HeieError) as caught:
        HttpClient([http_server.address]).evaluate(b"not an image")
    assert caught.value.code is StatusCode.INVALID_ARGUMENT and "not a recognised image" in caught.value.message


def test_the_time_limit_is_sent_as_the_servers_deadline(slow_http_server: HttpServer) -> None:
    """The slow server's evaluation lasts dozens of slowed decode steps, so the 0.3 s limit ends it on any machine;
    the error is the server's (it got the limit), not a client-side read timeout."""
    deadline_code = 'heie_requests_total{method="Evaluate",code="DEADLINE_EXCEEDED"}'
    before = slow_http_server.metric(deadline_code)
    completed_before = slow_http_server.metric(COMPLETED)
    with pytest.raises(HeieError) as caught:
        HttpClient([slow_http_server.address], timeout=0.3).evaluate(_png(5))
    assert caught.value.code is StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: slow_http_server.metric(deadline_code) > before, "answered DEADLINE_EXCEEDED by the server")
    wait_until(lambda: slow_http_server.metric("heie_active_sequences") == 0, "out of its slot")
    assert slow_http_server.metric(COMPLETED) == completed_before


def test_nobody_listening_is_unavailable_with_a_hint(free_address: str) -> None:
    with pytest.raises(HeieError) as caught:
        HttpClient([free_address]).evaluate(_png(6))
    assert caught.value.code is StatusCode.UNAVAILABLE
    assert free_address in caught.value.message and "heie serve --http" in caught.value.message


def test_fails_over_to_the_next_address_and_rotates(http_server: HttpServer, free_address: str) -> None:
    client = HttpClient([free_address, http_server.address], timeout=120)
    for _ in range(2):  # starting at either address, the call lands on the live one
        assert client.evaluate(_png(7), EvaluateOptions(explanation=False, max_tokens_per_section=1)).score is not None


def test_the_api_key_goes_as_a_bearer_token(keyed_server: HttpServer) -> None:
    with pytest.raises(HeieError) as caught:
        HttpClient([keyed_server.address]).info()
    assert caught.value.code is StatusCode.UNAUTHENTICATED  # the server's 401
    with pytest.raises(HeieError) as caught:
        HttpClient([keyed_server.address], api_key="wrong").info()
    assert caught.value.code is StatusCode.UNAUTHENTICATED  # README: a key that is not one of the server's is UNAUTHENTICATED
    assert HttpClient([keyed_server.address], api_key=API_KEY).info().heads_mode is HeadsMode.ZERO_SHOT
    assert HttpClient([keyed_server.address]).health() is HealthStatus.SERVING  # /healthz needs no key


def test_cancel_closes_the_stream_and_the_server_stops(slow_http_server: HttpServer) -> None:
    """Interrupt closes the connection and the server stops that evaluation. On the slow server the whole request
    (1000 tokens per section; 1143 tokens for this image and options) lasts minutes, so only the cancel can end it;
    the server's own counters say when it stopped, in decode steps, not in seconds."""
    client = HttpClient([slow_http_server.address], timeout=600)
    started = threading.Event()
    seen: list[str] = []

    def on_event(event: Event) -> None:
        seen.append(type(event).__name__.lower())
        if len(seen) == 1:
            started.set()

    cancelled_before = slow_http_server.metric(CANCELLED)
    completed_before = slow_http_server.metric(COMPLETED)
    with pytest.raises(HeieError) as caught:
        client.evaluate(_png(8, 64), EvaluateOptions(max_tokens_per_section=1000), cancel_when=started.is_set,
                        on_event=on_event)
    steps_at_close = slow_http_server.metric(STEPS)  # the connection is closed by now
    assert caught.value.code is StatusCode.CANCELLED and "done" not in seen
    wait_until(lambda: slow_http_server.metric(CANCELLED) > cancelled_before, "counted as cancelled by the engine")
    wait_until(lambda: slow_http_server.metric("heie_active_sequences") == 0, "out of its slot")
    assert slow_http_server.metric(COMPLETED) == completed_before
    # Steps after that reading, taken once the connection was closed (any between the two are not seen here).
    assert slow_http_server.metric(STEPS) - steps_at_close <= STEPS_AFTER_CLOSE


class _NotHeie(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>404 Not Found</html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def not_heie() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotHeie)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_another_program_on_the_port_is_named_as_such(not_heie: str) -> None:
    with pytest.raises(HeieError) as caught:
        HttpClient([not_heie]).evaluate(_png(9))
    assert "HTTP 404" in caught.value.message and "not a HEIE server?" in caught.value.message


@pytest.mark.parametrize("address", ["", "ftp://h:1", "h:notaport", "http://h:1/path"])
def test_bad_addresses_are_refused_clearly(address: str) -> None:
    with pytest.raises(ValueError, match="HEIE server address"):
        HttpClient([address])


def test_endpoint_forms() -> None:
    assert Settings(address="h:1").http_addresses == ["http://h:1"]
    assert str(HttpEndpoint.parse(Settings(address="h:1").http_addresses[0])) == "http://h:1"
    assert str(HttpEndpoint.parse("https://h")) == "https://h:443"
    assert str(HttpEndpoint.parse(" http://[::1]:8080/ ")) == "http://[::1]:8080"


def test_a_full_server_is_resource_exhausted(full_http_server: HttpServer) -> None:
    """One slot and one waiting place, both held by long evaluations on the slowed server: the next request is
    refused at once with 429 and Retry-After, which the client raises as ResourceExhausted (busy: worth retrying
    later).

    The two long evaluations are sent one after the other, each once the server shows the previous one where it
    should be: sent together, the second can reach the queue before the engine thread has moved the first from
    the queue into the slot (on a loaded machine it may not have run yet), find the one waiting place taken and be
    refused itself, and then the server never shows a running and a queued evaluation."""
    client = HttpClient([full_http_server.address], timeout=600)
    long = EvaluateOptions(max_tokens_per_section=1000)
    held: list = []  # type: ignore[type-arg]
    ended: list[str] = []  # how each held evaluation ended, should one end before the test cancels it

    def drain(stream) -> None:  # type: ignore[no-untyped-def]
        try:
            for _ in stream:
                pass
            ended.append("it completed")
        except HeieError as err:
            ended.append(f"{err.code.name}: {err.message}")  # cancelled at the end, else a failure to report

    def hold(seed: int, shown_as: Callable[[], bool], what: str) -> None:
        stream = client.evaluate_stream(_png(seed, 32), long)
        held.append(stream)
        threading.Thread(target=drain, args=(stream,), daemon=True).start()

        def shown() -> bool:
            if ended:
                pytest.fail(f"a held evaluation ended before the test cancelled it ({ended[0]})", pytrace=False)
            return shown_as()

        wait_until(shown, what)

    try:
        hold(20, lambda: full_http_server.metric("heie_active_sequences") >= 1, "running the first evaluation")
        hold(21, lambda: full_http_server.metric("heie_queue_depth") >= 1, "holding the second one in its queue")
        assert full_http_server.metric("heie_active_sequences") == 1
        with pytest.raises(ResourceExhausted) as caught:
            client.evaluate(_png(30), EvaluateOptions(max_tokens_per_section=1))
        assert caught.value.code is StatusCode.RESOURCE_EXHAUSTED and "busy" in caught.value.message
        # On the wire: 429 with Retry-After, what the client's busy error stands for.
        body = json.dumps({"image": {"encoded": base64.b64encode(_png(31)).decode()}}).encode()
        request = urllib.request.Request(f"{full_http_server.url}/v1/evaluate", method="POST", data=body,
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 429 and refused.value.headers.get("Retry-After")
        assert not ended, ended
    finally:
        for stream in held:
            stream.cancel()
    wait_until(lambda: len(ended) == len(held), "ending the held evaluations once cancelled")
    wait_until(lambda: full_http_server.metric("heie_active_sequences") == 0
               and full_http_server.metric("heie_queue_depth") == 0, "out of its slot and its queue")
