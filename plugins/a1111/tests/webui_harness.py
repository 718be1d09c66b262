"""What the two hand-run checks in a real WebUI share (check_in_webui.py, check_batch_in_webui.py; not
collected by pytest: no test_ prefix): the PASS/FAIL report, ``heie serve --http`` on the fixture model,
starting and stopping the WebUI, and putting the WebUI checkout back as it was.

Standard library only: the checks run with whatever ``python3`` is at hand, not the WebUI's venv.
The report is an object each check's ``main`` makes and passes on, not module state, so importing this
module (or one check from another) starts nothing and counts nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

EXTENSION = Path(__file__).resolve().parents[1]
REPO = EXTENSION.parents[1]
MODELS = REPO / "tests" / "fixtures" / "models"
REFERENCE_COT = REPO / "tests" / "fixtures" / "reference-cot" / "hand-and-sign.txt"
"""A chain of thought with two grounding boxes ("the left hand", "the sign"). The random fixture model never
writes grounding markup, so a server that is to flag regions is started with the test-only
``HEIE_FAULT_REFERENCE_COT`` naming it (a binary built with ``--features fault-injection``)."""


MODEL_STUB = r'''
# What a check's helper extension runs inside the WebUI to generate without an SD model (both checks'
# helpers start with it): _stub_model() fakes shared.sd_model and the loading, and makes img2img's
# "sampler" return its input latent (the image itself) plus seeded noise, already decoded.
import types
from contextlib import contextmanager
import torch
from modules import processing, sd_models, sd_samplers, shared
from modules.sd_hijack import model_hijack


class _Decoded(list):
    already_decoded = True


class _ForgeObjects:
    """Forge's UNet/CLIP/VAE patchers of a model: process_images_inner copies them and reads the VAE's channels,
    the built-in LoRA extension the UNet's weight type."""

    def __init__(self):
        self.vae = types.SimpleNamespace(latent_channels=4)
        self.unet = types.SimpleNamespace(model=types.SimpleNamespace(storage_dtype=torch.float32))
        self.clip = None

    def shallow_copy(self):
        return self


class _FakeModel(torch.nn.Module):
    """What process_images reads of shared.sd_model, and nothing more."""

    def __init__(self):
        super().__init__()
        self.sd_checkpoint_info = types.SimpleNamespace(name_for_extra="stub", name="stub.safetensors", model_name="stub",
                                                        title="stub.safetensors", filename="stub.safetensors", shorthash="0000000000",
                                                        hash="00000000", sha256=None)
        self.sd_model_hash = "00000000"
        self.sd_model_checkpoint = "stub.safetensors"
        self.cond_stage_key = "crossattn"
        self.latent_channels = 4
        self.lowvram = False
        self.is_sdxl = self.is_sd2 = self.is_sd3 = False
        self.is_sd1 = True
        self.first_stage_model = torch.nn.Module()
        self.diffusion = torch.nn.Module()
        self.model = types.SimpleNamespace(diffusion_model=self.diffusion, conditioning_key="crossattn")
        # what Forge reads besides (its own model class, no ldm): tiling, comments, config, patchers
        self.tiling_enabled = False
        self.comments = []
        self.extra_generation_params = {}
        self.use_distilled_cfg_scale = False
        self.model_config = types.SimpleNamespace()
        self.forge_objects = self.forge_objects_original = self.forge_objects_after_applying_lora = _ForgeObjects()
        self.current_lora_hash = str([])  # as Forge's model starts: no LoRA applied (none is asked for)

    @contextmanager
    def ema_scope(self):
        yield

    def is_webui_legacy_model(self):  # Forge: an SD1-like model (the live preview's approximate VAE is webui's own)
        return True


def _stub_model():
    sd_models.reload_model_weights = lambda *a, **k: None
    if hasattr(model_hijack, "embedding_db"):  # A1111; Forge's hijack has none (its loader holds the embeddings)
        model_hijack.embedding_db.load_textual_inversion_embeddings = lambda *a, **k: None
    sd_models.model_data.was_loaded_at_least_once = True
    shared.sd_model = _FakeModel()
    if hasattr(sd_models, "forge_model_reload"):  # Forge loads (and unloads) through its own function, per job and per batch
        keep = lambda *a, **k: (shared.sd_model, False)
        sd_models.forge_model_reload = keep
        processing.forge_model_reload = keep
        processing.need_global_unload = False
    sd_samplers.create_sampler = lambda *a, **k: None
    processing.images_tensor_to_samples = lambda image, *a, **k: image * 2 - 1  # the "latent" is the image
    processing.StableDiffusionProcessingImg2Img.img2img_image_conditioning = lambda self, *a, **k: None

    def setup_conds(self):
        self.c = self.uc = None

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        out = _Decoded()
        for k, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            base = self.init_latent[k].float()
            out.append((base + 0.6 * torch.randn(base.shape, generator=g)).clamp(-1, 1))
        return out

    processing.StableDiffusionProcessingImg2Img.setup_conds = setup_conds
    processing.StableDiffusionProcessingImg2Img.sample = sample


'''
"""Python source for a helper extension (see the docstring at its top)."""


class Report:
    """The checks' results in the order they ran, printed as they come (a long run shows its progress)."""

    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}{'  — ' + detail if detail else ''}", flush=True)
        return ok

    def finish(self, suffix: str = "") -> int:
        """Prints the totals (``suffix`` after them) and returns the exit status: 1 when any check failed."""
        failed = [r for r in self.results if not r[1]]
        print(f"\n{len(self.results) - len(failed)} passed, {len(failed)} failed{suffix}")
        return 1 if failed else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, process: subprocess.Popen) -> bool:
    """True once ``url`` answers 200; False when ``process`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    return False


def get_json(url: str, body: object = None, timeout: float = 600) -> object:
    """GET ``url``, or POST ``body`` as JSON when given; the reply's JSON."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def host_env() -> dict[str, str]:
    """This environment without HEIE_* variables: the server and the WebUI must not pick up the caller's
    HEIE settings (an address, a fault hook), only what the check gives them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HEIE_")}


@contextmanager
def heie_http_server(heie_bin: str, log: Path, extra_args: Sequence[str] = (),
                     env: Optional[Mapping[str, str]] = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """``heie serve --http`` on the fixture model (8 tokens, one tile: fast on a CPU), on a free port, with
    ``env`` added to its environment; yields the process and its HTTP address, and stops it on exit."""
    port = free_port()
    server = subprocess.Popen([heie_bin, "serve", "--addr", "127.0.0.1:0", "--http", f"127.0.0.1:{port}",
                               "--model", str(MODELS / "tiny-llm.gguf"), "--mmproj", str(MODELS / "tiny-mmproj.gguf"),
                               "--threads", "1", *extra_args, "--max-tokens", "8", "--max-tiles", "1"],
                              stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**host_env(), **(env or {})})
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(20)


def start_webui(webui: Path, python: str, port: int, log: Path, extra_args: Sequence[str]) -> subprocess.Popen:
    """The WebUI on the CPU without an SD model, its API on; in its own process group, so that ``stop``
    ends the children launch.py starts too. The log is appended to: a second start follows the first."""
    command = [python, "launch.py", "--skip-prepare-environment", "--use-cpu", "all", "--no-half",
               "--no-download-sd-model", "--api", "--skip-torch-cuda-test", "--port", str(port), *extra_args]
    sink = log.open("ab")
    return subprocess.Popen(command, cwd=webui, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=host_env(), start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """Ends ``process``'s group (SIGTERM, SIGKILL after 30 s); nothing when it has already exited."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running_webui(webui: Path, python: str, port: int, log: Path, extra_args: Sequence[str]) -> Iterator[subprocess.Popen]:
    """``start_webui``, stopped on exit however the block ends (a WebUI left running holds its port and the venv)."""
    process = start_webui(webui, python, port, log, extra_args)
    try:
        yield process
    finally:
        stop(process)


def remove_extensions(webui: Path, names: Sequence[str]) -> None:
    """Removes ``extensions/NAME`` for each name, a link (only the link) or a folder."""
    for name in names:
        target = webui / "extensions" / name
        if target.is_symlink():
            target.unlink()  # rmtree refuses a link; the folder it points to is not ours to remove
        shutil.rmtree(target, ignore_errors=True)


@contextmanager
def restored_webui(webui: Path, extension_names: Sequence[str]) -> Iterator[None]:
    """The WebUI checkout as it was once the block ends: config.json (which the WebUI rewrites with the
    settings the checks set) back, or removed when there was none; the check's extensions removed,
    those left over from an earlier, interrupted run already on entry."""
    config = webui / "config.json"
    backup = config.read_bytes() if config.exists() else None
    remove_extensions(webui, extension_names)
    try:
        yield
    finally:
        remove_extensions(webui, extension_names)
        if backup is not None:
            config.write_bytes(backup)
        elif config.exists():
            config.unlink()
