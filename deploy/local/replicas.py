"""Several `heie serve` replicas on this machine, optionally behind a real nginx (`grpc_pass` to an
upstream of all of them, HTTP/2 on loopback): what the scale-out test and bench start, and a way to try
scale-out by hand:

    python3 deploy/local/replicas.py --replicas 2 --model M.gguf --mmproj P.gguf -- --threads 1

prints the proxy's address and each replica's, and runs until Ctrl-C. Everything after ``--`` goes to
every `heie serve`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "python"))
from heie_process import ServeProcess, free_port, start_serve  # noqa: E402  (tests/python/heie_process.py)


def shared_port(hosts: Sequence[str]) -> int:
    """A TCP port free on every one of ``hosts`` (replicas behind one DNS name share the port)."""
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {list(hosts)}")


class Replica(ServeProcess):
    """One `heie serve` process (started by the shared helper), with the count the scale-out checks read."""

    def evaluations_ok(self) -> float:
        return self.metric('heie_requests_total{method="Evaluate",code="OK"}')

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        return super().stop(sig, timeout)


def start_replica(binary: Path, args: Sequence[str], log: Path, bind: str = "127.0.0.1:0") -> Replica:
    """Starts `heie serve ARGS` on ``bind`` (default: a free loopback port) and waits until it serves."""
    served = start_serve(["--addr", bind, "--metrics-addr", "127.0.0.1:0", *args], log, binary=binary)
    return Replica(served.process, served.address, served.log, served.metrics_address, served.http_address)


def nginx_binary() -> Path:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)
    if found is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx; .ci/setup does)")
    return Path(found)


def nginx_config(upstreams: Sequence[str], listen: str, workdir: Path) -> str:
    """An nginx config that proxies gRPC (HTTP/2 cleartext on ``listen``) to ``upstreams``, spreading
    calls (not connections) over them. A replica that refuses connections (stopped, or draining after
    its listener closed) is skipped for the next one; a call already answered cannot be moved."""
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=2s;" for u in upstreams)
    temp = "\n".join(f"    {kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root root;\n" if os.geteuid() == 0 else ""  # as root, workers would otherwise be 'nobody'
    return f"""{user}worker_processes 1;
daemon off;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log {workdir / 'access.log'};
{temp}
    upstream heie {{
{servers}
        keepalive 32;
    }}
    server {{
        listen {listen} http2;
        client_max_body_size 64m;
        location / {{
            grpc_pass grpc://heie;
            grpc_read_timeout 300s;
            grpc_send_timeout 300s;
            grpc_socket_keepalive on;
            # Connection failures move the call to the next replica; nothing else is retried here (the
            # client retries UNAVAILABLE itself, and a call that already streamed must not run twice).
            grpc_next_upstream error timeout non_idempotent;
            grpc_next_upstream_tries {len(upstreams)};
        }}
    }}
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    address: str
    workdir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish open streams
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nginx(upstreams: Sequence[str], workdir: Path) -> Nginx:
    """Starts nginx in the foreground with a generated config and waits until it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(upstreams, listen, workdir))
    log = workdir / "nginx.out"
    command = [str(nginx_binary()), "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = (workdir / "error.log").read_text(errors="replace") if (workdir / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{log.read_text(errors='replace')}{errors}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Nginx(process, listen, workdir)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("nginx did not start listening within 20 s")


@dataclass
class Fleet:
    """Replicas and, optionally, the proxy in front of them."""

    replicas: list[Replica] = field(default_factory=list)
    proxy: Optional[Nginx] = None

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for replica in self.replicas:
            replica.stop()


def start_fleet(
    binary: Path, count: int, serve_args: Sequence[str], workdir: Path, proxy: bool = True,
    binds: Optional[Sequence[str]] = None,
) -> Fleet:
    """``count`` replicas (on ``binds``, default free loopback ports) and, with ``proxy``, nginx."""
    fleet = Fleet()
    workdir.mkdir(parents=True, exist_ok=True)
    binds = list(binds) if binds is not None else ["127.0.0.1:0"] * count
    if len(binds) != count:
        raise ValueError(f"{len(binds)} bind addresses for {count} replicas")
    try:
        for i, bind in enumerate(binds):
            fleet.replicas.append(start_replica(binary, serve_args, workdir / f"replica-{i}.log", bind))
        if proxy:
            fleet.proxy = start_nginx([r.address for r in fleet.replicas], workdir / "nginx")
    except BaseException:
        fleet.stop()
        raise
    return fleet


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--bin", type=Path, default=Path(os.environ.get("HEIE_BIN", "target/release/heie")))
    parser.add_argument("--model", required=True)
    parser.add_argument("--mmproj", required=True)
    parser.add_argument("--no-proxy", action="store_true", help="replicas only (for client-side balancing)")
    parser.add_argument("--workdir", type=Path, default=Path("heie-replicas"))
    parser.add_argument("serve_args", nargs="*", help="after --: more `heie serve` flags for every replica")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    serve_args = ["--model", args.model, "--mmproj", args.mmproj, *args.serve_args]
    fleet = start_fleet(args.bin, args.replicas, serve_args, args.workdir.resolve(), proxy=not args.no_proxy)
    replicas = ",".join(r.address for r in fleet.replicas)
    print(f"replicas: {replicas}  (client-side: ipv4:{replicas})", flush=True)
    if fleet.proxy is not None:
        print(f"proxy: {fleet.proxy.address}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
