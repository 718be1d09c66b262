"""The rows ``heie-score`` writes (CSV or JSON Lines), and reading them back for ``--resume``."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, TextIO

from .folder_scoring import FileVerdict
from .verdict_rules import CATEGORIES, worst_severities

#: Per region category, the highest severity of its regions ('' when the image has none of that kind):
#: what ``heie calibrate --labels`` reads.
SEVERITY_FIELDS = tuple(f"severity_{name}" for name in CATEGORIES)
FIELDS = (
    "file", "score", "band", "uncalibrated_score", "mode", "finish_reason", "rejected_by", "regions", "summary", "error",
    *SEVERITY_FIELDS,
)
FORMATS = ("csv", "jsonl")


def verdict_row(folder: Path, verdict: FileVerdict, extra_error: str = "", rejected_by: Iterable[str] = ()) -> dict[str, str]:
    """One row: the file relative to ``folder``, its score and summary, or the error that stopped it.

    ``rejected_by``: why the image is rejected (``score`` for the score threshold, else the region
    categories of ``--reject-if`` it broke), written ``;``-separated."""
    result = verdict.result
    error = "; ".join(e for e in (verdict.error, extra_error) if e)
    row = {name: "" for name in FIELDS}
    row["file"] = verdict.path.relative_to(folder).as_posix()
    row["error"] = error
    if result is None:
        return row
    row["score"] = f"{result.score:.6f}" if result.score is not None else ""
    row["band"] = result.band
    raw = result.scores[0].uncalibrated_score if result.scores else None
    row["uncalibrated_score"] = f"{raw:.6f}" if raw is not None else ""
    for name, severity in worst_severities(result.regions).items():
        row[f"severity_{name}"] = f"{severity:.6f}"
    row["rejected_by"] = ";".join(rejected_by)
    row["mode"] = result.mode.name.lower()
    row["finish_reason"] = result.finish_reason.name.lower()
    row["regions"] = ";".join(
        f"{b.label or 'region'}@{b.pixel_x1},{b.pixel_y1},{b.pixel_x2},{b.pixel_y2}" for b in result.boxes
    )
    row["summary"] = result.summary
    if not row["error"] and not result.ok:
        row["error"] = result.error or f"no score (finished: {row['finish_reason']})"
    return row


def row_ok(row: dict[str, str]) -> bool:
    return bool(row.get("score")) and not row.get("error")


class RowWriter:
    """Writes rows to ``out`` as CSV (with a header unless appending) or as one JSON object a line."""

    def __init__(self, out: TextIO, fmt: str, header: bool = True) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
        self._out = out
        self._csv: Optional[csv.DictWriter[str]] = None
        if fmt == "csv":
            self._csv = csv.DictWriter(out, fieldnames=FIELDS, extrasaction="ignore", restval="")
            if header:
                self._csv.writeheader()

    def write(self, row: dict[str, str]) -> None:
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self._out.write(json.dumps(_typed(row), ensure_ascii=False) + "\n")
        self._out.flush()  # a crash keeps every finished row, for --resume


def _typed(row: dict[str, str]) -> dict[str, object]:
    typed: dict[str, object] = {name: row.get(name, "") for name in FIELDS}
    for name in ("score", "uncalibrated_score", *SEVERITY_FIELDS):
        typed[name] = float(row[name]) if row.get(name) else None
    return typed


def read_rows(path: Path, fmt: str) -> list[dict[str, str]]:
    """The rows of an earlier run's output (CSV or JSON Lines); a last line cut by a crash is dropped."""
    text = path.read_text(encoding="utf-8")
    if fmt == "csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or "file" not in reader.fieldnames:
            raise ValueError(f"{path} is not a heie-score CSV (no 'file' column)")
        return [{k: v or "" for k, v in row.items() if k is not None} for row in reader if row.get("file")]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(text.splitlines()):
                break
            raise ValueError(f"{path}:{number}: not JSON: {err}") from err
        if isinstance(value, dict) and value.get("file"):
            rows.append({k: "" if v is None else str(v) for k, v in value.items()})
    return rows


def rewrite_rows(path: Path, fmt: str, rows: Iterable[dict[str, str]]) -> None:
    """Replaces ``path`` with just ``rows`` (atomically), so a resumed run appends after them."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            writer = RowWriter(out, fmt)
            for row in rows:
                writer.write(row)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["FIELDS", "FORMATS", "SEVERITY_FIELDS", "RowWriter", "read_rows", "rewrite_rows", "row_ok", "verdict_row"]
