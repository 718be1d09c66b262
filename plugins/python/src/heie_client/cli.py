"""``heie-score FOLDER``: scores every image of a folder and writes a CSV (and optional overlays)."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from .client import DEFAULT_ADDRESS, Client
from .errors import HeieError
from .events import HeatmapEncoding
from .options import EvaluateOptions
from .result import Result

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
CSV_FIELDS = ("file", "score", "mode", "finish_reason", "regions", "summary")


def find_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files of ``folder`` (PNG, JPEG, WebP by suffix), sorted by path."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def score_folder(
    client: Client,
    folder: Path,
    out: TextIO,
    overlays: Optional[Path] = None,
    options: Optional[EvaluateOptions] = None,
    batch_size: int = 0,
    recursive: bool = False,
) -> int:
    """Writes one CSV row per image and returns how many images failed."""
    files = find_images(folder, recursive)
    encodings = (HeatmapEncoding.OVERLAY_PNG,) if overlays is not None else ()
    base = options or EvaluateOptions()
    options = EvaluateOptions(
        explanation=base.explanation,
        max_tokens_per_section=base.max_tokens_per_section,
        heatmap_encodings=encodings,
        temperature=base.temperature,
        seed=base.seed,
        max_tiles=base.max_tiles,
    )
    if overlays is not None:
        overlays.mkdir(parents=True, exist_ok=True)
    size = batch_size if batch_size > 0 else max(1, client.info().limits.max_batch)
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    failed = 0
    for start in range(0, len(files), size):
        chunk = files[start : start + size]
        for path, result in zip(chunk, client.evaluate_batch(chunk, options)):
            writer.writerow(_row(folder, path, result))
            failed += 0 if result.ok else 1
            if overlays is not None and result.overlay_png is not None:
                target = overlays / path.relative_to(folder).with_suffix(".heie.png")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(result.overlay_png)
        out.flush()
    return failed


def _row(folder: Path, path: Path, result: Result) -> dict[str, str]:
    return {
        "file": str(path.relative_to(folder)),
        "score": f"{result.score:.6f}" if result.score is not None else "",
        "mode": result.mode.name.lower(),
        "finish_reason": result.finish_reason.name.lower(),
        "regions": ";".join(f"{b.label or 'region'}@{b.pixel_x1},{b.pixel_y1},{b.pixel_x2},{b.pixel_y2}" for b in result.boxes),
        "summary": result.error or result.summary(300),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="heie-score", description=__doc__)
    parser.add_argument("folder", type=Path, help="folder of PNG/JPEG/WebP images")
    parser.add_argument("--out", type=Path, help="CSV file to write (default: standard output)")
    parser.add_argument("--overlays", type=Path, help="folder for heatmap overlays (NAME.heie.png)")
    parser.add_argument("--address", action="append", help=f"server host:port, repeatable (default {DEFAULT_ADDRESS})")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per batch call (default 600)")
    parser.add_argument(
        "--token",
        default=os.environ.get("HEIE_API_KEY") or None,
        help="API key of the server (--api-key), sent as a bearer token (default: $HEIE_API_KEY)",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS (implied by the options below)")
    parser.add_argument("--ca-cert", type=Path, help="PEM CA certificate that signed the server's certificate")
    parser.add_argument("--client-cert", type=Path, help="PEM client certificate for mutual TLS (with --client-key)")
    parser.add_argument("--client-key", type=Path, help="PEM private key of --client-cert")
    parser.add_argument("--fast", action="store_true", help="short analysis only (much faster)")
    parser.add_argument("--max-tokens", type=int, default=0, help="token cap per section (0 = server default)")
    parser.add_argument("--batch", type=int, default=0, help="images per call (0 = the server's max batch)")
    parser.add_argument("--recursive", action="store_true", help="descend into subfolders")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    options = EvaluateOptions(explanation=not args.fast, max_tokens_per_section=args.max_tokens)
    try:
        client = Client(
            args.address or DEFAULT_ADDRESS,
            timeout=args.timeout,
            token=args.token,
            tls=args.tls,
            ca_cert=args.ca_cert,
            client_cert=args.client_cert,
            client_key=args.client_key,
        )
    except ValueError as err:  # bad certificate files, a token over plaintext (InsecureTransport)
        print(f"heie-score: {err}", file=sys.stderr)
        return 2
    try:
        with client:
            if args.out is None:
                failed = score_folder(client, args.folder, sys.stdout, args.overlays, options, args.batch, args.recursive)
            else:
                with args.out.open("w", newline="", encoding="utf-8") as out:
                    failed = score_folder(client, args.folder, out, args.overlays, options, args.batch, args.recursive)
    except HeieError as err:
        print(f"heie-score: {err}", file=sys.stderr)
        return 2
    if failed:
        print(f"heie-score: {failed} image(s) failed; see the summary column", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
