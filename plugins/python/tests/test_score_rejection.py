"""heie-score's rejection: the score threshold (default 13/24) and ``--reject-if`` region rules, the
bucket they give and the CSV columns that record them (``rejected_by``, ``severity_<category>``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, serving
from heie_client import Client, EvaluateOptions

from heie_client.cli import DEFAULT_THRESHOLDS, AfterScoring, main as heie_score
from heie_client.events import FinishReason, HeadsMode
from heie_client.folder_scoring import FileVerdict
from heie_client.score_table import FIELDS, SEVERITY_FIELDS, verdict_row
from heie_client.sorting import Thresholds
from heie_client.verdict_rules import DEFAULT_REJECT_BELOW, parse_reject_if


@dataclass
class Region:
    category: str
    severity: float


@dataclass
class Scored:
    """The parts of a ``Result`` that rejection reads (score, regions) and a row writes."""

    score: Optional[float]
    regions: tuple[Region, ...] = ()
    scores: tuple = ()
    mode: HeadsMode = HeadsMode.ZERO_SHOT
    finish_reason: FinishReason = FinishReason.COMPLETED
    boxes: tuple = ()
    summary: str = ""
    ok: bool = True
    error: str = ""
    band: str = "very plausible"


def test_the_default_threshold_is_the_lower_edge_of_typical():
    assert DEFAULT_THRESHOLDS == Thresholds(13 / 24, 0.7)
    assert DEFAULT_THRESHOLDS.low == DEFAULT_REJECT_BELOW


def test_a_region_rule_rejects_a_well_scored_image_and_says_which():
    after = AfterScoring(Path("."), Thresholds(0.5, 0.7), reject_if=parse_reject_if("hand>0.5,text>0.3"))
    clean = Scored(0.9, (Region("hand", 0.5), Region("face", 0.9)))
    assert after.rejected_by(clean) == [] and after.bucket(clean) == "good"
    handy = Scored(0.9, (Region("text", 0.31), Region("hand", 0.8)))
    assert after.rejected_by(handy) == ["text", "hand"] and after.bucket(handy) == "bad"
    low = Scored(0.4, (Region("hand", 0.8),))
    assert after.rejected_by(low) == ["score", "hand"]
    assert after.rejected_by(Scored(None)) == [] and after.rejected_by(None) == []


def test_rows_carry_the_worst_severity_per_category_and_the_reasons(tmp_path: Path):
    result = Scored(0.9, (Region("hand", 0.25), Region("hand", 0.75), Region("text", 0.5)))
    row = verdict_row(tmp_path, FileVerdict(tmp_path / "a.png", result), "", ["hand"])  # type: ignore[arg-type]
    assert set(SEVERITY_FIELDS) <= set(FIELDS) and "rejected_by" in FIELDS
    assert row["severity_hand"] == "0.750000" and row["severity_text"] == "0.500000" and row["severity_face"] == ""
    assert row["rejected_by"] == "hand" and row["score"] == "0.900000" and row["band"] == "very plausible"


@pytest.mark.parametrize("rule, says", [("hands>0.5", "not a region category"), ("hand>2", "below 1")])
def test_a_bad_rule_is_refused_with_the_flag_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str, says: str):
    with pytest.raises(SystemExit) as exit_info:
        heie_score([str(tmp_path), "--reject-if", rule])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--reject-if" in err and says in err, err


#: A chain of thought with a hand and a sign; the server's test-only hook feeds it to every evaluation,
#: because the random fixture model never writes grounding markup itself.
REFERENCE_COT = REPO / "tests" / "fixtures" / "reference-cot" / "hand-and-sign.txt"


@pytest.fixture(scope="module")
def grounding_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("heie-serve-reject-if")
    args = ["--addr", "127.0.0.1:0", "--max-tokens", "4", "--max-tiles", "1"]
    with serving(args, folder / "serve.log", {"HEIE_FAULT_REFERENCE_COT": str(REFERENCE_COT)}) as served:
        yield served


def test_reject_if_on_a_real_server_rejects_by_the_regions_it_sent(grounding_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for n in range(3):
        Image.fromarray(rng.integers(0, 256, (40 + 8 * n, 56, 3), dtype=np.uint8)).save(folder / f"i{n}.png")
    common = [str(folder), "--address", grounding_server.address, "--max-tokens", "4", "--thresholds", "0,1"]

    # Every image has a hand and a sign region: any hand severity above 0 rejects it, by hand alone.
    out = tmp_path / "hand.csv"
    assert heie_score([*common, "--reject-if", "hand>0", "--out", str(out), "--sort-into", str(tmp_path / "sorted")]) == 0
    rows = _rows(out)
    assert sorted(rows) == ["i0.png", "i1.png", "i2.png"]
    with Client(grounding_server.address, timeout=120) as client:
        for name, row in rows.items():
            result = client.evaluate(folder / name, EvaluateOptions(max_tokens_per_section=4))
            by_category = {r.category.name.lower(): r.severity for r in result.regions}
            assert set(by_category) == {"hand", "text"}, by_category
            assert row["rejected_by"] == "hand", row
            assert float(row["severity_hand"]) == pytest.approx(by_category["hand"], abs=1e-6)
            assert float(row["severity_text"]) == pytest.approx(by_category["text"], abs=1e-6)
            assert row["severity_face"] == "" and row["uncalibrated_score"] == ""
            assert (tmp_path / "sorted" / "bad" / name).is_file(), "rejected images sort into bad/"

    # No image has a face region: a face rule rejects nothing; both rules together name only the hand.
    out = tmp_path / "face.csv"
    assert heie_score([*common, "--reject-if", "face>0", "--out", str(out)]) == 0
    assert all(row["rejected_by"] == "" for row in _rows(out).values())
    out = tmp_path / "both.csv"
    assert heie_score([*common, "--reject-if", "face>0,hand>0.999", "--out", str(out)]) == 0
    assert all(row["rejected_by"] == "" for row in _rows(out).values()), "hand severities stay below 0.999"


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}
