"""The address "auto": the first node of a ComfyUI process starts a real local ``heie serve`` (binary and
fixture model from the HEIE_COMFY_* variables, log in ComfyUI's user folder, progress on the node), the
next node reuses it, and a server that cannot start is a clear node error."""

from __future__ import annotations

import re
import sys
import threading
import types
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import heie_process
from heie_client import local_server
from heie_nodes import HeieEvaluate, HeieFilter
from heie_nodes.failures import HeieNodeError

from hf_mirror import HfMirror
from test_comfy_nodes import FakeComfy, InterruptProcessingException, comfy  # noqa: F401  (the ComfyUI stand-in fixture)


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ComfyUI's folder_paths as the nodes see it inside ComfyUI: its user folder is ``tmp_path/user``."""
    paths = types.ModuleType("folder_paths")
    paths.get_user_directory = lambda: str(tmp_path / "user")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "folder_paths", paths)
    return tmp_path / "user"


@pytest.fixture
def fixture_model_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The HEIE_COMFY_* variables for the real binary on the tiny fixture model, and no shared server
    left from another test before or after."""
    monkeypatch.setenv("HEIE_COMFY_BINARY", str(heie_process.heie_binary()))
    monkeypatch.setenv("HEIE_COMFY_MODEL", str(heie_process.MODELS / "tiny-llm.gguf"))
    monkeypatch.setenv("HEIE_COMFY_MMPROJ", str(heie_process.MODELS / "tiny-mmproj.gguf"))
    monkeypatch.setenv("HEIE_COMFY_THREADS", "1")
    local_server.stop_shared()
    yield
    local_server.stop_shared()


@pytest.fixture
def default_model_from_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           fixture_model_env: None) -> Iterator[HfMirror]:
    """No model variables: the server downloads its default model, here the fixture GGUFs from the
    Hugging Face Hub stand-in into an empty cache."""
    monkeypatch.delenv("HEIE_COMFY_MODEL")
    monkeypatch.delenv("HEIE_COMFY_MMPROJ")
    with HfMirror() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        yield hub


def _images(batch: int) -> np.ndarray:
    return np.random.default_rng(7).random((batch, 16, 16, 3), dtype=np.float32)


def test_auto_starts_one_local_server_that_every_node_shares(comfy: FakeComfy, user_folder: Path,  # noqa: F811
                                                             fixture_model_env: None) -> None:
    out = HeieEvaluate().evaluate(_images(1), explanation=False, address="auto", timeout=120, unique_id="7")
    scores = out["result"][0]
    assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0
    texts = [text for text, node in comfy.texts if node == "7"]
    assert texts[0].startswith("HEIE: starting the HEIE server"), texts
    log = user_folder / "heie" / "heie-serve.log"
    assert "heie: serving on" in log.read_text()
    server = local_server.shared_server(local_server.LocalServerSettings(
        binary=str(heie_process.heie_binary()), model=str(heie_process.MODELS / "tiny-llm.gguf"),
        mmproj=str(heie_process.MODELS / "tiny-mmproj.gguf"), log_dir=str(user_folder / "heie"), threads=1))
    pid = server.process.pid

    comfy.texts.clear()
    passed = HeieFilter().filter(_images(2), threshold=0.0, stop_if_none_pass=False, explanation=False,
                                 address=" Auto ", timeout=120, unique_id="8")
    assert passed["result"][0].shape[0] == 2  # threshold 0: both judged, both pass
    assert not any("starting the HEIE server" in text for text, _ in comfy.texts)  # no second start
    assert local_server._shared is server and server.process.pid == pid and server.healthy()


def test_auto_with_a_binary_that_is_not_there_is_a_clear_node_error(comfy: FakeComfy, user_folder: Path,  # noqa: F811
                                                                    fixture_model_env: None, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEIE_COMFY_BINARY", str(tmp_path / "no-such-heie"))
    with pytest.raises(HeieNodeError) as caught:
        HeieEvaluate().evaluate(_images(1), explanation=False, address="auto", timeout=60)
    message = str(caught.value)
    assert message.startswith("HEIE: the address is auto and the local HEIE server could not start: ")
    assert str(tmp_path / "no-such-heie") in message and "not an executable file" in message, message
    assert caught.value.__cause__ is None


def test_auto_with_a_model_but_no_mmproj_is_a_clear_node_error(comfy: FakeComfy, user_folder: Path,  # noqa: F811
                                                               fixture_model_env: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEIE_COMFY_MMPROJ")
    with pytest.raises(HeieNodeError, match="set both the model and the mmproj file"):
        HeieEvaluate().evaluate(_images(1), explanation=False, address="auto", timeout=60)


def test_auto_with_threads_that_are_not_a_number_is_a_clear_node_error(comfy: FakeComfy, user_folder: Path,  # noqa: F811
                                                                      fixture_model_env: None,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEIE_COMFY_THREADS", "four")
    with pytest.raises(HeieNodeError, match="HEIE_COMFY_THREADS is 'four': give a whole number"):
        HeieEvaluate().evaluate(_images(1), explanation=False, address="auto", timeout=60)


def test_the_default_models_first_download_moves_comfyuis_progress_bar_and_the_node_text(
        comfy: FakeComfy, user_folder: Path, default_model_from_hub: HfMirror) -> None:  # noqa: F811
    out = HeieEvaluate().evaluate(_images(1), explanation=False, address="auto", timeout=120, unique_id="7")
    assert len(out["result"][0]) == 1
    download = [value for value, total in comfy.progress if total == 1000]
    assert download and download[-1] == 1000, comfy.progress
    assert comfy.progress[len(download):] == [(1, 1)], comfy.progress  # then the image's own step
    restarts = [i for i, (a, b) in enumerate(zip(download, download[1:])) if b <= a]
    assert len(restarts) == 1, f"two files, each rising to 1000: {download}"
    texts = [text for text, node in comfy.texts if node == "7"]
    assert any(re.fullmatch(r"HEIE: downloading \S+\.gguf: \d+% of \d+\.\d kB", text) for text in texts), texts


def test_cancel_while_the_model_downloads_ends_the_node_with_comfyuis_interrupt_and_the_next_run_starts_again(
        comfy: FakeComfy, user_folder: Path, default_model_from_hub: HfMirror) -> None:  # noqa: F811
    hub = default_model_from_hub
    servers_before = set(heie_process.heie_children())  # the session's own servers
    hub.hold_at(0.5)  # the download stops halfway until released: Cancel surely comes while it runs

    def press_cancel_when_held() -> None:
        hub.held.wait()
        comfy.interrupted = True  # what ComfyUI's Cancel button sets

    threading.Thread(target=press_cancel_when_held, daemon=True).start()
    with pytest.raises(InterruptProcessingException):
        HeieEvaluate().evaluate(_images(1), explanation=False, address="auto", timeout=120, unique_id="7")
    assert set(heie_process.heie_children()) == servers_before, "the abandoned server still runs or was left a zombie"
    assert comfy.texts[-1][0].startswith("HEIE: cancelled while the local server was starting")

    hub.release()
    out = HeieEvaluate().evaluate(_images(1), explanation=False, address="auto", timeout=120, unique_id="7")
    assert len(out["result"][0]) == 1 and 0.0 <= out["result"][0][0] <= 1.0
