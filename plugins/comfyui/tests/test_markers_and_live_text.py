"""The text people read: markers filled in, live frames that are never empty or repeated."""

from __future__ import annotations

from heie_client import HeadsMode, Score, Section, TextDelta

from heie_nodes.live_text import LiveText
from heie_nodes.markers import for_people
from heie_nodes.report import node_text


def test_markers_become_the_score_and_a_pointer_to_the_heatmap() -> None:
    raw = ("### Problematic Regions\nSo, the potential problematic regions in the image are [MAP] .\n"
           "### Rating\nBased on the overall analysis, the plausibility score for this image is [SCORE].")
    shown = for_people(raw, 0.7349)
    assert "[MAP]" not in shown and "[SCORE]" not in shown
    assert "the potential problematic regions in the image are shown in the heatmap." in shown
    assert shown.endswith("the plausibility score for this image is 0.735.")
    assert for_people("score [SCORE]", None) == "score not available"
    assert for_people("a\x12b\n\tc\x00", 0.5) == "ab\n c"  # control characters dropped, lines kept


def test_node_report_puts_every_score_first() -> None:
    entries = ["#1: score 0.100 (zero-shot)\nfirst explanation", "#2: no score: cancelled"]
    assert node_text(entries) == ("#1: score 0.100 (zero-shot)\n#2: no score: cancelled\n\n"
                                  "#1: score 0.100 (zero-shot)\nfirst explanation\n\n#2: no score: cancelled")
    assert node_text(["#1: score 0.5", "#2: score 0.6"]) == "#1: score 0.5\n#2: score 0.6"


class Recorder:
    def __init__(self) -> None:
        self.frames: list[str] = []
        self.steps: list[tuple[int, int]] = []

    def progress(self, value: int, total: int) -> None:
        self.steps.append((value, total))

    def text(self, text: str) -> None:
        self.frames.append(text)


def test_live_text_frames() -> None:
    host = Recorder()
    live = LiveText(2, host)  # type: ignore[arg-type]
    live.add(1, Score(0.5, HeadsMode.ZERO_SHOT, (), None, None))  # nothing to show yet: no empty frame
    assert host.frames == []
    live.add(0, TextDelta(Section.RATING, "the score is [SCORE]"))
    assert host.frames == ["#1: …the score is not available"]
    live.finish(1, 0.5, "")
    live.finish(0, None, "no verdict within the node's timeout of 2 s")
    assert host.frames[-1] == "#1: no score: no verdict within the node's timeout of 2 s\n#2: score 0.500"
    assert all(a != b for a, b in zip(host.frames, host.frames[1:]))
    assert host.steps == [(1, 2), (2, 2)]
