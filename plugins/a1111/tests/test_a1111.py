"""The extension's hooks with small stand-ins for the WebUI's objects, against a real server; and the
adapter script loaded with stand-in ``modules``/``gradio`` packages."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from heie_a1111 import Settings, after_image_saved, postprocess, postprocess_image
from heie_a1111.hooks import STATE_ATTR

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "heie.py"


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8))


def _p(prompt: str = "a cat on a sofa") -> SimpleNamespace:
    return SimpleNamespace(extra_generation_params={"Steps": 20}, prompts=[prompt], batch_index=0)


def _generate(p: SimpleNamespace, settings: Settings, folder: Path, seed: int) -> tuple[Image.Image, Path, dict[str, Any]]:
    """What the WebUI does per image: postprocess_image, build the infotext, save, fire on_image_saved."""
    pp = SimpleNamespace(image=_image(seed))
    postprocess_image(p, pp, settings)
    infotext = dict(p.extra_generation_params)
    filename = folder / f"{seed:05d}-1.png"
    pp.image.save(filename)
    after_image_saved(pp.image, p, str(filename))
    return pp.image, filename, infotext


def _settings(address: str, **kw: Any) -> Settings:
    return Settings(address=address, timeout=120, explanation=False, max_tokens=2, **kw)


def test_score_and_summary_go_into_the_infotext_and_the_overlay_beside(heie_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = _p()
    _, filename, infotext = _generate(p, _settings(heie_server.address, save_overlay=True), tmp_path, 1)
    assert 0.0 <= float(infotext["HEIE score"]) <= 1.0
    assert infotext["HEIE mode"] == "zero_shot" and infotext["Steps"] == 20
    assert "HEIE rejected" not in infotext
    assert filename.exists()
    overlay = filename.with_name(filename.stem + ".heie.png")
    with Image.open(overlay) as picture:
        assert picture.size == (16, 16)
    processed = SimpleNamespace(images=[object()], infotexts=["x"])
    assert postprocess(p, processed) == 0
    assert "HEIE score" not in p.extra_generation_params and p.extra_generation_params["Steps"] == 20


def test_rejected_images_move_to_rejected(heie_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = _p()
    _, filename, infotext = _generate(p, _settings(heie_server.address, threshold=1.0, reject_action="move"), tmp_path, 2)
    assert infotext["HEIE rejected"] == "yes"
    assert not filename.exists() and (tmp_path / "rejected" / filename.name).exists()


def test_discarded_images_are_deleted_and_leave_the_gallery(heie_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = _p()
    settings = _settings(heie_server.address, threshold=1.0, reject_action="discard")
    image, filename, _ = _generate(p, settings, tmp_path, 3)
    assert not filename.exists()
    grid = _image(99)
    processed = SimpleNamespace(images=[grid, image], infotexts=["grid", "image"])
    assert postprocess(p, processed) == 1
    assert processed.images == [grid] and processed.infotexts == ["grid"]


def test_unjudged_images_and_a_down_server_are_left_alone(dead_address: str, tmp_path: Path) -> None:
    p = _p()
    pp = SimpleNamespace(image=_image(4))
    assert postprocess_image(p, pp, Settings(address=dead_address, timeout=5, threshold=0.9, reject_action="discard")) is None
    assert p.extra_generation_params["HEIE error"] == "UNAVAILABLE"
    other = tmp_path / "mask.png"
    _image(5).save(other)
    assert after_image_saved(_image(5), p, str(other)) == [] and other.exists()
    disabled = _p()
    assert postprocess_image(disabled, pp, Settings(enabled=False)) is None
    assert not hasattr(disabled, STATE_ATTR) and postprocess(disabled, SimpleNamespace(images=[])) == 0


def test_settings_from_webui_options() -> None:
    opts = SimpleNamespace(heie_address="h:1, h:2", heie_threshold=0.4, heie_reject_action="move", heie_save_overlay=True)
    settings = Settings.from_options(opts)
    assert settings.addresses == ["h:1", "h:2"] and settings.threshold == 0.4 and settings.save_overlay
    with pytest.raises(ValueError):
        Settings.from_options(SimpleNamespace(heie_reject_action="burn"))


class _Recorder:
    def __init__(self) -> None:
        self.calls: dict[str, list[Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kw: self.calls.setdefault(name, []).append((args, kw))


def test_adapter_script_loads_and_calls_in(heie_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    callbacks: dict[str, Any] = {}
    options: dict[str, Any] = {}

    class Script:
        pass

    class OptionInfo:
        def __init__(self, default: Any, label: str = "", *args: Any) -> None:
            self.default, self.label, self.section = default, label, None

    opts = SimpleNamespace(heie_address=heie_server.address, heie_explanation=False, heie_max_tokens=2,
                           heie_save_overlay=True, add_option=lambda key, info: options.__setitem__(key, info))
    modules = types.ModuleType("modules")
    modules.scripts = SimpleNamespace(Script=Script, AlwaysVisible=object())  # type: ignore[attr-defined]
    modules.shared = SimpleNamespace(opts=opts, OptionInfo=OptionInfo,  # type: ignore[attr-defined]
                                     state=SimpleNamespace(interrupted=False, skipped=False))
    modules.script_callbacks = SimpleNamespace(  # type: ignore[attr-defined]
        on_ui_settings=lambda fn: callbacks.__setitem__("ui_settings", fn),
        on_image_saved=lambda fn: callbacks.__setitem__("image_saved", fn),
    )
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "gradio", _Recorder())
    spec = importlib.util.spec_from_file_location("heie_a1111_script_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    callbacks["ui_settings"]()
    assert {"heie_address", "heie_threshold", "heie_reject_action", "heie_save_overlay"} <= set(options)
    assert all(info.section == ("heie", "HEIE") for info in options.values())

    script = module.HeieScript()
    assert script.show(False) is modules.scripts.AlwaysVisible
    p, pp = _p(), SimpleNamespace(image=_image(6))
    script.postprocess_image(p, pp, True)
    assert "HEIE score" in p.extra_generation_params
    filename = tmp_path / "00006.png"
    pp.image.save(filename)
    callbacks["image_saved"](SimpleNamespace(image=pp.image, p=p, filename=str(filename), pnginfo={}))
    assert filename.with_name("00006.heie.png").exists()
    script.postprocess(p, SimpleNamespace(images=[pp.image], infotexts=[""]))
    assert "HEIE score" not in p.extra_generation_params
