"""``heie-score FOLDER``: scores every image of a folder and writes one row per file (CSV or JSON Lines).

A file that cannot be scored (corrupt, truncated, unreadable) gets a row with its error and the exit
status becomes 1; the other files are scored as usual. An image is rejected (bucket "bad") when its
score is below LOW (default 13/24, the lower edge of the "typical" band) or, with ``--reject-if
hand>0.5,text>0.3``, when one of its regions of a named category is more severe than the limit; the
``rejected_by`` column says why. Optionally writes the verdict into each image (``--write-metadata``),
sorts the images into bad/ok/good folders (``--sort-into``), saves heatmap overlays (``--overlays``)
and continues an interrupted run (``--resume``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, TextIO

from .client import DEFAULT_ADDRESS, Client
from .errors import HeieError
from .events import HeadsMode, HeatmapEncoding
from .folder_scoring import FATAL_ERRORS, FileVerdict, find_images, score_files
from .image_metadata import HeieRecord, MetadataError, write_heie_metadata
from .options import EvaluateOptions
from .progress import ProgressBar
from .result import Result
from .score_table import FIELDS, FORMATS, RowWriter, read_rows, rewrite_rows, row_ok, verdict_row
from .sorting import BUCKETS, Thresholds, place_into
from .verdict_rules import DEFAULT_REJECT_BELOW, RuleError, format_rules, parse_reject_if, rejected_categories

#: Scores below LOW are "bad" (rejected), below HIGH "ok", the rest "good".
DEFAULT_THRESHOLDS = Thresholds(DEFAULT_REJECT_BELOW, 0.7)

CSV_FIELDS = FIELDS


@dataclass
class RunTally:
    """Counts for the closing summary line."""

    scored: int = 0
    failed: int = 0
    skipped: int = 0
    score_sum: float = 0.0
    buckets: dict[str, int] = field(default_factory=lambda: {b: 0 for b in BUCKETS})
    by_region_rules: int = 0
    """Rejected by ``--reject-if`` although the score alone would have kept them."""


@dataclass(frozen=True)
class AfterScoring:
    """What to do with each scored file besides writing its row."""

    folder: Path
    thresholds: Thresholds
    overlays: Optional[Path] = None
    write_metadata: bool = False
    sort_into: Optional[Path] = None
    move: bool = False
    reject_if: Mapping[str, float] = field(default_factory=dict)
    """``--reject-if``: region category → the severity above which the image is rejected."""

    def rejected_by(self, result: Optional[Result]) -> list[str]:
        """Why a scored image is rejected: ``score`` (below LOW) and the categories whose rule one of its
        regions breaks; [] when it is kept or has no score."""
        if result is None or result.score is None:
            return []
        reasons = ["score"] if result.score < self.thresholds.low else []
        return reasons + rejected_categories(result.regions, self.reject_if)

    def bucket(self, result: Result) -> str:
        """bad when rejected for any reason, else ok or good by score."""
        assert result.score is not None
        return "bad" if self.rejected_by(result) else self.thresholds.bucket(result.score)

    def apply(self, verdict: FileVerdict) -> str:
        """Runs the extra steps for one scored file; returns what went wrong ('' when nothing did)."""
        result = verdict.result
        if result is None or result.score is None or not verdict.ok:
            return ""
        relative = verdict.path.relative_to(self.folder)
        try:
            if self.overlays is not None and result.overlay_png is not None:
                target = self.overlays / relative.with_suffix(".heie.png")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(result.overlay_png)
            if self.write_metadata:
                write_heie_metadata(verdict.path, _record(result.score, result.mode, result.summary))
            if self.sort_into is not None:
                bucket = self.sort_into / self.bucket(result) / relative.parent
                place_into(verdict.path, bucket, self.move)
        except (OSError, MetadataError, ValueError) as err:
            return f"scored, but {err}"
        return ""


def _record(score: float, mode: HeadsMode, summary: str) -> HeieRecord:
    if mode not in (HeadsMode.TRAINED, HeadsMode.ZERO_SHOT):
        raise MetadataError(f"the server did not say which heads scored it (mode {mode.name})")
    return HeieRecord(score=score, mode=mode.name.lower(), summary=summary)


def score_folder(
    client: Client,
    folder: Path,
    out: TextIO,
    files: Sequence[Path],
    after: AfterScoring,
    options: EvaluateOptions,
    jobs: int,
    batch_size: int = 0,
    fmt: str = "csv",
    header: bool = True,
    progress: Optional[ProgressBar] = None,
    tally: Optional[RunTally] = None,
) -> RunTally:
    """Scores ``files`` (all under ``folder``), writing one row per file to ``out`` as each is done."""
    tally = tally or RunTally()
    writer = RowWriter(out, fmt, header)

    def on_done(verdict: FileVerdict) -> None:
        if progress is not None:
            progress.update(failed=not verdict.ok)

    for verdict in score_files(client, files, options, jobs, batch_size, on_done):
        rejected_by = after.rejected_by(verdict.result) if verdict.ok else []
        row = verdict_row(folder, verdict, after.apply(verdict), rejected_by)
        writer.write(row)
        if row_ok(row):
            score = float(row["score"])
            tally.scored += 1
            tally.score_sum += score
            tally.buckets["bad" if rejected_by else after.thresholds.bucket(score)] += 1
            tally.by_region_rules += bool(rejected_by) and "score" not in rejected_by
        else:
            tally.failed += 1
    return tally


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heie-score", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of PNG/JPEG/WebP images")
    parser.add_argument("--out", type=Path, help="file to write the rows to (default: standard output)")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="csv (default) or jsonl (one JSON object a line)")
    parser.add_argument("--resume", action="store_true", help="keep the scored rows already in --out and score only the other files")
    parser.add_argument("--overlays", type=Path, help="folder for heatmap overlays (NAME.heie.png)")
    parser.add_argument("--write-metadata", action="store_true",
                        help="write the score, mode and a one-line summary into each image (PNG iTXt, JPEG comment, WebP XMP; key 'heie')")
    parser.add_argument("--sort-into", type=Path, metavar="DIR", help="copy each scored image into DIR/bad, DIR/ok or DIR/good")
    parser.add_argument("--thresholds", metavar="LOW,HIGH",
                        help="score < LOW is bad (rejected), < HIGH ok, else good (default 0.5417,0.7: LOW = 13/24, the "
                             "lower edge of the 'typical' band, so what people rated flawed or worse is rejected)")
    parser.add_argument("--reject-if", default="", metavar="RULES",
                        help="also reject (bad) an image when one of its regions of a category is more severe than the "
                             "limit, e.g. hand>0.5,text>0.3 (categories: hand face body text object physics background "
                             "other, or any>N for all); the rejected_by column names what rejected it")
    parser.add_argument("--move", action="store_true", help="with --sort-into: move the images instead of copying them")
    parser.add_argument("--address", action="append", help=f"server: host:port (gRPC), http(s)://host:port (HTTP API), a comma list, dns:///name:port or ipv4:a:p,b:q; repeatable (default {DEFAULT_ADDRESS})")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per call, i.e. per image unless --batch (default 600)")
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
    parser.add_argument("--jobs", type=int, default=0, help="images in flight (0 = twice the server's parallel slots)")
    parser.add_argument("--batch", type=int, default=0,
                        help="images per EvaluateBatch call instead of one call per image (0 = one per call); "
                             "a batch the server refuses as a whole is re-sent one image per call")
    parser.add_argument("--recursive", action="store_true", help="descend into subfolders")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    try:
        thresholds = Thresholds.parse(args.thresholds) if args.thresholds is not None else DEFAULT_THRESHOLDS
        reject_if = parse_reject_if(args.reject_if)
    except (ValueError, RuleError) as err:
        parser.error(f"--reject-if: {err}" if isinstance(err, RuleError) else str(err))
    if args.move and args.sort_into is None:
        parser.error("--move needs --sort-into DIR")
    if args.resume and args.out is None:
        parser.error("--resume needs --out FILE (the rows of the earlier run)")
    if args.jobs < 0 or args.batch < 0 or args.max_tokens < 0:
        parser.error("--jobs, --batch and --max-tokens must be >= 0")

    files = find_images(args.folder, args.recursive)
    if args.sort_into is not None:  # never score the sorted copies again
        sorted_root = args.sort_into.resolve()
        files = [f for f in files if sorted_root not in f.resolve().parents]
    tally = RunTally()
    header = True
    if args.resume and args.out.exists():
        try:
            kept = [row for row in read_rows(args.out, args.format) if row_ok(row)]
        except (OSError, ValueError) as err:
            print(f"heie-score: cannot resume from {args.out}: {err}", file=sys.stderr)
            return 2
        done = {row["file"] for row in kept}
        before = len(files)
        files = [f for f in files if f.relative_to(args.folder).as_posix() not in done]
        tally.skipped = before - len(files)
        rewrite_rows(args.out, args.format, kept)  # failed rows go: their files are tried again
        header = False

    encodings = (HeatmapEncoding.OVERLAY_PNG,) if args.overlays is not None else ()
    options = EvaluateOptions(explanation=not args.fast, max_tokens_per_section=args.max_tokens, heatmap_encodings=encodings)
    after = AfterScoring(args.folder, thresholds, args.overlays, args.write_metadata, args.sort_into, args.move, reject_if)
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

    started = time.monotonic()
    show_progress = args.progress if args.progress is not None else sys.stderr.isatty()
    progress: Optional[ProgressBar] = None
    try:
        with client:
            # Twice the server's slots: each slot has its next image queued while it finishes one
            # (measured on the fixture: 8.6-9.9 images/s with 8 calls in flight on 4 slots, 4.9-6.9
            # with 4, 4.8-7.2 with EvaluateBatch of 16; scripts/compare_score_strategies.py).
            jobs = args.jobs or 2 * max(1, client.info().limits.parallel_slots)
            progress = ProgressBar(len(files), sys.stderr) if show_progress and files else None
            if args.out is None:
                score_folder(client, args.folder, sys.stdout, files, after, options, jobs, args.batch, args.format, header, progress, tally)
            else:
                mode = "a" if args.resume else "w"
                with args.out.open(mode, newline="", encoding="utf-8") as out:
                    score_folder(client, args.folder, out, files, after, options, jobs, args.batch, args.format, header, progress, tally)
    except FATAL_ERRORS as err:
        _close(progress)
        print(f"heie-score: {err}", file=sys.stderr)
        print(f"heie-score: stopped; {tally.scored} row(s) written before the server became unusable", file=sys.stderr)
        return 2
    except HeieError as err:  # e.g. GetInfo refused
        _close(progress)
        print(f"heie-score: {err}", file=sys.stderr)
        return 2
    _close(progress)
    print(summary_line(tally, thresholds, time.monotonic() - started, reject_if), file=sys.stderr)
    if tally.failed:
        where = f"the error column of {args.out}" if args.out is not None else "the error column"
        print(f"heie-score: {tally.failed} file(s) failed; see {where}", file=sys.stderr)
    return 1 if tally.failed else 0


def summary_line(tally: RunTally, thresholds: Thresholds, seconds: float, reject_if: Mapping[str, float] = {}) -> str:
    """e.g. ``heie-score: 6 files this run · 5 scored, mean score 0.412 (bad 2, ok 1, good 2 at 0.542/0.7) · 1 failed · 4.1 s, 1.46 images/s``."""
    total = tally.scored + tally.failed
    parts = [f"heie-score: {total} file{'s' if total != 1 else ''} this run"]
    if tally.scored:
        mean = tally.score_sum / tally.scored
        buckets = ", ".join(f"{name} {tally.buckets[name]}" for name in BUCKETS)
        parts.append(f"{tally.scored} scored, mean score {mean:.3f} ({buckets} at {thresholds.low:.3g}/{thresholds.high:.3g})")
        if reject_if:
            parts.append(f"{tally.by_region_rules} rejected by {format_rules(reject_if)} alone")
    if tally.failed:
        parts.append(f"{tally.failed} failed")
    if tally.skipped:
        parts.append(f"{tally.skipped} already scored (--resume)")
    rate = f", {total / seconds:.2f} images/s" if seconds > 0 and total else ""
    parts.append(f"{seconds:.1f} s{rate}")
    return " · ".join(parts)


def _close(progress: Optional[ProgressBar]) -> None:
    if progress is not None:
        progress.close()


if __name__ == "__main__":
    sys.exit(main())
