"""What one generation (one WebUI processing object) remembers between its hooks: the client, each
judged image's verdict (or error) by image object and by its slot in the job, and the saved grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from heie_client import Client
from .settings import Settings
from .verdict import Verdict

Slot = tuple[int, int]
"""(batch number ``p.iteration``, position in the batch ``p.batch_index``): the WebUI builds each
image's infotext with these, so the infotext of image (n, i) reads the verdict of image (n, i)."""


@dataclass(frozen=True)
class Outcome:
    """A verdict, or the error code of an image that could not be judged."""

    verdict: Optional[Verdict] = None
    error: Optional[str] = None

    def infotext(self) -> dict[str, str]:
        if self.verdict is not None:
            return self.verdict.infotext()
        return {"HEIE error": self.error or "UNKNOWN"}


@dataclass(frozen=True)
class SavedFile:
    """An image saved this job that was not judged (a grid, a mask): its file, and the ``parameters``
    infotext it was saved with, which a grid rebuilt by discard is saved with again."""

    image: Any
    path: Path
    infotext: Optional[str]


class RunState:
    def __init__(self, settings: Settings, client_factory: Callable[[Settings], Client]) -> None:
        self.settings = settings
        self._factory = client_factory
        self._client: Optional[Client] = None
        self._client_settings: Optional[Settings] = None
        self._by_slot: dict[Slot, Outcome] = {}
        # The image is kept with its verdict so its id() cannot be reused while it is looked up.
        self._by_image: dict[int, tuple[Any, Verdict, int]] = {}
        self.saved_unjudged: list[SavedFile] = []
        self.judged = 0

    def client_for(self, settings: Settings) -> Client:
        """The job's client; a new one when the settings changed since (the WebUI reads them per image)."""
        self.settings = settings
        if self._client is None or self._client_settings != settings:
            self._client, self._client_settings = self._factory(settings), settings
        return self._client

    def record(self, slot: Slot, image: Any, outcome: Outcome, job_index: int) -> None:
        self._by_slot[slot] = outcome
        if outcome.verdict is not None:
            self._by_image[id(image)] = (image, outcome.verdict, job_index)

    def outcome_at(self, slot: Slot) -> Optional[Outcome]:
        return self._by_slot.get(slot)

    def verdict_for(self, image: Any) -> Optional[Verdict]:
        entry = self._by_image.get(id(image))
        return entry[1] if entry is not None and entry[0] is image else None

    def job_index_of(self, image: Any) -> Optional[int]:
        entry = self._by_image.get(id(image))
        return entry[2] if entry is not None and entry[0] is image else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # HTTP: every call has its own connection, so this frees nothing in flight
        self._client = None
