"""The HEIE client: one API over either transport (gRPC, or the HTTP/JSON API of ``heie serve --http``)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence, TypeVar, Union

from .balancing import is_http, member_addresses, replica_lost, split_targets
from .errors import HeieError, InvalidImage, ProtocolError
from .events import BatchEvent, Event, Ranking
from .failover import Rotation
from .images import ImageLike, WireImage, to_wire
from .info import HealthStatus, Reranked, ServerInfo
from .options import EvaluateOptions
from .result import Result, ResultBuilder, require_score
from .security import PemSource, check_token_transport, tls_settings
from .stream import CancelCheck, EventStream

if TYPE_CHECKING:
    from .transport import Transport

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 300.0
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20

_log = logging.getLogger("heie_client")
R = TypeVar("R")


class Client:
    """Talks to one or several ``heie serve`` processes, over gRPC or over HTTP.

    The address picks the transport: ``http://host:port`` / ``https://host:port`` is the HTTP/JSON API
    (``heie serve --http``, standard library only; ``https`` = TLS); anything else is gRPC (the
    ``[grpc]`` extra). Every address of one client must pick the same one. For gRPC, ``address`` is
    ``host:port`` (or ``grpc://host:port``), a list or comma-separated string of them (used round-robin; a server
    answering UNAVAILABLE is skipped for the next), or a replica set that gRPC resolves and balances
    with ``round_robin``: ``dns:///name:port`` (e.g. a Kubernetes headless Service) or
    ``ipv4:a:p,b:q``. A call that fails UNAVAILABLE before its first message is retried on another
    server or replica. ``timeout`` is the deadline of each call in seconds (None = none).
    ``token`` (the server's ``--api-key``) is sent as ``authorization: Bearer …``; it is refused,
    before connecting, over plaintext to an address that is not loopback.
    ``tls=True`` connects with TLS; ``ca_cert`` (PEM bytes or file; default: the system's roots)
    verifies the server; ``client_cert`` + ``client_key`` (PEM) identify this client to a server that
    requires client certificates (mutual TLS). Any of the three implies ``tls``.
    """

    def __init__(
        self,
        address: Union[str, Sequence[str]] = DEFAULT_ADDRESS,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        token: Optional[str] = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: bool = False,
        ca_cert: Optional[PemSource] = None,
        client_cert: Optional[PemSource] = None,
        client_key: Optional[PemSource] = None,
        lost_call_retries: int = 1,
    ) -> None:
        if lost_call_retries < 0:
            raise ValueError("lost_call_retries must be >= 0")
        self.lost_call_retries = lost_call_retries
        addresses = split_targets(address)
        http = [is_http(a) for a in addresses]
        if any(http) and not all(http):
            raise ValueError("server addresses mix HTTP (http(s)://) and gRPC: one client talks one transport")
        if any(http):
            if any(a.lower().startswith("https://") for a in addresses):
                tls = True
            elif tls or ca_cert is not None or client_cert is not None:
                raise ValueError("TLS options with an http:// address: use https://")
        settings = tls_settings(tls, ca_cert, client_cert, client_key)
        check_token_transport([m for a in addresses for m in member_addresses(a)], token, settings is not None)
        self._transport: Transport
        if all(http):
            from .http_transport import HttpTransport

            self._transport = HttpTransport(addresses, settings, token)
        else:
            from .grpc_transport import GrpcTransport  # needs the [grpc] extra; says so when missing

            self._transport = GrpcTransport(addresses, settings, token, max_message_bytes)
        self._rotation: Rotation = Rotation(self._transport.endpoints)
        self.transport = "http" if all(http) else "grpc"
        """Which transport the addresses picked: ``"grpc"`` or ``"http"``."""
        self.tls = settings is not None
        self.timeout = timeout

    @property
    def addresses(self) -> list[str]:
        return [e.address for e in self._transport.endpoints]

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- single image -------------------------------------------------------------------------------

    def evaluate_stream(
        self,
        image: ImageLike,
        options: Optional[EvaluateOptions] = None,
        prompt: Optional[str] = None,
        cancel_when: Optional[CancelCheck] = None,
    ) -> EventStream[Event]:
        """Starts evaluating one image; iterate the result for typed events as they are written."""
        wire, opts = to_wire(image, prompt), options or EvaluateOptions()
        return EventStream(
            self._rotation, lambda endpoint: self._transport.evaluate(endpoint, wire, opts, self.timeout), cancel_when
        )

    def evaluate(
        self,
        image: ImageLike,
        options: Optional[EvaluateOptions] = None,
        prompt: Optional[str] = None,
        on_event: Optional[Callable[[Event], None]] = None,
        cancel_when: Optional[CancelCheck] = None,
    ) -> Result:
        """Evaluates one image and returns the folded :class:`Result` (``on_event`` sees every event
        as it arrives, e.g. to show the explanation while it is written)."""
        def attempt() -> Result:
            builder = ResultBuilder()
            with self.evaluate_stream(image, options, prompt, cancel_when) as stream:
                for event in stream:
                    builder.add(event)
                    if on_event is not None:
                        on_event(event)
            return require_score(builder.build())

        return self._retry_lost(attempt, on_event is None)

    # -- many images --------------------------------------------------------------------------------

    def evaluate_batch_stream(
        self,
        images: Sequence[ImageLike],
        options: Optional[EvaluateOptions] = None,
        prompts: Optional[Sequence[Optional[str]]] = None,
        cancel_when: Optional[CancelCheck] = None,
    ) -> EventStream[Union[BatchEvent, Ranking]]:
        """Starts a batch; yields :class:`BatchEvent` per image event and a final :class:`Ranking`.

        Over gRPC this is one ``EvaluateBatch`` call (admitted whole or refused whole). The HTTP API has no
        batch route: the HTTP transport sends one ``/v1/evaluate`` per image to the same server, all at
        once, multiplexes their events in arrival order, fails the whole batch when any image fails (a bad
        image, busy, down, key, deadline; the other calls are cancelled), as ``EvaluateBatch`` refuses a
        batch with a bad image, and ranks the scores itself as the server would (best first, ties by index)."""
        wires, opts = _wire_images(images, prompts), options or EvaluateOptions()
        return EventStream(
            self._rotation,
            lambda endpoint: self._transport.evaluate_batch(endpoint, wires, opts, self.timeout),
            cancel_when,
        )

    def evaluate_batch(
        self,
        images: Sequence[ImageLike],
        options: Optional[EvaluateOptions] = None,
        prompts: Optional[Sequence[Optional[str]]] = None,
        on_event: Optional[Callable[[BatchEvent], None]] = None,
        cancel_when: Optional[CancelCheck] = None,
    ) -> list[Result]:
        """Evaluates many images concurrently; results in input order. An image that failed on the
        server has ``ok == False`` and its reason in ``error`` (the other images still complete)."""
        def attempt() -> list[Result]:
            builders = [ResultBuilder() for _ in images]
            ranking: Optional[Ranking] = None
            with self.evaluate_batch_stream(images, options, prompts, cancel_when) as stream:
                for item in stream:
                    if isinstance(item, Ranking):
                        ranking = item
                        continue
                    if not 0 <= item.index < len(builders):
                        raise ProtocolError(f"batch event for image {item.index} of {len(builders)}")
                    builders[item.index].add(item.event)
                    if on_event is not None:
                        on_event(item)
            if ranking is None:
                raise ProtocolError("the batch stream ended without a ranking")
            return [b.build() for b in builders]

        return self._retry_lost(attempt, on_event is None)

    def _retry_lost(self, attempt: Callable[[], R], may_retry: bool) -> R:
        """Runs ``attempt``, again (on the next server in the rotation) while it failed because its
        server went away mid-call, up to ``lost_call_retries`` times; only when nothing of a failed
        attempt reached the caller (``may_retry``)."""
        retries = self.lost_call_retries if may_retry else 0
        for tries_left in range(retries, -1, -1):
            try:
                return attempt()
            except HeieError as err:
                if tries_left == 0 or not replica_lost(err):
                    raise
                _log.warning("heie: call lost mid-stream (%s); running it again on another server", err)
        raise AssertionError("unreachable")

    def rerank(
        self,
        images: Sequence[ImageLike],
        top_k: int = 0,
        fast: bool = True,
        options: Optional[EvaluateOptions] = None,
        prompts: Optional[Sequence[Optional[str]]] = None,
    ) -> Reranked:
        """Scores images and orders them best first (``fast`` skips the long explanation)."""
        if top_k < 0:
            raise ValueError("top_k must be >= 0")
        wires, opts = _wire_images(images, prompts), options or EvaluateOptions(heatmap_encodings=())
        return self._rotation.call(lambda e: self._transport.rerank(e, wires, top_k, fast, opts, self.timeout))

    # -- server -------------------------------------------------------------------------------------

    def info(self) -> ServerInfo:
        """Model names, heads mode and limits of the next server in the rotation."""
        return self._rotation.call(lambda e: self._transport.info(e, self.timeout))

    def health(self, service: str = "") -> HealthStatus:
        """Serving status (SERVING once the model is loaded and warmed up): grpc.health.v1 over gRPC,
        ``/healthz`` over HTTP (which knows only the whole server: ``service`` must be '')."""
        return self._rotation.call(lambda e: self._transport.health(e, service, self.timeout))

    def wait_until_serving(self, timeout: float = 60.0, interval: float = 0.2) -> None:
        """Blocks until :meth:`health` says SERVING, raising the last error after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health() is HealthStatus.SERVING:
                    return
                last: Optional[HeieError] = None
            except HeieError as err:
                last = err
            if time.monotonic() >= deadline:
                if last is not None:
                    raise last
                raise TimeoutError(f"{self.addresses} not SERVING after {timeout} s")
            time.sleep(interval)


def _wire_images(images: Sequence[ImageLike], prompts: Optional[Sequence[Optional[str]]]) -> list[WireImage]:
    if prompts is not None and len(prompts) != len(images):
        raise InvalidImage(f"{len(prompts)} prompts for {len(images)} images")
    return [to_wire(image, prompts[i] if prompts is not None else None) for i, image in enumerate(images)]


__all__ = ["Client", "DEFAULT_ADDRESS", "DEFAULT_TIMEOUT"]
