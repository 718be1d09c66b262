"""Per-category rejection rules: ``hand>0.5,text>0.3`` rejects an image when any of its regions of that
category is more severe than the number, whatever its overall score.

One parser and one rule for every host (``heie-score --reject-if``, the ComfyUI Filter node, the A1111
setting), so the same text means the same thing everywhere. Regions are duck-typed: anything with
``category`` (an enum whose lower-cased ``name`` is the category, or a plain string) and ``severity``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

#: The categories a rule may name, as the server's ``RegionCategory`` values spell them in lower case.
CATEGORIES: tuple[str, ...] = ("hand", "face", "body", "text", "object", "physics", "background", "other")

#: ``any>0.6`` applies one limit to every category (a category named on its own overrides it).
ANY = "any"

#: The lowest score that is not rejected by default: the lower edge of the "typical" band, so the
#: hosts reject what people rated "flawed" or worse, the bottom 17 % of Expl-AIGI-Eval's human ratings.
DEFAULT_REJECT_BELOW = 13 / 24


class RuleError(ValueError):
    """A rule text that cannot be read; the message says which part and what is accepted."""


def parse_reject_if(text: str) -> dict[str, float]:
    """``"hand>0.5, text>0.3"`` → ``{"hand": 0.5, "text": 0.3}``; '' → ``{}``.

    Each rule is ``CATEGORY>NUMBER`` with NUMBER in [0, 1); rules are separated by commas (or
    semicolons); spaces and case do not matter.
    """
    rules: dict[str, float] = {}
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, number = part.partition(">")
        name = name.strip().lower()
        if not sep or not name:
            raise RuleError(f"{part!r} is not a rule; write CATEGORY>SEVERITY, e.g. hand>0.5")
        if name not in CATEGORIES and name != ANY:
            raise RuleError(f"{name!r} is not a region category; use one of {', '.join(CATEGORIES + (ANY,))}")
        try:
            limit = float(number.strip())
        except ValueError:
            raise RuleError(f"{part!r}: {number.strip()!r} is not a number; severities are 0 to 1") from None
        if not (math.isfinite(limit) and 0.0 <= limit < 1.0):
            raise RuleError(f"{part!r}: the severity limit must be at least 0 and below 1")
        if name in rules:
            raise RuleError(f"{name!r} is given twice")
        rules[name] = limit
    return rules


def format_rules(rules: Mapping[str, float]) -> str:
    """The inverse of :func:`parse_reject_if`, for logs and infotexts."""
    return ",".join(f"{name}>{limit:g}" for name, limit in rules.items())


def category_name(region: Any) -> str:
    """The lower-case category of a region (an enum member or a string)."""
    category = region.category
    return (category if isinstance(category, str) else category.name).lower()


def worst_severities(regions: Iterable[Any]) -> dict[str, float]:
    """Per category with at least one region: the highest severity among its regions."""
    worst: dict[str, float] = {}
    for region in regions:
        name = category_name(region)
        if math.isfinite(region.severity) and region.severity > worst.get(name, -1.0):
            worst[name] = region.severity
    return worst


def rejected_categories(regions: Iterable[Any], rules: Mapping[str, float]) -> list[str]:
    """The categories whose rule some region breaks (severity strictly above the limit), each once, in
    the order of the regions."""
    broken: list[str] = []
    for region in regions:
        name = category_name(region)
        limit = rules.get(name, rules.get(ANY))
        if limit is not None and region.severity > limit and name not in broken:
            broken.append(name)
    return broken
