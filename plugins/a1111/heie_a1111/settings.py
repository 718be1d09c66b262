"""The extension's settings (WebUI Settings → HEIE): one typed value, and the description of each
option the adapter turns into the WebUI's ``OptionInfo``.

The section is HEIE in the category "Postprocessing" (:data:`SECTION`, :data:`CATEGORY`): without a
category the WebUI lists it under "Uncategorized".

The WebUI builds a settings widget from the option's component, or from the type of its default when it
has none, and it knows only str (textbox), int (number) and bool (checkbox): any other default without a
component stops the WebUI at start-up (``bad options item type``). Every float option here therefore
names its component (:data:`OPTIONS`), and a test holds every option to that rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Optional

from heie_client.verdict_rules import CATEGORIES, DEFAULT_REJECT_BELOW, RuleError, parse_reject_if

REJECT_ACTIONS = ("keep", "move", "discard")
"""Below the threshold: keep the image (only marked), move it to ``rejected/``, or delete it."""

OPTION_PREFIX = "heie_"
API_KEY_ENV = "HEIE_API_KEY"
"""The server's API key is read from this environment variable, never saved in the WebUI's config."""
DEFAULT_ADDRESS = "auto"
"""A local server started on demand (:mod:`heie_a1111.auto_address`)."""
REJECT_IF_OPTION = "Reject if"
"""The per-category rules' setting as the user sees it (the start of its label)."""
SECTION = ("heie", "HEIE")
CATEGORY = "postprocessing"
"""One of the WebUI's own categories (A1111 ≥ 1.7, Forge): "Postprocessing", beside Upscaling and Face
restoration, the other steps that run on a finished image."""


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    """Whether a generation is judged when it does not say (the default of the txt2img/img2img checkbox,
    and of API calls that do not pass the script's argument): the per-generation choice wins."""
    address: str = DEFAULT_ADDRESS
    """``auto`` (a local server started for the WebUI), or host:port (or http(s)://host:port) of
    `heie serve --http`; several separated by commas."""
    server_model: str = ""
    """The local server's model GGUF (with ``server_mmproj``); '' = the server's default model."""
    server_mmproj: str = ""
    server_binary: str = ""
    """The local server's ``heie``; '' = the one ``pip install heie-server`` put beside the WebUI's Python, or PATH's."""
    timeout: float = 300.0
    """Seconds one image may take on the server (0 = no limit)."""
    threshold: float = DEFAULT_REJECT_BELOW
    """Images scoring below it are rejected; 0 = never. The default is the lower edge of the "typical"
    band (13/24): what people rated "flawed" or worse is rejected."""
    reject_if: str = ""
    """Per-category rules, ``hand>0.5,text>0.3``: an image with a region of that category more severe
    than the limit is rejected whatever its score (``heie_client.verdict_rules``)."""
    reject_action: str = "keep"
    save_overlay: bool = False
    """Save the heatmap overlay beside the image as NAME.heie.png."""
    overlay_in_gallery: bool = False
    """Show each judged image's heatmap overlay in the gallery after the images. Off by default: it doubles
    the gallery and the API's ``images`` (clients that expect one image per seed would get the overlays
    as images), and the overlay of an image is of use only while looking at that image."""
    explanation: bool = True
    """Full chain of thought (False = short analysis only, faster)."""
    summary_chars: int = 160
    max_tokens: int = 0
    api_key: Optional[str] = None
    """From $HEIE_API_KEY; not an option."""

    def for_generation(self, choice: Optional[bool]) -> "Settings":
        """These settings with the generation's own on/off choice applied: the per-generation checkbox
        wins; ``None`` (no choice passed, e.g. an API call without the script's args) keeps the setting."""
        if choice is None or bool(choice) == self.enabled:
            return self
        return replace(self, enabled=bool(choice))

    @property
    def reject_rules(self) -> dict[str, float]:
        """``reject_if`` read; a ValueError naming the setting, what is wrong and what is accepted."""
        try:
            return parse_reject_if(self.reject_if)
        except RuleError as err:
            raise ValueError(f"Settings → HEIE → “{REJECT_IF_OPTION}” ({self.reject_if!r}): {err}") from None

    @property
    def addresses(self) -> list[str]:
        return [a.strip() for a in self.address.split(",") if a.strip()]

    @property
    def http_addresses(self) -> list[str]:
        """The addresses as heie-client reads HTTP ones: a bare ``host:port`` is the ``--http`` port here
        (the extension talks only HTTP), so it gets ``http://``. Raises ValueError naming a bad one."""
        from heie_client.balancing import check_target

        if not self.addresses:
            raise ValueError("HEIE server address: none given")
        found = []
        for address in self.addresses:
            url = address if "://" in address else "http://" + address
            try:
                check_target(url)
            except ValueError as err:
                raise ValueError(f"HEIE server address {address!r}: expected host:port or http(s)://host:port ({err})") from None
            if not url.lower().startswith(("http://", "https://")):
                raise ValueError(f"HEIE server address {address!r}: expected host:port or http(s)://host:port")
            found.append(url)
        return found

    @classmethod
    def from_options(cls, opts: Any, environ: Optional[dict[str, str]] = None) -> "Settings":
        """Reads ``heie_<field>`` attributes of the WebUI's ``shared.opts`` (missing ones keep their
        defaults) and the API key from the environment. A bad value is a ValueError naming the option."""
        defaults = cls()
        values: dict[str, Any] = {}
        for option in OPTIONS:
            value = getattr(opts, OPTION_PREFIX + option.name, None)
            if value is None:
                continue
            kind = type(getattr(defaults, option.name))
            try:
                values[option.name] = kind(value) if kind is not bool else bool(value)
            except (TypeError, ValueError):
                raise ValueError(f"{OPTION_PREFIX}{option.name}: expected {kind.__name__}, got {value!r}") from None
        env = os.environ if environ is None else environ
        settings = cls(**values, api_key=env.get(API_KEY_ENV) or None)
        if settings.reject_action not in REJECT_ACTIONS:
            raise ValueError(f"{OPTION_PREFIX}reject_action must be one of {REJECT_ACTIONS}, got {settings.reject_action!r}")
        if not 0.0 <= settings.threshold <= 1.0:
            raise ValueError(f"{OPTION_PREFIX}threshold must be in 0..1, got {settings.threshold}")
        if settings.timeout < 0 or settings.summary_chars < 0 or settings.max_tokens < 0:
            raise ValueError(f"{OPTION_PREFIX}timeout, summary_chars and max_tokens must not be negative")
        return settings


@dataclass(frozen=True)
class Option:
    """One WebUI setting: ``heie_<name>``, its label, and its widget: ``None`` (the WebUI picks one from
    the default's type: only for str, int and bool), ``"slider"`` or ``"radio"`` with its arguments."""

    name: str
    label: str
    component: Optional[str] = None
    args: Optional[dict[str, Any]] = None

    @property
    def key(self) -> str:
        return OPTION_PREFIX + self.name

    @property
    def default(self) -> Any:
        return getattr(Settings(), self.name)


OPTIONS: tuple[Option, ...] = (
    Option("enabled", "Judge generated images by default (the \"HEIE implausibility judge\" checkbox of each "
                      "txt2img/img2img generation starts from this, and the generation's choice wins)"),
    Option("address", "Server address: auto (a local server started for the WebUI) or host:port of `heie serve --http` "
                      f"(several separated by commas); API key from ${API_KEY_ENV}"),
    Option("server_model", "Local server (address auto): model GGUF path (empty = the default model, downloaded on first use)"),
    Option("server_mmproj", "Local server (address auto): mmproj GGUF path (with the model)"),
    Option("server_binary", "Local server (address auto): heie binary path (empty = pip's heie-server, else PATH)"),
    Option("timeout", "Time limit per image, seconds (0 = none)", "slider", {"minimum": 0, "maximum": 3600, "step": 5}),
    Option("threshold", "Reject images scoring below (0 = never; the default 0.5417 = 13/24 is the lower edge "
                        "of the band “typical”: what people rate “flawed” or worse is rejected)", "slider", {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
    Option("reject_if", f"{REJECT_IF_OPTION}: a region of a category is more severe than a limit, whatever the score "
                        f"(e.g. hand>0.5,text>0.3; categories {', '.join(CATEGORIES)}; any>N for every one; "
                        "empty = only the score decides)"),
    Option("reject_action", "Rejected images", "radio", {"choices": list(REJECT_ACTIONS)}),
    Option("save_overlay", "Save the heatmap overlay beside the image (NAME.heie.png)"),
    Option("overlay_in_gallery", "Show the heatmap overlays in the gallery, after the images (also in the API's images)"),
    Option("explanation", "Full explanation (off = short analysis, faster)"),
    Option("summary_chars", "Explanation characters written to the infotext", "slider", {"minimum": 0, "maximum": 1000, "step": 10}),
    Option("max_tokens", "Tokens per explanation section (0 = server default; a server takes at most its "
                         "limits.max_tokens_per_section, and its --ctx-size fewer: see /v1/info)", "slider", {"minimum": 0, "maximum": 2048, "step": 8}),
)
