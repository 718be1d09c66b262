"""The explanation as people read it (heie_client.readable_explanation), shared by the ComfyUI nodes and the
WebUI extension; the ComfyUI pack's tests cover the markers through its wrapper as well."""

from __future__ import annotations

from pathlib import Path

from heie_client.readable_explanation import readable

REFERENCE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "reference-cot" / "hand-and-sign.txt"


def test_grounding_markup_reads_as_its_labels_and_markers_are_filled_in() -> None:
    shown = readable(REFERENCE.read_text(), "0.260")
    assert "Problematic areas: the left hand holding the sign, and the sign." in shown
    assert "<" not in shown and "[[" not in shown and "[MAP]" not in shown and "[SCORE]" not in shown
    assert shown.endswith("the plausibility score for this image is 0.260.")
    assert readable("see [MAP] .", "0.5", map_text="the overlay") == "see the overlay."


def test_a_box_without_a_reference_and_an_empty_section_go() -> None:
    raw = "### Image Description\n\n### Analysis\nthe cup<box>[[1,2,3,4],[5,6,7,8]]</box> floats"
    assert readable(raw, "0.1") == "### Analysis\nthe cup floats"
