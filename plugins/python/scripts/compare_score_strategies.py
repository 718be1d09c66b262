"""Measures heie-score's two ways of calling the server on one folder: one Evaluate call per image with
N in flight, and EvaluateBatch calls (re-sent one image per call when the server refuses the batch).

    python plugins/python/scripts/compare_score_strategies.py --bin target/debug/heie --images 32 --corrupt 1

Starts its own ``heie serve`` on the fixture model (1 llama.cpp thread: its workers spin-wait), makes
the images with Pillow, runs each strategy ``--repeat`` times and prints images/s (median).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
# This checkout's client and the plugins' test helpers, whatever heie-client is installed.
sys.path[:0] = [str(REPO / "plugins" / "python" / "src"), str(REPO / "tests" / "python")]

from heie_process import fixture_model_args, start_serve  # noqa: E402  (tests/python/heie_process.py)
from heie_client.cli import main as heie_score  # noqa: E402


def make_folder(root: Path, count: int, corrupt: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(root / f"img{i:03d}.png")
    for i in range(corrupt):
        (root / f"img{i * 16:03d}-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, required=True)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--corrupt", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_folder(folder, args.images, args.corrupt)
        log = Path(tmp) / "serve.log"
        serve_args = ["--addr", "127.0.0.1:0", *fixture_model_args(), "--threads", "1", "--max-tiles", "1",
                      "--parallel", str(args.parallel), "--shutdown-grace", "1"]
        server = start_serve(serve_args, log, binary=args.bin)
        try:
            address = server.address
            strategies = {
                "one call per image, 1 in flight": ["--jobs", "1"],
                f"one call per image, {args.parallel} in flight": ["--jobs", str(args.parallel)],
                f"one call per image, {2 * args.parallel} in flight": ["--jobs", str(2 * args.parallel)],
                "EvaluateBatch of 16 (per image when refused)": ["--batch", "16", "--jobs", str(args.parallel)],
            }
            total = args.images + args.corrupt
            for name, flags in strategies.items():
                rates = []
                for _ in range(args.repeat):
                    started = time.monotonic()
                    with contextlib.redirect_stderr(sink := io.StringIO()):
                        code = heie_score([str(folder), "--address", address, "--out", str(Path(tmp) / "s.csv"),
                                           "--max-tokens", str(args.max_tokens), "--no-progress", *flags])
                    rates.append(total / (time.monotonic() - started))
                    if code != (1 if args.corrupt else 0):
                        raise SystemExit(f"heie-score exited {code}:\n{sink.getvalue()}")
                print(f"{name:48s} {statistics.median(rates):6.2f} images/s  (runs: {', '.join(f'{r:.2f}' for r in rates)})")
        finally:
            server.stop(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
