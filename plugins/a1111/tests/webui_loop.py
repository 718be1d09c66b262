"""A stand-in for the part of the WebUI's ``process_images_inner`` (modules/processing.py, v1.10.1 and
Forge) that the extension hooks into, in the same order: the ``process`` hook; per image
``postprocess_image`` → infotext → save (before and after image-saved callbacks); then the grid when
``return_grid`` or ``grid_save`` asks for one (saved with the main-prompt infotext; put first in the
gallery, with that infotext, only with ``return_grid``); then ``postprocess``. Infotexts are built the
way ``create_infotext`` builds them: callable values called with the context and left out when None,
values quoted like ``quote()``. File names are numbered like ``save_image``: one past the highest number
in the folder (``00000-SEED.png``, ``grid-0000.png``).

``batch_from_directory`` is img2img's "Batch from directory" (modules/img2img.py ``process_batch``):
one processing object for the whole folder, and one ``process_images(p)`` per input image, each a
complete job with its own hooks, grid and ``postprocess``.
With a :class:`ProgressState` (``shared.state``'s progress fields) the loop also drives the progress bar
as the WebUI does (``job_count`` set once the job's batches are known, ``nextjob()`` when a batch's sampling
ends, before its images are post-processed) and calls the adapter's judging-progress hooks where
scripts/heie.py does (``before_process_batch``, around each judged image, ``postprocess``).
The real WebUI runs the single-job sequence in plugins/a1111/tests/check_in_webui.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional

from PIL import Image, PngImagePlugin

from heie_a1111 import Settings, after_image_saved, before_image_saved, begin_job, judging_progress, postprocess, postprocess_image
from heie_a1111.hooks import STATE_ATTR, Inpaint
from heie_a1111.repair import RepairOptions


SAMPLING_STEPS = 20


class ProgressState:
    """The progress fields of the WebUI's ``shared.state`` (modules/shared_state.py) after ``begin()``, and
    the fraction its progress API computes from them (modules/progress.py), with the text beside it."""

    def __init__(self) -> None:
        self.job_count, self.job_no, self.sampling_step, self.sampling_steps = -1, 0, 0, 0
        self.textinfo: Optional[str] = None
        self.seen: list[tuple[float, str]] = []
        """(fraction, text) each time the extension wrote a progress text: what a poll would have shown."""

    def nextjob(self) -> None:
        self.job_no += 1
        self.sampling_step = 0

    def fraction(self) -> float:
        done = self.job_no / self.job_count if self.job_count > 0 else 0.0
        if self.sampling_steps > 0 and self.job_count > 0:
            done += 1 / self.job_count * self.sampling_step / self.sampling_steps
        return min(done, 1.0)

    def show(self, text: str) -> None:
        self.textinfo = text
        self.seen.append((self.fraction(), text))


@dataclass(frozen=True)
class Opts:
    """The WebUI settings the loop reads (their names in modules/shared_options.py)."""

    return_grid: bool = True
    grid_save: bool = True
    grid_only_if_multiple: bool = True
    enable_pnginfo: bool = True


def quote(value: Any) -> Any:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if ("," in text or "\n" in text or ":" in text) else value


def create_infotext(p: Any, index: int = 0, use_main_prompt: bool = False) -> str:
    params = {"Steps": 20, **p.extra_generation_params}
    for key, value in list(params.items()):
        if callable(value):
            params[key] = value(p=p, index=index, use_main_prompt=use_main_prompt, iteration=0, position_in_batch=0)
    body = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    return f"{p.prompt}\n{body}"


def parse_infotext(text: str) -> dict[str, str]:
    """The generation-params line as a dict (values unquoted like the WebUI's parser)."""
    out = {}
    line = text.splitlines()[-1]
    decoder = json.JSONDecoder()
    while line:
        key, _, rest = line.partition(": ")
        if rest.startswith('"'):
            value, end = decoder.raw_decode(rest)
            rest = rest[end:]
        else:
            value, _, rest = rest.partition(", ")
            rest = ", " + rest if rest else ""
        out[key] = value
        line = rest[2:] if rest.startswith(", ") else rest
    return out


def next_number(folder: Path, prefix: str = "") -> int:
    """One past the highest number that starts a file name (after ``prefix``) in ``folder``, as the
    WebUI numbers a saved image: names freed by moved or deleted files come again."""
    numbers = [int(m.group(1)) for f in folder.iterdir() if (m := re.match(re.escape(prefix) + r"(\d+)", f.name))]
    return max(numbers, default=-1) + 1


def save(image: Image.Image, path: Path, text: str, p: Any) -> Path:
    pnginfo = {"parameters": text}
    before_image_saved(image, p, pnginfo)
    info = PngImagePlugin.PngInfo()
    for key, value in pnginfo.items():
        info.add_text(key, str(value))
    image.save(path, pnginfo=info)
    after_image_saved(image, p, str(path), pnginfo)
    return path


def make_grid(images: list[Image.Image]) -> Image.Image:
    width, height = images[0].size
    grid = Image.new("RGB", (width * len(images), height))
    for i, image in enumerate(images):
        grid.paste(image, (i * width, 0))
    return grid


def save_grid(grid: Image.Image, path: Path, text: Optional[str]) -> None:
    """``images.save_image_with_geninfo`` with ``enable_pnginfo``: it writes ``str(text)``, so a grid
    handed no infotext is saved with ``parameters`` "None"."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", str(text))
    grid.save(path, pnginfo=info)


@dataclass
class Run:
    """One ``process_images`` call."""

    p: Any
    processed: Any
    files: list[Path]
    """Each generated image's file as saved (the extension may have moved or deleted it since)."""
    grid_file: Optional[Path]
    grid_text: Optional[str]
    """The infotext the grid was saved with."""
    progress: list[str] = field(default_factory=list)
    state: Any = None
    """What the extension held on ``p`` when ``postprocess`` began (its judged images of this call)."""


def new_p(folder: Path, batch_size: int, n_iter: int) -> SimpleNamespace:
    """The processing object of one job (or of one whole img2img batch from a directory)."""
    grids = folder / "grids"
    grids.mkdir(parents=True, exist_ok=True)
    p = SimpleNamespace(extra_generation_params={}, prompt="a cat on a sofa", batch_size=batch_size, n_iter=n_iter,
                        outpath_samples=str(folder), outpath_grids=str(grids), iteration=0, batch_index=0)
    p.all_prompts = [f"{p.prompt} {k}" for k in range(batch_size * n_iter)]
    p.all_seeds = list(range(1000, 1000 + batch_size * n_iter))
    return p


def process_images(p: Any, images: list[list[Image.Image]], settings_for: Callable[[int], Settings], *,
                   opts: Opts = Opts(), progress: Optional[list[str]] = None,
                   repair_options: Optional[RepairOptions] = None, inpaint: Optional[Inpaint] = None,
                   bar: Optional[ProgressState] = None) -> Run:
    """One ``process_images(p)``: ``images[n][i]`` is image i of batch n (the WebUI's decoded samples).
    With ``bar`` the progress texts go to it (``bar.seen``) instead of ``progress``."""
    folder, grids = Path(p.outpath_samples), Path(p.outpath_grids)
    batch_size = p.batch_size
    begin_job(p, repair_options)  # the scripts' ``process`` hook, before the first batch
    if bar is not None and bar.job_count == -1:
        bar.job_count = p.n_iter
    report = bar.show if bar is not None else progress.append if progress is not None else None
    output, infotexts, files = [], [], []
    for n, batch in enumerate(images):
        p.iteration = n
        p.prompts = p.all_prompts[n * batch_size:(n + 1) * batch_size]
        if bar is not None:
            judging_progress.begin_batch(bar, p, n)  # the adapter's before_process_batch
            bar.sampling_steps = bar.sampling_step = SAMPLING_STEPS  # the batch's sampling is done
            bar.nextjob()
        for i, sample in enumerate(batch):
            p.batch_index = i
            pp = SimpleNamespace(image=sample)
            if bar is not None:
                judging_progress.image_started(bar, p)
            postprocess_image(p, pp, settings_for(n * batch_size + i), progress=report,
                              repair_options=repair_options, inpaint=inpaint)
            if bar is not None:
                judging_progress.image_finished(bar, p)
            text = create_infotext(p, index=i)
            name = f"{next_number(folder):05d}-{p.all_seeds[n * batch_size + i]}.png"
            files.append(save(pp.image, folder / name, text, p))
            infotexts.append(text)
            output.append(pp.image)
    grid_file, grid_text, first = None, None, 0
    unwanted = len(output) < 2 and opts.grid_only_if_multiple
    if (opts.return_grid or opts.grid_save) and not unwanted:
        grid_image = make_grid(output)
        grid_text = create_infotext(p, use_main_prompt=True)
        if opts.return_grid:
            if opts.enable_pnginfo:
                grid_image.info["parameters"] = grid_text
            output.insert(0, grid_image)
            infotexts.insert(0, grid_text)
            first = 1
        if opts.grid_save:
            grid_file = save(grid_image, grids / f"grid-{next_number(grids, 'grid-'):04d}.png", grid_text, p)
    processed = SimpleNamespace(images=output, infotexts=infotexts, index_of_first_image=first,
                                info=infotexts[0] if infotexts else "",
                                all_prompts=list(p.all_prompts), all_seeds=list(p.all_seeds),
                                extra_generation_params=p.extra_generation_params)  # the WebUI's is p's dict
    state = getattr(p, STATE_ATTR, None)
    try:
        postprocess(p, processed, make_grid=make_grid, save_grid=save_grid)
    finally:
        if bar is not None:
            judging_progress.end_job(bar, p)
    return Run(p, processed, files, grid_file, grid_text, progress if progress is not None else [], state)


def generate(images: list[list[Image.Image]], settings: Settings, folder: Path, *, opts: Opts = Opts(),
             progress: Optional[list[str]] = None,
             settings_for: Optional[Callable[[int], Settings]] = None,
             repair_options: Optional[RepairOptions] = None, inpaint: Optional[Inpaint] = None,
             bar: Optional[ProgressState] = None) -> Run:
    """Runs one job (txt2img, or img2img of one image) with a processing object of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    p = new_p(folder, len(images[0]), len(images))
    return process_images(p, images, settings_for or (lambda _: settings), opts=opts, progress=progress,
                          repair_options=repair_options, inpaint=inpaint, bar=bar)


def batch_from_directory(inputs: list[list[list[Image.Image]]], folder: Path,
                         settings_for: Callable[[int, int], Settings], *, opts: Opts = Opts()) -> Iterator[Run]:
    """img2img "Batch from directory": ``inputs[k]`` are the samples made from input image k (batches
    as in :func:`process_images`); one processing object for every input, as the WebUI reuses it.
    Yields after each input's job, so a caller can look at the files between inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    p = new_p(folder, len(inputs[0][0]), len(inputs[0]))
    for k, images in enumerate(inputs):
        p.init_images = [f"input {k}"] * p.batch_size  # what process_batch changes per input
        yield process_images(p, images, lambda j, k=k: settings_for(k, j), opts=opts)  # type: ignore[misc]
