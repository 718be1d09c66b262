"""A real DNS server (dnsmasq, Debian's dnsmasq-base) on loopback that answers one name with several
addresses — what a Kubernetes headless Service does for its ready pods — so `dns://127.0.0.1:PORT/name:port`
client-side balancing can be shown and tested on one machine without touching /etc/hosts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass
class DnsServer:
    process: subprocess.Popen[bytes]
    address: str  # host:port of the server, the authority of a dns://AUTHORITY/name:port target

    def target(self, name: str, port: int) -> str:
        return f"dns://{self.address}/{name}:{port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int, name: str) -> int:
    """How many A records the server at 127.0.0.1:``port`` returns for ``name`` (0 on no answer)."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    query = struct.pack(">HHHHHH", 0x4845, 0x0100, 1, 0, 0, 0) + question
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        try:
            s.sendto(query, ("127.0.0.1", port))
            reply = s.recv(512)
        except OSError:
            return 0
    return struct.unpack(">H", reply[6:8])[0]


def start_dns(name: str, addresses: Sequence[str], workdir: Path) -> DnsServer:
    """Starts dnsmasq answering ``name`` with every one of ``addresses`` (and nothing else)."""
    binary = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)
    if binary is None:
        raise FileNotFoundError("dnsmasq is not installed (Debian: apt-get install dnsmasq-base; .ci/setup does)")
    workdir.mkdir(parents=True, exist_ok=True)
    hosts = workdir / "hosts"
    hosts.write_text("".join(f"{address} {name}\n" for address in addresses))
    port = _free_udp_port()
    command = [
        binary, "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
        "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", "--local-ttl=1",
        f"--pid-file={workdir / 'dnsmasq.pid'}", f"--log-facility={workdir / 'dnsmasq.log'}",
    ]
    if os.geteuid() == 0:
        command.append("--user=root")  # as root it would switch to 'nobody', who cannot write workdir
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dnsmasq exited with {process.returncode}: {process.stderr.read().decode() if process.stderr else ''}")
        if _answers(port, name) == len(addresses):
            return DnsServer(process, f"127.0.0.1:{port}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("dnsmasq did not answer within 10 s")
