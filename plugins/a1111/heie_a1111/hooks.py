"""What the extension does at each WebUI hook, on duck-typed stand-ins of the WebUI's objects:

- ``p`` (processing): ``extra_generation_params`` dict, ``prompts``/``prompt``, ``iteration``,
  ``batch_index``, ``batch_size``, ``outpath_grids``;
- ``pp`` (PostprocessImageArgs): ``image`` (PIL);
- ``processed`` (Processed): ``images``, ``infotexts``, ``index_of_first_image`` and the per-image
  ``all_prompts``/``all_negative_prompts``/``all_seeds``/``all_subseeds``;
- image-saved params: ``image``, ``p``, ``filename``, ``pnginfo``.

Nothing here imports the WebUI; ``scripts/heie.py`` passes in what needs it (grid maker, progress text).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image

from heie_client import Cancelled, Client, Event, HeieError, Score, Started, TextDelta

from . import infotext
from .auto_address import with_server_address
from .messages import TooManyTokens, code_of, explain, tokens_refusal, too_many_tokens
from .repair import GENERATION_PARAMS, RepairOptions, RepairReport, repair
from .run_state import Outcome, RunState, SavedFile
from .settings import Settings
from .verdict import METADATA_KEY, Verdict, judge

Inpaint = Callable[[Any, Any, Image.Image, RepairOptions], Any]
"""The WebUI's inpainting pass: ``inpaint(p, image, mask, options)`` → the repaired image (the adapter's)."""

STRUCTURED_KEY = "HEIE"
"""``Processed.js()``'s ``extra_generation_params`` entry (the WebUI API's ``info`` JSON) holding every
image's verdict in job order, full score included: API clients read it instead of parsing infotexts."""

STATE_ATTR = "heie_state"
INFOTEXT_KEY = "parameters"
"""The PNG text chunk (and ``image.info`` key) of the WebUI's infotext."""
REJECTED_DIR = "rejected"
OVERLAY_SUFFIX = ".heie.png"
PROGRESS_PREFIX = "HEIE: "
"""Starts every progress text the extension writes, so the adapter clears only its own at the end."""
_PER_IMAGE_LISTS = ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds")

log = logging.getLogger("heie")


def default_client(settings: Settings) -> Client:
    """heie-client over HTTP to the settings' servers (bare ``host:port`` means the ``--http`` one)."""
    return Client(settings.http_addresses, timeout=settings.timeout or None, token=settings.api_key)


def _state(p: Any, settings: Settings, client_factory: Callable[[Settings], Client]) -> RunState:
    state = getattr(p, STATE_ATTR, None)
    if not isinstance(state, RunState):
        state = RunState(settings, client_factory)
        setattr(p, STATE_ATTR, state)
    return state


def _lookup(p: Any, index: int) -> Optional[dict[str, str]]:
    """The entries of the image at position ``index`` of the batch the WebUI is building infotexts for."""
    state = getattr(p, STATE_ATTR, None)
    if not isinstance(state, RunState):
        return None
    outcome = state.outcome_at((int(getattr(p, "iteration", 0) or 0), index))
    return outcome.infotext() if outcome is not None else None


def _prompt(p: Any) -> Optional[str]:
    prompts = getattr(p, "prompts", None)
    index = getattr(p, "batch_index", 0) or 0
    if isinstance(prompts, list) and 0 <= index < len(prompts):
        return str(prompts[index])
    prompt = getattr(p, "prompt", None)
    return prompt if isinstance(prompt, str) else None


def _progress_reporter(progress: Callable[[str], None], number: int, what: str = "image",
                       total: int = 0) -> Callable[[Event], None]:
    """The progress text while an image is judged: which image of how many, the section being written and
    how many words of explanation have streamed so far, then its score."""
    scored = False
    words = WordCount()
    which = f"{what} {number} of {total}" if total > 1 else f"{what} {number}"

    def on_event(event: Event) -> None:
        nonlocal scored
        if isinstance(event, Started):
            progress(f"{PROGRESS_PREFIX}judging {which}")
        elif isinstance(event, TextDelta):
            words.add(event.text)
            progress(f"{PROGRESS_PREFIX}judging {which}: writing the {event.section.name.lower()}, "
                     f"{words.count} word{'' if words.count == 1 else 's'} so far")
        elif isinstance(event, Score) and not scored:  # the first score is the verdict; extras follow
            scored = True
            band = event.band
            progress(f"{PROGRESS_PREFIX}{which} scored {event.score:.3f}{f' ({band})' if band else ''}")
    return on_event


class WordCount:
    """Words in a text that arrives in pieces (a piece may end or start inside a word)."""

    def __init__(self) -> None:
        self.count = 0
        self._in_word = False

    def add(self, piece: str) -> None:
        for char in piece:
            if char.isspace():
                self._in_word = False
            elif not self._in_word:
                self._in_word = True
                self.count += 1


def begin_job(p: Any, repair_options: Optional[RepairOptions] = None) -> None:
    """Start of a job (the ``process`` hook, once per ``process_images``): a state already on ``p`` is
    not this job's. It is one a script copied along with a running job's ``p`` (``copy.copy(p)`` for a
    job inside the job), which must stay that job's, or one a job that raised before ``postprocess``
    left behind; either way this job starts with its own. Not closed: it may still be in use.
    The job's repair options go into its generation params (infotext) when repair is on."""
    if hasattr(p, STATE_ATTR):
        delattr(p, STATE_ATTR)
    params = getattr(p, "extra_generation_params", None)
    if isinstance(params, dict):
        for key in GENERATION_PARAMS:  # a processing object run again (Loopback, batch) had its own
            params.pop(key, None)
        params.update(repair_options.generation_params() if repair_options is not None else {})


def is_own_progress(text: Any) -> bool:
    """Whether a progress text is one this extension wrote."""
    return isinstance(text, str) and text.startswith(PROGRESS_PREFIX)


def postprocess_image(p: Any, pp: Any, settings: Settings, cancel_when: Optional[Callable[[], bool]] = None,
                      progress: Optional[Callable[[str], None]] = None,
                      client_factory: Callable[[Settings], Client] = default_client,
                      repair_options: Optional[RepairOptions] = None, inpaint: Optional[Inpaint] = None,
                      repair_problem: str = "") -> Optional[Verdict]:
    """Judges ``pp.image``; its verdict (or its error) becomes this image's infotext entries, which the
    WebUI builds right after this hook. A server failure is logged and noted, never fatal. A rejected
    image is repaired when ``repair_options`` say so (``inpaint`` is the WebUI's pass); ``pp.image``
    then becomes the better of the two. ``repair_problem`` says why the generation's repair options
    could not be used (an API caller's bad value): a rejected image's infotext then says so."""
    if not settings.enabled:
        return None
    state = _state(p, settings, client_factory)
    infotext.install(p.extra_generation_params, _lookup)
    iteration, position = int(getattr(p, "iteration", 0) or 0), int(getattr(p, "batch_index", 0) or 0)
    job_index = iteration * int(getattr(p, "batch_size", 1) or 1) + position
    report = progress or (lambda text: None)
    total = int(getattr(p, "n_iter", 1) or 1) * int(getattr(p, "batch_size", 1) or 1)
    report(f"{PROGRESS_PREFIX}judging image {job_index + 1}" + (f" of {total}" if total > 1 else ""))
    try:
        if cancel_when is not None and cancel_when():  # interrupted before this image: do not even ask
            raise Cancelled("interrupted in the WebUI")
        settings.reject_rules  # noqa: B018 - an unreadable "Reject if" is refused before the image is sent
        # "auto": the shared local server (started if none runs, its progress shown as ours)
        settings = with_server_address(settings, lambda line: report(f"{PROGRESS_PREFIX}{line}"), cancel_when)
        client = state.client_for(settings)
        _check_tokens(state, client, settings)
        verdict = judge(client, pp.image, settings, _prompt(p), cancel_when,
                        on_event=_progress_reporter(report, job_index + 1, total=total))
    except (HeieError, ValueError) as err:
        refusal = tokens_refusal(err, settings) if isinstance(err, HeieError) else None
        if refusal is not None or isinstance(err, TooManyTokens):
            state.tokens_refused = refusal or err  # the job's other images would be refused alike: not sent
        code, message = code_of(err), explain(err, settings)
        log.warning("HEIE: image %d not judged: %s (%s)", job_index + 1, message, err)
        report(f"{PROGRESS_PREFIX}image {job_index + 1} not judged: {message}")
        state.record((iteration, position), pp.image, Outcome(error=code, message=message), job_index)
        return None
    report_of_repair: Optional[RepairReport] = None
    if verdict.rejected and repair_options is not None and repair_options.enabled and inpaint is not None \
            and not (cancel_when is not None and cancel_when()):
        pp.image, verdict, report_of_repair = _repair(p, pp.image, verdict, repair_options, inpaint, client, settings,
                                                      cancel_when, report, job_index + 1)
    elif verdict.rejected and repair_problem:
        report_of_repair = RepairReport(verdict, note=f"not run: {repair_problem}")
    state.record((iteration, position), pp.image, Outcome(verdict=verdict, repair=report_of_repair), job_index)
    if verdict.overlay_png and settings.overlay_in_gallery:
        state.overlays.append((pp.image, verdict.overlay_png, job_index))
    state.judged += 1
    return verdict


def _repair(p: Any, image: Any, verdict: Verdict, options: RepairOptions, inpaint: Inpaint, client: Client,
            settings: Settings, cancel_when: Optional[Callable[[], bool]], report: Callable[[str], None],
            number: int) -> tuple[Any, Verdict, RepairReport]:
    """One repair of a rejected image (:func:`heie_a1111.repair.repair`), its progress and console line."""
    report(f"{PROGRESS_PREFIX}repairing image {number} (score {verdict.score_with_band})")

    def judge_again(repaired: Any) -> Verdict:
        return judge(client, repaired, settings, _prompt(p), cancel_when,
                     on_event=_progress_reporter(report, number, "the repair of image"))

    kept, kept_verdict, outcome = repair(image, verdict, options, lambda i, mask: inpaint(p, i, mask, options), judge_again)
    if outcome.kept:
        log.info("HEIE: image %d repaired (%s): score %s → %s", number, ",".join(outcome.categories),
                 verdict.score_with_band, kept_verdict.score_with_band)
    else:
        log.warning("HEIE: image %d: repair %s", number, outcome.note)
    return kept, kept_verdict, outcome


def _check_tokens(state: RunState, client: Client, settings: Settings) -> None:
    """Refuses the tokens-per-section setting before an image is sent when the server cannot take it:
    above its ``limits.max_tokens_per_section``, or more than its context holds even for a one-tile image
    (the server's exact refusal, which depends on the image's tiles, is turned into the slider's terms by
    :func:`~heie_a1111.messages.tokens_refusal`). Asked once a job; a server that does not answer is left
    to the evaluation to report."""
    if state.tokens_refused is not None:
        raise state.tokens_refused
    if not settings.max_tokens or state.limits_checked:
        return
    state.limits_checked = True
    try:
        info = client.info()
    except HeieError:
        return
    limits, where = info.limits, ",".join(settings.addresses)
    if limits.max_tokens_per_section and settings.max_tokens > limits.max_tokens_per_section:
        raise too_many_tokens(settings.max_tokens, where, limits.max_tokens_per_section,
                              f"its limits.max_tokens_per_section is {limits.max_tokens_per_section}")
    if limits.context_tokens and info.tokens_per_tile + settings.max_tokens > limits.context_tokens:
        most = max(0, limits.context_tokens - info.tokens_per_tile)
        raise too_many_tokens(settings.max_tokens, where, most,
                              f"its --ctx-size gives each request {limits.context_tokens} tokens, "
                              f"{info.tokens_per_tile} of them for even a one-tile image")


def before_image_saved(image: Any, p: Any, pnginfo: dict[str, Any]) -> bool:
    """Adds the ``heie`` JSON to a judged image's PNG text chunks (the same key ``heie eval
    --write-metadata`` writes). Returns whether it did."""
    state = getattr(p, STATE_ATTR, None)
    verdict = state.verdict_for(image) if isinstance(state, RunState) else None
    if verdict is None or pnginfo is None:
        return False
    pnginfo[METADATA_KEY] = verdict.metadata_json()
    return True


def unique_path(path: Path) -> Path:
    """``path``, or ``NAME-1.ext``, ``NAME-2.ext``, … when taken (the WebUI restarts its numbering
    in a folder whose images were moved away, so the same names come again)."""
    if not path.exists():
        return path
    for n in range(1, 1_000_000):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name for {path}")


def after_image_saved(image: Any, p: Any, filename: str, pnginfo: Optional[dict[str, Any]] = None) -> list[Path]:
    """Saves the overlay beside a judged image and moves or deletes it when rejected; returns the
    files written or moved. Images this extension did not judge are left alone; a grid's file is
    remembered, with the infotext it was saved with (``pnginfo``), so a discard can rebuild it."""
    state = getattr(p, STATE_ATTR, None)
    if not isinstance(state, RunState) or not filename:
        return []
    path = Path(filename)
    verdict = state.verdict_for(image)
    if verdict is None:
        text = (pnginfo or {}).get(INFOTEXT_KEY)
        state.saved_unjudged.append(SavedFile(image, path, text if isinstance(text, str) else None))
        return []
    settings = state.settings
    touched: list[Path] = []
    if verdict.rejected and settings.reject_action == "discard":
        path.unlink(missing_ok=True)
        return touched
    if verdict.rejected and settings.reject_action == "move":
        target_dir = path.parent / REJECTED_DIR
        target_dir.mkdir(parents=True, exist_ok=True)
        moved = unique_path(target_dir / path.name)
        path.replace(moved)
        path = moved
        touched.append(moved)
    if settings.save_overlay and verdict.overlay_png:
        overlay = unique_path(path.with_name(path.stem + OVERLAY_SUFFIX))
        overlay.write_bytes(verdict.overlay_png)
        touched.append(overlay)
    return touched


def _grid_files(state: RunState, p: Any, grid_image: Any) -> list[SavedFile]:
    """The files the grid was saved to: the saved image that is the returned grid, else (grid not
    returned to the gallery) unjudged images saved under ``p.outpath_grids`` as ``grid…``."""
    saved = state.saved_unjudged
    if grid_image is not None:
        return [f for f in saved if f.image is grid_image]
    grids = getattr(p, "outpath_grids", None)
    if not grids:
        return []
    root = Path(grids).resolve()
    return [f for f in saved if f.path.name.startswith("grid") and f.path.resolve().is_relative_to(root)]


def _release(p: Any) -> None:
    """Forgets the job: its state (client, verdicts, images, saved files) and its infotext entries."""
    state = getattr(p, STATE_ATTR, None)
    if isinstance(state, RunState):
        state.close()
    if hasattr(p, STATE_ATTR):
        delattr(p, STATE_ATTR)
    params = getattr(p, "extra_generation_params", None)
    if isinstance(params, dict):
        infotext.remove(params)


def postprocess(p: Any, processed: Any, make_grid: Optional[Callable[[list[Any]], Any]] = None,
                save_grid: Optional[Callable[[Any, Path, Optional[str]], None]] = None) -> int:
    """End of a generation. With ``discard``: drops rejected images from the gallery (with their
    infotexts, prompts and seeds) and rebuilds the grid from the images kept (``make_grid``), also on
    disk (``save_grid(image, path, infotext)``; the grid file is deleted when nothing is left). Then
    releases the job's state and takes its HEIE entries out of the generation params: the WebUI may run
    the same ``p`` again (img2img "Batch from directory" runs one job per input image on one ``p``, and
    so does Loopback), and a state left behind would pile up every input's images and make the next
    job's discard rewrite this job's grid. Returns the number of images dropped."""
    state = getattr(p, STATE_ATTR, None)
    if not isinstance(state, RunState):
        return 0
    dropped = 0
    try:
        if state.settings.reject_action == "discard":
            dropped = _discard(state, p, processed, make_grid, save_grid)
        _show_overlays(state, processed, dropped=_dropped_indices(state, processed))
    finally:
        _release(p)
        _add_structured(state, processed)
    return dropped


def _dropped_indices(state: RunState, processed: Any) -> set[int]:
    """Job indices of the judged images no longer in the gallery (discarded)."""
    shown = {state.job_index_of(image) for image in getattr(processed, "images", [])}
    return {index for _, _, index in state.overlays if index not in shown}


def _show_overlays(state: RunState, processed: Any, dropped: set[int]) -> None:
    """Appends the kept images' overlays to the gallery (``overlay_in_gallery``), each with its image's
    infotext, so the gallery's indices of the images themselves do not move."""
    if not state.overlays or not isinstance(getattr(processed, "images", None), list):
        return
    infotexts = getattr(processed, "infotexts", None)
    aligned = isinstance(infotexts, list) and len(infotexts) == len(processed.images)
    for image, png, index in state.overlays:
        if index in dropped:
            continue
        overlay = Image.open(io.BytesIO(png))
        overlay.load()
        try:
            position = next(i for i, shown in enumerate(processed.images) if shown is image)
        except StopIteration:
            position = None
        text = infotexts[position] if aligned and position is not None else None
        if text is not None:
            overlay.info[INFOTEXT_KEY] = text
        processed.images.append(overlay)
        state.shown_overlays[id(overlay)] = (overlay, index)
        if aligned:
            infotexts.append(text or "")


def _add_structured(state: RunState, processed: Any) -> None:
    """Puts every image's verdict into the ``Processed``'s own ``extra_generation_params`` (a new dict:
    the WebUI's is ``p``'s, which the next job of the same ``p`` would write into its infotexts)."""
    params = getattr(processed, "extra_generation_params", None)
    if not isinstance(params, dict) or not state.outcomes():
        return
    positions: dict[int, list[int]] = {}
    for position, image in enumerate(getattr(processed, "images", None) or []):
        index = state.shown_job_index(image)
        if index is not None:
            positions.setdefault(index, []).append(position)
    # "image_positions": where in the gallery (and the API's images) the image and its overlay are, so the
    # verdict panel follows the selected image and an API client pairs each verdict with its picture.
    entries = [{"index": index, **outcome.structured(), "image_positions": positions.get(index, [])}
               for index, outcome in state.outcomes()]
    processed.extra_generation_params = {**params, STRUCTURED_KEY: entries}


def _discard(state: RunState, p: Any, processed: Any, make_grid: Optional[Callable[[list[Any]], Any]],
             save_grid: Optional[Callable[[Any, Path, Optional[str]], None]]) -> int:
    images = list(getattr(processed, "images", []))
    infotexts = list(getattr(processed, "infotexts", []))
    first = int(getattr(processed, "index_of_first_image", 0) or 0)
    grid_image = images[0] if first == 1 and images else None
    rejected = [i for i, image in enumerate(images) if (v := state.verdict_for(image)) is not None and v.rejected]
    if not rejected:
        return 0
    drop = set(rejected)
    job_dropped = {state.job_index_of(images[i]) for i in rejected}
    kept_images = [image for i, image in enumerate(images) if i not in drop and image is not grid_image]
    judged_kept = [image for image in kept_images if state.verdict_for(image) is not None]
    grid_files = _grid_files(state, p, grid_image)
    new_grid = make_grid(judged_kept) if make_grid is not None and judged_kept else None
    grid_text = infotexts[0] if grid_image is not None and infotexts else None
    for saved in grid_files:
        if new_grid is None:
            saved.path.unlink(missing_ok=True)
        elif save_grid is not None:
            # A grid kept out of the gallery has its infotext only in the file it was saved to.
            save_grid(new_grid, saved.path, saved.infotext or grid_text)
    if grid_image is not None:
        if new_grid is not None:
            # The API's PNGs and the gallery's files are written with the image's own infotext
            # (``image.info``), and an image just made has none.
            shown_info = getattr(grid_image, "info", None)
            if isinstance(shown_info, dict) and INFOTEXT_KEY in shown_info:
                new_grid.info[INFOTEXT_KEY] = shown_info[INFOTEXT_KEY]
            kept_images.insert(0, new_grid)
        else:  # no image left to make a grid of: the gallery starts with the images
            processed.index_of_first_image = 0
            drop.add(0)
    processed.images = kept_images
    if len(infotexts) == len(images):
        processed.infotexts = [t for i, t in enumerate(infotexts) if i not in drop]
        if processed.infotexts and hasattr(processed, "info"):
            processed.info = processed.infotexts[0]
    for name in _PER_IMAGE_LISTS:
        values = getattr(processed, name, None)
        kept = [v for j, v in enumerate(values) if j not in job_dropped] if isinstance(values, list) else None
        # The WebUI's Processed.js() reads all_prompts[0] and all_negative_prompts[0] after this hook, so
        # a job whose every image was discarded keeps its lists (they then describe no shown image).
        if kept:
            setattr(processed, name, kept)
    return len(rejected)
