"""HEIE Regions: masks of the flagged regions that line up with the judged images (grow, feather,
categories, lowest severity), the Impact Pack's SEGS, and the clear errors for bad widgets; and the parts
of the Filter and the texts that act on regions and bands (reject_if, band words, filename_prefix).

Regions are built here as the server describes them (box, mask PNG at the image's size), so every shape
of region is covered whatever the fixture model happens to flag; test_regions_of_a_real_verdict runs
Evaluate on a real server and Regions on its output."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, serving  # the plugins' shared server helpers
from heie_client.events import Region, RegionBox, RegionCategory, RegionSource
from heie_nodes import HeieEvaluate, HeieFilter, HeieRegions
from heie_nodes.evaluation import Verdict
from heie_nodes.failures import HeieNodeError
from heie_nodes.filenames import filename_prefix
from heie_nodes.judged_batch import JudgedBatch
from heie_nodes.markers import score_in_words, summary_in_words
from heie_nodes.nodes import PASSED, _filter_note
from heie_nodes.region_masks import parse_categories, shaped

import torch_standin
from test_comfy_nodes import closed_address, comfy, fake_torch  # noqa: F401  (shared fixtures)

H, W = 48, 64
#: A chain of thought with two grounding boxes (a hand, a sign); the server's test-only hook makes the fixture
#: model write it, because the random-weight fixture never writes grounding markup itself.
REFERENCE_COT = REPO / "tests" / "fixtures" / "reference-cot" / "hand-and-sign.txt"


def _box(x1: int, y1: int, x2: int, y2: int, label: str = "") -> RegionBox:
    return RegionBox(label, x1 * 1000 / W, y1 * 1000 / H, x2 * 1000 / W, y2 * 1000 / H, x1, y1, x2, y2)


def _png(mask: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(out, format="PNG")
    return out.getvalue()


def _region(id: int, category: RegionCategory, severity: float, box: tuple[int, int, int, int],
            mask: np.ndarray | None = None) -> Region:
    """A region as the server sends it: the mask PNG at the image's size when given, else only the box."""
    return Region(id=id, label=f"{category.name.lower()} {id}", sentences=(f"the {category.name.lower()} is wrong",),
                  category=category, box=_box(*box), severity=severity,
                  mask_png=_png(mask) if mask is not None else b"",
                  source=RegionSource.HEATMAP_COMPONENT if mask is not None else RegionSource.GROUNDED_BOX)


def _verdict(score: float, regions: tuple[Region, ...] = (), band: str = "flawed") -> Verdict:
    result = SimpleNamespace(ok=True, score=score, band=band, regions=regions)
    return Verdict(result)  # type: ignore[arg-type]


def _run(judged: JudgedBatch, grow: int = 0, feather: int = 0, categories: str = "all",
         min_severity: float = 0.0) -> tuple[Any, ...]:
    return HeieRegions().regions(judged, grow=grow, feather=feather, categories=categories, min_severity=min_severity)


def _images(batch: int) -> np.ndarray:
    return np.random.default_rng(7).random((batch, H, W, 3), dtype=np.float32)


# -- selection --------------------------------------------------------------------------------------

def test_categories_widget_reads_all_or_a_list() -> None:
    assert parse_categories("all") is None and parse_categories(" ") is None and parse_categories("ALL") is None
    assert parse_categories("Hand, text;face") == {"hand", "text", "face"}
    with pytest.raises(ValueError, match="'hands' is not a region category.*hand, face, body"):
        parse_categories("hands, face")
    with pytest.raises(ValueError, match="'all' alone"):
        parse_categories("all, hand")


# -- geometry ---------------------------------------------------------------------------------------

def test_grow_covers_and_feather_fades_outwards() -> None:
    pixels = np.zeros((H, W), bool)
    pixels[20:30, 20:30] = True
    mask = shaped(pixels, grow=3, feather=4)
    values = mask.values
    assert values.shape == (H, W) and values.dtype == np.float32
    assert (values[17:33, 17:33] == 1.0).all()  # the region and 3 px around it are fully masked
    # then 4 rings fading: 1 - k/5 for ring k outside the grown square
    assert [float(values[25, 33 + k - 1]) for k in range(1, 5)] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert values[25, 37] == 0.0 and values[25, 12] == 0.0
    assert mask.extent == (13, 13, 37, 37)
    assert shaped(pixels, 0, 0).extent == (20, 20, 30, 30)
    clipped = shaped(pixels, grow=40, feather=0)  # never past the image's edges
    assert clipped.extent == (0, 0, W, H) and clipped.values.shape == (H, W)


def test_masks_line_up_with_the_judged_images() -> None:
    hand_mask = np.zeros((H, W), bool)
    hand_mask[5:15, 40:50] = True  # its own pixels, smaller than its box
    hand = _region(1, RegionCategory.HAND, 0.7, (38, 3, 52, 17), hand_mask)
    text = _region(2, RegionCategory.TEXT, 0.2, (0, 30, 10, 40))  # a box without a mask
    images = _images(2)
    judged = JudgedBatch(images, (_verdict(0.3, (hand, text)), _verdict(0.9, ())))
    union, per_region, segs, count = _run(judged)
    assert union.shape == (2, H, W) and per_region.shape == (2, H, W) and count == 2
    np.testing.assert_array_equal(union[0] > 0, hand_mask | _filled((0, 30, 10, 40)))
    assert not union[1].any()  # the second image has no region
    np.testing.assert_array_equal(per_region[0] > 0, hand_mask)
    np.testing.assert_array_equal(per_region[1] > 0, _filled((0, 30, 10, 40)))
    # SEGS: one per image, the Impact Pack's layout
    assert len(segs) == 2 and segs[1] == ((H, W), [])
    shape, pieces = segs[0]
    assert shape == (H, W) and [p.label for p in pieces] == ["hand", "text"]
    seg = pieces[0]
    assert seg.crop_region == [40, 5, 50, 15] and seg.bbox == [40, 5, 50, 15] and seg.confidence == pytest.approx(0.7)
    assert seg.cropped_mask.dtype == np.float32 and seg.cropped_mask.shape == (10, 10) and seg.cropped_mask.min() == 1.0
    np.testing.assert_array_equal(seg.cropped_image, images[0:1, 5:15, 40:50, :])
    assert seg.control_net_wrapper is None


def test_the_selection_widgets_pick_regions() -> None:
    hand = _region(1, RegionCategory.HAND, 0.7, (38, 3, 52, 17))
    face = _region(2, RegionCategory.FACE, 0.4, (10, 10, 20, 20))
    judged = JudgedBatch(_images(1), (_verdict(0.3, (hand, face)),))
    assert _run(judged, categories="face")[3] == 1
    assert _run(judged, min_severity=0.5)[3] == 1
    assert _run(judged, categories="face", min_severity=0.5)[3] == 0
    union, per_region, segs, count = _run(judged, categories="text")
    # Nothing selected: one all-zero mask of the image's size (a 0-mask batch fails ComfyUI's mask nodes).
    assert count == 0 and per_region.shape == (1, H, W) and not per_region.any()
    assert union.shape == (1, H, W) and not union.any() and segs == [((H, W), [])]


def test_grown_region_masks_stay_inside_their_crop() -> None:
    hand = _region(1, RegionCategory.HAND, 0.7, (30, 20, 40, 30))
    union, per_region, segs, _ = _run(JudgedBatch(_images(1), (_verdict(0.3, (hand,)),)), grow=4, feather=6)
    seg = segs[0][1][0]
    x1, y1, x2, y2 = seg.crop_region
    assert (x1, y1, x2, y2) == (20, 10, 50, 40) and seg.bbox == [30, 20, 40, 30]
    assert float(per_region[0].sum()) == pytest.approx(float(seg.cropped_mask.sum()))
    np.testing.assert_array_equal(union[0], per_region[0])


def test_torch_in_torch_out(fake_torch: Any) -> None:
    images = torch_standin.on(_images(1), "cuda:0", requires_grad=True)  # the strictest IMAGE a host hands over
    hand = _region(1, RegionCategory.HAND, 0.7, (30, 20, 40, 30))
    union, per_region, segs, _ = _run(JudgedBatch(images, (_verdict(0.3, (hand,)),)))
    for tensor in (union, per_region, segs[0][1][0].cropped_image):
        assert isinstance(tensor, fake_torch.Tensor)
    np.testing.assert_array_equal(torch_standin.data_of(segs[0][1][0].cropped_image),
                                  torch_standin.data_of(images)[0:1, 20:30, 30:40])
    assert isinstance(segs[0][1][0].cropped_mask, np.ndarray)  # the Impact Pack's own SEGS hold numpy masks


def test_bad_inputs_are_clear_node_errors() -> None:
    judged = JudgedBatch(_images(1), (_verdict(0.3),))
    with pytest.raises(HeieNodeError, match="HEIE Regions: categories: 'hands'"):
        _run(judged, categories="hands")
    with pytest.raises(HeieNodeError, match="HEIE Evaluate's result output"):
        HeieRegions().regions("[]", grow=0, feather=0, categories="all", min_severity=0.0)  # type: ignore[arg-type]
    with pytest.raises(HeieNodeError, match="2 verdicts for an IMAGE batch of shape"):
        _run(JudgedBatch(_images(1), (_verdict(0.3), _verdict(0.4))))
    wrong = _region(1, RegionCategory.HAND, 0.7, (0, 0, 4, 4), np.ones((H // 2, W // 2), bool))
    with pytest.raises(HeieNodeError, match=r"image #1: region 1 \('hand 1'\) has a 32×24 mask for a 64×48 image"):
        _run(JudgedBatch(_images(1), (_verdict(0.3, (wrong,)),)))


def test_regions_of_an_image_without_a_verdict_are_none() -> None:
    judged = JudgedBatch(_images(1), (Verdict(None, "no verdict within the node's timeout of 1 s"),))
    _, per_region, segs, count = _run(judged)
    assert count == 0 and per_region.shape == (1, H, W) and segs == [((H, W), [])]


def test_regions_of_a_real_verdict(heie_server: Any, comfy: Any) -> None:
    """Evaluate → Regions on the fixture model: the masks have the judged images' size, one SEGS per image,
    and every region the server flagged (the tiny model may flag none) is in them."""
    images = np.random.default_rng(3).random((2, 40, 56, 3), dtype=np.float32)
    out = HeieEvaluate().evaluate(images, explanation=True, address=heie_server.address, timeout=120, max_tokens=24)
    judged = out["result"][-1]
    assert isinstance(judged, JudgedBatch) and judged.images is images and len(judged.verdicts) == 2
    flagged = [len(v.regions) for v in judged.verdicts]
    union, per_region, segs, count = _run(judged, grow=2, feather=2)
    assert union.shape == (2, 40, 56) and per_region.shape == (max(1, count), 40, 56)
    assert count == sum(flagged) and [len(pieces) for _, pieces in segs] == flagged
    assert all(shape == (40, 56) for shape, _ in segs)


@pytest.fixture(scope="module")
def grounding_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("heie-serve-regions")
    args = ["--addr", "127.0.0.1:0", "--max-tokens", "4", "--max-tiles", "1"]
    with serving(args, folder / "serve.log", {"HEIE_FAULT_REFERENCE_COT": str(REFERENCE_COT)}) as served:
        yield served


def test_masks_of_the_servers_regions_line_up(grounding_server: Any, comfy: Any) -> None:
    """A real verdict with two grounding boxes: each region mask is the server's mask (grown and feathered
    by nothing), the union covers both, the SEGS name their categories, and `hand` picks one."""
    images = np.random.default_rng(5).random((2, 60, 90, 3), dtype=np.float32)
    out = HeieEvaluate().evaluate(images, explanation=True, address=grounding_server.address, timeout=120,
                                  max_tokens=4)
    judged = out["result"][-1]
    regions = [v.regions for v in judged.verdicts]
    assert [[r.label for r in rs] for rs in regions] == [["the left hand", "the sign"]] * 2
    union, per_region, segs, count = _run(judged)
    assert count == 4 and union.shape == (2, 60, 90) and per_region.shape == (4, 60, 90)
    for i, region in enumerate(regions[0] + regions[1]):
        np.testing.assert_array_equal(per_region[i] > 0, region.mask())
    np.testing.assert_array_equal(union[0] > 0, regions[0][0].mask() | regions[0][1].mask())
    assert [[p.label for p in pieces] for _, pieces in segs] == [[r.category.name.lower() for r in rs] for rs in regions]
    assert out["result"][5].startswith("heie_min0.") and out["ui"]["text"][0].split(" (", 1)[0].count("\u2014") == 1
    hands = [r for r in regions[0] if r.category is RegionCategory.HAND]
    assert _run(judged, categories="hand")[3] == 2 * len(hands)


def test_filter_rejects_by_the_servers_regions(grounding_server: Any, comfy: Any) -> None:
    images = np.random.default_rng(6).random((1, 40, 40, 3), dtype=np.float32)
    args = dict(threshold=0.0, stop_if_none_pass=False, explanation=False, address=grounding_server.address,
                timeout=120, max_tokens=4)
    passed, rejected, *_ = HeieFilter().filter(images, **args)["result"]
    assert passed.shape[0] == 1 and rejected.shape[0] == 0  # threshold 0 and no rule: it passes
    out = HeieFilter().filter(images, reject_if="any>0.01", **args)
    passed, rejected, *_ = out["result"]
    assert passed.shape[0] == 0 and rejected.shape[0] == 1
    assert out["ui"]["text"][0].startswith("#1 (rejected, ") and " > 0.01" in out["ui"]["text"][0].split(":")[0]


def _filled(box: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros((H, W), bool)
    out[box[1]:box[3], box[0]:box[2]] = True
    return out


# -- Filter's reject_if -----------------------------------------------------------------------------

def test_reject_if_rejects_by_region_whatever_the_score() -> None:
    hand = _region(1, RegionCategory.HAND, 0.62, (0, 0, 4, 4))
    text = _region(2, RegionCategory.TEXT, 0.2, (0, 0, 4, 4))
    good = _verdict(0.9, (hand, text), band="very plausible")
    assert _filter_note(good, 0.5, {}, 3) == PASSED
    assert _filter_note(good, 0.5, {"hand": 0.5, "text": 0.3}, 3) == "rejected, hand 0.62 > 0.5"
    assert _filter_note(good, 0.95, {"any": 0.1}, 3) == "rejected, score under 0.950, hand 0.62 > 0.1, text 0.20 > 0.1"
    assert _filter_note(Verdict(None, "cancelled"), 0.0, {}, 3) == "rejected"


def test_bad_reject_if_stops_the_filter_before_any_call(closed_address: str) -> None:
    # No server listens at closed_address: the error is the rule's, not the connection's.
    with pytest.raises(HeieNodeError, match="HEIE Filter: reject_if: 'hands' is not a region category"):
        HeieFilter().filter(_images(1), threshold=0.5, stop_if_none_pass=False, explanation=False,
                            address=closed_address, timeout=5, reject_if="hands>0.5")


def test_filter_threshold_defaults_to_the_lower_edge_of_typical() -> None:
    threshold = HeieFilter.INPUT_TYPES()["required"]["threshold"][1]
    # ComfyUI's page keeps the step's decimals: 0.542 there (with a step of 0.01 it would be 0.54).
    assert threshold["default"] == pytest.approx(13 / 24) and threshold["step"] == 0.001
    # reject_if is the last widget: saved workflows list widget values by position.
    assert list(HeieFilter.INPUT_TYPES()["optional"])[-1] == "reject_if"


# -- band words and filename_prefix -----------------------------------------------------------------

def test_scores_are_shown_with_their_band() -> None:
    assert score_in_words(0.2571, "badly flawed") == "0.257 \u2014 badly flawed"
    assert score_in_words(0.2571, "") == "0.257" and score_in_words(None, "flawed") == "not available"
    assert summary_in_words("score 0.254 (zero-shot): The hand is wrong.", "badly flawed") == \
        "score 0.254 \u2014 badly flawed (zero-shot): The hand is wrong."
    assert summary_in_words("score 0.254 \u2014 badly flawed (zero-shot): x", "badly flawed") == \
        "score 0.254 \u2014 badly flawed (zero-shot): x"


def test_filename_prefix_names_the_verdict() -> None:
    assert filename_prefix([(0.2571, "badly flawed")]) == "heie_0.26_badly-flawed"
    assert filename_prefix([(0.71, "good"), (0.2571, "badly flawed")]) == "heie_min0.26_badly-flawed"
    assert filename_prefix([(0.71, "")]) == "heie_0.71"
    assert filename_prefix([(0.71, "good"), (None, "")]) == "heie_no-score" == filename_prefix([])


def test_evaluate_outputs_the_result_for_regions() -> None:
    assert HeieEvaluate.RETURN_TYPES[-2:] == ("STRING", "HEIE_RESULT")
    assert HeieEvaluate.RETURN_NAMES[:5] == ("scores", "heatmaps", "overlays", "explanations", "results")
    assert HeieRegions.INPUT_TYPES()["required"]["result"][0] == "HEIE_RESULT"
