"""Judging as the WebUI's progress bar (heie_a1111/judging_progress.py): jobs judged by a real ``heie serve
--http`` in the WebUI's hook order (tests/webui_loop.py) with ``shared.state``'s progress fields, the bar
read as the WebUI's progress API computes it at each progress text the extension wrote."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from heie_a1111 import Settings, judging_progress
from heie_a1111.hooks import WordCount

from a1111_servers import HttpServer, free_address, http_server  # noqa: F401 (fixtures)
from webui_loop import ProgressState, generate


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8))


def _settings(address: str, **kw: Any) -> Settings:
    return Settings(address=address, timeout=120, explanation=True, max_tokens=4, **kw)


def _judging(bar: ProgressState, number: int) -> list[tuple[float, str]]:
    """What the bar showed while image ``number`` was judged."""
    return [(f, t) for f, t in bar.seen if t.startswith(f"HEIE: judging image {number} of ")]


def test_the_bar_moves_through_the_judging_and_ends_where_the_webui_expects(http_server: HttpServer,
                                                                             tmp_path: Path) -> None:
    bar = ProgressState()
    generate([[_image(1), _image(2)], [_image(3), _image(4)]], _settings(http_server.address), tmp_path, bar=bar)
    # Two batches: each its sampling job and its judging job, one step per image.
    assert bar.job_count == 4 and bar.job_no == 4 and bar.fraction() == 1.0
    firsts = [_judging(bar, n)[0][0] for n in (1, 2, 3, 4)]
    assert firsts == [0.25, 0.375, 0.75, 0.875], "job 1 (batch 1's judging) then job 3, half a job per image"
    fractions = [f for f, _ in bar.seen]
    assert fractions == sorted(fractions) and max(fractions) < 1.0, "never back, never full before the end"
    texts = [t for _, t in _judging(bar, 3)]
    assert texts[0] == "HEIE: judging image 3 of 4" and any(t.endswith(" so far") and ": writing the " in t for t in texts)
    counts = [int(t.rsplit(", ", 1)[1].split()[0]) for t in texts if t.endswith(" so far")]
    assert counts == sorted(counts), "the words streamed so far only grow"


def test_the_bar_returns_to_the_webuis_count_when_images_fail(free_address: str, tmp_path: Path) -> None:
    bar = ProgressState()
    generate([[_image(5), _image(6)], [_image(7), _image(8)]], _settings(free_address), tmp_path, bar=bar)
    assert bar.job_count == 4 and bar.job_no == 4 and bar.fraction() == 1.0
    assert any(t.startswith("HEIE: image 4 not judged: ") for _, t in bar.seen)


def test_without_a_job_count_the_bar_is_left_alone_and_a_pass_inside_is_undone() -> None:
    bar, p = ProgressState(), SimpleNamespace(n_iter=2, batch_size=2, batch_index=1, prompts=["a", "b"])
    judging_progress.begin_batch(bar, p, 0)  # job_count still -1: the WebUI did not count this job's batches
    judging_progress.image_started(bar, p)
    judging_progress.end_job(bar, p)
    assert (bar.job_count, bar.job_no, bar.sampling_step, bar.sampling_steps) == (-1, 0, 0, 0)

    bar.job_count = 2
    judging_progress.begin_batch(bar, p, 0)
    bar.nextjob()  # the batch's sampling ended
    judging_progress.image_started(bar, p)
    assert (bar.job_count, bar.job_no, bar.sampling_step, bar.sampling_steps) == (4, 1, 1, 2)
    with judging_progress.kept_across(bar):  # the repair's inpainting pass samples and ends its own job
        bar.sampling_steps, bar.sampling_step = 20, 20
        bar.nextjob()
    assert (bar.job_no, bar.sampling_step, bar.sampling_steps) == (1, 1, 2)
    judging_progress.image_finished(bar, p)
    judging_progress.begin_batch(bar, p, 1)  # the next batch closes this one's judging
    assert bar.job_no == 2 and bar.fraction() == 0.5


def test_words_are_counted_across_pieces() -> None:
    words = WordCount()
    for piece in ("The lef", "t hand ", "", " has", "\nsix"):
        words.add(piece)
    assert words.count == 5
