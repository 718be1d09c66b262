"""HEIE for AUTOMATIC1111 / Forge: judges every generated image with a running ``heie serve --http``.

This file is the WebUI adapter only (loaded by the WebUI, so it imports the WebUI's ``modules`` and
``gradio``); the logic is in ``heie_a1111``, which talks to the server through ``heie_client`` (HTTP,
standard library only). Both packages sit at the extension's root, which goes on ``sys.path`` here:
nothing is pip-installed into the WebUI.
"""

from __future__ import annotations

import logging
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import gradio as gr  # noqa: E402
from modules import images, script_callbacks, scripts, shared  # noqa: E402

from heie_a1111 import (OPTIONS, Settings, after_image_saved, before_image_saved, begin_job, postprocess,  # noqa: E402
                        postprocess_image)
from heie_a1111.hooks import is_own_progress  # noqa: E402
from heie_a1111.settings import CATEGORY, SECTION  # noqa: E402

try:  # A1111 >= 1.7 and Forge: an accordion whose header carries its on/off checkbox (as Hires. fix)
    from modules.ui_components import InputAccordion  # noqa: E402
except ImportError:  # pragma: no cover - older WebUIs: a plain accordion with the checkbox inside
    InputAccordion = None

_COMPONENTS = {"slider": gr.Slider, "radio": gr.Radio}
log = logging.getLogger("heie")
ACCORDION_LABEL = "HEIE implausibility judge"
CHOICE_NOTE = ("The checkbox in this header decides for this generation; it starts from Settings → HEIE → "
               "“Judge generated images by default”, which applies only where a generation does not choose "
               "(an API call without this script's argument).")


def _on_ui_settings() -> None:
    for option in OPTIONS:
        component = _COMPONENTS[option.component] if option.component else None
        info = shared.OptionInfo(option.default, option.label, component, option.args, section=SECTION)
        info.category_id = CATEGORY  # without one the WebUI lists the section under "Uncategorized"
        shared.opts.add_option(option.key, info)


def _on_before_image_saved(params) -> None:  # type: ignore[no-untyped-def]
    before_image_saved(params.image, params.p, params.pnginfo)


def _on_image_saved(params) -> None:  # type: ignore[no-untyped-def]
    after_image_saved(params.image, params.p, params.filename, params.pnginfo)


def _interrupted() -> bool:
    state = shared.state
    return bool(getattr(state, "interrupted", False) or getattr(state, "skipped", False))


def _progress(text: str) -> None:
    shared.state.textinfo = text


def _end_progress() -> None:
    # The WebUI keeps textinfo until its next job begins, so /sdapi/v1/progress would show our last
    # "HEIE: …" while idle. A text another script wrote after ours is left to it.
    if is_own_progress(getattr(shared.state, "textinfo", None)):
        shared.state.textinfo = None


def _settings() -> Settings | None:
    try:
        return Settings.from_options(shared.opts)
    except ValueError as err:
        log.warning("HEIE: settings: %s", err)
        return None


script_callbacks.on_ui_settings(_on_ui_settings)
script_callbacks.on_before_image_saved(_on_before_image_saved)
script_callbacks.on_image_saved(_on_image_saved)


class HeieScript(scripts.Script):
    def title(self) -> str:
        return "HEIE"

    def show(self, is_img2img: bool):  # type: ignore[no-untyped-def]
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool):  # type: ignore[no-untyped-def]
        default = bool(getattr(shared.opts, "heie_enabled", True))
        tab = "img2img" if is_img2img else "txt2img"
        if InputAccordion is not None:
            with InputAccordion(default, label=ACCORDION_LABEL, elem_id=f"heie_{tab}_enabled") as enabled:
                gr.Markdown(CHOICE_NOTE)
        else:
            with gr.Accordion(ACCORDION_LABEL, open=False):
                enabled = gr.Checkbox(value=default, label="Judge the images of this generation", info=CHOICE_NOTE)
        return [enabled]

    def process(self, p, *args):  # type: ignore[no-untyped-def]
        begin_job(p)

    def _judge(self, p, pp, enabled=None, *args):  # type: ignore[no-untyped-def]
        settings = _settings()
        if settings is None:
            return
        # The generation's own choice wins; the setting only stands in where none was passed.
        settings = settings.for_generation(enabled)
        if settings.enabled:
            postprocess_image(p, pp, settings, cancel_when=_interrupted, progress=_progress)

    # Judge the image the WebUI saves and shows: since v1.8 that is the one after inpainting overlays
    # and colour correction (postprocess_image_after_composite); before, the only hook is earlier.
    if hasattr(scripts.Script, "postprocess_image_after_composite"):
        postprocess_image_after_composite = _judge
    else:
        postprocess_image = _judge

    def postprocess(self, p, processed, *args):  # type: ignore[no-untyped-def]
        def make_grid(kept):  # type: ignore[no-untyped-def]
            return images.image_grid(kept, p.batch_size)

        def save_grid(grid, path, text):  # type: ignore[no-untyped-def]
            images.save_image_with_geninfo(grid, text, str(path))

        try:
            postprocess(p, processed, make_grid=make_grid, save_grid=save_grid)
        finally:
            _end_progress()
