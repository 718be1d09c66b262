"""The only place that touches ComfyUI. Every import of the host happens inside a method, i.e. only
while ComfyUI is running one of our nodes; outside ComfyUI the methods fall back to doing nothing."""

from __future__ import annotations

import html
import importlib
import os
from typing import Any, Optional


def _module(name: str) -> Optional[Any]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class ComfyHost:
    """Progress, progress text, interrupt, execution blocking and the preview folder for one node execution."""

    def __init__(self, node_id: Optional[str] = None) -> None:
        self.node_id = node_id
        self._bar: Any = None
        self._last_text: Optional[str] = None
        self._interrupt: Optional[BaseException] = None  # ComfyUI's interrupt, caught in a progress update

    def interrupted(self) -> bool:
        """True once the user pressed Cancel in ComfyUI (polled while a call runs)."""
        if self._interrupt is not None:
            return True
        mm = _module("comfy.model_management")
        return bool(mm is not None and mm.processing_interrupted())

    def raise_if_interrupted(self) -> None:
        """Raises ComfyUI's own interrupt exception, which ComfyUI reports as an interruption."""
        if self._interrupt is not None:
            raise self._interrupt
        mm = _module("comfy.model_management")
        if mm is not None:
            mm.throw_exception_if_processing_interrupted()

    def progress(self, value: int, total: int) -> None:
        """Moves the node's progress bar. ComfyUI's progress hook raises the interrupt (and clears
        ComfyUI's flag) from inside the update: it is kept here and raised by
        :meth:`raise_if_interrupted`, so that the node can first cancel its calls and say so on the node."""
        utils = _module("comfy.utils")
        if utils is None or not hasattr(utils, "ProgressBar"):
            return
        if self._bar is None:
            self._bar = utils.ProgressBar(total)
        mm = _module("comfy.model_management")
        interrupt = getattr(mm, "InterruptProcessingException", None)
        try:
            self._bar.update_absolute(value, total)
        except BaseException as err:
            if interrupt is None or not isinstance(err, interrupt):
                raise
            self._interrupt = err

    def text(self, text: str) -> None:
        """Shows ``text`` on the node (ComfyUI's progress text; the last one stays after the run).

        ComfyUI's frontend puts progress text into the page as HTML (line breaks and links added), and
        the explanation is model output: it is escaped so that it shows as text and never runs as markup."""
        server = _module("server")
        instance = getattr(getattr(server, "PromptServer", None), "instance", None)
        send = getattr(instance, "send_progress_text", None)
        if send is None or self.node_id is None or not text or text == self._last_text:
            return  # an empty frame blanks the node; a repeated one is wasted traffic
        self._last_text = text
        send(html.escape(text, quote=False), self.node_id)

    def preview_folder(self) -> Optional[str]:
        """ComfyUI's temp folder, where preview images go (served as ``type`` "temp"); None outside."""
        paths = _module("folder_paths")
        folder = getattr(paths, "get_temp_directory", None)
        return folder() if folder is not None else None

    def log_folder(self) -> str:
        """Where the local server of the address "auto" writes its log: ``heie`` in ComfyUI's user folder
        (beside the user's settings and workflows); '' outside ComfyUI (heie_client's default folder)."""
        paths = _module("folder_paths")
        folder = getattr(paths, "get_user_directory", None)
        return os.path.join(folder(), "heie") if folder is not None else ""

    def blocker(self) -> Optional[Any]:
        """ComfyUI's ExecutionBlocker, which silently skips the nodes fed by an output; None outside."""
        graph = _module("comfy_execution.graph")
        blocker = getattr(graph, "ExecutionBlocker", None)
        return blocker(None) if blocker is not None else None
