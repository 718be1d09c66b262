"""HEIE for AUTOMATIC1111 / Forge: judges every generated image with a running ``heie serve``.

This file is the WebUI adapter only (loaded by the WebUI, so it imports the WebUI's ``modules``); the
logic is in ``heie_a1111`` and ``heie_client``.
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import gradio as gr  # noqa: E402
from modules import script_callbacks, scripts, shared  # noqa: E402

from heie_a1111 import REJECT_ACTIONS, Settings, after_image_saved, postprocess, postprocess_image  # noqa: E402

_SECTION = ("heie", "HEIE")


def _on_ui_settings() -> None:
    defaults = Settings()
    options = {
        "heie_enabled": shared.OptionInfo(defaults.enabled, "Judge every generated image"),
        "heie_address": shared.OptionInfo(defaults.address, "Server address (host:port; several separated by commas)"),
        "heie_timeout": shared.OptionInfo(defaults.timeout, "Timeout per image, seconds (0 = none)"),
        "heie_threshold": shared.OptionInfo(defaults.threshold, "Reject images scoring below (0 = never)",
                                            gr.Slider, {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
        "heie_reject_action": shared.OptionInfo(defaults.reject_action, "Rejected images", gr.Radio,
                                                {"choices": list(REJECT_ACTIONS)}),
        "heie_save_overlay": shared.OptionInfo(defaults.save_overlay, "Save the heatmap overlay beside the image (NAME.heie.png)"),
        "heie_explanation": shared.OptionInfo(defaults.explanation, "Full explanation (off = short analysis, faster)"),
        "heie_summary_chars": shared.OptionInfo(defaults.summary_chars, "Explanation characters written to the infotext"),
        "heie_max_tokens": shared.OptionInfo(defaults.max_tokens, "Tokens per explanation section (0 = server default)"),
    }
    for key, info in options.items():
        info.section = _SECTION
        shared.opts.add_option(key, info)


def _on_image_saved(params) -> None:  # type: ignore[no-untyped-def]
    after_image_saved(params.image, params.p, params.filename)


def _interrupted() -> bool:
    state = shared.state
    return bool(getattr(state, "interrupted", False) or getattr(state, "skipped", False))


script_callbacks.on_ui_settings(_on_ui_settings)
script_callbacks.on_image_saved(_on_image_saved)


class HeieScript(scripts.Script):
    def title(self) -> str:
        return "HEIE"

    def show(self, is_img2img: bool):  # type: ignore[no-untyped-def]
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool):  # type: ignore[no-untyped-def]
        with gr.Accordion("HEIE implausibility judge", open=False):
            enabled = gr.Checkbox(value=Settings.from_options(shared.opts).enabled, label="Judge generated images")
        return [enabled]

    def postprocess_image(self, p, pp, enabled=True, *args):  # type: ignore[no-untyped-def]
        settings = Settings.from_options(shared.opts)
        if enabled and settings.enabled:
            postprocess_image(p, pp, settings, cancel_when=_interrupted)

    def postprocess(self, p, processed, *args):  # type: ignore[no-untyped-def]
        postprocess(p, processed)
