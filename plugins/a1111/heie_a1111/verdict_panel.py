"""The HEIE panel under the WebUI's gallery: the selected image's verdict as people read it — the score
with its band and the decision, the flagged regions (label, category, severity, where), and the
explanation with ``[SCORE]``/``[MAP]`` filled in. It is drawn from the generation's own info JSON (what
the WebUI keeps for the gallery and its infotext), whose ``extra_generation_params["HEIE"]`` entries say
at which gallery positions each image and its overlay are shown, so it follows the selected image the way
the WebUI's infotext under the gallery does. Pure HTML from JSON: no WebUI import here."""

from __future__ import annotations

import html
import json
from typing import Any, Optional

from .hooks import STRUCTURED_KEY
from .verdict import score_text

HEADING = "### "
CSS_CLASS = "heie-verdict"
NOT_AN_IMAGE = "Select an image to see its HEIE verdict (the grid has none of its own)."


def entries_of(generation_info: Any) -> list[dict[str, Any]]:
    """The verdict entries of a generation's info (its JSON text or the parsed dict); [] when it has none
    or is not the WebUI's info JSON (an empty gallery, a job without HEIE)."""
    if isinstance(generation_info, str):
        try:
            generation_info = json.loads(generation_info) if generation_info.strip() else {}
        except json.JSONDecodeError:
            return []
    if not isinstance(generation_info, dict):
        return []
    params = generation_info.get("extra_generation_params")
    entries = params.get(STRUCTURED_KEY) if isinstance(params, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def entry_at(generation_info: Any, gallery_index: int) -> tuple[Optional[dict[str, Any]], bool]:
    """The verdict of the image shown at ``gallery_index``, and whether the generation has verdicts at all.
    A negative index (no image selected, as right after a generation) means the first image, the one the
    WebUI's infotext then describes."""
    entries = entries_of(generation_info)
    if not entries:
        return None, False
    if gallery_index < 0:
        first = min((p for e in entries for p in e.get("image_positions", [])), default=None)
        return (next((e for e in entries if first in e.get("image_positions", [])), None) if first is not None
                else entries[0]), True
    return next((e for e in entries if gallery_index in e.get("image_positions", [])), None), True


def panel_html(generation_info: Any, gallery_index: int) -> str:
    """The panel's HTML for the image at ``gallery_index``; '' (no panel) when the generation was not judged."""
    entry, judged = entry_at(generation_info, gallery_index)
    if not judged:
        return ""
    if entry is None:
        return _frame(f'<p class="heie-note">{html.escape(NOT_AN_IMAGE)}</p>')
    number = int(entry.get("index", 0)) + 1
    if "error" in entry:
        head = f'<p class="heie-head"><b>HEIE</b> image {number}: not judged</p>'
        return _frame(head + f'<p class="heie-error">{html.escape(str(entry["error"]))}: '
                             f'{html.escape(str(entry.get("message", "")))}</p>')
    return _frame(_head(entry, number) + _repair(entry) + _regions(entry.get("regions") or [])
                  + _explanation(str(entry.get("explanation") or ""), str(entry.get("summary") or "")))


def _frame(body: str) -> str:
    return f'<div class="{CSS_CLASS}">{body}</div>'


def _head(entry: dict[str, Any], number: int) -> str:
    """``HEIE image 2: score 0.2577 — badly flawed · rejected: below the threshold 0.541667; hand``."""
    score, threshold = float(entry["score"]), float(entry.get("threshold") or 0.0)
    shown = score_text(score, threshold)
    band = str(entry.get("band") or "")
    verdict = f"score <b>{shown}</b>" + (f" — <b>{html.escape(band)}</b>" if band else "")
    reasons = []
    if threshold > 0 and score < threshold:
        reasons.append(f"below the threshold {threshold:g}")
    by = entry.get("rejected_categories") or []
    if by:
        reasons.append(f"Reject if {html.escape(str(entry.get('reject_if') or ''))}: {html.escape(', '.join(by))}")
    if entry.get("rejected"):
        decision = '<span class="heie-rejected">rejected</span>' + (f" ({'; '.join(reasons)})" if reasons else "")
    elif threshold > 0:
        decision = f"kept (threshold {threshold:g})"
    else:
        decision = ""
    return (f'<p class="heie-head"><b>HEIE</b> image {number}: {verdict}'
            + (f" · {decision}" if decision else "") + "</p>")


def _repair(entry: dict[str, Any]) -> str:
    note = entry.get("repair_note")
    return f'<p class="heie-repair">Repair: {html.escape(str(note))}</p>' if note else ""


def _regions(regions: list[Any]) -> str:
    """One row per flagged region, worst first: label, category, severity, pixel box."""
    rows = sorted((r for r in regions if isinstance(r, dict)), key=lambda r: -float(r.get("severity", 0.0)))
    if not rows:
        return '<p class="heie-regions-none">No region flagged.</p>'
    body = "".join(
        f'<tr><td>{int(r.get("id", 0))}</td><td>{html.escape(str(r.get("label") or "(unnamed)"))}</td>'
        f'<td>{html.escape(str(r.get("category", "")))}</td><td>{float(r.get("severity", 0.0)):.2f}</td>'
        f'<td>{_box(r.get("box"))}</td></tr>'
        for r in rows)
    return ('<table class="heie-regions"><thead><tr><th>#</th><th>region</th><th>category</th><th>severity</th>'
            f'<th>where (px)</th></tr></thead><tbody>{body}</tbody></table>')


def _box(box: Any) -> str:
    if isinstance(box, list) and len(box) == 4:
        x1, y1, x2, y2 = (int(v) for v in box)
        return f"{x1},{y1} – {x2},{y2}"
    return ""


def _explanation(text: str, summary: str) -> str:
    """The explanation's sections, each heading as a heading and its lines as paragraphs; the server's
    summary line when there is no explanation (fast mode, or a server that sent none)."""
    if not text.strip():
        return f'<p class="heie-summary">{html.escape(summary)}</p>' if summary else ""
    parts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith(HEADING):
            parts.append(f"<h4>{html.escape(line[len(HEADING):].strip())}</h4>")
        else:
            parts.append(f"<p>{html.escape(line)}</p>")
    return f'<details class="heie-explanation" open><summary>Explanation</summary>{"".join(parts)}</details>'
