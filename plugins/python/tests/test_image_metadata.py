"""The ``heie`` record written into real PNG/JPEG/WebP files made by Pillow, read back by Pillow,
with the decoded pixels compared before and after."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from heie_client.image_metadata import HeieRecord, MetadataError, f32_json, read_heie_metadata, write_heie_metadata

RECORD = HeieRecord(score=0.254, mode="zero_shot", summary='The left hand has "six" fingers <b> & an\nextra thumb — ünïcode')
EXPECTED_JSON = (
    '{"score":0.254,"mode":"zero_shot","summary":"The left hand has \\"six\\" fingers <b> & an extra thumb — ünïcode",'
    '"version":1}'
)


def _noise(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))


def _png_chunk_types(path: Path) -> list[bytes]:
    data = path.read_bytes()
    pos, types = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        types.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return types


def _webp_chunk_types(path: Path) -> list[bytes]:
    data = path.read_bytes()
    pos, types = 12, []
    while pos < len(data):
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        types.append(data[pos : pos + 4])
        pos += 8 + size + (size & 1)
    return types


def test_the_record_is_compact_json_with_the_float32_score_as_rust_writes_it() -> None:
    assert RECORD.to_json() == EXPECTED_JSON
    # 0.254 arrives over the wire as a float32 (0.2540000081…); it is written as the f32's shortest form.
    assert HeieRecord(float(np.float32(0.254)), "trained", "x").to_json().startswith('{"score":0.254,"mode":"trained"')
    with pytest.raises(ValueError, match="mode"):
        HeieRecord(0.5, "ZeroShot", "x").to_json()


def test_png_gets_one_uncompressed_itxt_before_idat_and_keeps_every_other_chunk(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a prompt, Steps: 20")  # what A1111 writes
    info.add_itxt("heie", '{"score":0.1}')  # an earlier verdict, to be replaced
    Image.fromarray(_noise(30, 41, 4, 1), "RGBA").save(path, pnginfo=info)
    before = _pixels(path)

    write_heie_metadata(path, RECORD)
    write_heie_metadata(path, RECORD)  # twice: still one record

    with Image.open(path) as image:
        image.verify()  # chunk CRCs
    with Image.open(path) as image:
        assert image.text["heie"] == EXPECTED_JSON
        assert image.text["parameters"] == "a prompt, Steps: 20"
    types = _png_chunk_types(path)
    assert types.count(b"iTXt") == 1 and types.index(b"iTXt") < types.index(b"IDAT")
    assert types[0] == b"IHDR" and types[-1] == b"IEND" and b"tEXt" in types
    assert np.array_equal(_pixels(path), before)
    assert read_heie_metadata(path) == json.loads(EXPECTED_JSON)


def test_jpeg_gets_a_comment_after_its_app_segments(tmp_path: Path) -> None:
    path = tmp_path / "b.jpg"
    exif = Image.Exif()
    exif[0x010E] = "image description"
    Image.fromarray(_noise(24, 33, 3, 2)).save(path, quality=85, exif=exif.tobytes(), comment=b"heie:{\"old\":1}")
    before = _pixels(path)
    original_scan = path.read_bytes()[path.read_bytes().index(b"\xff\xda") :]

    write_heie_metadata(path, RECORD)

    data = path.read_bytes()
    with Image.open(path) as image:
        assert image.info["comment"] == b"heie:" + EXPECTED_JSON.encode()
        assert image.getexif()[0x010E] == "image description"
        markers = [marker for marker, _ in image.applist]
    assert markers[:2] == ["APP0", "APP1"] and markers.count("COM") == 1
    assert data.index(b"\xff\xfe") > data.index(b"\xff\xe1"), "COM comes after the APPn segments"
    assert data.endswith(original_scan), "the entropy-coded data is copied byte for byte"
    assert np.array_equal(_pixels(path), before)


@pytest.mark.parametrize(
    "kind, channels, save",
    [
        ("lossy VP8", 3, {"quality": 80}),
        ("lossless VP8L with alpha", 4, {"lossless": True}),
        ("extended VP8X with EXIF", 3, {"quality": 80, "exif": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"}),
    ],
)
def test_webp_gets_an_xmp_chunk_in_an_extended_container(tmp_path: Path, kind: str, channels: int, save: dict) -> None:
    path = tmp_path / "c.webp"
    Image.fromarray(_noise(21, 38, channels, 3)).save(path, **save)
    before = _pixels(path)
    had = _webp_chunk_types(path)

    write_heie_metadata(path, HeieRecord(0.9, "trained", "fine"))
    write_heie_metadata(path, RECORD)

    with Image.open(path) as image:
        assert image.size == (38, 21), kind
        xmp = image.info["xmp"]
    assert b"<heie:data>" in xmp and b"&lt;b&gt; &amp;" in xmp, "the JSON is XML-escaped inside the packet"
    types = _webp_chunk_types(path)
    assert types[0] == b"VP8X" and types.count(b"XMP ") == 1
    assert all(t in types for t in had if t != b"VP8X"), "every original chunk is kept"
    assert np.array_equal(_pixels(path), before), kind
    assert read_heie_metadata(path) == json.loads(EXPECTED_JSON)


def test_webp_with_foreign_xmp_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "d.webp"
    Image.fromarray(_noise(16, 16, 3, 4)).save(path, quality=80, xmp=b"<x:xmpmeta>someone else's</x:xmpmeta>")
    original = path.read_bytes()
    with pytest.raises(MetadataError, match="XMP metadata of its own"):
        write_heie_metadata(path, RECORD)
    assert path.read_bytes() == original


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.png", b"just text", "not a PNG, JPEG or WebP"),
        ("cut.png", None, "truncated"),
        ("cut.jpg", None, "truncated"),
    ],
)
def test_broken_files_are_refused_and_left_alone(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    if content is None:
        Image.fromarray(_noise(20, 20, 3, 5)).save(path)
        content = path.read_bytes()[:60] if name.endswith(".png") else path.read_bytes()[:20]
    path.write_bytes(content)
    with pytest.raises(MetadataError, match=message):
        write_heie_metadata(path, RECORD)
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == [name], "no temporary file left behind"


def test_file_permissions_survive_the_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "e.png"
    Image.fromarray(_noise(8, 8, 3, 6)).save(path)
    path.chmod(0o640)
    write_heie_metadata(path, RECORD)
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(
    "value, text",
    [(0.254, "0.254"), (1.0, "1.0"), (0.0, "0.0"), (0.5, "0.5"), (0.00001, "0.00001"), (1e-7, "1e-7"),
     (0.123456789, "0.12345679"), (1e13, "1e13")],
)
def test_scores_are_written_in_serde_json_float32_layout(value: float, text: str) -> None:
    # serde_json writes an f32 with ryu: shortest digits, "0.00001" down to 1e-6, then "1e-7" (Python's
    # own repr would say 1e-05 and 1e-07).
    assert f32_json(value) == text


def test_jpeg_fill_bytes_and_standalone_markers_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "fill.jpg"
    Image.fromarray(_noise(16, 16, 3, 7)).save(path, quality=90)
    data = path.read_bytes()
    dqt = data.index(b"\xff\xdb")
    padded = data[:dqt] + b"\xff\xff" + data[dqt:]  # fill bytes before DQT
    path.write_bytes(padded)
    before = _pixels(path)
    write_heie_metadata(path, RECORD)
    assert b"\xff\xff\xff\xdb" in path.read_bytes()
    assert np.array_equal(_pixels(path), before)


def test_webp_xmp_goes_after_the_image_data_and_before_unknown_chunks(tmp_path: Path) -> None:
    path = tmp_path / "tail.webp"
    Image.fromarray(_noise(12, 14, 3, 8)).save(path, quality=80)
    data = path.read_bytes()
    body = data[12:] + b"ZZZZ" + struct.pack("<I", 3) + b"abc\x00"  # an unknown chunk at the end
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body)
    write_heie_metadata(path, RECORD)
    assert _webp_chunk_types(path) == [b"VP8X", b"VP8 ", b"XMP ", b"ZZZZ"]


def test_python_writes_the_same_bytes_as_heie_eval_write_metadata(tmp_path: Path) -> None:
    """The Rust writer (``heie eval --write-metadata``) and this one, on the same files and record."""
    import subprocess

    from conftest import MODELS, _binary

    binary = str(_binary())
    usage = subprocess.run([binary, "eval", "--help"], capture_output=True, text=True, check=True).stdout
    if "--write-metadata" not in usage:
        pytest.skip(f"{binary} has no `eval --write-metadata` (a build before the Rust writer)")
    rust, python = tmp_path / "rust", tmp_path / "python"
    rust.mkdir()
    python.mkdir()
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"
    rgb, rgba = Image.fromarray(_noise(40, 52, 3, 11)), Image.fromarray(_noise(40, 52, 4, 12))
    for folder in (rust, python):
        rgb.save(folder / "a.png")
        rgba.save(folder / "b.png")
        rgb.save(folder / "c.jpg", quality=90, exif=exif)
        rgb.save(folder / "d.webp", quality=80)
        rgba.save(folder / "e.webp", lossless=True)
    names = sorted(p.name for p in rust.iterdir())
    subprocess.run(
        [binary, "eval", *[str(rust / n) for n in names], "--model", str(MODELS / "tiny-llm.gguf"),
         "--mmproj", str(MODELS / "tiny-mmproj.gguf"), "--threads", "1", "--max-tokens", "4", "--max-tiles", "1",
         "--write-metadata", "--out", str(tmp_path / "out")],
        capture_output=True, check=True, timeout=300,
    )
    for name in names:
        record = read_heie_metadata(rust / name)
        assert record is not None, name
        write_heie_metadata(python / name, HeieRecord(record["score"], record["mode"], record["summary"]))
        assert (python / name).read_bytes() == (rust / name).read_bytes(), name
