"""A server started on demand for the address "auto": a real ``heie serve`` child on the fixture model,
shared across calls, restarted when it died, stopped with its host, its log where the errors say; and
the one-sentence errors when it cannot start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import heie_process
from heie_client import Client
from heie_client import local_server
from heie_client.local_server import DownloadProgress, LocalServerError, LocalServerSettings, StartCancelled, resolve_address
from hf_mirror import DEFAULT_FILES, HfMirror

EXAMPLE = heie_process.REPO / "tests" / "fixtures" / "images" / "example.png"


def _settings(tmp_path: Path, **overrides) -> LocalServerSettings:
    model = heie_process.MODELS
    values = dict(binary=str(heie_process.heie_binary()), model=str(model / "tiny-llm.gguf"),
                  mmproj=str(model / "tiny-mmproj.gguf"), log_dir=str(tmp_path / "logs"), threads=1,
                  start_timeout_s=120.0)
    values.update(overrides)
    return LocalServerSettings(**values)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The Hugging Face Hub stand-in serving the fixture GGUFs as the default model, and an empty cache."""
    with HfMirror() as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        yield mirror


@pytest.fixture
def fresh_shared():
    local_server.stop_shared()
    yield
    local_server.stop_shared()


def test_a_plain_address_is_left_alone():
    assert resolve_address("127.0.0.1:50051") == "127.0.0.1:50051"
    assert resolve_address("http://h:8080") == "http://h:8080"


def test_auto_starts_one_shared_server_that_judges_and_restarts_after_it_died(tmp_path, fresh_shared):
    said: list[str] = []
    settings = _settings(tmp_path)
    address = resolve_address(" Auto ", settings, progress=said.append)
    assert address.startswith("http://127.0.0.1:")
    assert said and said[0].startswith("starting the HEIE server")
    with Client(address) as client:
        result = client.evaluate(str(EXAMPLE))
    assert result.ok and 0.0 <= result.score <= 1.0

    first = local_server.shared_server(settings)
    assert resolve_address("auto", settings) == address and local_server.shared_server(settings) is first
    log = Path(settings.log_dir) / "heie-serve.log"
    assert "heie: serving on" in log.read_text()

    first.process.kill()
    first.process.wait()
    again = resolve_address("auto", settings)
    assert local_server.shared_server(settings).process.pid != first.process.pid
    with Client(again) as client:
        assert client.evaluate(str(EXAMPLE)).ok
    assert (Path(settings.log_dir) / "heie-serve.previous.log").is_file()


def test_the_server_stops_when_its_host_process_exits(tmp_path):
    settings = _settings(tmp_path)
    host = textwrap.dedent(f"""
        from heie_client.local_server import LocalServerSettings, shared_server
        server = shared_server(LocalServerSettings(**{settings.__dict__!r}))
        print(server.process.pid, flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ran = subprocess.run([sys.executable, "-c", host], capture_output=True, text=True, timeout=180, env=env)
    assert ran.returncode == 0, ran.stderr
    pid = int(ran.stdout.split()[-1])
    # atexit stopped it (SIGTERM, drained): the pid is gone or a zombie of an exited parent.
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


def test_a_killed_host_takes_its_server_with_it(tmp_path):
    settings = _settings(tmp_path)
    host = textwrap.dedent(f"""
        import time
        from heie_client.local_server import LocalServerSettings, shared_server
        server = shared_server(LocalServerSettings(**{settings.__dict__!r}))
        print(server.process.pid, flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", host], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid = int(proc.stdout.readline())
        proc.kill()  # no atexit: only the parent-death signal can stop the server now
        proc.wait()
        gone = False
        for _ in range(200):
            stat = Path(f"/proc/{pid}/stat")
            if not stat.exists() or stat.read_text().split()[2] == "Z":
                gone = True
                break
            time.sleep(0.1)
        assert gone, f"heie serve {pid} outlived its killed host"
    finally:
        proc.kill()


@pytest.mark.parametrize("overrides, says", [
    (dict(binary="/nonexistent/heie"), "not an executable file; fix the setting"),
    (dict(model="/nonexistent/m.gguf"), "not a file; pick an existing GGUF"),
    (dict(mmproj=""), "set both the model and the mmproj file"),
])
def test_bad_settings_say_what_to_do(tmp_path, fresh_shared, overrides, says):
    with pytest.raises(LocalServerError, match=says):
        resolve_address("auto", _settings(tmp_path, **overrides))


def test_a_wrong_model_file_ends_the_start_with_the_servers_reason_and_the_log(tmp_path, fresh_shared):
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a GGUF file")
    with pytest.raises(LocalServerError, match=r"stopped while starting .*see .*heie-serve\.log"):
        resolve_address("auto", _settings(tmp_path, model=str(bogus)))


def test_no_binary_anywhere_says_to_install_the_wheel(tmp_path, monkeypatch, fresh_shared):
    monkeypatch.delenv("HEIE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(local_server.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(LocalServerError, match=r"pip install heie-server"):
        resolve_address("auto", _settings(tmp_path, binary=""))


def test_the_default_models_first_download_reports_rising_fractions_to_one_then_the_server_judges(
        tmp_path, hub, fresh_shared):
    steps: list[DownloadProgress] = []
    said: list[str] = []
    address = resolve_address("auto", _settings(tmp_path, model="", mmproj=""), progress=said.append,
                              download=steps.append)
    for name, source in DEFAULT_FILES.items():
        fractions = [step.fraction for step in steps if step.file == name]
        assert len(fractions) > 3, (name, fractions)
        assert fractions == sorted(set(fractions)), f"{name}: not rising: {fractions}"
        assert fractions[-1] == 1.0 and fractions[0] < 0.5
        assert {step.total for step in steps if step.file == name} == {source.stat().st_size}
    # The status text tells each download step in words.
    assert any(re.fullmatch(r"downloading \S+\.gguf: \d+% of \d+\.\d kB", line) for line in said), said
    with Client(address) as client:
        assert client.evaluate(str(EXAMPLE)).ok
    assert list((tmp_path / "hf-home" / "hub").glob("models--ggml-org--InternVL3-2B-Instruct-GGUF/snapshots/*/*.gguf"))


def test_cancel_during_the_download_abandons_the_start_and_the_next_start_resumes_it(tmp_path, hub, fresh_shared):
    settings = _settings(tmp_path, model="", mmproj="")
    servers_before = set(heie_process.heie_children())  # the session's own servers
    hub.hold_at(0.5)  # every transfer stops halfway until released: the download is surely running
    steps: list[DownloadProgress] = []
    with pytest.raises(StartCancelled, match="cancelled while the local HEIE server was starting"):
        # Cancelled once the held download has reported some of its bytes, as a user seeing the bar would.
        resolve_address("auto", settings, download=steps.append,
                        cancelled=lambda: hub.held.is_set() and any(step.done for step in steps))
    assert 0.0 < steps[-1].fraction < 1.0
    assert set(heie_process.heie_children()) == servers_before, "the abandoned server still runs or was left a zombie"
    assert local_server._shared is None

    hub.release()
    address = resolve_address("auto", settings, download=steps.append)
    model = next(iter(DEFAULT_FILES))
    resumed = [rng for path, rng in hub.requests if path.endswith("/" + model) and rng not in ("", "bytes=0-0")]
    assert resumed[-1] != "bytes=0-", f"the second start downloaded the model again from the start: {resumed}"
    with Client(address) as client:
        assert client.evaluate(str(EXAMPLE)).ok


def test_the_servers_download_line_is_read_as_progress():
    step = local_server.parse_download_line("downloading my model.gguf: 1200000 of 2400000000 bytes")
    assert step == DownloadProgress("my model.gguf", 1_200_000, 2_400_000_000)
    assert step.describe() == "downloading my model.gguf: 0% of 2.4 GB"
    assert local_server.parse_download_line("heie: serving on 127.0.0.1:1") is None


def test_the_server_outlives_the_short_lived_host_thread_that_started_it(tmp_path, fresh_shared):
    # Hosts start it from worker threads that end (the WebUI's request threads idle out); Linux's
    # parent-death signal follows the thread that started a child, so that thread must not be the host's.
    settings = _settings(tmp_path)
    worker = threading.Thread(target=resolve_address, args=("auto", settings))
    worker.start()
    worker.join()
    server = local_server._shared
    with Client(server.address) as client:
        assert client.evaluate(str(EXAMPLE)).ok
    assert server.healthy() and "shutting down" not in server.log_path.read_text().lower()
