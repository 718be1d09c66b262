"""heie-score's rejection: the score threshold (default 13/24) and ``--reject-if`` region rules, the
bucket they give and the CSV columns that record them (``rejected_by``, ``severity_<category>``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

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
    assert row["rejected_by"] == "hand" and row["score"] == "0.900000"


@pytest.mark.parametrize("rule, says", [("hands>0.5", "not a region category"), ("hand>2", "below 1")])
def test_a_bad_rule_is_refused_with_the_flag_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str, says: str):
    with pytest.raises(SystemExit) as exit_info:
        heie_score([str(tmp_path), "--reject-if", rule])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--reject-if" in err and says in err, err
