"""Sorting scored images into ``bad/``, ``ok/`` and ``good/`` folders without overwriting anything."""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

BUCKETS = ("bad", "ok", "good")
# How many "-N" suffixes are tried before giving up on a free name.
MAX_NAME_ATTEMPTS = 10_000


@dataclass(frozen=True)
class Thresholds:
    """Scores below ``low`` are bad, below ``high`` ok, the rest good."""

    low: float
    high: float

    @classmethod
    def parse(cls, text: str) -> "Thresholds":
        """Reads ``"0.4,0.7"``; both in [0, 1] and low <= high."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise ValueError(f"thresholds must be two numbers LOW,HIGH (e.g. 0.4,0.7), not {text!r}")
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"thresholds must be two numbers LOW,HIGH (e.g. 0.4,0.7), not {text!r}") from None
        if not (0.0 <= low <= high <= 1.0):
            raise ValueError(f"thresholds need 0 <= LOW <= HIGH <= 1, got {low},{high}")
        return cls(low, high)

    def bucket(self, score: float) -> str:
        if score < self.low:
            return "bad"
        if score < self.high:
            return "ok"
        return "good"


def place_into(source: Path, folder: Path, move: bool) -> Path:
    """Copies (or moves) ``source`` into ``folder`` under its own name, or ``NAME-1.EXT``, ``NAME-2.EXT``…
    when that is taken, and returns where it went. A name is claimed with an exclusive create, so two
    runs (or two files of the same name from subfolders) never overwrite each other."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _claim_free_name(folder, source.name)
    try:
        if move:
            try:
                os.replace(source, target)  # same file system: a rename over our own empty placeholder
                return target
            except OSError as err:
                if err.errno != errno.EXDEV:
                    raise
        shutil.copyfile(source, target)
        shutil.copystat(source, target)
        if move:
            source.unlink()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def _claim_free_name(folder: Path, name: str) -> Path:
    stem, suffix = os.path.splitext(name)
    for attempt in range(MAX_NAME_ATTEMPTS):
        candidate = folder / (name if attempt == 0 else f"{stem}-{attempt}{suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for {name} in {folder} after {MAX_NAME_ATTEMPTS} tries")


__all__ = ["BUCKETS", "Thresholds", "place_into"]
