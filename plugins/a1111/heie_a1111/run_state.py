"""What one generation (one WebUI processing object) remembers between its hooks: the client, each
judged image's verdict (or error) by image object and by its slot in the job, and the saved grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from heie_client import Client
from .repair import RepairReport
from .settings import Settings
from .verdict import Verdict

Slot = tuple[int, int]
"""(batch number ``p.iteration``, position in the batch ``p.batch_index``): the WebUI builds each
image's infotext with these, so the infotext of image (n, i) reads the verdict of image (n, i)."""


@dataclass(frozen=True)
class Outcome:
    """A verdict (of the image kept, and what its repair did when it was repaired), or the error code and
    the sentence (what failed, what to change) of an image that could not be judged."""

    verdict: Optional[Verdict] = None
    error: Optional[str] = None
    message: str = ""
    repair: Optional[RepairReport] = None

    def infotext(self) -> dict[str, str]:
        """``HEIE error: CODE: sentence``: the code first for programs, then what the user can act on."""
        if self.verdict is not None:
            return {**self.verdict.infotext(), **(self.repair.infotext() if self.repair else {})}
        code = self.error or "UNKNOWN"
        return {"HEIE error": f"{code}: {self.message}" if self.message else code}

    def structured(self) -> dict[str, Any]:
        if self.verdict is not None:
            return {**self.verdict.structured(), **(self.repair.structured() if self.repair else {})}
        return {"error": self.error or "UNKNOWN", "message": self.message}


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
        self._job_index: dict[Slot, int] = {}
        # The image is kept with its verdict so its id() cannot be reused while it is looked up.
        self._by_image: dict[int, tuple[Any, Optional[Verdict], int]] = {}
        self.saved_unjudged: list[SavedFile] = []
        self.judged = 0
        self.tokens_refused: Optional[Exception] = None
        """Set when the tokens-per-section setting was refused: the job's later images are not sent."""
        self.limits_checked = False
        self.overlays: list[tuple[Any, bytes, int]] = []
        """(image, overlay PNG, job index) of each judged image, for the gallery when it shows them."""
        self.shown_overlays: dict[int, tuple[Any, int]] = {}
        """id → (overlay image, job index) of each overlay appended to the gallery."""

    def client_for(self, settings: Settings) -> Client:
        """The job's client; a new one when the settings changed since (the WebUI reads them per image)."""
        self.settings = settings
        if self._client is None or self._client_settings != settings:
            self._client, self._client_settings = self._factory(settings), settings
        return self._client

    def record(self, slot: Slot, image: Any, outcome: Outcome, job_index: int) -> None:
        self._by_slot[slot] = outcome
        self._job_index[slot] = job_index
        # An image that was not judged is kept too (verdict None): the gallery shows its error.
        self._by_image[id(image)] = (image, outcome.verdict, job_index)

    def outcome_at(self, slot: Slot) -> Optional[Outcome]:
        return self._by_slot.get(slot)

    def outcomes(self) -> list[tuple[int, Outcome]]:
        """(index in the job, outcome) of every image, in job order."""
        return sorted(((self._job_index[slot], outcome) for slot, outcome in self._by_slot.items()), key=lambda e: e[0])

    def verdict_for(self, image: Any) -> Optional[Verdict]:
        entry = self._by_image.get(id(image))
        return entry[1] if entry is not None and entry[0] is image else None

    def job_index_of(self, image: Any) -> Optional[int]:
        entry = self._by_image.get(id(image))
        return entry[2] if entry is not None and entry[0] is image else None

    def shown_job_index(self, image: Any) -> Optional[int]:
        """The job index of the image a gallery entry shows: a judged image itself, or its overlay."""
        index = self.job_index_of(image)
        if index is not None:
            return index
        entry = self.shown_overlays.get(id(image))
        return entry[1] if entry is not None and entry[0] is image else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # HTTP: every call has its own connection, so this frees nothing in flight
        self._client = None
