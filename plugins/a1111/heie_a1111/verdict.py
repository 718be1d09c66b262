"""One image's verdict: judging it with heie-client over HTTP, deciding against the threshold and the
per-category rules (``Reject if``), and what it writes into the infotext and the PNG's ``heie`` text chunk."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from heie_client import Client, EvaluateOptions, Event, HeatmapEncoding, HeieError, ProtocolError
from heie_client.readable_explanation import readable
from heie_client.result import clip
from heie_client.verdict_rules import category_name, format_rules, rejected_categories

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
    band: str = ""
    """What the score means in words ("badly flawed" … "very plausible"; '' from a server that sends none)."""
    regions: tuple[Any, ...] = field(default=(), repr=False)
    """The server's flagged regions (``heie_client`` ``Region``: category, box, severity, mask)."""
    rules: dict[str, float] = field(default_factory=dict)
    """The ``Reject if`` rules the decision was made against (empty = none)."""
    rejected_by: tuple[str, ...] = ()
    """The categories whose rule a region broke (each once); the image is rejected when any did."""
    explanation: str = field(default="", repr=False)
    """The chain of thought as people read it (``[SCORE]`` as the score, ``[MAP]`` pointing to the heatmap)."""

    @property
    def score_with_band(self) -> str:
        """``0.257 (badly flawed)``: the digits that explain the decision, then the band's words."""
        return self.score_beside(None)

    def score_beside(self, other: Optional["Verdict"]) -> str:
        """:attr:`score_with_band`, with the digits that tell it from ``other``'s score (before and after a repair)."""
        text = score_text(self.score, self.threshold, other.score if other is not None else None)
        return f"{text} ({self.band})" if self.band else text

    def metadata_json(self) -> str:
        """``{"score", "mode", "summary", "version"}``, compact, UTF-8 kept as is."""
        return json.dumps({"score": round(self.score, 4), "mode": self.mode, "summary": self.summary,
                           "version": METADATA_VERSION}, ensure_ascii=False, separators=(",", ":"))

    def structured(self) -> dict[str, Any]:
        """The verdict for API clients (``Processed.js()``'s ``extra_generation_params``): full score."""
        return {"score": self.score, "band": self.band, "rejected": self.rejected, "threshold": self.threshold or None,
                "reject_if": format_rules(self.rules) or None, "rejected_categories": list(self.rejected_by),
                "mode": self.mode, "summary": self.summary, "regions": [region_summary(r) for r in self.regions],
                "explanation": self.explanation}

    def infotext(self) -> dict[str, str]:
        """Entries for the image's infotext (PNG ``parameters``), each said once: the score with the digits
        that explain the decision and its band, the threshold and the rules when there are some,
        ``rejected`` when it is and the categories that rejected it, the summary. The ``heie`` JSON for
        programs is the PNG's own ``heie`` chunk (and the API's structured field)."""
        params = {"HEIE score": self.score_with_band}
        if self.threshold > 0:
            params["HEIE threshold"] = f"{self.threshold:g}"
        if self.rules:
            params["HEIE reject if"] = format_rules(self.rules)
        if self.rejected:
            params["HEIE rejected"] = "yes"
        if self.rejected_by:
            params["HEIE rejected by"] = ",".join(self.rejected_by)
        if self.summary:
            params["HEIE summary"] = self.summary
        return params


def score_text(score: float, threshold: float = 0.0, other: Optional[float] = None) -> str:
    """The score at 3 decimals, or as many more as it takes for the shown score to fall on the same side
    of the threshold as the real one (0.2538 under 0.25385, not 0.254): the infotext must explain the
    reject decision, which is made on the full value. With ``other`` (the score it is compared with, as
    before and after a repair), also as many as it takes to tell the two apart."""
    digits = 3

    def misleads(d: int) -> bool:
        wrong_side = threshold > 0 and (float(f"{score:.{d}f}") < threshold) != (score < threshold)
        looks_same = other is not None and other != score and f"{score:.{d}f}" == f"{other:.{d}f}"
        return wrong_side or looks_same

    while digits < 9 and misleads(digits):
        digits += 1
    return f"{score:.{digits}f}"


def region_summary(region: Any) -> dict[str, Any]:
    """A region for API clients: what it is, where (pixel box, exclusive right/bottom) and how bad; no
    mask (a PNG per region would swell every API reply; the box says where to look)."""
    box = region.box
    return {"id": region.id, "label": region.label, "category": category_name(region),
            "box": [box.pixel_x1, box.pixel_y1, box.pixel_x2, box.pixel_y2], "severity": region.severity}


def decide(score: float, regions: tuple[Any, ...], settings: Settings) -> tuple[bool, tuple[str, ...]]:
    """Rejected or not, and the categories whose ``Reject if`` rule a region broke: below the threshold
    (when there is one) or any rule broken. Raises ValueError naming the setting for unreadable rules."""
    by = tuple(rejected_categories(regions, settings.reject_rules))
    below = settings.threshold > 0 and score < settings.threshold
    return below or bool(by), by


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
    regions = tuple(result.regions)
    rejected, rejected_by = decide(result.score, regions, settings)
    return Verdict(
        score=result.score,
        summary=clip(result.summary, settings.summary_chars),
        mode=result.mode.name.lower() if result.mode.value else "unknown",
        rejected=rejected,
        overlay_png=result.overlay_png,
        threshold=settings.threshold,
        band=result.band,
        regions=regions,
        rules=settings.reject_rules,
        rejected_by=rejected_by,
        explanation=readable(result.explanation, score_text(result.score, settings.threshold)),
    )
