"""The server address "auto": the first judged image of the WebUI process starts a real local
``heie serve --http`` (binary and fixture model from the settings page), later jobs reuse it, and a
server that cannot start is the image's clear error, not a crash."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

import heie_process
from heie_a1111 import Settings, begin_job, postprocess_image
from heie_a1111.settings import DEFAULT_ADDRESS
from heie_client import local_server

from hf_mirror import HfMirror
from webui_loop import create_infotext, generate, new_p, parse_infotext


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8))


def _settings(**kw: Any) -> Settings:
    values = dict(address="auto", timeout=120, explanation=False, max_tokens=2,
                  server_binary=str(heie_process.heie_binary()),
                  server_model=str(heie_process.MODELS / "tiny-llm.gguf"),
                  server_mmproj=str(heie_process.MODELS / "tiny-mmproj.gguf"))
    values.update(kw)
    return Settings(**values)


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The local server's log goes under ``$XDG_CACHE_HOME/heie/logs``; no shared server before or after."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    local_server.stop_shared()
    yield tmp_path / "cache"
    local_server.stop_shared()


def test_the_default_address_is_auto() -> None:
    assert DEFAULT_ADDRESS == Settings().address == "auto"


def test_auto_starts_one_local_server_that_every_job_shares(cache_home: Path, tmp_path: Path) -> None:
    progress: list[str] = []
    first = generate([[_image(1), _image(2)]], _settings(), tmp_path / "one", progress=progress)
    for text in first.processed.infotexts[1:]:
        params = parse_infotext(text)
        assert "HEIE score" in params and "HEIE error" not in params, params
    assert any(t.startswith("HEIE: starting the HEIE server") for t in progress), progress
    assert "heie: serving on" in (cache_home / "heie" / "logs" / "heie-serve.log").read_text()
    server = local_server._shared
    assert server is not None and server.healthy()

    progress.clear()
    second = generate([[_image(3)]], _settings(), tmp_path / "two", progress=progress)
    assert "HEIE score" in parse_infotext(second.processed.infotexts[-1])
    assert not any("starting the HEIE server" in t for t in progress), progress
    assert local_server._shared is server and server.process.poll() is None


def test_auto_with_a_binary_that_is_not_there_is_the_images_clear_error(cache_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-heie"
    run = generate([[_image(4)]], _settings(server_binary=str(missing)), tmp_path / "out")
    error = parse_infotext(run.processed.infotexts[-1]).get("HEIE error", "")
    assert error.startswith("INVALID_ARGUMENT: the server address is auto and the local HEIE server could not start"), error
    assert str(missing) in error and "not an executable file" in error, error


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HfMirror]:
    """The Hugging Face Hub stand-in serving the fixture GGUFs as the default model, and an empty cache."""
    with HfMirror() as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        yield mirror


def test_the_default_models_first_download_shows_in_the_progress_text(cache_home: Path, tmp_path: Path,
                                                                      hub: HfMirror) -> None:
    progress: list[str] = []
    run = generate([[_image(5)]], _settings(server_model="", server_mmproj=""), tmp_path / "out", progress=progress)
    assert "HEIE score" in parse_infotext(run.processed.infotexts[-1])
    shown = [t for t in progress if re.fullmatch(r"HEIE: downloading \S+\.gguf: \d+% of \d+\.\d kB", t)]
    assert shown and shown[-1].endswith("100% of 165.2 kB"), progress


def test_interrupt_while_the_model_downloads_abandons_the_start_and_the_next_image_starts_again(
        cache_home: Path, tmp_path: Path, hub: HfMirror) -> None:
    settings = _settings(server_model="", server_mmproj="")
    servers_before = set(heie_process.heie_children())  # the session's own servers
    hub.hold_at(0.5)  # the download stops halfway until released: the Interrupt surely comes while it runs
    p = new_p(tmp_path / "out", 1, 1)
    begin_job(p, None)
    p.iteration = p.batch_index = 0
    postprocess_image(p, SimpleNamespace(image=_image(6)), settings, cancel_when=hub.held.is_set)
    error = parse_infotext(create_infotext(p, index=0)).get("HEIE error", "")
    assert error.startswith("CANCELLED: cancelled while the local HEIE server was starting"), error
    assert set(heie_process.heie_children()) == servers_before, "the abandoned server still runs or was left a zombie"

    hub.release()
    again = generate([[_image(7)]], settings, tmp_path / "again")
    assert "HEIE score" in parse_infotext(again.processed.infotexts[-1])
