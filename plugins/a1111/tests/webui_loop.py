"""A stand-in for the part of the WebUI's ``process_images_inner`` (modules/processing.py, v1.10.1) that
the extension hooks into, in the same order: per image ``postprocess_image`` → infotext → save (before
and after image-saved callbacks); then the grid (infotext with ``use_main_prompt``), saved and put first
in the gallery; then ``postprocess``. Infotexts are built the way ``create_infotext`` builds them:
callable values called with the context and left out when None, values quoted like ``quote()``.
The real WebUI runs the same sequence in plugins/a1111/tests/check_in_webui.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

from PIL import Image, PngImagePlugin

from heie_a1111 import Settings, after_image_saved, before_image_saved, postprocess, postprocess_image


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


def save(image: Image.Image, path: Path, text: str, p: Any) -> Path:
    pnginfo = {"parameters": text}
    before_image_saved(image, p, pnginfo)
    info = PngImagePlugin.PngInfo()
    for key, value in pnginfo.items():
        info.add_text(key, str(value))
    image.save(path, pnginfo=info)
    after_image_saved(image, p, str(path))
    return path


def make_grid(images: list[Image.Image]) -> Image.Image:
    width, height = images[0].size
    grid = Image.new("RGB", (width * len(images), height))
    for i, image in enumerate(images):
        grid.paste(image, (i * width, 0))
    return grid


def save_grid(grid: Image.Image, path: Path, text: Optional[str]) -> None:
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("parameters", text)
    grid.save(path, pnginfo=info)


@dataclass
class Run:
    p: Any
    processed: Any
    files: list[Path]
    """Each generated image's file as saved (the extension may have moved or deleted it since)."""
    grid_file: Optional[Path]
    progress: list[str] = field(default_factory=list)


def generate(images: list[list[Image.Image]], settings: Settings, folder: Path, *, grid: bool = True,
             progress: Optional[list[str]] = None, start_number: int = 0,
             settings_for: Optional[Callable[[int], Settings]] = None) -> Run:
    """Runs one job: ``images[n][i]`` is image i of batch n (the WebUI's decoded samples)."""
    folder.mkdir(parents=True, exist_ok=True)
    grids = folder / "grids"
    grids.mkdir(exist_ok=True)
    batch_size = len(images[0])
    p = SimpleNamespace(extra_generation_params={}, prompt="a cat on a sofa", batch_size=batch_size,
                        outpath_grids=str(grids), iteration=0, batch_index=0)
    p.all_prompts = [f"{p.prompt} {k}" for k in range(batch_size * len(images))]
    p.all_seeds = list(range(1000, 1000 + batch_size * len(images)))
    output, infotexts, files = [], [], []
    number = start_number
    for n, batch in enumerate(images):
        p.iteration = n
        p.prompts = p.all_prompts[n * batch_size:(n + 1) * batch_size]
        for i, sample in enumerate(batch):
            p.batch_index = i
            pp = SimpleNamespace(image=sample)
            postprocess_image(p, pp, settings_for(n * batch_size + i) if settings_for else settings,
                              progress=progress.append if progress is not None else None)
            text = create_infotext(p, index=i)
            files.append(save(pp.image, folder / f"{number:05d}-{p.all_seeds[n * batch_size + i]}.png", text, p))
            number += 1
            infotexts.append(text)
            output.append(pp.image)
    grid_file = None
    first = 0
    if grid and len(output) > 1:
        grid_image = make_grid(output)
        text = create_infotext(p, use_main_prompt=True)
        grid_file = save(grid_image, grids / f"grid-{start_number:04d}.png", text, p)
        output.insert(0, grid_image)
        infotexts.insert(0, text)
        first = 1
    processed = SimpleNamespace(images=output, infotexts=infotexts, index_of_first_image=first, info=infotexts[0],
                                all_prompts=list(p.all_prompts), all_seeds=list(p.all_seeds))
    postprocess(p, processed, make_grid=make_grid, save_grid=save_grid)
    return Run(p, processed, files, grid_file, progress or [])
