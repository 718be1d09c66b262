"""Manual check of the node pack inside a real ComfyUI (not collected by pytest: CI has no torch).

Starts a ``heie serve`` on the fixture model ($HEIE_BIN) and a ComfyUI (``main.py --cpu``) whose
custom_nodes holds this pack, then drives ComfyUI only through its HTTP API and websocket, as its own
page does, and prints one ``ok:``/``FAIL:`` line per check:

- the nodes are registered (/object_info) with the widget limits the server has;
- the example workflows are listed by /api/workflow_templates, open as UI-format JSON, have a thumbnail;
- api_workflows/heie_judge_images.json runs when every image passes (the empty ``rejected`` branch is
  skipped, Save Image saves the passed ones) and when none pass (the empty ``passed`` branch is skipped,
  the rejected ones are explained), and with stop_if_none_pass nothing after the Filter runs;
- the results stay in /history as ui text (score and explanation per image, markers filled in); the live
  text frames are never empty and never repeat;
- with no server at the address the node error names the address and says to start ``heie serve``;
- ``ca_cert`` against a plaintext server says the server speaks plaintext;
- threshold 0 passes no image without a score (its timeout ran out);
- the max_tokens widget's top runs on a default server, and ComfyUI refuses more, naming the widget;
- Cancel (/interrupt) stops the server's work (its cancelled-sequences counter goes up), the images not
  yet sent are never sent, and the node's last text ends with a ``cancelled`` line;
- Load Image → HEIE Evaluate alone runs (an output node: no "Prompt has no outputs"), its ui names a
  preview image that exists in ComfyUI's temp folder and is served by /view, and its text has the score
  and the server's summary; with Chromium (and playwright-core) at hand, the page runs that graph and a
  screenshot of the node showing its preview is saved in the work folder (evaluate-alone.png);
- Rerank's ``order`` (0-based) wired into Image From Batch's ``batch_index`` picks the images Rerank kept,
  in its order; its text starts with the score lines, shows no empty heading and no doubled marker.

Run it with ComfyUI's Python (it needs aiohttp, which ComfyUI installs):

    HEIE_BIN=/path/to/heie /path/to/comfy-venv/bin/python plugins/comfyui/tests/real_comfyui_check.py \\
        --comfyui /path/to/ComfyUI

``tools/check_real_comfyui.sh /path/to/ComfyUI`` sets that venv up and runs this (README "Before a release").

Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional

import aiohttp
import numpy as np
from PIL import Image

PACK = Path(__file__).resolve().parents[1]
REPO = PACK.parents[1]
MODELS = REPO / "tests" / "fixtures" / "models"
PACK_NAME = "heie"  # the folder name under custom_nodes: ComfyUI lists templates by it
JUDGE = json.loads((PACK / "api_workflows" / "heie_judge_images.json").read_text())
TEXT_EVENT = 3  # protocol.BinaryEventTypes.TEXT: node id length, node id, text
FAILURES: list[str] = []
comfy_dir = ""  # the ComfyUI checkout under test (its input/ holds example.png)


def check(condition: bool, what: str, detail: Any = "") -> bool:
    if condition:
        print(f"ok: {what}", flush=True)
    else:
        FAILURES.append(what)
        print(f"FAIL: {what} {detail}", flush=True)
    return condition


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_line(log: Path, marker: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if marker in line:
                return line
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"no {marker!r} in {log} within {timeout} s")


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), ""


def metric(metrics_url: str, prefix: str) -> float:
    _, body, _ = get(metrics_url)
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def evaluate_calls(metrics_url: str) -> float:
    """Evaluate calls the server has finished, whatever their status."""
    _, body, _ = get(metrics_url)
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith('heie_requests_total{method="Evaluate"'))


class Comfy:
    """One websocket client of ComfyUI: queues prompts and records what ComfyUI sends back."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.client_id = str(uuid.uuid4())

    async def run(self, prompt: dict[str, Any], on_text: Optional[Any] = None,
                  timeout: float = 600) -> dict[str, Any]:
        """Queues ``prompt`` and waits for its end; returns the messages seen, the text frames per
        node and the /history entry."""
        texts: dict[str, list[str]] = {}
        messages: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.base.replace('http', 'ws')}/ws?clientId={self.client_id}") as ws:
                async with session.post(f"{self.base}/prompt", json={"prompt": prompt, "client_id": self.client_id}) as reply:
                    queued = await reply.json()
                    if reply.status != 200:
                        return {"rejected": queued}
                prompt_id = queued["prompt_id"]
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    message = await ws.receive(timeout=deadline - time.monotonic())
                    if message.type == aiohttp.WSMsgType.BINARY:
                        kind = struct.unpack(">I", message.data[:4])[0]
                        if kind == TEXT_EVENT:
                            size = struct.unpack(">I", message.data[4:8])[0]
                            node = message.data[8:8 + size].decode()
                            text = message.data[8 + size:].decode()
                            texts.setdefault(node, []).append(text)
                            if on_text is not None:
                                await on_text(session, node, text)
                        continue
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = json.loads(message.data)
                    if data.get("data", {}).get("prompt_id") != prompt_id:
                        continue
                    messages.append(data)
                    if data["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                        break
            # ComfyUI writes the history entry after it has sent the end of the run: wait for it.
            history: dict[str, Any] = {}
            for _ in range(100):
                async with session.get(f"{self.base}/history/{prompt_id}") as reply:
                    history = (await reply.json()).get(prompt_id, {})
                if history.get("status", {}).get("completed") is not None:
                    break
                await asyncio.sleep(0.1)
        end = messages[-1]["type"] if messages else "timeout"
        return {"end": end, "messages": messages, "texts": texts, "history": history}


def judge_prompt(address: str, threshold: float, stop: bool, prompt_text: str = "") -> dict[str, Any]:
    prompt = copy.deepcopy(JUDGE)
    for node in prompt.values():
        if node["class_type"].startswith("Heie"):
            node["inputs"]["address"] = address
            node["inputs"]["timeout"] = 120.0
            node["inputs"]["max_tokens"] = 16
            node["inputs"]["prompt"] = prompt_text
    prompt["5"]["inputs"].update(threshold=threshold, stop_if_none_pass=stop)
    return prompt


def ran(result: dict[str, Any], node: str) -> bool:
    return node in result["history"].get("outputs", {}) or any(
        m["type"] == "executed" and m["data"].get("node") == node for m in result["messages"])


def ui_text(result: dict[str, Any], node: str) -> list[str]:
    return result["history"].get("outputs", {}).get(node, {}).get("text", [])


def check_frames(result: dict[str, Any], label: str) -> None:
    frames = result["texts"]
    check(bool(frames) and all(all(f for f in fs) for fs in frames.values()),
          f"{label}: live text frames sent, none empty", {k: len(v) for k, v in frames.items()})
    check(all(a != b for fs in frames.values() for a, b in zip(fs, fs[1:])),
          f"{label}: no live text frame sent twice in a row")


async def main_async(base: str, address: str, dead: str, metrics_url: str, work: Path) -> None:
    comfy = Comfy(base)

    # -- registration and templates --
    _, body, _ = get(f"{base}/object_info")
    info = json.loads(body)
    check(all(n in info for n in ("HeieEvaluate", "HeieFilter", "HeieRerank", "HeieRegions")),
          "nodes registered in /object_info")
    evaluate = info.get("HeieEvaluate", {})
    max_tokens = evaluate.get("input", {}).get("optional", {}).get("max_tokens", [None, {}])[1].get("max")
    check(max_tokens == 512, "max_tokens widget stops at 512 (what a default server takes)", max_tokens)
    check(info.get("HeieRerank", {}).get("output_name") == ["best", "best_latent", "scores", "order", "filename_prefix"],
          "Rerank outputs as documented", info.get("HeieRerank", {}).get("output_name"))
    check(evaluate.get("output_node") is True and not info.get("HeieFilter", {}).get("output_node")
          and not info.get("HeieRerank", {}).get("output_node"), "Evaluate (only) is an output node")
    tooltip = info.get("HeieRerank", {}).get("output_tooltips", [""] * 4)[3]
    check("0-based" in tooltip and "used to be 1-based" in tooltip, "Rerank's order tooltip says 0-based, and that it changed",
          tooltip)

    await evaluate_alone(comfy, base, address, work)
    await rerank_order_picks_by_batch_index(comfy, address, work)
    _, body, _ = get(f"{base}/api/workflow_templates")
    listed = json.loads(body).get(PACK_NAME, [])
    check(sorted(listed) == sorted(p.stem for p in (PACK / "example_workflows").glob("*.json")),
          "example workflows listed by /api/workflow_templates", listed)
    for name in listed:
        status, body, _ = get(f"{base}/api/workflow_templates/{PACK_NAME}/{name}.json")
        workflow = json.loads(body) if status == 200 else {}
        check("version" in workflow and workflow.get("nodes") and "links" in workflow,
              f"template {name} is UI format (version, nodes, links)")
        status, body, kind = get(f"{base}/api/workflow_templates/{PACK_NAME}/{name}.jpg")
        check(status == 200 and body[:3] == b"\xff\xd8\xff", f"template {name} has a .jpg thumbnail", (status, kind))

    # -- every image passes: the empty `rejected` branch is skipped --
    result = await comfy.run(judge_prompt(address, 0.0, True, "all pass"))
    check(result.get("end") == "execution_success", "all pass: the workflow succeeds", result.get("end") or result)
    saved = result["history"].get("outputs", {}).get("6", {}).get("images", [])
    check(len(saved) == 2, "all pass: Save Image saved the 2 passed images", saved)
    check(not ran(result, "7") and not ran(result, "8"), "all pass: Evaluate and Preview on `rejected` were skipped")
    filter_text = ui_text(result, "5")
    check(len(filter_text) == 2 and all(t.startswith(f"#{i + 1} (passed): score ") for i, t in enumerate(filter_text)),
          "all pass: Filter's ui text in /history has a score per image", filter_text)
    rerank_text = ui_text(result, "4")
    check(len(rerank_text) == 2 and all("(rank " in t for t in rerank_text), "all pass: Rerank's ui text ranks both",
          rerank_text)
    check_frames(result, "all pass")

    # -- none pass, stop_if_none_pass off: the empty `passed` branch is skipped, the rejects are explained --
    result = await comfy.run(judge_prompt(address, 1.0, False, "none pass"))
    check(result.get("end") == "execution_success", "none pass: the workflow succeeds", result.get("end") or result)
    check(not ran(result, "6"), "none pass: Save Image on `passed` was skipped")
    evaluate_text = ui_text(result, "7")
    check(len(evaluate_text) == 2 and all(t.startswith(f"#{i + 1}: score ") for i, t in enumerate(evaluate_text)),
          "none pass: Evaluate ran on the rejects, score per image in /history", evaluate_text)
    check(all("[SCORE]" not in t and "[MAP]" not in t for t in evaluate_text),
          "none pass: no literal [SCORE]/[MAP] in the text shown")
    check(len(result["history"].get("outputs", {}).get("8", {}).get("images", [])) == 2,
          "none pass: Preview shows the 2 overlays")
    last = result["texts"].get("7", [""])[-1]
    check(last.startswith("#1: score ") and "#2: score " in last,
          "none pass: the node keeps the report as its last text", last[:200])
    check_frames(result, "none pass")

    # -- none pass with stop_if_none_pass: nothing after the Filter runs --
    result = await comfy.run(judge_prompt(address, 1.0, True, "stop"))
    check(result.get("end") == "execution_success", "stop: the workflow succeeds", result.get("end") or result)
    check(not any(ran(result, n) for n in ("6", "7", "8")), "stop: every node after the Filter was skipped")

    # -- no server --
    result = await comfy.run(judge_prompt(dead, 0.5, True, "dead"))
    errors = [m["data"] for m in result["messages"] if m["type"] == "execution_error"]
    message = errors[0].get("exception_message", "") if errors else ""
    check(bool(errors) and dead in message and "heie serve" in message and "failed to connect" not in message,
          "no server: the node error names the address and says to start heie serve", message)
    print(f"   node error shown: {message}")

    # -- TLS against a plaintext server: says so, not "no server" --
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        prompt = judge_prompt(address, 0.5, True, "tls")
        prompt["4"]["inputs"]["ca_cert"] = str(bundle)
        result = await comfy.run(prompt)
        errors = [m["data"] for m in result["messages"] if m["type"] == "execution_error"]
        message = errors[0].get("exception_message", "") if errors else ""
        check(bool(errors) and "speaks plaintext" in message and "no server answers" not in message,
              "tls: ca_cert against a plaintext server says the server speaks plaintext", message)
        print(f"   node error shown: {message}")

    # -- threshold 0: an image without a score (its timeout ran out) still never passes --
    prompt = judge_prompt(address, 0.0, False, "no score")
    prompt["5"]["inputs"].update(timeout=0.001, max_tokens=64)
    result = await comfy.run(prompt)
    check(result.get("end") == "execution_success" and not ran(result, "6"),
          "threshold 0: images without a score are not passed (Save Image skipped)", result.get("end"))
    check(all("(rejected)" in t for t in ui_text(result, "5")) and len(ui_text(result, "5")) == 2,
          "threshold 0: both images reported rejected", ui_text(result, "5"))

    # -- max_tokens: the widget's top runs; ComfyUI itself refuses more, naming the widget --
    prompt = judge_prompt(address, 0.0, False, "max tokens")
    prompt["7"]["inputs"].update(max_tokens=512, explanation=True)
    prompt["5"]["inputs"].update(threshold=1.0)  # nothing passes: Evaluate (7) runs on the rejects
    result = await comfy.run(prompt)
    check(result.get("end") == "execution_success" and ran(result, "7"),
          "max_tokens 512 (the widget's top) is taken by a default server", result.get("end"))
    prompt["7"]["inputs"].update(max_tokens=2000)
    # ComfyUI runs the outputs that validate and lists the others' errors in the /prompt reply.
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/prompt", json={"prompt": prompt, "client_id": comfy.client_id}) as reply:
            queued = await reply.json()
    refused = json.dumps(queued.get("node_errors", {}).get("7", queued.get("error", {})))
    check("max_tokens" in refused and "bigger than max of 512" in refused,
          "max_tokens 2000 is refused by ComfyUI naming the widget", refused[:300])
    print(f"   ComfyUI's refusal: {refused[:300]}")
    await asyncio.sleep(3)  # let the part that did validate finish before the next run

    # -- Cancel stops the server's work --
    before = metric(metrics_url, 'heie_sequences_total{outcome="cancelled"}')
    calls_before = evaluate_calls(metrics_url)
    prompt = judge_prompt(address, 0.5, True, "cancel")
    # 4 images on the 2-slot server: the last 2 must never be sent after Cancel.
    prompt["10"] = {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["3", 0]}}
    prompt["4"]["inputs"]["images"] = ["10", 0]
    # 400 tokens per section: seconds of decoding on the fixture model (1200 would not fit its 4096 context).
    prompt["4"]["inputs"].update(fast=False, max_tokens=400)
    interrupted_at: list[float] = []

    async def interrupt(session: aiohttp.ClientSession, node: str, text: str) -> None:
        if node == "4" and not interrupted_at:
            interrupted_at.append(time.monotonic())
            async with session.post(f"{base}/interrupt", json={}) as reply:
                await reply.read()

    result = await comfy.run(prompt, on_text=interrupt)
    check(result.get("end") == "execution_interrupted", "cancel: ComfyUI reports the run as interrupted",
          [m for m in result.get("messages", []) if m["type"].startswith("execution_")])
    deadline = time.monotonic() + 10
    while metric(metrics_url, 'heie_sequences_total{outcome="cancelled"}') <= before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    after = metric(metrics_url, 'heie_sequences_total{outcome="cancelled"}')
    took = time.monotonic() - interrupted_at[0] if interrupted_at else float("nan")
    check(after > before, f"cancel: the server cancelled {after - before:.0f} sequences ({took:.2f} s after /interrupt)")
    await asyncio.sleep(0.5)
    calls = evaluate_calls(metrics_url) - calls_before
    check(calls == 2, f"cancel: only the 2 images in flight reached the server ({calls:.0f} calls for 4 images)")
    last = result["texts"].get("4", [""])[-1]
    check(last.splitlines()[-1:] == ["cancelled: 0 of 4 images judged"],
          "cancel: the node's last text ends with a cancelled line", last[-300:])


def heie_inputs(address: str) -> dict[str, Any]:
    return {"address": address, "timeout": 120.0, "max_tokens": 16, "prompt": "", "ca_cert": ""}


async def evaluate_alone(comfy: Comfy, base: str, address: str, work: Path) -> None:
    """Load Image → HEIE Evaluate and nothing else: runs, and the node shows its preview and verdict."""
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
              "2": {"class_type": "HeieEvaluate", "inputs": {"images": ["1", 0], "explanation": True,
                                                              **heie_inputs(address)}}}
    result = await comfy.run(prompt)
    check(result.get("end") == "execution_success", "evaluate alone: Load Image → HEIE Evaluate runs (no "
          "'Prompt has no outputs')", result.get("rejected") or result.get("end"))
    if "history" not in result:
        return
    output = result.get("history", {}).get("outputs", {}).get("2", {})
    previews = output.get("images", [])
    temp = work / "temp"
    check(len(previews) == 1 and previews[0].get("type") == "temp" and (temp / previews[0]["filename"]).is_file(),
          "evaluate alone: the node's ui names 1 preview image, a file in ComfyUI's temp folder", previews)
    if previews:
        query = urllib.parse.urlencode({"filename": previews[0]["filename"], "subfolder": "", "type": "temp"})
        status, body, kind = get(f"{base}/view?{query}")
        check(status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n", "evaluate alone: /view serves the preview as PNG",
              (status, kind))
        with Image.open(temp / previews[0]["filename"]) as preview:
            size = preview.size
        with Image.open(Path(comfy_dir) / "input" / "example.png") as source:
            check(size == source.size, "evaluate alone: the preview has the image's size", (size, source.size))
    text = output.get("text", [])
    lines = text[0].split("\n") if text else []
    check(len(lines) >= 2 and lines[0].startswith("#1: score ") and lines[1].startswith("score ")
          and "(zero-shot):" in lines[1], "evaluate alone: ui text has the score line, then the server's summary",
          lines[:2])
    print(f"   Evaluate's text begins: {lines[:2]}")
    await screenshot_evaluate_alone(base, prompt, work)


async def screenshot_evaluate_alone(base: str, prompt: dict[str, Any], work: Path) -> None:
    """The page itself runs Load Image → HEIE Evaluate; the node shows its preview (screenshot saved)."""
    chromium = os.environ.get("HEIE_CHROMIUM", "/usr/bin/chromium")
    browser_dir = os.environ.get("HEIE_BROWSER_DIR", str(REPO / "tests" / "browser"))
    if not (shutil.which("node") and Path(chromium).exists() and (Path(browser_dir) / "node_modules" / "playwright-core").is_dir()):
        print(f"   skipped the page screenshot: needs node, {chromium} and playwright-core in {browser_dir}/node_modules")
        return
    api_json, png = work / "evaluate-alone.api.json", work / "evaluate-alone.png"
    # Another prompt text: the same prompt again would come from ComfyUI's cache (the node would not run, so it
    # would send no text, only its cached ui images).
    prompt = copy.deepcopy(prompt)
    prompt["2"]["inputs"]["prompt"] = "from the page"
    api_json.write_text(json.dumps(prompt))
    process = await asyncio.create_subprocess_exec(
        "node", str(PACK / "tests" / "comfyui_page.mjs"), "run-api", base, str(api_json), str(png),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "HEIE_BROWSER_DIR": browser_dir})
    out, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    report: dict[str, Any] = {}
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("{"):
            report = json.loads(line)
    nodes = [n for n in report.get("texts", []) if n.get("type") == "HeieEvaluate"]
    shown = nodes[0].get("images", []) if nodes else []
    check(process.returncode == 0 and png.is_file() and len(shown) == 1 and shown[0]["width"] > 0
          and "type=temp" in shown[0]["src"], "page: the Evaluate node shows its preview image (screenshot saved)",
          out.decode(errors="replace")[-1500:])
    text = (nodes[0].get("text") or "") if nodes else ""
    check(text.startswith("#1: score "), "page: the node's text starts with the score line", text[:200])
    print(f"   screenshot: {png}")


async def rerank_order_picks_by_batch_index(comfy: Comfy, address: str, work: Path) -> None:
    """Rerank's order into Image From Batch's batch_index gives the images Rerank kept, in its order."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "ImageFlip", "inputs": {"image": ["1", 0], "flip_method": "y-axis: horizontally"}},
        "3": {"class_type": "ImageFlip", "inputs": {"image": ["1", 0], "flip_method": "x-axis: vertically"}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["3", 0]}},
        "6": {"class_type": "HeieRerank", "inputs": {"images": ["5", 0], "top_k": 2, "fast": True,
                                                      **heie_inputs(address)}},
        "7": {"class_type": "ImageFromBatch", "inputs": {"image": ["5", 0], "batch_index": ["6", 3], "length": 1}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "heie_rerank_best"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "heie_from_batch"}},
    }
    result = await comfy.run(prompt)
    check(result.get("end") == "execution_success", "rerank order: the workflow succeeds",
          result.get("rejected") or result.get("end"))
    if "history" not in result:
        return
    outputs = result.get("history", {}).get("outputs", {})

    def pixels(node: str) -> list[np.ndarray]:
        found = []
        for entry in outputs.get(node, {}).get("images", []):
            with Image.open(work / "output" / entry.get("subfolder", "") / entry["filename"]) as image:
                found.append(np.asarray(image.convert("RGB")))
        return found

    best, picked = pixels("8"), pixels("9")
    check(len(best) == 2 and len(picked) == 2 and all(np.array_equal(a, b) for a, b in zip(best, picked)),
          "rerank order: Image From Batch at each batch_index of `order` gives Rerank's best, in order",
          (len(best), len(picked)))
    texts = ui_text(result, "6")
    kept = sorted((t for t in texts if "(rank " in t), key=lambda t: t.split("(rank ", 1)[1])
    check(len(texts) == 3 and len(kept) == 2 and all(
        t.startswith(f"#{int(t.split('batch_index ', 1)[1].split(')', 1)[0]) + 1} (rank ") for t in kept),
        "rerank order: the text names each kept image's 0-based batch_index beside its #n", texts)
    shown = [t.split(": score ", 1)[1].split(" ", 1)[0] for t in texts]
    check(len(set(shown)) == len(set(float(v) for v in shown)) and len(set(shown)) == 3,
          "rerank order: the three scores are shown with digits that tell them apart", shown)
    check(all("### Image Description" not in t and "heatmapshown" not in t for t in texts),
          "rerank order: fast-mode text has no empty heading and no doubled [MAP]", texts[0][:300])
    last = result["texts"].get("6", [""])[-1].split("\n")
    check(len(last) > 3 and all(line.startswith(f"#{i + 1} (") and ": score " in line for i, line in enumerate(last[:3])),
          "rerank order: the node's text starts with the 3 score lines", last[:4])
    print(f"   Rerank's text begins: {last[:3]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout (main.py)")
    parser.add_argument("--python", default=sys.executable, help="ComfyUI's Python (default: this one)")
    parser.add_argument("--keep", action="store_true", help="leave ComfyUI and heie serve running at the end")
    args = parser.parse_args()
    heie_bin = os.environ.get("HEIE_BIN") or str(REPO / "target" / "debug" / "heie")
    link = args.comfyui / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(PACK, target_is_directory=True)
    work = Path(tempfile.mkdtemp(prefix="heie-comfy-check-"))
    metrics_addr = f"127.0.0.1:{free_port()}"
    serve_log, comfy_log = work / "serve.log", work / "comfyui.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with serve_log.open("wb") as sink:
            processes.append(subprocess.Popen(
                [heie_bin, "serve", "--addr", "127.0.0.1:0", "--metrics-addr", metrics_addr,
                 "--model", str(MODELS / "tiny-llm.gguf"), "--mmproj", str(MODELS / "tiny-mmproj.gguf"),
                 "--max-tokens", "8", "--max-tiles", "1", "--parallel", "2", "--threads", "1",
                 "--shutdown-grace", "1"], stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        address = wait_for_line(serve_log, "heie: serving on ", processes[0], 120).split("serving on ", 1)[1].strip()
        port = free_port()
        with comfy_log.open("wb") as sink:
            processes.append(subprocess.Popen(
                [args.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                 "--output-directory", str(work / "output"), "--temp-directory", str(work)],
                cwd=args.comfyui, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for_line(comfy_log, "To see the GUI go to", processes[1], 300)
        print(f"heie serve at {address}, ComfyUI at http://127.0.0.1:{port} (logs in {work})", flush=True)
        global comfy_dir
        comfy_dir = str(args.comfyui)
        asyncio.run(main_async(f"http://127.0.0.1:{port}", address, f"127.0.0.1:{free_port()}",
                               f"http://{metrics_addr}/metrics", work))
        if args.keep:
            print("--keep: press Ctrl-C to stop", flush=True)
            while True:
                time.sleep(3600)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"{len(FAILURES)} failed" if FAILURES else "every check passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
