"""The explanation as people read it. The server writes the model's chain of thought with two marker
tokens in it: ``[MAP]`` where the regions become the heatmap, ``[SCORE]`` where the rating becomes the
score. Shown literally they read as garbage ("…the plausibility score for this image is [SCORE]."), so
a host shows the score in place of ``[SCORE]`` and a pointer to the heatmap in place of ``[MAP]``.

A zero-shot server writes one ``[MAP]`` per view (tiles and thumbnail), often back to back: a run of
them is one pointer to the heatmap. A section the server did not write (fast mode has no description)
keeps only its heading in the raw text: such a heading is dropped. The model's grounding markup
(``<ref>the left hand</ref><box>[[100,500,300,900]]</box>``, which the server reads as the regions) reads
as its label alone. Shared by the ComfyUI nodes and the
WebUI extension, so both read the same."""

from __future__ import annotations

import re

MAP_MARKER = "[MAP]"
SCORE_MARKER = "[SCORE]"
MAP_FOR_PEOPLE = "shown in the heatmap"
HEADING = "### "
_SPACES = re.compile(r"[ \t]+")
#: A grounding reference's tags (its label stays) and a box's coordinates with the space before them.
_REF_TAGS = re.compile(r"</?ref>")
_BOXES = re.compile(r"[ \t]*<box>.*?</box>", re.DOTALL)
#: One or more [MAP] markers in a row (with only white space between them), and the text touching them.
_MAPS = re.compile(r"(\S?)[ \t]*\[MAP\](?:\s*\[MAP\])*[ \t]*(\S?)")


def readable(raw: str, score_text: str, map_text: str = MAP_FOR_PEOPLE) -> str:
    """``raw`` with ``[SCORE]`` replaced by ``score_text`` (the score as the host shows it), each run of
    ``[MAP]`` by one ``map_text`` (a pointer to where the host shows the heatmap), grounding markup by its
    labels, and the headings of empty sections dropped; other text untouched."""
    text = _REF_TAGS.sub("", _BOXES.sub("", raw))
    text = _MAPS.sub(lambda match: _map_pointer(match, map_text), text).replace(SCORE_MARKER, score_text)
    # Control characters (a small or broken model writes some) show as boxes or nothing: drop them.
    text = "".join(c for c in text if c.isprintable() or c in "\n\t")
    # The markers are tokens of their own, so the model often writes a space before the full stop after them.
    text = text.replace(f"{score_text} .", f"{score_text}.").replace(f"{map_text} .", f"{map_text}.")
    lines = [_SPACES.sub(" ", line).rstrip() for line in text.splitlines()]
    return "\n".join(_without_empty_sections(lines)).strip()


def _map_pointer(match: "re.Match[str]", map_text: str) -> str:
    """One pointer to the heatmap, set off by a space from a word before or after it (not from punctuation)."""
    before, after = match.group(1), match.group(2)
    lead = f"{before} " if before and before not in "([" else before
    trail = f" {after}" if after and (after.isalnum() or after in "([") else after
    return f"{lead}{map_text}{trail}"


def _without_empty_sections(lines: list[str]) -> list[str]:
    """``lines`` less each heading whose section has no text before the next heading or the end."""
    kept: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith(HEADING):
            rest = next((other for other in lines[i + 1:] if other.strip()), None)
            if rest is None or rest.startswith(HEADING):
                continue
        kept.append(line)
    # A dropped heading leaves the blank lines around it: at most one blank line in a row.
    return [line for i, line in enumerate(kept) if line or (i > 0 and kept[i - 1])]
