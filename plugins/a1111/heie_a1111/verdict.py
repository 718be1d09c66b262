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
    threshold: float = 0.0
    """The reject threshold the decision was made against (0 = none)."""

    def metadata_json(self) -> str:
        """``{"score", "mode", "summary", "version"}``, compact, UTF-8 kept as is."""
        return json.dumps({"score": round(self.score, 4), "mode": self.mode, "summary": self.summary,
                           "version": METADATA_VERSION}, ensure_ascii=False, separators=(",", ":"))

    def structured(self) -> dict[str, Any]:
        """The verdict for API clients (``Processed.js()``'s ``extra_generation_params``): full score."""
        return {"score": self.score, "rejected": self.rejected, "threshold": self.threshold or None,
                "mode": self.mode, "summary": self.summary}

    def infotext(self) -> dict[str, str]:
        """Entries for the image's infotext (PNG ``parameters``), each said once: the score with the digits
        that explain the decision, the threshold when there is one, ``rejected`` when it is, the summary.
        The ``heie`` JSON for programs is the PNG's own ``heie`` chunk (and the API's structured field)."""
        params = {"HEIE score": score_text(self.score, self.threshold)}
        if self.threshold > 0:
            params["HEIE threshold"] = f"{self.threshold:g}"
        if self.rejected:
            params["HEIE rejected"] = "yes"
        if self.summary:
            params["HEIE summary"] = self.summary
        return params


def score_text(score: float, threshold: float = 0.0) -> str:
    """The score at 3 decimals, or as many more as it takes for the shown score to fall on the same side
    of the threshold as the real one (0.2538 under 0.25385, not 0.254): the infotext must explain the
    reject decision, which is made on the full value."""
    digits = 3
    if threshold > 0:
        while digits < 9 and (float(f"{score:.{digits}f}") < threshold) != (score < threshold):
            digits += 1
    return f"{score:.{digits}f}"


def encode_png(image: Any) -> bytes:
    """The WebUI's PIL image as PNG bytes (fast compression: it only crosses a socket)."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def options_of(settings: Settings) -> EvaluateOptions:
    """The request's options: no value map (the extension shows none), the overlay when it is saved or shown."""
    overlay = settings.save_overlay or settings.overlay_in_gallery
    return EvaluateOptions(explanation=settings.explanation, max_tokens_per_section=settings.max_tokens,
                           heatmap_encodings=(HeatmapEncoding.OVERLAY_PNG,) if overlay else ())


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
        threshold=settings.threshold,
    )
