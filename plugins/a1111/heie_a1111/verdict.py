"""One image's verdict and the per-generation state that carries it from judging to saving."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from heie_client import Client, EvaluateOptions, HeatmapEncoding

from .settings import Settings


@dataclass(frozen=True)
class Verdict:
    score: float
    summary: str
    mode: str
    rejected: bool
    overlay_png: Optional[bytes] = field(default=None, repr=False)

    def infotext(self) -> dict[str, str]:
        """Entries for the image's infotext (PNG ``parameters``)."""
        params = {"HEIE score": f"{self.score:.3f}", "HEIE mode": self.mode}
        if self.summary:
            params["HEIE"] = self.summary
        if self.rejected:
            params["HEIE rejected"] = "yes"
        return params


def judge(client: Client, image: Any, settings: Settings, prompt: Optional[str] = None,
          cancel_when: Optional[Callable[[], bool]] = None) -> Verdict:
    """Evaluates one image and decides against the threshold."""
    encodings = (HeatmapEncoding.OVERLAY_PNG,) if settings.save_overlay else ()
    options = EvaluateOptions(explanation=settings.explanation, max_tokens_per_section=settings.max_tokens,
                              heatmap_encodings=encodings)
    result = client.evaluate(image, options, prompt=prompt or None, cancel_when=cancel_when)
    score = float(result.score if result.score is not None else 0.0)
    return Verdict(
        score=score,
        summary=result.summary(settings.summary_chars),
        mode=result.mode.name.lower(),
        rejected=settings.threshold > 0 and score < settings.threshold,
        overlay_png=result.overlay_png,
    )


class RunState:
    """Lives on the WebUI's processing object for one generation: the client and the verdicts of the
    images judged so far, keyed by the image object (the one the WebUI then saves and shows)."""

    def __init__(self, settings: Settings, client_factory: Callable[[Settings], Client]) -> None:
        self.settings = settings
        self._factory = client_factory
        self._client: Optional[Client] = None
        self._verdicts: dict[int, tuple[Any, Verdict]] = {}

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._factory(self.settings)
        return self._client

    def record(self, image: Any, verdict: Verdict) -> None:
        # The image itself is kept with its verdict so its id cannot be reused while we look it up.
        self._verdicts[id(image)] = (image, verdict)

    def verdict_for(self, image: Any) -> Optional[Verdict]:
        entry = self._verdicts.get(id(image))
        return entry[1] if entry is not None and entry[0] is image else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def default_client(settings: Settings) -> Client:
    return Client(settings.addresses, timeout=settings.timeout or None)
