"""The extension's hooks in the WebUI's order (tests/webui_loop.py) against a real ``heie serve --http``:
per-image infotext, the grid's, the ``heie`` key, overlay, move, discard, progress text."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from heie_a1111 import Settings
from heie_a1111.hooks import STATE_ATTR, postprocess, postprocess_image, unique_path

from a1111_servers import HttpServer, free_address, http_server  # noqa: F401 (fixtures)
from webui_loop import Opts, batch_from_directory, generate, new_p, parse_infotext, process_images

NO_GRID = Opts(return_grid=False, grid_save=False)


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8))


def _settings(address: str, **kw: Any) -> Settings:
    return Settings(address=address, timeout=120, explanation=False, max_tokens=2, **kw)


def _png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as picture:
        return dict(picture.text)  # type: ignore[attr-defined]


def _hashes(folder: Path) -> dict[Path, str]:
    """Every file under ``folder`` and the SHA-256 of its bytes."""
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*") if path.is_file()}


def test_each_image_carries_its_own_verdict_and_the_grid_none(http_server: HttpServer, tmp_path: Path) -> None:
    progress: list[str] = []
    run = generate([[_image(1), _image(2)], [_image(3), _image(4)]], _settings(http_server.address, save_overlay=True),
                   tmp_path, progress=progress)
    grid_text, *texts = run.processed.infotexts
    assert len(texts) == 4
    for path, text in zip(run.files, texts):
        params = parse_infotext(text)
        assert "heie" not in params and text.count("HEIE score") == 1, "the score is shown once, not again in JSON"
        saved = _png_text(path)
        meta = json.loads(saved["heie"])  # the PNG's own heie chunk, for programs
        assert set(meta) == {"score", "mode", "summary", "version"} and meta["mode"] == "zero_shot" and meta["version"] == 1
        number, band = params["HEIE score"].split(" (")  # the score, then its band's words
        assert abs(float(number) - meta["score"]) < 1e-3 and "HEIE error" not in params and band.endswith(")")
        assert saved["parameters"] == text
        with Image.open(path.with_name(path.stem + ".heie.png")) as overlay:
            assert overlay.size == (16, 16)
    scores = [_png_text(f)["heie"] for f in run.files]
    assert len(set(scores)) > 1, "four different images, four verdicts"
    grid = parse_infotext(grid_text)
    assert not any(k.startswith("HEIE") or k == "heie" for k in grid), grid
    assert "heie" not in _png_text(run.grid_file) and _png_text(run.grid_file)["parameters"] == grid_text
    assert not any(callable(v) for v in run.p.extra_generation_params.values()), "entries removed after the job"
    assert [t for t in progress if t.startswith("HEIE: judging image ")][:1] == ["HEIE: judging image 1 of 4"]
    assert any("image 4 of 4 scored" in t for t in progress) and any("writing the" in t for t in progress)


def test_an_image_the_server_failed_carries_its_error_and_no_stale_score(http_server: HttpServer, free_address: str,
                                                                          tmp_path: Path) -> None:
    live, dead = _settings(http_server.address), _settings(free_address)
    run = generate([[_image(5), _image(6), _image(7)]], live, tmp_path,
                   settings_for=lambda k: dead if k == 1 else live)
    first, failed, third = (parse_infotext(t) for t in run.processed.infotexts[1:])
    assert "HEIE score" in first and "heie" not in first
    error = failed.get("HEIE error", "")
    assert error.startswith("UNAVAILABLE: no HEIE server answers at ") and "HEIE score" not in failed, failed
    assert "Settings → HEIE → “Server address”" in error and "heie serve --http" in error, error
    assert "heie" not in _png_text(run.files[1])
    assert "HEIE score" in third and "HEIE error" not in third


def test_rejects_move_under_names_never_reused_across_runs(http_server: HttpServer, tmp_path: Path) -> None:
    settings = _settings(http_server.address, threshold=1.0, reject_action="move")
    first = generate([[_image(8)]], settings, tmp_path, opts=NO_GRID)
    second = generate([[_image(9)]], settings, tmp_path, opts=NO_GRID)  # the WebUI numbers 00000 again
    assert first.files[0].name == second.files[0].name and not first.files[0].exists()
    rejected = [tmp_path / "rejected" / first.files[0].name, tmp_path / "rejected" / (first.files[0].stem + "-1.png")]
    assert sorted((tmp_path / "rejected").iterdir()) == sorted(rejected)
    texts = [parse_infotext(_png_text(p)["parameters"]) for p in rejected]
    assert all(t["HEIE rejected"] == "yes" and t["HEIE threshold"] == "1" for t in texts)
    assert _png_text(rejected[0])["heie"] != _png_text(rejected[1])["heie"]


def test_discard_deletes_rejects_and_rebuilds_the_grid(http_server: HttpServer, tmp_path: Path) -> None:
    # One job, action discard; the threshold read for image 2 rejects it, those of 1 and 3 reject nothing.
    keep = _settings(http_server.address, threshold=0.0, reject_action="discard")
    reject = _settings(http_server.address, threshold=1.0, reject_action="discard")
    images = [_image(10), _image(11), _image(12)]
    run = generate([images], reject, tmp_path, settings_for=lambda k: keep if k != 1 else reject)
    assert run.files[0].exists() and not run.files[1].exists() and run.files[2].exists()
    processed = run.processed
    assert len(processed.images) == 3 and processed.images[1] is images[0] and processed.images[2] is images[2]
    assert processed.images[0].size == (32, 16), "grid of the two images kept"
    assert len(processed.infotexts) == 3 and processed.all_seeds == [1000, 1002] and len(processed.all_prompts) == 2
    with Image.open(run.grid_file) as grid:
        assert grid.size == (32, 16) and grid.text["parameters"] == run.grid_text  # type: ignore[attr-defined]
    assert "HEIE" not in run.grid_text and processed.images[0].info["parameters"] == run.grid_text


def test_a_grid_rebuilt_by_discard_keeps_its_infotext_when_the_gallery_has_no_grid(http_server: HttpServer,
                                                                                  tmp_path: Path) -> None:
    # grid_save on, return_grid off: the grid is only on disk, and its infotext only in its file.
    keep = _settings(http_server.address, threshold=0.0, reject_action="discard")
    reject = _settings(http_server.address, threshold=1.0, reject_action="discard")
    run = generate([[_image(18), _image(19), _image(20)]], keep, tmp_path,
                   opts=Opts(return_grid=False, grid_save=True), settings_for=lambda k: reject if k == 1 else keep)
    assert run.processed.index_of_first_image == 0 and len(run.processed.images) == 2
    assert run.grid_text and parse_infotext(run.grid_text)["Steps"] == "20"
    with Image.open(run.grid_file) as grid:
        assert grid.size == (32, 16) and grid.text["parameters"] == run.grid_text  # type: ignore[attr-defined]


def test_discarding_every_image_leaves_no_grid(http_server: HttpServer, tmp_path: Path) -> None:
    run = generate([[_image(13), _image(14)]], _settings(http_server.address, threshold=1.0, reject_action="discard"), tmp_path)
    assert run.processed.images == [] and run.processed.infotexts == [] and run.processed.index_of_first_image == 0
    assert run.processed.all_prompts and run.processed.all_seeds, "the WebUI's Processed.js() reads [0] of these"
    assert not run.grid_file.exists() and not any(f.exists() for f in run.files)


def test_disabled_or_unjudged_leaves_everything_alone(tmp_path: Path) -> None:
    p = type("P", (), {"extra_generation_params": {}})()
    assert postprocess_image(p, type("PP", (), {"image": _image(15)})(), Settings(enabled=False)) is None
    assert not hasattr(p, STATE_ATTR) and p.extra_generation_params == {}
    assert postprocess(p, type("R", (), {"images": []})()) == 0


def test_a_bad_address_setting_is_an_error_entry_not_a_crash(tmp_path: Path) -> None:
    run = generate([[_image(16)]], Settings(address="ftp://nowhere"), tmp_path, opts=NO_GRID)
    error = parse_infotext(run.processed.infotexts[0])["HEIE error"]
    assert error.startswith("INVALID_ARGUMENT: HEIE server address 'ftp://nowhere': expected host:port"), error
    assert run.files[0].exists()


def test_unique_path(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    assert unique_path(target) == target
    target.write_bytes(b"x")
    (tmp_path / "a-1.png").write_bytes(b"x")
    assert unique_path(target) == tmp_path / "a-2.png"


def test_an_interrupted_job_does_not_call_the_server_for_the_images_left(free_address: str) -> None:
    from types import SimpleNamespace

    p = SimpleNamespace(extra_generation_params={}, prompts=["x"], iteration=0, batch_index=0, batch_size=1)
    pp = SimpleNamespace(image=_image(17))
    # Nothing listens at free_address: a call would be UNAVAILABLE; CANCELLED shows none was made.
    assert postprocess_image(p, pp, Settings(address=free_address), cancel_when=lambda: True) is None
    assert p.extra_generation_params["HEIE error"](p=p, index=0) == "CANCELLED: interrupted in the WebUI"


def test_img2img_batch_from_directory_gives_each_input_its_own_state_and_never_rewrites_an_earlier_file(
        http_server: HttpServer, tmp_path: Path) -> None:
    # The WebUI reuses one processing object for every input of the folder (issue 30). Six inputs, two
    # samples each, discard, grids saved but not shown: inputs 1, 3 and 5 reject their second sample
    # (so their grids are rebuilt), inputs 0, 2 and 4 reject nothing.
    keep = _settings(http_server.address, threshold=0.0, reject_action="discard")
    reject = _settings(http_server.address, threshold=1.0, reject_action="discard")
    inputs = [[[_image(100 + 2 * k), _image(101 + 2 * k)]] for k in range(6)]
    seen: dict[Path, str] = {}
    changed, held, runs = [], [], []
    for run in batch_from_directory(inputs, tmp_path, lambda k, j: reject if k % 2 and j == 1 else keep,
                                    opts=Opts(return_grid=False, grid_save=True)):
        now = _hashes(tmp_path)  # after this input's job, before the next
        changed.append(sorted(path.name for path, digest in seen.items() if now.get(path) != digest))
        held.append(hasattr(run.p, STATE_ATTR))
        seen = now
        runs.append(run)
    assert changed == [[]] * 6, "an input's job changed or deleted files of earlier inputs"
    assert held == [False] * 6, "the extension's state outlived its input's job"
    assert [run.state.judged for run in runs] == [2] * 6, "each input's state held that input's images only"
    grids = sorted((tmp_path / "grids").iterdir())
    assert [g.name for g in grids] == [f"grid-{k:04d}.png" for k in range(6)]
    for k, grid in enumerate(grids):  # no reject: the grid of both samples; one reject: of the one kept
        with Image.open(grid) as picture:
            assert picture.size == ((16, 16) if k % 2 else (32, 16)), grid.name
            assert picture.text["parameters"] == runs[k].grid_text, grid.name  # type: ignore[attr-defined]
    kept = [path.exists() for run in runs for path in run.files]
    assert kept == [True, True, True, False] * 3


def test_a_job_run_on_a_copy_of_a_running_jobs_p_starts_with_its_own_state(http_server: HttpServer,
                                                                           tmp_path: Path) -> None:
    # WebUI scripts run a second job inside a job on copy.copy(p); the copy carries every attribute of
    # the running job's p, the extension's state included. The second job's ``process`` hook starts over.
    settings = _settings(http_server.address, threshold=1.0, reject_action="discard")
    outer = new_p(tmp_path, batch_size=2, n_iter=1)
    first = _image(21)
    postprocess_image(outer, SimpleNamespace(image=first), settings)  # the outer job judged its first image
    run = process_images(copy.copy(outer), [[_image(22), _image(23)]], lambda _: settings)
    assert run.state.judged == 2, "the inner job's state holds the inner job's images only"
    outer_state = getattr(outer, STATE_ATTR)
    assert outer_state is not run.state and outer_state.judged == 1 and outer_state.verdict_for(first) is not None


def test_the_score_shows_the_digits_that_explain_the_decision() -> None:
    from heie_a1111.verdict import Verdict, score_text

    assert score_text(0.25380, 0.25385) == "0.2538"  # 0.254 would look above the threshold it fell under
    assert score_text(0.25390, 0.25385) == "0.254" and score_text(0.7341) == "0.734"
    assert score_text(0.2499996, 0.25) == "0.2499996"  # rejected: never shown as 0.250
    assert score_text(0.25741, other=0.25702) == "0.2574" and score_text(0.3, other=0.3) == "0.300"
    params = Verdict(score=0.2538, summary="six fingers", mode="zero_shot", rejected=True, threshold=0.25385).infotext()
    assert params == {"HEIE score": "0.2538", "HEIE threshold": "0.25385", "HEIE rejected": "yes",
                      "HEIE summary": "six fingers"}


def test_the_api_gets_every_verdict_structured_and_the_gallery_the_overlays(http_server: HttpServer, free_address: str,
                                                                             tmp_path: Path) -> None:
    live = _settings(http_server.address, overlay_in_gallery=True, threshold=0.01)
    dead = _settings(free_address, overlay_in_gallery=True)
    images = [_image(30), _image(31), _image(32)]
    run = generate([images], live, tmp_path, settings_for=lambda k: dead if k == 1 else live)
    processed = run.processed
    # the grid, the three images, then the overlays of the two judged ones, each with its image's infotext
    assert len(processed.images) == 6 and processed.images[1:4] == images
    assert [im.size for im in processed.images[4:]] == [(16, 16), (16, 16)]
    assert processed.infotexts[4] == processed.infotexts[1] and processed.infotexts[5] == processed.infotexts[3]
    entries = processed.extra_generation_params["HEIE"]
    assert [e["index"] for e in entries] == [0, 1, 2]
    meta = json.loads(_png_text(run.files[0])["heie"])
    assert abs(entries[0]["score"] - meta["score"]) < 1e-4 and entries[0]["threshold"] == 0.01
    assert entries[1]["error"] == "UNAVAILABLE" and "Server address" in entries[1]["message"]
    assert "HEIE" not in run.p.extra_generation_params, "p's own params (the next job's infotexts) stay clean"
    assert not list(tmp_path.glob("*.heie.png")), "shown in the gallery, not saved (save_overlay is off)"


def test_too_many_tokens_per_section_is_refused_at_once_naming_the_slider(http_server: HttpServer, tmp_path: Path) -> None:
    import time

    settings = Settings(address=http_server.address, timeout=120, explanation=True, max_tokens=2048)
    t0 = time.monotonic()
    run = generate([[_image(33), _image(34)]], settings, tmp_path, opts=NO_GRID)
    assert time.monotonic() - t0 < 10
    for text in run.processed.infotexts:
        error = parse_infotext(text)["HEIE error"]
        assert error.startswith("INVALID_ARGUMENT: Settings → HEIE → “Tokens per explanation section” is 2048, more than "), error
        assert "set it to at most " in error and "max_tokens_per_section" not in error.split("set it")[1], error


def test_an_unreadable_reject_if_is_an_error_on_the_image_not_a_crash(http_server: HttpServer, tmp_path: Path) -> None:
    run = generate([[_image(21)]], _settings(http_server.address, reject_if="hand>>0.5"), tmp_path, opts=NO_GRID)
    params = parse_infotext(run.processed.infotexts[0])
    assert params["HEIE error"].startswith("INVALID_ARGUMENT: Settings → HEIE → “Reject if” ('hand>>0.5'): ")
    assert "HEIE score" not in params and run.state.judged == 0, "refused before the image is sent"
