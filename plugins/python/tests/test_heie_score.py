"""``heie-score`` on a real folder (PNG, JPEG, WebP made with Pillow, one corrupt PNG, one truncated
JPEG) against the real ``heie serve`` on the fixture model: failed rows, exit status, metadata read back
by Pillow with unchanged pixels, sorting, --resume and the progress bar."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import HeieServer
from heie_client.cli import main as heie_score
from heie_client.sorting import Thresholds, place_into

GOOD_FILES = ("a.png", "b.jpg", "c.webp", "d.webp", "sub/e.png")
BAD_FILES = ("broken.png", "cut.jpg")
QUICK = ["--max-tokens", "2", "--fast"]


def _noise(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Five real images of three formats (one in a subfolder), a PNG whose compressed data is garbage
    and a JPEG cut in half."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_noise(40, 56, 3, 1)).save(root / "a.png")
    Image.fromarray(_noise(48, 32, 3, 2)).save(root / "b.jpg", quality=90)
    Image.fromarray(_noise(30, 44, 3, 3)).save(root / "c.webp", quality=80)
    Image.fromarray(_noise(36, 36, 4, 4)).save(root / "d.webp", lossless=True)
    Image.fromarray(_noise(28, 60, 4, 5), "RGBA").save(root / "sub" / "e.png")
    broken = bytearray((root / "a.png").read_bytes())
    idat = broken.index(b"IDAT")
    broken[idat + 4 : idat + 40] = b"\x00" * 36  # the zlib stream is destroyed, the chunk layout kept
    (root / "broken.png").write_bytes(bytes(broken))
    Image.fromarray(_noise(50, 50, 3, 6)).save(root / "cut.jpg", quality=90)
    whole = (root / "cut.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    return root


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


@pytest.mark.parametrize("calls", [[], ["--batch", "16"]], ids=["one-call-per-image", "batch-then-per-image"])
def test_corrupt_files_cost_one_row_each_and_the_exit_status(
    heie_server: HeieServer, folder: Path, tmp_path: Path, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    code = heie_score([str(folder), "--recursive", "--address", heie_server.address, "--out", str(out), *QUICK, *calls])
    assert code == 1, "a failed file makes the exit status 1"
    rows = _rows(out)
    assert sorted(rows) == sorted(GOOD_FILES + BAD_FILES)
    for name in GOOD_FILES:
        row = rows[name]
        assert row["error"] == "" and 0.0 <= float(row["score"]) <= 1.0, row
        assert row["band"] in ("badly flawed", "flawed", "typical", "good", "very plausible"), row
        assert row["mode"] == "zero_shot"
    for name in BAD_FILES:
        assert rows[name]["score"] == "" and "INVALID_ARGUMENT" in rows[name]["error"], rows[name]
    assert "truncated" in rows["cut.jpg"]["error"]
    err = capsys.readouterr().err
    assert "7 files this run · 5 scored, mean score" in err and "2 failed" in err, err
    assert "Some(" not in err and "ZeroShot" not in err


def test_metadata_is_written_and_images_sorted_without_changing_pixels(
    heie_server: HeieServer, folder: Path, tmp_path: Path
) -> None:
    before = {name: _pixels(folder / name) for name in GOOD_FILES}
    sorted_root = tmp_path / "sorted"
    out = tmp_path / "scores.csv"
    code = heie_score([str(folder), "--recursive", "--address", heie_server.address, "--out", str(out), *QUICK,
                       "--write-metadata", "--sort-into", str(sorted_root), "--thresholds", "0.3,0.6"])
    assert code == 1
    rows = _rows(out)
    thresholds = Thresholds(0.3, 0.6)
    for name in GOOD_FILES:
        score = float(rows[name]["score"])
        copy = sorted_root / thresholds.bucket(score) / name
        assert copy.is_file(), f"{name} ({score}) not in {thresholds.bucket(score)}/"
        for path in (folder / name, copy):
            assert np.array_equal(_pixels(path), before[name]), path
            with Image.open(path) as image:
                if path.suffix == ".png":
                    raw = image.text["heie"]
                elif path.suffix == ".jpg":
                    raw = image.info["comment"].decode().removeprefix("heie:")
                else:
                    xmp = image.info["xmp"].decode()
                    raw = xmp.split("<heie:data>")[1].split("</heie:data>")[0]
            record = json.loads(raw)
            assert set(record) == {"score", "mode", "summary", "version"}
            assert record["version"] == 1 and record["mode"] == "zero_shot"
            assert abs(record["score"] - score) < 1e-6 and "\n" not in record["summary"]
    placed = sorted(p.relative_to(sorted_root).as_posix() for p in sorted_root.rglob("*") if p.is_file())
    assert len(placed) == len(GOOD_FILES), "failed files are not sorted"
    assert not any("broken" in p or "cut" in p for p in placed)


def test_move_never_overwrites_and_sorted_files_are_not_rescored(
    heie_server: HeieServer, folder: Path, tmp_path: Path
) -> None:
    for name in BAD_FILES:
        (folder / name).unlink()
    # The sorted folder lives inside the scored one: its files must not be picked up again.
    sorted_root = folder / "sorted"
    for bucket in ("bad", "ok", "good"):
        (sorted_root / bucket).mkdir(parents=True)
        (sorted_root / bucket / "a.png").write_bytes(b"an earlier a.png")
    code = heie_score([str(folder), "--recursive", "--address", heie_server.address, "--out", str(tmp_path / "s.csv"),
                       *QUICK, "--sort-into", str(sorted_root), "--move"])
    assert code == 0
    assert not any((folder / name).exists() for name in GOOD_FILES), "moved away"
    assert sorted(_rows(tmp_path / "s.csv")) == sorted(GOOD_FILES)
    earlier = [p for p in sorted_root.rglob("a.png")]
    assert len(earlier) == 3 and all(p.read_bytes() == b"an earlier a.png" for p in earlier)
    assert len(list(sorted_root.rglob("a-1.png"))) == 1


def test_resume_keeps_scored_rows_and_retries_failed_ones(
    heie_server: HeieServer, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    flags = [str(folder), "--recursive", "--address", heie_server.address, "--out", str(out), *QUICK]
    assert heie_score(flags) == 1
    first = _rows(out)
    # Mark a kept row so a re-score would show; repair the broken PNG so its retry succeeds.
    first["a.png"]["score"] = "0.123456"
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(first["a.png"]))
        writer.writeheader()
        writer.writerows(first.values())
    shutil.copyfile(folder / "a.png", folder / "broken.png")
    Image.fromarray(_noise(20, 20, 3, 9)).save(folder / "new.png")
    capsys.readouterr()

    assert heie_score([*flags, "--resume"]) == 1, "cut.jpg still fails"
    second = _rows(out)
    assert second["a.png"]["score"] == "0.123456", "a scored file is not scored again"
    assert second["broken.png"]["error"] == "" and second["broken.png"]["score"] != ""
    assert second["new.png"]["error"] == ""
    assert "INVALID_ARGUMENT" in second["cut.jpg"]["error"]
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("file,score") and len(lines) == 1 + 8, "one header, one row per file"
    err = capsys.readouterr().err
    assert "3 files this run" in err and "5 already scored (--resume)" in err, err


def test_jsonl_rows_progress_bar_and_fatal_errors(
    heie_server: HeieServer, folder: Path, tmp_path: Path, dead_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.jsonl"
    code = heie_score([str(folder), "--address", heie_server.address, "--out", str(out), *QUICK, "--format", "jsonl",
                       "--progress"])
    assert code == 1
    rows = {row["file"]: row for row in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert sorted(rows) == ["a.png", "b.jpg", "broken.png", "c.webp", "cut.jpg", "d.webp"]
    assert rows["broken.png"]["score"] is None and "INVALID_ARGUMENT" in rows["broken.png"]["error"]
    assert isinstance(rows["a.png"]["score"], float)
    err = capsys.readouterr().err
    assert "6/6 100%" in err and "2 failed" in err, err

    assert heie_score([str(folder), "--address", dead_address, "--out", str(tmp_path / "x.csv")]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_bad_usage_is_refused_clearly(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flags, message in [
        (["--thresholds", "0.8,0.2"], "0 <= LOW <= HIGH <= 1"),
        (["--thresholds", "half"], "two numbers"),
        (["--move"], "--move needs --sort-into"),
        (["--resume"], "--resume needs --out"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            heie_score([str(folder), *flags])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_place_into_claims_free_names(tmp_path: Path) -> None:
    source = tmp_path / "x.png"
    target = tmp_path / "into"
    for n in range(3):
        source.write_bytes(bytes([n]))
        placed = place_into(source, target, move=False)
        assert placed.name == ("x.png", "x-1.png", "x-2.png")[n]
    assert [(target / name).read_bytes() for name in ("x.png", "x-1.png", "x-2.png")] == [b"\x00", b"\x01", b"\x02"]
    assert source.exists()
    place_into(source, target, move=True)
    assert not source.exists() and (target / "x-3.png").read_bytes() == b"\x02"
