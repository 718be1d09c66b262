"""One image's verdict: judging it with heie-client over HTTP, deciding against the threshold, and what it writes into
the infotext and the PNG's ``heie`` text chunk."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from heie_client import Client, EvaluateOptions, Event, HeatmapEncoding, HeieError, ProtocolError
from heie_client.result import clip

from .settings import Settings

METADATA_KEY = "heie"
"""Infotext entry and PNG text chunk holding the verdict as JSON: the key ``heie eval --write-metadata``
and ``heie-score --write-metadata`` write, so image browsers filter every HEIE-judged file alike."""
METADATA_VERSION = 1


@dataclass(frozen=True)
class Verdict:
    score: float
    summary: str
    mode: str
    rejected: bool
    overlay_png: Optional[bytes] = field(default=None, repr=False)

    def metadata_json(self) -> str:
        """``{"score", "mode", "summary", "version"}``, compact, UTF-8 kept as is."""
        return json.dumps({"score": round(self.score, 4), "mode": self.mode, "summary": self.summary,
                           "version": METADATA_VERSION}, ensure_ascii=False, separators=(",", ":"))

    def infotext(self) -> dict[str, str]:
        """Entries for the image's infotext (PNG ``parameters``): the score for people, ``rejected``
        when it is, and the ``heie`` JSON for programs."""
        params = {"HEIE score": f"{self.score:.3f}"}
        if self.rejected:
            params["HEIE rejected"] = "yes"
        params[METADATA_KEY] = self.metadata_json()
        return params


def encode_png(image: Any) -> bytes:
    """The WebUI's PIL image as PNG bytes (fast compression: it only crosses a socket)."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def options_of(settings: Settings) -> EvaluateOptions:
    """The request's options: no value map (the extension shows none), the overlay when it is saved."""
    return EvaluateOptions(explanation=settings.explanation, max_tokens_per_section=settings.max_tokens,
                           heatmap_encodings=(HeatmapEncoding.OVERLAY_PNG,) if settings.save_overlay else ())


def judge(client: Client, image: Any, settings: Settings, prompt: Optional[str] = None,
          cancel_when: Optional[Callable[[], bool]] = None,
          on_event: Optional[Callable[[Event], None]] = None) -> Verdict:
    """Evaluates one image and decides against the threshold. Raises ``HeieError``."""
    try:
        result = client.evaluate(encode_png(image), options_of(settings), prompt=prompt or None,
                                 cancel_when=cancel_when, on_event=on_event)
    except ProtocolError as err:  # cut before the heads ran: no verdict, never a silent 0 that rejects
        raise HeieError(f"the server sent no score ({err.message})", code=None) from None
    assert result.score is not None
    return Verdict(
        score=result.score,
        summary=clip(result.summary, settings.summary_chars),
        mode=result.mode.name.lower() if result.mode.value else "unknown",
        rejected=settings.threshold > 0 and result.score < settings.threshold,
        overlay_png=result.overlay_png,
    )
