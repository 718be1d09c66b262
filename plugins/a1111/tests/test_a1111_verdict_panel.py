"""The verdict panel under the gallery (heie_a1111/verdict_panel.py): drawn from the generation's info JSON
as the WebUI keeps it (``Processed.js()``), for the image at each gallery position, after jobs judged by a
real ``heie serve --http`` in the WebUI's hook order (tests/webui_loop.py). The server is fed the reference
chain of thought (a hand and a sign), so every image has an explanation and two regions."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from heie_a1111 import Settings
from heie_a1111.hooks import STRUCTURED_KEY
from heie_a1111.verdict_panel import NOT_AN_IMAGE, entry_at, panel_html

from a1111_servers import HttpServer, free_address, grounding_http_server  # noqa: F401 (fixtures)
from webui_loop import Opts, Run, generate


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _settings(address: str, **kw: Any) -> Settings:
    return Settings(address=address, timeout=120, explanation=True, max_tokens=8, **kw)


def _info(run: Run) -> str:
    """The generation info JSON the WebUI puts beside the gallery (the fields ``Processed.js()`` writes that
    the panel reads), as the text of the hidden textbox."""
    processed = run.processed
    return json.dumps({"extra_generation_params": processed.extra_generation_params, "infotexts": processed.infotexts,
                       "index_of_first_image": processed.index_of_first_image})


def test_each_gallery_position_shows_its_images_score_regions_and_readable_explanation(
        grounding_http_server: HttpServer, tmp_path: Path) -> None:
    run = generate([[_image(1), _image(2)]], _settings(grounding_http_server.address, threshold=0.99), tmp_path)
    info = _info(run)
    entries = run.processed.extra_generation_params[STRUCTURED_KEY]
    assert [e["image_positions"] for e in entries] == [[1], [2]], "the grid is position 0, the images 1 and 2"
    assert NOT_AN_IMAGE in panel_html(info, 0), "the grid has no verdict of its own"
    for position, entry in ((1, entries[0]), (2, entries[1])):
        shown = panel_html(info, position)
        assert f"image {position}: score <b>" in shown and f"— <b>{entry['band']}</b>" in shown
        assert 'class="heie-rejected">rejected</span> (below the threshold 0.99' in shown
        assert "<td>the left hand</td><td>hand</td>" in shown and "<td>the sign</td><td>text</td>" in shown
        explanation = shown[shown.index('<details class="heie-explanation"'):]
        assert "[MAP]" not in explanation and "[SCORE]" not in explanation and "&lt;ref&gt;" not in explanation
        assert "<h4>Analysis of Issues</h4>" in explanation and "shown in the heatmap" in explanation
        # The rating sentence carries the score with the digits of the head line.
        assert f"the plausibility score for this image is {shown.split('score <b>')[1].split('</b>')[0]}." in explanation
    assert panel_html(info, 1) != panel_html(info, 2), "each position its own image's verdict"
    assert panel_html(info, -1) == panel_html(info, 1), "nothing selected (just generated): the first image"
    assert panel_html(info, 7) == panel_html(info, 0), "a position past the images: no verdict of its own"


def test_overlays_show_their_images_verdict_and_a_discarded_image_has_no_position(
        grounding_http_server: HttpServer, free_address: str, tmp_path: Path) -> None:
    live = _settings(grounding_http_server.address, overlay_in_gallery=True, save_overlay=False)
    dead = _settings(free_address, overlay_in_gallery=True, save_overlay=False)
    run = generate([[_image(3), _image(4), _image(5)]], live, tmp_path, settings_for=lambda k: dead if k == 1 else live,
                   opts=Opts(return_grid=False, grid_save=False))
    info = _info(run)
    entries = run.processed.extra_generation_params[STRUCTURED_KEY]
    # Gallery: image 1, image 2 (not judged), image 3, then the overlays of images 1 and 3.
    assert [e["image_positions"] for e in entries] == [[0, 3], [1], [2, 4]]
    assert panel_html(info, 3) == panel_html(info, 0) and "image 1: score" in panel_html(info, 3)
    assert "image 3: score" in panel_html(info, 4)
    failed = panel_html(info, 1)
    assert "image 2: not judged" in failed and "UNAVAILABLE: no HEIE server answers at" in failed

    discard = _settings(grounding_http_server.address, threshold=0.99, reject_action="discard")
    gone = generate([[_image(6), _image(7)]], discard, tmp_path / "discard", opts=Opts(return_grid=False, grid_save=False))
    entries = gone.processed.extra_generation_params[STRUCTURED_KEY]
    assert [e["image_positions"] for e in entries] == [[], []] and gone.processed.images == []
    assert NOT_AN_IMAGE in panel_html(_info(gone), 0) and "image 1: score" in panel_html(_info(gone), -1)


def test_no_panel_without_verdicts_and_text_is_escaped() -> None:
    assert panel_html("", -1) == "" and panel_html("not json", 0) == "" and panel_html(json.dumps({"infotexts": []}), 0) == ""
    assert panel_html(json.dumps({"extra_generation_params": {"Hires upscale": 2}}), 0) == ""
    entry = {"index": 0, "score": 0.3, "band": "flawed", "rejected": False, "threshold": None, "regions": [
        {"id": 1, "label": "<script>alert(1)</script>", "category": "other", "box": [1, 2, 3, 4], "severity": 0.5}],
        "explanation": "### <b>Head</b>\nsay <i>x</i>", "image_positions": [0]}
    shown = panel_html({"extra_generation_params": {STRUCTURED_KEY: [entry]}}, 0)
    assert "<script>" not in shown and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "<h4>&lt;b&gt;Head&lt;/b&gt;</h4>" in shown and "<p>say &lt;i&gt;x&lt;/i&gt;</p>" in shown
    assert "rejected" not in shown and "kept" not in shown, "no threshold: no decision to state"
    assert "<td>1,2 – 3,4</td>" in shown


def test_fast_mode_shows_the_summary_and_a_region_free_image_says_so() -> None:
    entry = {"index": 1, "score": 0.81, "band": "good", "rejected": False, "threshold": 0.5416667, "regions": [],
             "summary": "score 0.810 (zero-shot): Looks fine.", "explanation": "", "image_positions": [2]}
    info = SimpleNamespace()  # not the WebUI's info: no panel
    assert panel_html(info, 0) == ""
    shown = panel_html({"extra_generation_params": {STRUCTURED_KEY: [entry]}}, 2)
    assert "image 2: score <b>0.810</b> — <b>good</b> · kept (threshold 0.541667)" in shown
    assert "No region flagged." in shown and "score 0.810 (zero-shot): Looks fine." in shown
    assert entry_at({"extra_generation_params": {STRUCTURED_KEY: [entry]}}, 0) == (None, True)
