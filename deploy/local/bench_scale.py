"""Scale-out benchmark (not a test): images/s with 2 replicas vs 1, each `--threads 1`, 8 requests in
flight, max_tokens_per_section=160, through

- ``proxy``:  a real nginx in front (`heie bench --addr PROXY`),
- ``list``:   no proxy, the bench's clients spread over the replicas (`heie bench --addr A,B`),
- ``dns``:    no proxy, the Python client on `dns://DNSMASQ/name:port` (gRPC round_robin over what a real
              DNS server answers), 8 threads calling Client.evaluate.

Every mode runs ``--runs`` times, alternating 1 and 2 replicas so that load from other processes hits both
alike; it prints each run, the mean and median ratio per mode, and the 1-minute load average around each
run (this machine's other users count: a ratio measured under load says so).

    python3 deploy/local/bench_scale.py --bin target/release/heie --runs 3 --out scale-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import dnsmasq_server as local_dns  # noqa: E402
import replicas as local  # noqa: E402

MODELS = REPO / "tests" / "fixtures" / "models"
MODES = ("proxy", "list", "dns")


def serve_args(model: str, mmproj: str, parallel: int) -> list[str]:
    return ["--model", model, "--mmproj", mmproj, "--threads", "1", "--parallel", str(parallel),
            "--max-queue", "64", "--max-tokens", "160"]


def heie_bench(binary: Path, addresses: Sequence[str], in_flight: int, requests: int, max_tokens: int) -> dict[str, Any]:
    out = subprocess.run(
        [str(binary), "bench", "--addr", ",".join(addresses), "--parallel", str(in_flight),
         "--requests", str(requests), "--max-tokens", str(max_tokens), "--json"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"heie bench failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)[0]


def python_client_bench(target: str, in_flight: int, requests: int, max_tokens: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "plugins" / "python" / "src"))
    import numpy as np
    from heie_client import Client, EvaluateOptions

    options = EvaluateOptions(max_tokens_per_section=max_tokens, heatmap_size=(64, 48), seed=0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    with Client(target, timeout=600) as client:
        client.wait_until_serving(60)
        client.evaluate(images[0], options)  # warm-up: connections and the prefix cache
        started = time.monotonic()
        with ThreadPoolExecutor(in_flight) as pool:
            results = list(pool.map(lambda i: client.evaluate(images[i % len(images)], options), range(requests)))
        wall = time.monotonic() - started
    assert all(r.ok for r in results)
    return {"images_per_s": requests / wall, "wall_s": wall, "requests": requests}


def one_run(binary: Path, mode: str, replicas: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    hosts = [f"127.0.0.{2 + i}" for i in range(replicas)]
    port = local.shared_port(hosts) if mode == "dns" else 0
    binds = [f"{h}:{port}" for h in hosts] if mode == "dns" else None
    fleet = local.start_fleet(binary, replicas, serve_args(args.model, args.mmproj, args.slots), workdir,
                              proxy=mode == "proxy", binds=binds)
    dns: Optional[local_dns.DnsServer] = None
    try:
        load_before = os.getloadavg()[0]
        if mode == "proxy":
            assert fleet.proxy is not None
            row = heie_bench(binary, [fleet.proxy.address], args.in_flight, args.requests, args.max_tokens)
        elif mode == "list":
            row = heie_bench(binary, [r.address for r in fleet.replicas], args.in_flight, args.requests, args.max_tokens)
        else:
            dns = local_dns.start_dns("judges.heie.test", hosts, workdir / "dns")
            row = python_client_bench(dns.target("judges.heie.test", port), args.in_flight, args.requests, args.max_tokens)
        served = [r.evaluations_ok() for r in fleet.replicas]
        return {"mode": mode, "replicas": replicas, "images_per_s": row["images_per_s"], "wall_s": row["wall_s"],
                "served_per_replica": served, "load1_before": load_before, "load1_after": os.getloadavg()[0]}
    finally:
        if dns is not None:
            dns.stop()
        fleet.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=Path(os.environ.get("HEIE_BIN", REPO / "target" / "release" / "heie")))
    parser.add_argument("--model", default=str(MODELS / "tiny-llm.gguf"))
    parser.add_argument("--mmproj", default=str(MODELS / "tiny-mmproj.gguf"))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--slots", type=int, default=8, help="--parallel of each replica")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown modes {unknown}; choose from {MODES}")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="heie-scale-bench-") as tmp:
        for run in range(args.runs):
            for mode in modes:
                for replicas in (1, 2):
                    result = one_run(args.bin, mode, replicas, args, Path(tmp) / f"{mode}-{replicas}-{run}")
                    result["run"] = run
                    runs.append(result)
                    print(json.dumps(result), flush=True)
    summary = {}
    for mode in modes:
        ratios = []
        for run in range(args.runs):
            one = next(r for r in runs if r["mode"] == mode and r["run"] == run and r["replicas"] == 1)
            two = next(r for r in runs if r["mode"] == mode and r["run"] == run and r["replicas"] == 2)
            ratios.append(two["images_per_s"] / one["images_per_s"])
        summary[mode] = {"ratios": ratios, "mean": statistics.mean(ratios), "median": statistics.median(ratios)}
        print(f"{mode}: 2 vs 1 replica ratio mean {summary[mode]['mean']:.2f}, median {summary[mode]['median']:.2f} "
              f"({', '.join(f'{r:.2f}' for r in ratios)})", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"settings": vars(args) | {"bin": str(args.bin), "out": str(args.out)},
                                        "runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
