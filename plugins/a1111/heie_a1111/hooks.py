"""What the extension does at each WebUI hook, on duck-typed stand-ins of the WebUI's objects:

- ``p`` (processing): ``extra_generation_params`` dict, ``prompts``/``prompt``, ``batch_index``;
- ``pp`` (PostprocessImageArgs): ``image`` (PIL);
- ``processed`` (Processed): ``images`` and ``infotexts`` lists;
- image-saved params: ``image``, ``p``, ``filename``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from heie_client import Client, HeieError

from .settings import Settings
from .verdict import RunState, Verdict, default_client, judge

STATE_ATTR = "heie_state"
REJECTED_DIR = "rejected"
OVERLAY_SUFFIX = ".heie.png"

log = logging.getLogger("heie")


def _state(p: Any, settings: Settings, client_factory: Callable[[Settings], Client]) -> RunState:
    state = getattr(p, STATE_ATTR, None)
    if not isinstance(state, RunState):
        state = RunState(settings, client_factory)
        setattr(p, STATE_ATTR, state)
    return state


def _prompt(p: Any) -> Optional[str]:
    prompts = getattr(p, "prompts", None)
    index = getattr(p, "batch_index", 0) or 0
    if isinstance(prompts, list) and 0 <= index < len(prompts):
        return str(prompts[index])
    prompt = getattr(p, "prompt", None)
    return prompt if isinstance(prompt, str) else None


def postprocess_image(p: Any, pp: Any, settings: Settings, cancel_when: Optional[Callable[[], bool]] = None,
                      client_factory: Callable[[Settings], Client] = default_client) -> Optional[Verdict]:
    """Judges ``pp.image`` and writes the verdict into ``p.extra_generation_params`` (the WebUI builds
    this image's infotext right after this hook). A server failure is logged, never fatal."""
    if not settings.enabled:
        return None
    state = _state(p, settings, client_factory)
    try:
        verdict = judge(state.client, pp.image, settings, _prompt(p), cancel_when)
    except HeieError as err:
        log.warning("HEIE: image not judged: %s", err)
        p.extra_generation_params["HEIE error"] = err.code.name if err.code is not None else "client"
        return None
    for key in ("HEIE", "HEIE rejected", "HEIE error"):  # the previous image's entries
        p.extra_generation_params.pop(key, None)
    p.extra_generation_params.update(verdict.infotext())
    state.record(pp.image, verdict)
    return verdict


def after_image_saved(image: Any, p: Any, filename: str) -> list[Path]:
    """Saves the overlay beside a judged image and moves or deletes it when rejected; returns the
    files written or moved. Images this extension did not judge (grids, masks) are left alone."""
    state = getattr(p, STATE_ATTR, None)
    verdict = state.verdict_for(image) if isinstance(state, RunState) else None
    if verdict is None or not filename:
        return []
    settings = state.settings  # type: ignore[union-attr]
    path = Path(filename)
    touched: list[Path] = []
    if verdict.rejected and settings.reject_action == "discard":
        path.unlink(missing_ok=True)
        return touched
    if verdict.rejected and settings.reject_action == "move":
        target_dir = path.parent / REJECTED_DIR
        target_dir.mkdir(parents=True, exist_ok=True)
        moved = target_dir / path.name
        shutil.move(str(path), moved)
        path = moved
        touched.append(moved)
    if settings.save_overlay and verdict.overlay_png:
        overlay = path.with_name(path.stem + OVERLAY_SUFFIX)
        overlay.write_bytes(verdict.overlay_png)
        touched.append(overlay)
    return touched


def postprocess(p: Any, processed: Any) -> int:
    """End of a generation: drops discarded images from the gallery, removes the verdict entries from
    the shared generation params (the grid's infotext) and closes the client. Returns images dropped."""
    state = getattr(p, STATE_ATTR, None)
    if not isinstance(state, RunState):
        return 0
    dropped = 0
    if state.settings.reject_action == "discard":
        images = list(getattr(processed, "images", []))
        infotexts = list(getattr(processed, "infotexts", []))
        keep = [i for i, image in enumerate(images) if not ((v := state.verdict_for(image)) and v.rejected)]
        dropped = len(images) - len(keep)
        if dropped:
            processed.images = [images[i] for i in keep]
            if len(infotexts) == len(images):
                processed.infotexts = [infotexts[i] for i in keep]
    for key in ("HEIE score", "HEIE mode", "HEIE", "HEIE rejected", "HEIE error"):
        p.extra_generation_params.pop(key, None)
    state.close()
    return dropped
