"""HEIE for AUTOMATIC1111 / Forge: judges every generated image with a running ``heie serve --http``.

This file is the WebUI adapter only (loaded by the WebUI, so it imports the WebUI's ``modules`` and
``gradio``); the logic is in ``heie_a1111``, which talks to the server through ``heie_client`` (HTTP,
standard library only). Both packages sit at the extension's root, which goes on ``sys.path`` here:
nothing is pip-installed into the WebUI.
"""

from __future__ import annotations

import dataclasses
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
from heie_a1111.filename_patterns import PATTERNS  # noqa: E402
from heie_a1111 import judging_progress  # noqa: E402
from heie_a1111.hooks import is_own_progress  # noqa: E402
from heie_a1111.repair import (CATEGORIES, PARAM_CATEGORIES, PARAM_DENOISING, PARAM_MIN_SEVERITY,  # noqa: E402
                               PARAM_PADDING, RepairOptions)
from heie_a1111.settings import CATEGORY, SECTION  # noqa: E402
from heie_a1111.verdict_panel import CSS_CLASS, panel_html  # noqa: E402

try:  # A1111 >= 1.7 and Forge: an accordion whose header carries its on/off checkbox (as Hires. fix)
    from modules.ui_components import InputAccordion  # noqa: E402
except ImportError:  # pragma: no cover - older WebUIs: a plain accordion with the checkbox inside
    InputAccordion = None

_COMPONENTS = {"slider": gr.Slider, "radio": gr.Radio}
log = logging.getLogger("heie")
ACCORDION_LABEL = "HEIE implausibility judge"
REPAIR_NOTE = ("Repair: an image the verdict rejects (Settings → HEIE: the score threshold and “Reject if”) gets one "
               "inpainting pass over its flagged regions of the chosen categories, with this generation's prompt "
               "and seed; it is judged again and the better-scoring image is kept.")
INPAINT_CONTEXT_PX = 32
"""Pixels of context around the mask that "inpaint only masked" redraws with it (the WebUI's default)."""
INPAINT_MASK_BLUR = 4
INPAINT_FILL_ORIGINAL = 1
"""The WebUI's "masked content: original": the pass starts from the image itself."""
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


def _repair_options(args) -> tuple[RepairOptions | None, str]:  # type: ignore[no-untyped-def]
    """The generation's repair options, or None and why they cannot be used (an API caller's bad value)."""
    try:
        return RepairOptions.from_args(args), ""
    except ValueError as err:
        log.warning("HEIE: %s; no repair in this generation", err)
        return None, str(err)


def _inpaint(p, image, mask, options: RepairOptions):  # type: ignore[no-untyped-def]
    """One inpainting pass with the WebUI's own img2img: only the masked area (plus its context) redrawn,
    starting from the image, with this image's prompt, negative prompt and seed; no saving, no scripts
    (ours would judge the pass's image again, others would run twice)."""
    from modules import processing

    index = int(getattr(p, "batch_index", 0) or 0)

    def of_image(name: str, single: str):  # type: ignore[no-untyped-def]
        values = getattr(p, name, None)
        return values[index] if isinstance(values, list) and index < len(values) else getattr(p, single, None)

    wanted = dict(
        outpath_samples=p.outpath_samples, outpath_grids=p.outpath_grids, styles=[],
        prompt=of_image("prompts", "prompt"), negative_prompt=of_image("negative_prompts", "negative_prompt") or "",
        seed=of_image("seeds", "seed"), subseed=of_image("subseeds", "subseed"),
        subseed_strength=getattr(p, "subseed_strength", 0), seed_resize_from_h=getattr(p, "seed_resize_from_h", -1),
        seed_resize_from_w=getattr(p, "seed_resize_from_w", -1), sampler_name=getattr(p, "sampler_name", None),
        scheduler=getattr(p, "scheduler", None), steps=p.steps, cfg_scale=p.cfg_scale,
        width=max(8, image.width // 8 * 8), height=max(8, image.height // 8 * 8), batch_size=1, n_iter=1,
        init_images=[image], mask=mask, mask_blur=INPAINT_MASK_BLUR, inpainting_fill=INPAINT_FILL_ORIGINAL,
        inpaint_full_res=True, inpaint_full_res_padding=INPAINT_CONTEXT_PX, denoising_strength=options.denoising,
        do_not_save_samples=True, do_not_save_grid=True, override_settings={})
    # Only the fields this WebUI's class has (A1111 1.9+ and Forge differ a little, e.g. scheduler).
    known = {f.name for f in dataclasses.fields(processing.StableDiffusionProcessingImg2Img) if f.init}
    job = processing.StableDiffusionProcessingImg2Img(**{k: v for k, v in wanted.items() if k in known})
    job.scripts = None
    job.script_args = []
    with judging_progress.kept_across(shared.state):  # the pass's own sampling and nextjob() are not the bar's
        processed = processing.process_images(job)
    return processed.images[0] if processed.images else None


def _register_filename_patterns() -> None:
    """``[heie_score]`` and ``[heie_band]`` in Settings → Saving images → "Images filename pattern"."""
    skip = getattr(images, "NOTHING_AND_SKIP_PREVIOUS_TEXT", "")
    for name, value_of in PATTERNS.items():
        def replacement(namegen, *_args, value_of=value_of):  # type: ignore[no-untyped-def]
            value = value_of(getattr(namegen, "p", None), getattr(namegen, "image", None))
            return skip if value is None else value
        images.FilenameGenerator.replacements[name] = replacement


PANEL_AFTER = "generation_info_{tab}"
"""The WebUI's hidden info JSON under the gallery (txt2img, img2img): the verdict panel goes after it,
in the same group as the WebUI's infotext, and is drawn from it."""
# The selected image's gallery index as the WebUI's own infotext button reads it (-1 right after a run).
_SELECTED_INDEX_JS = "(info, index) => [info, selected_gallery_index()]"
_FIRST_IMAGE_JS = "(info, index) => [info, -1]"


def _listener(js: str) -> dict:  # type: ignore[type-arg]
    """An event's browser-side function and no progress overlay, in this gradio's words: gradio 3 (A1111)
    says ``_js`` and False; gradio 4 (Forge) ``js`` and "hidden". Forge renames ``_js`` only on events of a
    finished component, and the WebUI's info textbox is still being built when the panel is attached."""
    if int(str(getattr(gr, "__version__", "3")).split(".")[0] or 3) >= 4:
        return {"js": js, "show_progress": "hidden"}
    return {"_js": js, "show_progress": False}


def _on_after_component(component, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """Under each gallery, the HEIE panel of the selected image (heie_a1111.verdict_panel): refilled when
    a generation ends (its info JSON changes) and when another image is selected (javascript/heie.js
    clicks the hidden button whenever the WebUI refreshes its own infotext)."""
    elem_id = kwargs.get("elem_id") or ""
    tab = next((t for t in ("txt2img", "img2img") if elem_id == PANEL_AFTER.format(tab=t)), None)
    if tab is None:
        return
    panel = gr.HTML(elem_id=f"heie_verdict_{tab}", elem_classes=f"{CSS_CLASS}-panel")
    index = gr.Number(value=-1, visible=False, elem_id=f"heie_verdict_index_{tab}")
    follow = gr.Button(visible=False, elem_id=f"heie_verdict_button_{tab}")
    follow.click(fn=_panel, inputs=[component, index], outputs=[panel], **_listener(_SELECTED_INDEX_JS))
    component.change(fn=_panel, inputs=[component, index], outputs=[panel], **_listener(_FIRST_IMAGE_JS))


def _panel(generation_info, index) -> str:  # type: ignore[no-untyped-def]
    try:
        return panel_html(generation_info, int(index) if index is not None else -1)
    except (TypeError, ValueError, KeyError) as err:  # an info JSON from elsewhere: no panel, never a broken page
        log.warning("HEIE: verdict panel: %s", err)
        return ""


_register_filename_patterns()
script_callbacks.on_ui_settings(_on_ui_settings)
script_callbacks.on_after_component(_on_after_component)
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
                repair = self._repair_ui(tab)
        else:
            with gr.Accordion(ACCORDION_LABEL, open=False):
                enabled = gr.Checkbox(value=default, label="Judge the images of this generation", info=CHOICE_NOTE)
                repair = self._repair_ui(tab)
        return [enabled, *repair]

    def _repair_ui(self, tab: str):  # type: ignore[no-untyped-def]
        """The repair widgets, in RepairOptions.from_args order; "paste" restores them from an infotext."""
        defaults = RepairOptions()
        gr.Markdown(REPAIR_NOTE)
        with gr.Row():
            repair = gr.Checkbox(value=defaults.enabled, label="Repair rejected images", elem_id=f"heie_{tab}_repair")
            severity = gr.Slider(0.0, 1.0, value=defaults.min_severity, step=0.01, label="Minimum region severity",
                                 elem_id=f"heie_{tab}_repair_min_severity")
        with gr.Row():
            padding = gr.Slider(0, 256, value=defaults.padding, step=4, label="Mask padding (px)",
                                elem_id=f"heie_{tab}_repair_padding")
            denoising = gr.Slider(0.01, 1.0, value=defaults.denoising, step=0.01, label="Repair denoising strength",
                                  elem_id=f"heie_{tab}_repair_denoising")
        categories = gr.CheckboxGroup(list(CATEGORIES), value=list(defaults.categories), label="Repair regions of these categories",
                                      elem_id=f"heie_{tab}_repair_categories")
        self.infotext_fields = [
            (repair, lambda params: PARAM_DENOISING in params),
            (padding, PARAM_PADDING), (denoising, PARAM_DENOISING), (severity, PARAM_MIN_SEVERITY),
            (categories, lambda params: gr.update(value=[c for c in params[PARAM_CATEGORIES].split(",") if c in CATEGORIES])
             if PARAM_CATEGORIES in params else None),
        ]
        return [repair, padding, denoising, categories, severity]

    def process(self, p, enabled=None, *args):  # type: ignore[no-untyped-def]
        settings = _settings()
        judged = settings is not None and settings.for_generation(enabled).enabled
        options, _ = _repair_options(args) if judged else (None, "")
        begin_job(p, options)

    def before_process_batch(self, p, enabled=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        settings = _settings()
        if settings is not None and settings.for_generation(enabled).enabled:
            judging_progress.begin_batch(shared.state, p, int(kwargs.get("batch_number", 0) or 0))

    def _judge(self, p, pp, enabled=None, *args):  # type: ignore[no-untyped-def]
        settings = _settings()
        if settings is None:
            return
        # The generation's own choice wins; the setting only stands in where none was passed.
        settings = settings.for_generation(enabled)
        if settings.enabled:
            options, problem = _repair_options(args)
            judging_progress.image_started(shared.state, p)
            try:
                postprocess_image(p, pp, settings, cancel_when=_interrupted, progress=_progress,
                                  repair_options=options, repair_problem=problem, inpaint=_inpaint)
            finally:
                judging_progress.image_finished(shared.state, p)

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
            judging_progress.end_job(shared.state, p)
            _end_progress()
