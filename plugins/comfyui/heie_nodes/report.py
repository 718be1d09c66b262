"""What a node leaves behind after it ran: the ``ui`` text ComfyUI keeps on the node and in /history
(score and readable explanation per image, for people) and the ``results`` JSON (raw explanation with its
markers, boxes, errors, for code). Images are numbered from 1 in both, like the live text; Rerank's
``order`` output and its ``batch_index`` notes are 0-based, as ComfyUI's batch_index inputs are.

Scores are shown with as many decimals as it takes to tell apart the scores of the batch (and a
Filter's threshold): 3, more when two of them differ only further on."""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from .evaluation import Verdict
from .markers import DECIMALS, for_people, score_in_words, summary_in_words


def image_text(number: int, verdict: Verdict, note: str = "", decimals: int = DECIMALS,
               summary: bool = False) -> str:
    """One image's entry of the node's ui text: a header line with the score, then (``summary``) the
    server's one-line summary, then the explanation for people."""
    head = f"#{number}"
    if note:
        head += f" ({note})"
    result = verdict.result
    if verdict.score is None or result is None:
        return f"{head}: no score: {verdict.failure}"
    head += f": score {score_in_words(verdict.score, verdict.band, decimals)} ({result.mode.name.lower().replace('_', '-')})"
    lines = [head]
    if summary and result.summary:
        lines.append(summary_in_words(" ".join(for_people(result.summary, verdict.score).split()), verdict.band))
    explanation = for_people(result.explanation, verdict.score, decimals)
    if explanation:
        lines.append(explanation)
    return "\n".join(lines)


def ui_text(verdicts: Sequence[Verdict], notes: Optional[Sequence[str]] = None, decimals: int = DECIMALS,
            summary: bool = False) -> list[str]:
    """The node's ``{"ui": {"text": …}}`` entries, one per image in input order."""
    return [image_text(i + 1, v, notes[i] if notes else "", decimals, summary) for i, v in enumerate(verdicts)]


def node_text(entries: Sequence[str]) -> str:
    """The report left on the node after the run: first every image's header line (its score), which
    is what shows in the node's text box without scrolling, then every image's whole entry."""
    heads = [entry.split("\n", 1)[0] for entry in entries]
    if all("\n" not in entry for entry in entries):
        return "\n".join(heads)
    return "\n".join(heads) + "\n\n" + "\n\n".join(entries)


def results_json(verdicts: Sequence[Verdict]) -> str:
    """Everything per image as JSON (``image`` is the 1-based input position)."""
    return json.dumps([_entry(i + 1, v) for i, v in enumerate(verdicts)], ensure_ascii=False)


def _entry(number: int, verdict: Verdict) -> dict[str, Any]:
    result = verdict.result
    entry: dict[str, Any] = {"image": number, "score": verdict.score, "band": verdict.band or None,
                             "error": verdict.failure or None}
    if result is not None:
        entry.update(
            mode=result.mode.name.lower(),
            explanation=result.explanation,
            summary=result.summary,
            boxes=[{"label": b.label, "x1": b.pixel_x1, "y1": b.pixel_y1, "x2": b.pixel_x2, "y2": b.pixel_y2}
                   for b in result.boxes],
        )
    return entry
