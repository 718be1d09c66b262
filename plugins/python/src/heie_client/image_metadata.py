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
        """Compact JSON in a fixed key order. The score is the wire's float32 written as its shortest
        decimal (what Rust's serde_json writes for an f32), so both writers produce the same text."""
        if self.mode not in ("trained", "zero_shot"):
            raise ValueError(f"mode must be 'trained' or 'zero_shot', not {self.mode!r}")
        score = float(str(np.float32(self.score)))
        summary = " ".join(self.summary.split())  # one line, whatever the model wrote
        payload = {"score": score, "mode": self.mode, "summary": summary, "version": FORMAT_VERSION}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


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
        raw = next((body[len(_JPEG_COMMENT_PREFIX):] for m, body in head if _is_heie_comment(m, body)), None)
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
    return kind in (b"iTXt", b"tEXt", b"zTXt") and body.split(b"\x00", 1)[0] == KEY.encode()


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
    """The (marker, payload) segments between SOI and the first SOS, and the offset of that SOS."""
    segments = []
    pos = 2
    while True:
        if pos + 4 > len(data):
            raise MetadataError("JPEG truncated before its image data (no SOS marker)")
        if data[pos] != 0xFF:
            raise MetadataError(f"JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xDA:
            return segments, pos
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:
            raise MetadataError(f"JPEG: unexpected marker 0xFF{marker:02X} before the image data")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise MetadataError("JPEG truncated: a segment runs past the end of the file")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length


def _is_heie_comment(marker: int, body: bytes) -> bool:
    return marker == 0xFE and body.startswith(_JPEG_COMMENT_PREFIX)


def _jpeg_with_record(data: bytes, text: str) -> bytes:
    head, sos = _jpeg_segments(data)
    payload = _JPEG_COMMENT_PREFIX + text.encode("utf-8")
    if len(payload) + 2 > 0xFFFF:
        raise MetadataError("the heie record does not fit one JPEG comment segment (64 KiB)")
    kept = [(m, b) for m, b in head if not _is_heie_comment(m, b)]
    at = 0
    while at < len(kept) and 0xE0 <= kept[at][0] <= 0xEF:
        at += 1
    kept.insert(at, (0xFE, payload))
    out = [b"\xff\xd8"]
    out += [bytes([0xFF, m]) + struct.pack(">H", len(b) + 2) + b for m, b in kept]
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
    if any(not _XMP_DATA.search(body) for body in xmp):
        raise MetadataError("WebP already carries XMP metadata of its own; heie does not replace it")
    chunks = [(f, b) for f, b in chunks if f != b"XMP "]
    first = chunks[0][0]
    if first == b"VP8X":
        header = bytearray(chunks[0][1])
        header[0] |= 0x04  # XMP flag
        chunks[0] = (b"VP8X", bytes(header))
    elif first in (b"VP8 ", b"VP8L"):
        width, height, alpha = _webp_canvas(first, chunks[0][1])
        flags = 0x04 | (0x10 if alpha else 0)
        canvas = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
        chunks.insert(0, (b"VP8X", bytes([flags, 0, 0, 0]) + canvas))
    else:
        raise MetadataError(f"WebP: unexpected first chunk {first!r}")
    chunks.append((b"XMP ", _xmp_packet(text)))
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


__all__ = ["HeieRecord", "MetadataError", "KEY", "detect_format", "read_heie_metadata", "write_heie_metadata"]
