"""Judging shown as the WebUI's own progress bar. The WebUI's bar is ``job_no / job_count`` plus the
current job's ``sampling_step / sampling_steps`` (``modules/progress.py``); it calls ``nextjob()`` when a
batch's sampling ends, before the images are post-processed, so while they were judged the bar sat at
100 % (the last batch) with only the text changing.

Here judging is one more job per batch, as Hires. fix makes its second pass one: ``job_count`` grows by
``n_iter`` when the job's first batch begins, each batch's judging is that job with one step per image,
and it is closed (``nextjob()``) when the next batch begins or the generation ends, so the bar moves
through the judging and stands where the WebUI expects when its next job starts.

``state`` is the WebUI's ``shared.state`` (duck-typed: ``job_count``, ``job_no``, ``sampling_step``,
``sampling_steps``, ``nextjob()``); nothing here imports the WebUI."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

ATTR = "heie_judging_progress"
"""On the processing object: PLANNED once the judging jobs are counted, OPEN while a batch's judging is the
current job; absent when they are not counted (the bar is then left as the WebUI drives it)."""
PLANNED, OPEN = "planned", "open"


def begin_batch(state: Any, p: Any, batch_number: int) -> None:
    """The ``before_process_batch`` hook: closes the previous batch's judging, and at a job's first batch
    counts one judging job per batch (the WebUI has set ``job_count`` by then; img2img "Batch from
    directory" runs one such job per input on one ``p``, each counted when it begins)."""
    stage = getattr(p, ATTR, None)
    if stage == OPEN:
        state.nextjob()
    if batch_number == 0:
        if int(getattr(state, "job_count", 0) or 0) > 0:
            state.job_count += int(getattr(p, "n_iter", 1) or 1)
            setattr(p, ATTR, PLANNED)
        elif hasattr(p, ATTR):
            delattr(p, ATTR)
    elif stage is not None:
        setattr(p, ATTR, PLANNED)


def image_started(state: Any, p: Any) -> None:
    """An image of the batch is about to be judged: the judging job's step is the images done before it."""
    if getattr(p, ATTR, None) not in (PLANNED, OPEN):
        return
    setattr(p, ATTR, OPEN)
    state.sampling_steps = _batch_length(p)
    state.sampling_step = min(int(getattr(p, "batch_index", 0) or 0), state.sampling_steps)


def image_finished(state: Any, p: Any) -> None:
    """The image is judged (or failed): its step is done."""
    if getattr(p, ATTR, None) == OPEN:
        state.sampling_step = min(int(getattr(p, "batch_index", 0) or 0) + 1, state.sampling_steps)


def end_job(state: Any, p: Any) -> None:
    """The ``postprocess`` hook: the last batch's judging is done; the marker is removed, so a ``p`` the
    WebUI runs again starts counting afresh."""
    if getattr(p, ATTR, None) == OPEN:
        state.nextjob()
    if hasattr(p, ATTR):
        delattr(p, ATTR)


@contextmanager
def kept_across(state: Any) -> Iterator[None]:
    """Puts the bar back after a job run inside the judging (the repair's inpainting pass, whose sampling
    moves the step and whose end calls ``nextjob()``): the judging job goes on where it was."""
    saved = (state.job_no, state.sampling_step, state.sampling_steps)
    try:
        yield
    finally:
        state.job_no, state.sampling_step, state.sampling_steps = saved


def _batch_length(p: Any) -> int:
    prompts = getattr(p, "prompts", None)
    if isinstance(prompts, list) and prompts:
        return len(prompts)
    return max(1, int(getattr(p, "batch_size", 1) or 1))
