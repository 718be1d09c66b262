"""HEIE repair's host-free part: the accordion's options, which regions are repaired, the mask (union,
padded), the decision and what the infotext says; then through the hooks against a real ``heie serve
--http`` (the inpainting pass is the WebUI's; check_in_webui.py runs the real one)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from heie_client import HeieError
from heie_client.events import Region, RegionBox, RegionCategory, RegionSource

from heie_a1111 import Settings
from heie_a1111.repair import RepairOptions, grow, repair, repair_mask, selected_regions
from heie_a1111.verdict import Verdict

from a1111_servers import HttpServer, grounding_http_server  # noqa: F401 (fixtures)
from webui_loop import Opts, generate, parse_infotext


def _mask_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 255
    out = io.BytesIO()
    Image.fromarray(mask, mode="L").save(out, format="PNG")
    return out.getvalue()


def _region(id: int, category: RegionCategory, severity: float, box: tuple[int, int, int, int],
            size: tuple[int, int] = (32, 32), with_mask: bool = True) -> Region:
    x1, y1, x2, y2 = box
    return Region(id=id, label=category.name.lower(), sentences=(), category=category,
                  box=RegionBox(category.name.lower(), x1 * 1000 / size[0], y1 * 1000 / size[1], x2 * 1000 / size[0],
                                y2 * 1000 / size[1], x1, y1, x2, y2),
                  severity=severity, mask_png=_mask_png(size, box) if with_mask else b"",
                  source=RegionSource.HEATMAP_COMPONENT)


def _verdict(score: float, regions: tuple[Region, ...] = (), band: str = "flawed") -> Verdict:
    return Verdict(score=score, summary="", mode="zero_shot", rejected=True, threshold=13 / 24, band=band, regions=regions)


HAND = _region(1, RegionCategory.HAND, 0.6, (4, 4, 8, 8))
FACE = _region(2, RegionCategory.FACE, 0.2, (20, 20, 24, 26))
TEXT = _region(3, RegionCategory.TEXT, 0.9, (0, 28, 32, 32), with_mask=False)


def test_options_from_the_accordion_and_an_api_callers_bad_values() -> None:
    assert RepairOptions.from_args([]) == RepairOptions()  # an API call passing only the on/off checkbox
    options = RepairOptions.from_args([True, 8, 0.5, ["Hand", "face"], 0.3])
    assert options == RepairOptions(True, 8, 0.5, ("hand", "face"), 0.3)
    assert options.generation_params() == {"HEIE repair denoising": "0.5", "HEIE repair padding": "8",
                                           "HEIE repair categories": "hand,face", "HEIE repair min severity": "0.3"}
    assert RepairOptions().generation_params() == {}, "repair off: nothing in the infotext"
    with pytest.raises(ValueError, match="'hands' is not a region category|hands is not a region category"):
        RepairOptions.from_args([True, 8, 0.5, ["hands"]])
    with pytest.raises(ValueError, match="denoising strength must be above 0"):
        RepairOptions.from_args([True, 8, 0.0])
    with pytest.raises(ValueError, match="padding must be 0..256"):
        RepairOptions.from_args([True, -1])
    with pytest.raises(ValueError, match="not a number"):
        RepairOptions.from_args([True, "wide"])


def test_the_regions_of_the_chosen_categories_and_severity() -> None:
    regions = (HAND, FACE, TEXT)
    assert selected_regions(regions, RepairOptions(True, categories=("hand", "face"))) == [HAND, FACE]
    assert selected_regions(regions, RepairOptions(True, min_severity=0.5)) == [HAND, TEXT]
    assert selected_regions(regions, RepairOptions(True, categories=())) == []


def test_the_mask_is_the_union_of_the_regions_grown_by_the_padding() -> None:
    mask = np.asarray(repair_mask([HAND, FACE], (32, 32), padding=2)) > 0
    expected = np.zeros((32, 32), dtype=bool)
    expected[2:10, 2:10] = True  # the hand's 4..8 box, 2 px more on every side
    expected[18:28, 18:26] = True
    assert (mask == expected).all()
    boxed = np.asarray(repair_mask([TEXT], (32, 32), padding=0)) > 0  # no mask sent: its pixel box
    assert boxed[28:].all() and not boxed[:28].any()
    assert not grow(np.zeros((4, 4), dtype=bool), 3).any() and grow(np.eye(3, dtype=bool), 0).tolist() == np.eye(3, dtype=bool).tolist()


def test_the_better_image_is_kept_and_both_scores_are_said() -> None:
    image, fixed = Image.new("RGB", (32, 32)), Image.new("RGB", (32, 32), "white")
    seen: list[Any] = []

    def inpaint(img: Any, mask: Image.Image) -> Any:
        seen.append(np.asarray(mask) > 0)
        return fixed

    before = _verdict(0.257, (HAND, FACE), band="badly flawed")
    kept, verdict, report = repair(image, before, RepairOptions(True, padding=0), inpaint, lambda img: _verdict(0.61, band="good"))
    assert kept is fixed and verdict.score == 0.61 and report.kept and report.categories == ("hand", "face")
    assert seen[0][4:8, 4:8].all() and seen[0].sum() == 16 + 24
    assert report.infotext() == {"HEIE score": "0.610 (good)", "HEIE score before repair": "0.257 (badly flawed)",
                                 "HEIE repaired": "hand,face"}
    assert report.structured()["score_before_repair"] == 0.257 and report.structured()["score_after_repair"] == 0.61

    kept, verdict, report = repair(image, before, RepairOptions(True), inpaint, lambda img: _verdict(0.2, band="badly flawed"))
    assert kept is image and verdict is before and not report.kept
    assert report.infotext() == {"HEIE repair result": "not kept: the repaired image (hand,face) scored 0.200 (badly flawed), "
                                                       "not higher than 0.257 (badly flawed)"}
    close = _verdict(0.25741, band="badly flawed")  # the same at 3 decimals: as many as tell them apart
    _, _, report = repair(image, _verdict(0.25702, (HAND,), band="badly flawed"), RepairOptions(True), inpaint, lambda img: close)
    assert report.infotext()["HEIE score"] == "0.2574 (badly flawed)" and report.infotext()["HEIE score before repair"] == "0.2570 (badly flawed)"


@pytest.mark.parametrize("inpaint, judge_again, note", [
    (lambda img, mask: 1 / 0, None, "failed: the inpainting pass raised ZeroDivisionError: division by zero; original kept"),
    (lambda img, mask: Image.new("RGB", (8, 8)), None, "failed: the inpainting pass gave no image of 32×32 (got (8, 8)); original kept"),
    (lambda img, mask: img.copy(), "refused", "failed: the repaired image was not judged (refused); original kept"),
])
def test_a_failed_repair_keeps_the_original_and_says_why(inpaint: Any, judge_again: Any, note: str) -> None:
    def judge(img: Any) -> Verdict:
        raise HeieError(judge_again, code=None)

    image, before = Image.new("RGB", (32, 32)), _verdict(0.3, (HAND,))
    kept, verdict, report = repair(image, before, RepairOptions(True), inpaint, judge)
    assert kept is image and verdict is before and report.note == note and report.infotext() == {"HEIE repair result": note}


def test_no_region_to_repair_is_said_not_hidden() -> None:
    image = Image.new("RGB", (32, 32))
    kept, _, report = repair(image, _verdict(0.3, (FACE,)), RepairOptions(True, categories=("hand",)), lambda i, m: 1 / 0, None)  # type: ignore[arg-type]
    assert kept is image and report.note == "skipped: no flagged region of hand at severity ≥ 0 (regions: face 0.20); original kept"
    _, _, report = repair(image, _verdict(0.3), RepairOptions(True), lambda i, m: 1 / 0, None)  # type: ignore[arg-type]
    assert "(regions: none)" in report.note


def _image(seed: int, size: int = 16) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_a_rejected_image_is_repaired_through_the_hooks(grounding_http_server: HttpServer, tmp_path: Path) -> None:  # noqa: F811
    # Every image rejected (threshold 1), its hand repaired; the "pass" paints the mask grey, which the real
    # server then judges: the infotext and the API say what happened, whichever image was kept.
    masks: list[np.ndarray] = []

    def inpaint(p: Any, image: Image.Image, mask: Image.Image, options: RepairOptions) -> Image.Image:
        masks.append(np.asarray(mask) > 0)
        painted = np.asarray(image).copy()
        painted[masks[-1]] = 128
        return Image.fromarray(painted)

    settings = Settings(address=grounding_http_server.address, timeout=120, explanation=False, max_tokens=2, threshold=1.0)
    run = generate([[_image(1, 40), _image(2, 40)]], settings, tmp_path,
                   repair_options=RepairOptions(True, padding=1, categories=("hand",)), inpaint=inpaint)
    texts = [parse_infotext(t) for t in run.processed.infotexts[1:]]
    api = run.processed.extra_generation_params["HEIE"]
    assert len(masks) == 2 and len(api) == 2
    for text, entry, mask in zip(texts, api, masks):
        assert text["HEIE repair padding"] == "1" and text["HEIE repair categories"] == "hand"
        assert len(entry["regions"]) == 2 and entry["regions"][0]["category"] == "hand", "the reference's hand and sign"
        (hand,) = entry["repaired_regions"]
        x1, y1, x2, y2 = hand["box"]  # the mask is the hand's box (zero-shot masks are boxes) grown by 1 px
        expected = np.zeros_like(mask)
        expected[max(0, y1 - 1):y2 + 1, max(0, x1 - 1):x2 + 1] = True
        assert (mask == expected).all()
        assert entry["repair_categories"] == ["hand"] and entry["score_after_repair"] is not None
        if entry["repaired"]:
            assert text["HEIE repaired"] == "hand" and float(text["HEIE score before repair"].split(" (")[0]) < float(text["HEIE score"].split(" (")[0])
        else:
            assert text["HEIE repair result"].startswith("not kept: the repaired image (hand) scored ")
        assert all(set(r) == {"id", "label", "category", "box", "severity"} for r in entry["regions"])
        assert " (" in text["HEIE score"], "the band beside the score"


def test_reject_if_rejects_by_a_regions_category(grounding_http_server: HttpServer, tmp_path: Path) -> None:  # noqa: F811
    settings = Settings(address=grounding_http_server.address, timeout=120, explanation=False, max_tokens=2,
                        threshold=0.0, reject_if="hand>0")
    run = generate([[_image(3, 40)]], settings, tmp_path, opts=Opts(return_grid=False, grid_save=False))
    text = parse_infotext(run.processed.infotexts[0])
    (entry,) = run.processed.extra_generation_params["HEIE"]
    assert text["HEIE reject if"] == "hand>0" and text["HEIE rejected"] == "yes" and text["HEIE rejected by"] == "hand"
    assert entry["rejected_categories"] == ["hand"] and entry["reject_if"] == "hand>0" and "HEIE threshold" not in text
