"""The settings: every option buildable by the WebUI's settings page, values read and checked, the API
key taken from the environment only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from heie_a1111.settings import API_KEY_ENV, OPTIONS, REJECT_ACTIONS, Settings

# modules/ui_settings.py (create_setting_component, A1111 v1.10.1): an option without a component gets
# a widget from type(default) and only these types have one; anything else raises
# "bad options item type" and the WebUI does not start.
WEBUI_TYPES_WITHOUT_COMPONENT = (str, int, bool)


def test_every_option_has_a_widget_the_webui_can_build() -> None:
    for option in OPTIONS:
        if option.component is None:
            assert type(option.default) in WEBUI_TYPES_WITHOUT_COMPONENT, option.key
        else:
            assert option.component in ("slider", "radio") and option.args, option.key
    assert type(Settings().timeout) is float and next(o for o in OPTIONS if o.name == "timeout").component == "slider"


def test_every_setting_but_the_key_is_an_option_and_sliders_hold_their_defaults() -> None:
    names = {o.name for o in OPTIONS}
    assert names == {f for f in Settings.__dataclass_fields__} - {"api_key"}
    assert len({o.key for o in OPTIONS}) == len(OPTIONS) and all(o.key.startswith("heie_") for o in OPTIONS)
    for option in OPTIONS:
        if option.component == "slider":
            assert option.args["minimum"] <= option.default <= option.args["maximum"], option.key
        if option.component == "radio":
            assert option.default in option.args["choices"] and tuple(option.args["choices"]) == REJECT_ACTIONS


def test_settings_from_webui_options_and_the_key_from_the_environment() -> None:
    opts = SimpleNamespace(heie_address="h:1, http://h:2", heie_threshold=0.4, heie_reject_action="move",
                           heie_save_overlay=True, heie_timeout=30, heie_summary_chars=80.0)
    settings = Settings.from_options(opts, environ={API_KEY_ENV: "k"})
    assert settings.addresses == ["h:1", "http://h:2"] and settings.threshold == 0.4 and settings.save_overlay
    assert settings.timeout == 30.0 and type(settings.timeout) is float
    assert settings.summary_chars == 80 and type(settings.summary_chars) is int
    assert settings.api_key == "k"
    assert Settings.from_options(SimpleNamespace(), environ={}).api_key is None
    assert not hasattr(SimpleNamespace(), "heie_api_key") and "api_key" not in {o.name for o in OPTIONS}


@pytest.mark.parametrize("opts, message", [
    (SimpleNamespace(heie_reject_action="burn"), "heie_reject_action"),
    (SimpleNamespace(heie_threshold=1.5), "heie_threshold"),
    (SimpleNamespace(heie_timeout="soon"), "heie_timeout"),
    (SimpleNamespace(heie_timeout=-1.0), "must not be negative"),
])
def test_bad_values_name_the_option(opts: SimpleNamespace, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_options(opts, environ={})


def test_reject_if_is_read_and_a_bad_text_names_the_setting() -> None:
    assert Settings(reject_if="Hand>0.5, text>0.3").reject_rules == {"hand": 0.5, "text": 0.3}
    assert Settings().reject_rules == {} and Settings().threshold == pytest.approx(13 / 24)
    with pytest.raises(ValueError, match=r"Settings → HEIE → “Reject if” \('hands>0.5'\): 'hands' is not a region category"):
        Settings(reject_if="hands>0.5").reject_rules  # noqa: B018
