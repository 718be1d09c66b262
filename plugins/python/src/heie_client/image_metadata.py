"""Writing the ``heie`` verdict into an image file without touching its pixels.

The record is the same one ``heie eval --write-metadata`` writes: key ``heie``, value the compact JSON
``{"score": …, "mode": "trained"|"zero_shot", "summary": "…", "version": 1}``, stored

- PNG: an uncompressed iTXt chunk with keyword ``heie``, just before the first IDAT;
- JPEG: a COM segment ``heie:`` + JSON, right after SOI and the APPn segments that follow it;
- WebP: an XMP chunk whose packet holds the JSON in a ``<heie:data>`` element; a simple (VP8/VP8L)
  file becomes an extended (VP8X) one to carry it. A WebP that already has XMP of its own is refused
  rather than have its metadata replaced (this writer keeps WebP simple: one XMP packet, ours).

Every other chunk or segment is kept byte for byte; an earlier ``heie`` record is replaced, never
duplicated. Files are rewritten atomically (a temporary file in the same folder, then a rename), so a
crash leaves the old file or the new one, never half of one. The parsers only walk the container
structure; compressed image data is copied as it is, which is why pixels cannot change.
"""

from __future__ import annotations

import html
import json
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

KEY = "heie"
FORMAT_VERSION = 1

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_COMMENT_PREFIX = b"heie:"
_XMP_NAMESPACE = "https://github.com/heie-server/heie/ns/1.0/"
_XMP_DATA = re.compile(rb"<heie:data>(.*?)</heie:data>", re.DOTALL)


class MetadataError(ValueError):
    """The file is not a PNG/JPEG/WebP this writer understands, or its structure is broken."""


@dataclass(frozen=True)
class HeieRecord:
    """What is written: the score, which machinery made it and a one-line summary."""

    score: float
    mode: str
    summary: str

    def to_json(self) -> str:
        """Compact JSON in a fixed key order, byte for byte what the Rust writer (serde_json) makes: the
        score is the wire's float32 written as its shortest decimal in ryu's layout, the summary one line
        (runs of Unicode white space, as Rust's ``split_whitespace`` sees it, become one space)."""
        if self.mode not in ("trained", "zero_shot"):
            raise ValueError(f"mode must be 'trained' or 'zero_shot', not {self.mode!r}")
        summary = " ".join(s for s in _WHITE_SPACE.split(self.summary) if s)
        return (
            f'{{"score":{f32_json(self.score)},"mode":{json.dumps(self.mode)},'
            f'"summary":{json.dumps(summary, ensure_ascii=False)},"version":{FORMAT_VERSION}}}'
        )


# Unicode White_Space, which Rust's split_whitespace uses (Python's str.split adds U+001C..U+001F).
_WHITE_SPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def f32_json(value: float) -> str:
    """``value`` as a float32 in serde_json's text (ryu's shortest round-trip digits and layout:
    ``0.254``, ``1.0``, ``0.00001``, ``1e-7``), so Python and Rust write the same bytes."""
    number = np.float32(value)
    if not np.isfinite(number):
        raise ValueError(f"score {value!r} is not a finite number")
    if number == 0:
        return "-0.0" if np.signbit(number) else "0.0"
    sign = "-" if number < 0 else ""
    mantissa, exponent = np.format_float_scientific(abs(number), unique=True, trim="-").split("e")
    digits = mantissa.replace(".", "")
    length = len(digits)
    kk = int(exponent) + 1  # 10^(kk-1) <= |value| < 10^kk
    k = kk - length  # |value| = digits * 10^k
    if 0 <= k and kk <= 13:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 13:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def write_heie_metadata(path: Union[str, os.PathLike[str]], record: HeieRecord) -> None:
    """Stores ``record`` in the image at ``path`` (PNG, JPEG or WebP, recognised by content)."""
    target = Path(path)
    data = target.read_bytes()
    text = record.to_json()
    kind = detect_format(data)
    if kind == "png":
        new = _png_with_record(data, text)
    elif kind == "jpeg":
        new = _jpeg_with_record(data, text)
    elif kind == "webp":
        new = _webp_with_record(data, text)
    else:
        raise MetadataError(f"{target}: not a PNG, JPEG or WebP file; no metadata written")
    _replace_atomically(target, new)


def read_heie_metadata(path: Union[str, os.PathLike[str]]) -> Optional[dict[str, object]]:
    """The ``heie`` record of an image, or None when it has none."""
    data = Path(path).read_bytes()
    kind = detect_format(data)
    raw: Optional[bytes] = None
    if kind == "png":
        raw = next((_itxt_text(body) for kind_, body in _png_chunks(data) if _is_heie_text_chunk(kind_, body)), None)
    elif kind == "jpeg":
        head, _ = _jpeg_segments(data)
        raw = next((seg.lstrip(b"\xff")[3 + len(_JPEG_COMMENT_PREFIX) :] for m, seg in head if _is_heie_comment(m, seg)), None)
    elif kind == "webp":
        for fourcc, body in _webp_chunks(data):
            match = _XMP_DATA.search(body) if fourcc == b"XMP " else None
            if match:
                raw = html.unescape(match.group(1).decode("utf-8")).encode("utf-8")
    else:
        raise MetadataError(f"{path}: not a PNG, JPEG or WebP file")
    if raw is None:
        return None
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, dict):
        raise MetadataError(f"{path}: the heie record is not a JSON object")
    return value


def detect_format(data: bytes) -> str:
    """'png', 'jpeg', 'webp' or '' from the file's first bytes."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return ""


# -- PNG ---------------------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, checking lengths against the file (CRCs are kept, not judged)."""
    chunks = []
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise MetadataError("PNG truncated inside a chunk header")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            raise MetadataError("PNG truncated: a chunk runs past the end of the file")
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos = end
        if chunks[-1][0] == b"IEND":
            break
    if not chunks or chunks[-1][0] != b"IEND":
        raise MetadataError("PNG truncated: no IEND chunk")
    return chunks


def _is_heie_text_chunk(kind: bytes, body: bytes) -> bool:
    return kind in (b"iTXt", b"tEXt", b"zTXt") and body.startswith(KEY.encode() + b"\x00")


def _itxt_text(body: bytes) -> Optional[bytes]:
    # keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
    keyword, rest = body.split(b"\x00", 1)
    if len(rest) < 2:
        return None
    compressed = rest[0] == 1
    _language, rest = rest[2:].split(b"\x00", 1)
    _translated, text = rest.split(b"\x00", 1)
    return zlib.decompress(text) if compressed else text


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_with_record(data: bytes, text: str) -> bytes:
    chunks = _png_chunks(data)
    if not any(kind == b"IDAT" for kind, _ in chunks):
        raise MetadataError("PNG has no IDAT chunk")
    itxt = _png_chunk(b"iTXt", KEY.encode() + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8"))
    # Copy the original chunk bytes (CRC included) rather than re-encoding them.
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    inserted = False
    for kind, body in chunks:
        raw = data[pos : pos + 12 + len(body)]
        pos += 12 + len(body)
        if _is_heie_text_chunk(kind, body):
            continue
        if kind == b"IDAT" and not inserted:
            out.append(itxt)
            inserted = True
        out.append(raw)
    out.append(data[pos:])  # anything after IEND stays where it was
    return b"".join(out)


# -- JPEG --------------------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The segments between SOI and the first SOS as (marker, raw bytes: fill bytes, marker, length,
    payload), and the offset of that SOS (fill bytes before it included)."""
    segments = []
    pos = 2
    while True:
        if pos >= len(data):
            raise MetadataError("JPEG truncated before its image data (no SOS marker)")
        if data[pos] != 0xFF:
            raise MetadataError(f"JPEG: no marker at byte {pos}")
        start = pos
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos + 1 >= len(data):
            raise MetadataError("JPEG truncated before its image data (no SOS marker)")
        marker = data[pos + 1]
        if marker == 0xDA:
            return segments, start
        if marker == 0xD9:
            raise MetadataError("JPEG has no image data (EOI before SOS)")
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM and RSTn stand alone
            segments.append((marker, data[start : pos + 2]))
            pos += 2
            continue
        if pos + 4 > len(data):
            raise MetadataError("JPEG truncated inside a segment header")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise MetadataError(f"JPEG truncated: segment 0xFF{marker:02X} runs past the end of the file")
        segments.append((marker, data[start:end]))
        pos = end


def _is_heie_comment(marker: int, raw: bytes) -> bool:
    return marker == 0xFE and raw.lstrip(b"\xff")[1 + 2 :].startswith(_JPEG_COMMENT_PREFIX)


def _jpeg_with_record(data: bytes, text: str) -> bytes:
    head, sos = _jpeg_segments(data)
    payload = _JPEG_COMMENT_PREFIX + text.encode("utf-8")
    if len(payload) + 2 > 0xFFFF:
        raise MetadataError("the heie record does not fit one JPEG comment segment (64 KiB)")
    comment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    leading_apps = 0
    while leading_apps < len(head) and 0xE0 <= head[leading_apps][0] <= 0xEF:
        leading_apps += 1
    out = [b"\xff\xd8"]
    out += [raw for _, raw in head[:leading_apps]]
    out.append(comment)
    out += [raw for marker, raw in head[leading_apps:] if not _is_heie_comment(marker, raw)]
    out.append(data[sos:])
    return b"".join(out)


# -- WebP --------------------------------------------------------------------------------------------


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    (riff_size,) = struct.unpack("<I", data[4:8])
    if riff_size + 8 > len(data):
        raise MetadataError("WebP truncated: shorter than its RIFF header says")
    end = riff_size + 8
    chunks = []
    pos = 12
    while pos < end:
        if pos + 8 > end:
            raise MetadataError("WebP truncated inside a chunk header")
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if pos + 8 + size > end:
            raise MetadataError("WebP truncated: a chunk runs past the end of the file")
        chunks.append((fourcc, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    if not chunks:
        raise MetadataError("WebP has no chunks")
    return chunks


def _webp_chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _webp_canvas(fourcc: bytes, body: bytes) -> tuple[int, int, bool]:
    """Width, height and 'has alpha' of a simple WebP's one image chunk."""
    if fourcc == b"VP8 ":
        if len(body) < 10 or body[3:6] != b"\x9d\x01\x2a":
            raise MetadataError("WebP: malformed VP8 frame header")
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    if fourcc == b"VP8L":
        if len(body) < 5 or body[0] != 0x2F:
            raise MetadataError("WebP: malformed VP8L header")
        (bits,) = struct.unpack("<I", body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    raise MetadataError(f"WebP: unknown image chunk {fourcc!r}")


def _xmp_packet(text: str) -> bytes:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:heie="{_XMP_NAMESPACE}">'
        f"<heie:data>{html.escape(text, quote=False)}</heie:data>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode("utf-8")


def _webp_with_record(data: bytes, text: str) -> bytes:
    chunks = _webp_chunks(data)
    xmp = [body for fourcc, body in chunks if fourcc == b"XMP "]
    if any(_XMP_NAMESPACE.encode() not in body for body in xmp):
        raise MetadataError("WebP already carries XMP metadata of its own; heie does not replace it")
    chunks = [(f, b) for f, b in chunks if f != b"XMP "]
    first = chunks[0][0]
    if first == b"VP8X":
        if len(chunks[0][1]) < 10:
            raise MetadataError("WebP: VP8X chunk shorter than 10 bytes")
        header = bytearray(chunks[0][1])
        header[0] |= 0x04  # XMP flag
        chunks[0] = (b"VP8X", bytes(header))
    elif first in (b"VP8 ", b"VP8L"):
        width, height, alpha = _webp_canvas(first, chunks[0][1])
        if width == 0 or height == 0:
            raise MetadataError("WebP canvas of zero size")
        flags = 0x04 | (0x10 if alpha else 0)
        canvas = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
        chunks.insert(0, (b"VP8X", bytes([flags, 0, 0, 0]) + canvas))
    else:
        raise MetadataError(f"WebP: unexpected first chunk {first!r}")
    # After the image data and EXIF, where the container spec orders XMP (unknown chunks may follow).
    image_or_exif = [i for i, (f, _) in enumerate(chunks) if f in (b"VP8 ", b"VP8L", b"ALPH", b"ANMF", b"EXIF")]
    at = image_or_exif[-1] + 1 if image_or_exif else len(chunks)
    chunks.insert(at, (b"XMP ", _xmp_packet(text)))
    body = b"WEBP" + b"".join(_webp_chunk(f, b) for f, b in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# -- files -------------------------------------------------------------------------------------------


def _replace_atomically(target: Path, data: bytes) -> None:
    mode = target.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".heie-tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["HeieRecord", "MetadataError", "KEY", "detect_format", "f32_json", "read_heie_metadata", "write_heie_metadata"]
