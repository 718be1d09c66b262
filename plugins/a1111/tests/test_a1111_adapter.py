"""``scripts/heie.py`` loaded with stand-ins for the WebUI's ``modules`` and ``gradio``: the settings it
registers pass the WebUI's widget rule, and its hooks reach the logic. (The real WebUI runs it in
check_in_webui.py.)"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from a1111_servers import HttpServer, free_address, http_server  # noqa: F401 (fixtures)
from webui_loop import make_grid

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "heie.py"
SKIP = object()
"""modules.images.NOTHING_AND_SKIP_PREVIOUS_TEXT: a filename pattern's "nothing, and drop the text before it"."""


class OptionInfo:
    """The signature of modules.options.OptionInfo (v1.10.1), keeping what the settings page reads."""

    def __init__(self, default: Any = None, label: str = "", component: Any = None, component_args: Any = None,
                 onchange: Any = None, section: Any = None, refresh: Any = None, **_rest: Any) -> None:
        self.default, self.label, self.component, self.component_args, self.section = default, label, component, component_args, section


def widget_of(info: OptionInfo) -> Any:
    """modules/ui_settings.py create_setting_component's choice (v1.10.1), raising as it does."""
    if info.component is not None:
        return info.component
    t = type(info.default)
    if t == str:
        return "Textbox"
    if t == int:
        return "Number"
    if t == bool:
        return "Checkbox"
    raise Exception(f"bad options item type: {t} for key")


class _Script:
    """modules.scripts.Script (v1.10.1): every hook a no-op the extension may override."""

    def postprocess_image(self, p: Any, pp: Any, *args: Any) -> None:
        pass

    def postprocess_image_after_composite(self, p: Any, pp: Any, *args: Any) -> None:
        pass


def _run_image_hooks(script: Any, p: Any, pp: Any, *args: Any) -> None:
    """The WebUI calls both hooks of every always-on script for each image, in this order."""
    script.postprocess_image(p, pp, *args)
    script.postprocess_image_after_composite(p, pp, *args)


class _Component:
    def __init__(self, *args: Any, **kw: Any) -> None:
        self.args, self.kw = args, kw

    def __enter__(self) -> "_Component":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


@pytest.fixture()
def loaded(monkeypatch: pytest.MonkeyPatch, http_server: HttpServer):  # type: ignore[no-untyped-def]  # noqa: F811
    callbacks: dict[str, Any] = {}
    options: dict[str, OptionInfo] = {}
    opts = SimpleNamespace(heie_address=http_server.address, heie_explanation=False, heie_max_tokens=2,
                           heie_save_overlay=False, add_option=lambda key, info: options.__setitem__(key, info))
    modules = types.ModuleType("modules")
    modules.scripts = SimpleNamespace(Script=_Script, AlwaysVisible=object())  # type: ignore[attr-defined]
    modules.shared = SimpleNamespace(opts=opts, OptionInfo=OptionInfo,  # type: ignore[attr-defined]
                                     state=SimpleNamespace(interrupted=False, skipped=False, textinfo=None))
    modules.images = SimpleNamespace(image_grid=lambda imgs, batch_size: make_grid(imgs),  # type: ignore[attr-defined]
                                     save_image_with_geninfo=lambda image, text, path: image.save(path),
                                     FilenameGenerator=type("FilenameGenerator", (), {"replacements": {}}),
                                     NOTHING_AND_SKIP_PREVIOUS_TEXT=SKIP)
    modules.script_callbacks = SimpleNamespace(**{  # type: ignore[attr-defined]
        name: (lambda key: lambda fn: callbacks.__setitem__(key, fn))(name)
        for name in ("on_ui_settings", "on_before_image_saved", "on_image_saved", "on_after_component")})
    gradio = SimpleNamespace(Slider=type("Slider", (_Component,), {}), Radio=type("Radio", (_Component,), {}),
                             Accordion=_Component, Checkbox=_Component, Markdown=_Component, Row=_Component,
                             CheckboxGroup=_Component, update=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "gradio", gradio)
    spec = importlib.util.spec_from_file_location("heie_a1111_script_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return SimpleNamespace(module=module, modules=modules, callbacks=callbacks, options=options, gradio=gradio)


def test_settings_register_with_a_widget_each(loaded: SimpleNamespace) -> None:
    loaded.callbacks["on_ui_settings"]()
    options = loaded.options
    assert set(options) == {"heie_enabled", "heie_address", "heie_timeout", "heie_threshold", "heie_reject_action",
                            "heie_save_overlay", "heie_overlay_in_gallery", "heie_explanation", "heie_summary_chars",
                            "heie_max_tokens", "heie_reject_if", "heie_server_model", "heie_server_mmproj",
                            "heie_server_binary"}
    for key, info in options.items():
        widget_of(info)  # raises like the WebUI would
        assert info.section == ("heie", "HEIE"), key
        assert info.category_id == "postprocessing", key  # not "Uncategorized"
    assert options["heie_timeout"].component is loaded.gradio.Slider and isinstance(options["heie_timeout"].default, float)
    assert options["heie_reject_action"].component is loaded.gradio.Radio
    with pytest.raises(Exception, match="bad options item type"):
        widget_of(OptionInfo(300.0, "a float without a component, as before the fix"))


def test_hooks_judge_write_progress_and_the_png_key(loaded: SimpleNamespace, tmp_path: Path) -> None:
    script = loaded.module.HeieScript()
    assert script.show(False) is loaded.modules.scripts.AlwaysVisible
    image = Image.fromarray(np.random.default_rng(6).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    p = SimpleNamespace(extra_generation_params={}, prompts=["a cat"], batch_index=0, iteration=0, batch_size=1,
                        outpath_grids=str(tmp_path))
    pp = SimpleNamespace(image=image)
    _run_image_hooks(script, p, pp, True)
    assert p.heie_state.judged == 1, "judged once, after the composite step"
    entry = p.extra_generation_params["HEIE score"]
    number, band = entry(p=p, index=0).split(" (")  # "0.257 (badly flawed)": the score, then its band
    assert callable(entry) and 0 <= float(number) <= 1 and entry(p=p, index=0, use_main_prompt=True) is None
    assert band.rstrip(")") in ("badly flawed", "flawed", "typical", "good", "very plausible")
    assert "heie" not in p.extra_generation_params, "the JSON is the PNG's chunk, not repeated in the visible infotext"
    assert loaded.modules.shared.state.textinfo == f"HEIE: image 1 scored {float(number):.3f} ({band}"
    pnginfo = {"parameters": "x"}
    loaded.callbacks["on_before_image_saved"](SimpleNamespace(image=image, p=p, filename="", pnginfo=pnginfo))
    assert json.loads(pnginfo["heie"])["score"] == pytest.approx(float(number), abs=1e-3)
    patterns = loaded.modules.images.FilenameGenerator.replacements  # "Images filename pattern": [heie_score]
    assert patterns["heie_score"](SimpleNamespace(p=p, image=image)) == number
    assert patterns["heie_band"](SimpleNamespace(p=p, image=image)) == band.rstrip(")").replace(" ", "-")
    grid = Image.new("RGB", (16, 16))  # not judged: nothing, and the text before it dropped
    assert patterns["heie_score"](SimpleNamespace(p=p, image=grid)) is SKIP is patterns["heie_band"](SimpleNamespace(p=p, image=grid))
    inner = copy.copy(p)  # a job run inside this one, on a copy of its p
    script.process(inner, True)
    assert not hasattr(inner, "heie_state") and p.heie_state.judged == 1, "the copy's job starts its own state"
    processed = SimpleNamespace(images=[image], infotexts=[""], index_of_first_image=0,
                                extra_generation_params=p.extra_generation_params)
    script.postprocess(p, processed)
    assert "HEIE score" not in p.extra_generation_params and "HEIE" not in p.extra_generation_params
    (entry,) = processed.extra_generation_params["HEIE"]  # the API's info JSON: the full score, structured
    assert entry["index"] == 0 and entry["score"] == pytest.approx(json.loads(pnginfo["heie"])["score"], abs=1e-4)
    assert entry["mode"] == "zero_shot" and entry["threshold"] == pytest.approx(13 / 24)  # the default: "typical" and up pass
    assert entry["rejected"] is (entry["score"] < 13 / 24) and entry["rejected_categories"] == []


def test_the_accordion_switch_and_bad_settings_never_fail_a_generation(loaded: SimpleNamespace) -> None:
    script = loaded.module.HeieScript()
    p = SimpleNamespace(extra_generation_params={}, prompts=["x"], batch_index=0, iteration=0, batch_size=1)
    image = Image.new("RGB", (8, 8))
    _run_image_hooks(script, p, SimpleNamespace(image=image), False)
    assert p.extra_generation_params == {}
    loaded.modules.shared.opts.heie_reject_action = "burn"
    _run_image_hooks(script, p, SimpleNamespace(image=image), True)  # logged, image left alone
    assert p.extra_generation_params == {}


def test_the_progress_text_is_cleared_when_the_job_ends(loaded: SimpleNamespace, free_address: str) -> None:
    # The WebUI keeps state.textinfo until the next job begins, and /sdapi/v1/progress shows it while idle.
    script = loaded.module.HeieScript()
    state = loaded.modules.shared.state
    loaded.modules.shared.opts.heie_address = free_address  # the server is down, as in issue 30
    p = SimpleNamespace(extra_generation_params={}, prompts=["x", "y"], iteration=0, batch_index=0, batch_size=2)
    images = [Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), "white")]
    for index, image in enumerate(images):
        p.batch_index = index
        _run_image_hooks(script, p, SimpleNamespace(image=image), True)
    assert state.textinfo.startswith("HEIE: image 2 not judged: no HEIE server answers at ")
    assert "Server address" in state.textinfo, state.textinfo
    script.postprocess(p, SimpleNamespace(images=images, infotexts=["", ""], index_of_first_image=0))
    assert state.textinfo is None
    state.textinfo = "Upscaling"  # another script's text, written after ours: not ours to clear
    _run_image_hooks(script, p, SimpleNamespace(image=images[0]), True)
    state.textinfo = "Upscaling"
    script.postprocess(p, SimpleNamespace(images=images[:1], infotexts=[""], index_of_first_image=0))
    assert state.textinfo == "Upscaling"


def test_the_generation_choice_wins_over_the_setting(loaded: SimpleNamespace) -> None:
    script = loaded.module.HeieScript()
    image = Image.new("RGB", (8, 8))
    loaded.modules.shared.opts.heie_enabled = False  # the setting says no: the checkbox's yes still judges
    p = SimpleNamespace(extra_generation_params={}, prompts=["x"], batch_index=0, iteration=0, batch_size=1)
    _run_image_hooks(script, p, SimpleNamespace(image=image), True)
    assert p.heie_state.judged == 1
    loaded.modules.shared.opts.heie_enabled = True  # and the checkbox's no wins over the setting's yes
    p = SimpleNamespace(extra_generation_params={}, prompts=["x"], batch_index=0, iteration=0, batch_size=1)
    _run_image_hooks(script, p, SimpleNamespace(image=image), False)
    assert not hasattr(p, "heie_state")
    loaded.modules.shared.opts.heie_enabled = False  # no choice passed: the setting applies
    _run_image_hooks(script, p, SimpleNamespace(image=image))
    assert not hasattr(p, "heie_state")


def test_the_panels_events_use_this_gradios_words(loaded: SimpleNamespace) -> None:
    # A1111 runs gradio 3 (``_js``, show_progress False); Forge gradio 4, whose events take ``js`` and
    # "hidden", and which renames ``_js`` only on a finished component's events (the panel is attached to
    # the WebUI's info textbox while it is being built).
    assert loaded.module._listener("f") == {"_js": "f", "show_progress": False}
    loaded.gradio.__version__ = "4.40.0"
    assert loaded.module._listener("f") == {"js": "f", "show_progress": "hidden"}
    info = json.dumps({"extra_generation_params": {"HEIE": [{"index": 0, "error": "UNAVAILABLE", "message": "down",
                                                             "image_positions": [0]}]}})
    assert "image 1: not judged" in loaded.module._panel(info, 0.0) and loaded.module._panel(info, None) != ""
