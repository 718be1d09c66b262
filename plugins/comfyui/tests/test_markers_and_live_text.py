"""The text people read: markers filled in, live frames that are never empty or repeated."""

from __future__ import annotations

from heie_client import HeadsMode, Score, Section, TextDelta

from heie_nodes.live_text import LiveText
from heie_nodes.markers import for_people, separating_decimals
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
    live.finish(1, 0.5, "", "flawed")  # a finished image's line: its score and band
    live.finish(0, None, "no verdict within the node's timeout of 2 s")
    assert host.frames[-1] == "#1: no score: no verdict within the node's timeout of 2 s\n#2: score 0.500 \u2014 flawed"
    assert all(a != b for a, b in zip(host.frames, host.frames[1:]))
    assert host.steps == [(1, 2), (2, 2)]


def test_a_run_of_map_markers_is_one_pointer_to_the_heatmap() -> None:
    # A zero-shot server writes one [MAP] per view, back to back or spaced.
    assert for_people("the regions are [MAP][MAP][MAP].", 0.5) == "the regions are shown in the heatmap."
    assert for_people("the regions are [MAP] [MAP]\n[MAP] .", 0.5) == "the regions are shown in the heatmap."
    assert for_people("are[MAP]and more", 0.5) == "are shown in the heatmap and more"
    assert for_people("(see [MAP])", 0.5) == "(see shown in the heatmap)"
    assert for_people("[MAP]", 0.5) == "shown in the heatmap"
    assert "heatmapshown" not in for_people("a [MAP]\n\nb [MAP][MAP] c [MAP]", 0.5)
    assert for_people("a [MAP]\n\nb [MAP][MAP] c [MAP]", 0.5).count("shown in the heatmap") == 3


def test_headings_of_empty_sections_are_dropped() -> None:
    # What the server writes in fast mode: the description section has only its heading.
    raw = ("Sure. \n### Image Description\n\n\n### Problematic Regions Identification\n\nSo, the potential "
           "problematic regions in the image are [MAP]\n\n### Analysis of Issues\nBased on the overall analysis, "
           "the plausibility score for this image is [SCORE].\n### Empty At The End\n\n")
    shown = for_people(raw, 0.25)
    assert "Image Description" not in shown and "Empty At The End" not in shown
    assert shown == ("Sure.\n\n### Problematic Regions Identification\n\nSo, the potential problematic regions in "
                     "the image are shown in the heatmap\n\n### Analysis of Issues\nBased on the overall "
                     "analysis, the plausibility score for this image is 0.250.")


def test_scores_are_shown_with_the_digits_that_tell_them_apart() -> None:
    assert separating_decimals([0.25, 0.5, None]) == 3
    assert separating_decimals([0.25714, 0.25722]) == 4
    assert separating_decimals([0.257219, 0.257222, 0.1]) == 6
    assert separating_decimals([0.3, 0.3]) == 3  # a tie stays a tie
    assert separating_decimals([]) == 3
    assert for_people("is [SCORE].", 0.257219, 6) == "is 0.257219."
