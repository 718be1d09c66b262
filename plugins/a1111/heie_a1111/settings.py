"""The extension's settings (WebUI Settings → HEIE) as one typed value."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from heie_client import DEFAULT_ADDRESS

REJECT_ACTIONS = ("keep", "move", "discard")
"""Below the threshold: keep the image (only marked), move it to ``rejected/``, or delete it."""

OPTION_PREFIX = "heie_"


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    address: str = DEFAULT_ADDRESS
    """host:port of heie serve; several separated by commas (round-robin with failover)."""
    timeout: float = 300.0
    threshold: float = 0.0
    """Images scoring below it are rejected; 0 = never."""
    reject_action: str = "keep"
    save_overlay: bool = False
    """Save the heatmap overlay beside the image as NAME.heie.png."""
    explanation: bool = True
    """Full chain of thought (False = short analysis only, faster)."""
    summary_chars: int = 160
    max_tokens: int = 0

    @property
    def addresses(self) -> list[str]:
        return [a.strip() for a in self.address.split(",") if a.strip()]

    @classmethod
    def from_options(cls, opts: Any) -> "Settings":
        """Reads ``heie_<field>`` attributes of the WebUI's ``shared.opts`` (missing ones keep defaults)."""
        values = {}
        for f in fields(cls):
            value = getattr(opts, OPTION_PREFIX + f.name, None)
            if value is not None:
                values[f.name] = type(getattr(cls(), f.name))(value)
        settings = cls(**values)
        if settings.reject_action not in REJECT_ACTIONS:
            raise ValueError(f"heie_reject_action must be one of {REJECT_ACTIONS}, got {settings.reject_action!r}")
        return settings
