"""Manual check of the repair loop inside a real ComfyUI (not collected by pytest: CI has no torch), the
companion of real_comfyui_check.py, whose helpers it uses.

Starts a ``heie serve`` on the fixture model ($HEIE_BIN) and a ComfyUI (``main.py --cpu``) whose
custom_nodes holds this pack and, when installed there, the Impact Pack, then checks through ComfyUI's
HTTP API and websocket:

- HEIE Regions is registered (its widgets and its four outputs) beside Evaluate's new ``result`` output;
- Load Image → HEIE Evaluate → HEIE Regions runs; its mask, drawn red over the image with core nodes
  (Empty Image → Image Composite Masked), and its per-region masks have the image's size; the count is
  printed (the fixture model flags what it flags);
- the Impact Pack's model-free SEGS nodes take its SEGS: SEGS to Combined Mask gives the same pixels as
  the node's own mask (grow only, no feather: both binary), SEGSPreview and SEGS to Image List run;
- Evaluate's and Rerank's ``filename_prefix`` wired into Save Image's filename_prefix name the files
  ``heie_<score>_<band>``;
- HEIE Filter with an unreadable ``reject_if`` stops with the rule's error before any image is sent;
- the example workflow heie_repair_regions is refused only for its missing checkpoint, and its part
  before the checkpoint (judge → regions → overlay) runs;
- with Chromium (and playwright-core) at hand, the page runs judge → regions → overlay and a screenshot
  of the graph is saved (``--shot``, default the work folder's regions.png). The page is a second
  ComfyUI with this pack alone: the Impact Pack's page script of 2024 (comboBoolMigration.js) throws in
  today's frontend when a workflow with a BOOLEAN widget is loaded from API format.

Run it with ComfyUI's Python; the heie_client of this checkout comes first on its path:

    HEIE_BIN=/path/to/heie /path/to/comfy-venv/bin/python plugins/comfyui/tests/real_comfyui_regions_check.py \\
        --comfyui /path/to/ComfyUI

Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import real_comfyui_check as base
from real_comfyui_check import FAILURES, MODELS, PACK, PACK_NAME, REPO, Comfy, check, free_port, get, ui_text, wait_for_line

REPAIR = json.loads((PACK / "api_workflows" / "heie_repair_regions.json").read_text())
#: The part of the repair workflow that needs no checkpoint: judge → regions → the mask over the image.
NO_CHECKPOINT = ("1", "2", "3", "4", "5", "6")
RED = 16711680
#: A chain of thought naming a hand and a sign with boxes, which the fixture model is made to write.
REFERENCE_COT = REPO / "tests" / "fixtures" / "reference-cot" / "hand-and-sign.txt"


def heie(address: str) -> dict[str, Any]:
    return {"address": address, "timeout": 120.0, "max_tokens": 24, "prompt": "", "ca_cert": ""}


def judged_regions(address: str, grow: int = 6, feather: int = 0) -> dict[str, Any]:
    """Load Image → Evaluate → Regions, each output saved where the check can read its pixels."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "HeieEvaluate", "inputs": {"images": ["1", 0], "explanation": True, **heie(address)}},
        "3": {"class_type": "HeieRegions", "inputs": {"result": ["2", 6], "grow": grow, "feather": feather,
                                                      "categories": "all", "min_severity": 0.0}},
        "4": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": RED}},
        "5": {"class_type": "ImageCompositeMasked", "inputs": {"destination": ["1", 0], "source": ["4", 0], "x": 0,
                                                               "y": 0, "resize_source": True, "mask": ["3", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "overlay"}},
        "7": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "union"}},
        "9": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 1]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "per_region"}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": ["2", 5]}},
    }


def with_impact(prompt: dict[str, Any]) -> dict[str, Any]:
    """The Impact Pack's model-free SEGS nodes on the Regions node's SEGS."""
    prompt = copy.deepcopy(prompt)
    prompt.update({
        "20": {"class_type": "SegsToCombinedMask", "inputs": {"segs": ["3", 2]}},
        "21": {"class_type": "MaskToImage", "inputs": {"mask": ["20", 0]}},
        "22": {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": "impact_combined"}},
        "23": {"class_type": "SEGSPreview", "inputs": {"segs": ["3", 2], "alpha_mode": True, "min_alpha": 0.2,
                                                       "fallback_image_opt": ["1", 0]}},
        "24": {"class_type": "SEGSToImageList", "inputs": {"segs": ["3", 2], "fallback_image_opt": ["1", 0]}},
        "25": {"class_type": "PreviewImage", "inputs": {"images": ["24", 0]}},
    })
    return prompt


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())


def saved(result: dict[str, Any], node: str, work: Path) -> list[np.ndarray]:
    found = []
    for entry in result.get("history", {}).get("outputs", {}).get(node, {}).get("images", []):
        folder = work / ("output" if entry.get("type") == "output" else "temp")
        with Image.open(folder / entry.get("subfolder", "") / entry["filename"]) as image:
            found.append(np.asarray(image.convert("RGB")))
    return found


def saved_names(result: dict[str, Any], node: str) -> list[str]:
    return [e["filename"] for e in result.get("history", {}).get("outputs", {}).get(node, {}).get("images", [])]


async def main_async(url: str, address: str, work: Path, expect_regions: bool) -> dict[str, Any]:
    """The checks; returns the part of the example workflow that runs without a checkpoint."""
    comfy = Comfy(url)
    status, body, _ = get(f"{url}/object_info")
    info = json.loads(body) if status == 200 else {}
    regions = info.get("HeieRegions", {})
    check(regions.get("output_name") == ["mask", "region_masks", "segs", "count"]
          and regions.get("output") == ["MASK", "MASK", "SEGS", "INT"]
          and list(regions.get("input", {}).get("required", {})) == ["result", "grow", "feather", "categories",
                                                                     "min_severity"],
          "HEIE Regions is registered with its widgets and outputs", regions)
    check(info.get("HeieEvaluate", {}).get("output_name", [])[-2:] == ["filename_prefix", "result"],
          "HEIE Evaluate has its filename_prefix and result outputs after the old ones",
          info.get("HeieEvaluate", {}).get("output_name"))
    impact = all(name in info for name in ("SegsToCombinedMask", "SEGSPreview", "SEGSToImageList"))
    print(f"   Impact Pack's SEGS nodes {'registered' if impact else 'NOT installed: its checks are skipped'}")

    # -- judge → regions → masks (and the Impact Pack on the SEGS) --
    prompt = judged_regions(address)
    result = await comfy.run(with_impact(prompt) if impact else prompt)
    check(result.get("end") == "execution_success", "Evaluate → Regions (→ Impact Pack SEGS nodes) runs",
          result.get("rejected") or [m for m in result.get("messages", []) if m["type"] == "execution_error"])
    with Image.open(Path(base.comfy_dir) / "input" / "example.png") as source:
        image = np.asarray(source.convert("RGB"))
    overlay, union, per_region = saved(result, "6", work), saved(result, "8", work), saved(result, "10", work)
    check(len(overlay) == 1 and overlay[0].shape == image.shape and len(union) == 1
          and union[0].shape == image.shape and per_region and all(m.shape == image.shape for m in per_region),
          "the mask, the region masks and the overlay have the image's size",
          [a.shape for a in overlay + union + per_region])
    covered = float((union[0][..., 0] > 0).mean()) if union else -1.0
    masked_red = bool(union) and bool(overlay) and bool(
        (overlay[0][union[0][..., 0] == 255] == [255, 0, 0]).all())
    check(masked_red, "the overlay is red exactly where the mask is 1")
    evaluate_text = ui_text(result, "2")
    count = len(per_region) if covered > 0 else 0
    if expect_regions:
        check(count >= 1 and 0 < covered < 1, "the server flagged regions and the mask covers them (not the whole image)",
              (count, covered))
    print(f"   regions from the fixture model: {count} region mask(s), {covered:.1%} of the image masked; "
          f"Evaluate says: {evaluate_text[0].splitlines()[0] if evaluate_text else '?'}")
    names = saved_names(result, "11")
    check(len(names) == 1 and names[0].startswith("heie_") and names[0].split("_")[1][0].isdigit(),
          "Evaluate's filename_prefix names Save Image's file heie_<score>_<band>", names)
    print(f"   Save Image wrote {names}")
    if impact:
        combined = saved(result, "22", work)
        check(len(combined) == 1 and bool(union) and np.array_equal(combined[0] > 127, union[0] > 127),
              "Impact Pack: SEGS to Combined Mask gives the Regions node's mask", len(combined))
        check(base.ran(result, "23") and base.ran(result, "25"),
              "Impact Pack: SEGSPreview and SEGS to Image List ran on the SEGS")

    # -- Rerank's filename_prefix --
    rerank = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
              "2": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["1", 0]}},
              "3": {"class_type": "HeieRerank", "inputs": {"images": ["2", 0], "top_k": 1, "fast": True, **heie(address)}},
              "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": ["3", 4]}}}
    result = await comfy.run(rerank)
    names = saved_names(result, "4")
    check(len(names) == 1 and names[0].startswith("heie_"), "Rerank's filename_prefix names the kept image's file",
          names or result.get("rejected"))
    print(f"   Save Image after Rerank wrote {names}; Rerank says {ui_text(result, '3')[:1]}")

    # -- Filter: an unreadable reject_if stops before any image is sent --
    bad = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
           "2": {"class_type": "HeieFilter", "inputs": {"images": ["1", 0], "threshold": 0.5, "stop_if_none_pass": False,
                                                        "explanation": False, "reject_if": "hands>0.5", **heie(address)}},
           "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    result = await comfy.run(bad)
    errors = [m["data"].get("exception_message", "") for m in result.get("messages", []) if m["type"] == "execution_error"]
    check(len(errors) == 1 and "reject_if: 'hands' is not a region category" in errors[0],
          "Filter: a bad reject_if is a clear node error", errors or result.get("rejected"))

    # -- the example workflow: refused only for its checkpoint; the part before it runs --
    repair = copy.deepcopy(REPAIR)
    for node in repair.values():
        if node["class_type"].startswith("Heie"):
            node["inputs"].update(heie(address))
    # ComfyUI queues the outputs whose nodes are valid and names the invalid nodes in node_errors.
    answer = post_json(f"{url}/prompt", {"prompt": repair, "client_id": "regions-check"})
    node_errors = answer.get("node_errors", {})
    check(set(node_errors) == {"7"} and "ckpt_name" in json.dumps(node_errors["7"])
          and node_errors["7"]["dependent_outputs"] == ["15"],
          "example workflow: validated; ComfyUI refuses only Load Checkpoint (no checkpoint here) and so "
          "only the Save Image after it", answer)
    part = {k: v for k, v in repair.items() if k in NO_CHECKPOINT}
    part["2"]["inputs"]["prompt"] = "the part before the checkpoint"  # not ComfyUI's cached run of it
    result = await comfy.run(part)
    check(result.get("end") == "execution_success" and len(saved(result, "6", work)) == 1,
          "example workflow: judge → regions → mask over the image runs up to the checkpoint",
          result.get("rejected") or result.get("end"))
    return part


async def screenshot(url: str, prompt: dict[str, Any], work: Path, shot: Path) -> None:
    chromium = os.environ.get("HEIE_CHROMIUM", "/usr/bin/chromium")
    browser_dir = os.environ.get("HEIE_BROWSER_DIR", str(REPO / "tests" / "browser"))
    if not (shutil.which("node") and Path(chromium).exists() and (Path(browser_dir) / "node_modules" / "playwright-core").is_dir()):
        print(f"   skipped the page screenshot: needs node, {chromium} and playwright-core in {browser_dir}/node_modules")
        return
    prompt = copy.deepcopy(prompt)
    prompt["2"]["inputs"]["prompt"] = "from the page"  # not from ComfyUI's cache: the nodes run and show their text
    api_json = work / "regions.api.json"
    api_json.write_text(json.dumps(prompt))
    process = await asyncio.create_subprocess_exec(
        "node", str(PACK / "tests" / "comfyui_page.mjs"), "run-api", url, str(api_json), str(shot),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "HEIE_BROWSER_DIR": browser_dir})
    out, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    check(process.returncode == 0 and shot.is_file(), "page: judge → regions → overlay runs from the page (screenshot)",
          out.decode(errors="replace")[-1500:])
    print(f"   screenshot: {shot}")


def start_comfyui(args: argparse.Namespace, work: Path, log: Path, env: dict[str, str],
                  extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [args.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--output-directory", str(work / "output"), "--temp-directory", str(work), *extra],
            cwd=args.comfyui, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        wait_for_line(log, "To see the GUI go to", process, 300)
    except BaseException:
        stop(process)
        raise
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout (main.py)")
    parser.add_argument("--python", default=sys.executable, help="ComfyUI's Python (default: this one)")
    parser.add_argument("--shot", type=Path, help="where the page screenshot goes (default: the work folder)")
    parser.add_argument("--server-max-tokens", type=int, default=64, help="heie serve's --max-tokens")
    parser.add_argument("--reference-cot", type=Path, default=REFERENCE_COT if REFERENCE_COT.is_file() else None,
                        help="a chain of thought with grounding boxes the fixture model is made to write "
                             "(HEIE_FAULT_REFERENCE_COT; needs a fault-injection build): the random-weight fixture "
                             "writes none by itself, so without it the server flags no region (default: %(default)s)")
    args = parser.parse_args()
    heie_bin = os.environ.get("HEIE_BIN") or str(REPO / "target" / "debug" / "heie")
    link = args.comfyui / "custom_nodes" / PACK_NAME
    made_link = not link.exists()
    if made_link:
        link.symlink_to(PACK, target_is_directory=True)
    work = Path(tempfile.mkdtemp(prefix="heie-comfy-regions-"))
    shot = args.shot or work / "regions.png"
    serve_log = work / "serve.log"
    processes: list[subprocess.Popen[bytes]] = []
    # This checkout's client before any installed copy: the nodes use its Region and verdict rules.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "plugins" / "python" / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    try:
        with serve_log.open("wb") as sink:
            processes.append(subprocess.Popen(
                [heie_bin, "serve", "--addr", "127.0.0.1:0", "--model", str(MODELS / "tiny-llm.gguf"),
                 "--mmproj", str(MODELS / "tiny-mmproj.gguf"), "--max-tokens", str(args.server_max_tokens),
                 "--max-tiles", "1", "--parallel", "2", "--threads", "1", "--shutdown-grace", "1"],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **({"HEIE_FAULT_REFERENCE_COT": str(args.reference_cot)} if args.reference_cot else {})}))
        address = wait_for_line(serve_log, "heie: serving on ", processes[0], 120).split("serving on ", 1)[1].strip()
        base.comfy_dir = str(args.comfyui)
        comfy, url = start_comfyui(args, work, work / "comfyui.log", env, [])
        processes.append(comfy)
        print(f"heie serve at {address}, ComfyUI at {url} (logs in {work})", flush=True)
        part = asyncio.run(main_async(url, address, work, expect_regions=args.reference_cot is not None))
        stop(processes.pop())
        # The page with this pack alone: the Impact Pack's page script of 2024 (comboBoolMigration.js) throws
        # in today's frontend when a workflow with a BOOLEAN widget is loaded from API format.
        comfy, url = start_comfyui(args, work, work / "comfyui-page.log", env,
                                   ["--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_NAME])
        processes.append(comfy)
        asyncio.run(screenshot(url, part, work, shot))
    finally:
        for process in reversed(processes):
            stop(process)
        if made_link:
            link.unlink()
    print(f"{len(FAILURES)} failed" if FAILURES else "every check passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
