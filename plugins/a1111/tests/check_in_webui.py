"""Manual check of the extension inside a real AUTOMATIC1111 WebUI or Forge (not collected by pytest: no test_
prefix). It needs a WebUI checkout with its venv and requirements installed; no SD model is needed.

    python3 plugins/a1111/tests/check_in_webui.py --webui /work/a1111-webui --python /work/a1111-venv/bin/python \
        --heie-bin /work/bin/heie

``tools/check_real_webui.sh /path/to/webui`` sets that venv up and runs this (README "Before a release").

What it does, printing PASS/FAIL per step:
1. starts ``heie serve --http`` on the fixture model;
2. exports the extension (tools/export_repo.py --commit) and ``git clone``s it into
   ``extensions/heie`` as "Install from URL" does; adds a throw-away helper extension ``heie-check``
   that exposes ``POST /heie-check/run``, which runs generation jobs through the REAL WebUI code
   (``StableDiffusionProcessingTxt2Img``, ``create_infotext``, ``images.save_image`` with its
   before/after image-saved callbacks, ``images.image_grid``, ``Processed``) with the HEIE script
   object the WebUI loaded: everything of ``process_images_inner`` but the sampling, which needs a model;
3. starts the WebUI (``launch.py --skip-prepare-environment --use-cpu all --no-half
   --no-download-sd-model --api --skip-torch-cuda-test``; Forge also ``--always-cpu``), waits for the
   helper's routes (app_started runs after the API answers on Forge) and checks: it serves, the settings
   page was built (the WebUI has every ``heie_*`` option, on A1111 ``/sdapi/v1/options`` lists them too,
   the gradio config has their widgets), the
   script is registered, the jobs give correct per-image/grid infotext, the ``heie`` PNG key, unique
   reject names, a rebuilt grid on discard, progress text; and the log has no HEIE traceback;
   then, with a third server (the reference chain of thought, every decode step slowed by SLOW_STEP_MS), the
   judging on the progress bar through the real ``/sdapi/v1/img2img`` while ``/sdapi/v1/progress`` is
   polled, the API entries' readable explanation and gallery positions, and with ``--screenshots`` the page
   itself (webui_panel_screenshots.mjs): Generate in the img2img tab, the progress bar while image 2 is judged,
   the verdict panel under the gallery after it and for each gallery image selected;
4. runs the WebUI's own requirements install (``pip install -r requirements_versions.txt``, what its
   prepare step does) and starts it a second time: the extension still loads and judges.
The WebUI's config.json is backed up and restored; extensions/heie and extensions/heie-check are removed.

img2img "Batch from directory" through the WebUI's own img2img path is checked by check_batch_in_webui.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: webui_harness lies beside it
from webui_harness import EXTENSION, MODEL_STUB, REFERENCE_COT, REPO, Report, get_json, free_port, heie_http_server, restored_webui, running_webui, wait_http  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "python"))
from heie_process import STEP_DELAY_VARIABLE  # noqa: E402  (the server's test-only step delay)

SLOW_STEP_MS = 700
"""Each decode step of the panel-and-progress checks' server lasts this much longer (its test-only hook), so
an image's judging (about a dozen steps with the reference chain of thought) lasts seconds."""

# The helper extension, run inside the WebUI. It drives the WebUI's real processing pieces in
# process_images_inner's order and returns what came out, as JSON.
HELPER = MODEL_STUB + r'''
import inspect, json, os, time
from pathlib import Path
from PIL import Image
import numpy as np
from modules import images, processing, script_callbacks, scripts, sd_models, shared


def _heie_script():
    for script in scripts.scripts_txt2img.alwayson_scripts:
        if type(script).__name__ == "HeieScript":
            return script
    raise RuntimeError("the HEIE script is not among the txt2img always-on scripts")


def _pp_args(image, index):
    """The hooks' argument as process_images_inner makes it: Forge's also carries the image's index in the job."""
    if "index" in inspect.signature(scripts.PostprocessImageArgs).parameters:
        return scripts.PostprocessImageArgs(image, index)
    return scripts.PostprocessImageArgs(image)


def _job(body):
    heie = _heie_script()
    placeholder = getattr(sd_models.model_data, "sd_model", None)  # A1111 without a model: None (never loaded here)
    if placeholder is not None and not hasattr(placeholder, "use_distilled_cfg_scale"):
        # Forge without a model: its placeholder lacks the flag of a loaded model that create_infotext reads.
        placeholder.use_distilled_cfg_scale = False
    out = Path(body["folder"])
    n_iter, batch_size = body["n_iter"], body["batch_size"]
    for key, value in body.get("opts", {}).items():
        shared.opts.set(key, value)
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat on a sofa", n_iter=n_iter, batch_size=batch_size,
        width=16, height=16, steps=20, outpath_samples=str(out), outpath_grids=str(out / "grids"), do_not_save_grid=False)
    p.setup_prompts()
    p.all_seeds = [1000 + k for k in range(n_iter * batch_size)]
    p.all_subseeds = list(p.all_seeds)
    output, infotexts, saved, progress = [], [], [], []
    shared.state.textinfo = None
    shared.state.interrupted = False
    if body.get("interrupt_after"):  # the WebUI's Interrupt button, pressed while the image is judged
        import threading
        threading.Timer(body["interrupt_after"], shared.state.interrupt).start()
    t0 = time.monotonic()
    rng = np.random.default_rng(body.get("seed", 0))
    heie.process(p, True)  # the scripts' process hook, where process_images_inner calls it
    for n in range(n_iter):
        p.iteration = n
        p.prompts = p.all_prompts[n * batch_size:(n + 1) * batch_size]
        p.negative_prompts = p.all_negative_prompts[n * batch_size:(n + 1) * batch_size]
        p.seeds = p.all_seeds[n * batch_size:(n + 1) * batch_size]
        p.subseeds = p.all_subseeds[n * batch_size:(n + 1) * batch_size]
        def infotext(index=0, use_main_prompt=False):
            return processing.create_infotext(p, p.prompts, p.seeds, p.subseeds, use_main_prompt=use_main_prompt,
                                              index=index, all_negative_prompts=p.negative_prompts)
        for i in range(batch_size):
            p.batch_index = i
            k = n * batch_size + i
            if k in body.get("dead_for", []):
                shared.opts.set("heie_address", body["dead_address"])
            if "reject_for" in body:
                shared.opts.set("heie_threshold", 1.0 if k in body["reject_for"] else 0.0)
            image = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
            pp = _pp_args(image, k)
            heie.postprocess_image(p, pp, True)  # both hooks, as the WebUI's ScriptRunner calls them
            pp = _pp_args(pp.image, k)
            heie.postprocess_image_after_composite(p, pp, True)
            progress.append(shared.state.textinfo)
            shared.opts.set("heie_address", body["opts"]["heie_address"])
            image = pp.image
            fullfn, _ = images.save_image(image, p.outpath_samples, "", p.seeds[i], p.prompts[i], "png", info=infotext(i), p=p)
            saved.append(fullfn)
            text = infotext(i)
            infotexts.append(text)
            image.info["parameters"] = text
            output.append(image)
    elapsed = time.monotonic() - t0
    shared.state.interrupted = False
    grid = images.image_grid(output, p.batch_size)
    text = infotext(use_main_prompt=True)
    infotexts.insert(0, text)
    grid.info["parameters"] = text
    output.insert(0, grid)
    grid_file, _ = images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], "png",
                                     info=text, short_filename=True, p=p, grid=True)
    res = processing.Processed(p, images_list=output, seed=p.all_seeds[0], info=infotexts[0], subseed=p.all_subseeds[0],
                               index_of_first_image=1, infotexts=infotexts)
    judged = getattr(getattr(p, "heie_state", None), "judged", None)  # postprocess releases the state
    heie.postprocess(p, res)
    def text_chunks(path):
        if not os.path.exists(path):
            return None
        with Image.open(path) as picture:
            return dict(picture.text)
    return {"infotexts": res.infotexts, "saved": saved, "saved_text": [text_chunks(f) for f in saved],
            "grid_file": grid_file, "grid_text": text_chunks(grid_file), "grid_size": list(res.images[0].size) if res.images else None,
            "n_images": len(res.images), "index_of_first_image": res.index_of_first_image, "all_seeds": res.all_seeds,
            "progress": progress, "elapsed": elapsed, "judged": judged, "state_left": hasattr(p, "heie_state"), "textinfo_after": shared.state.textinfo, "params_left": [k for k, v in p.extra_generation_params.items() if callable(v)],
            "js_ok": bool(json.loads(res.js())), "js_heie": json.loads(res.js())["extra_generation_params"].get("HEIE"),
            "image_sizes": [list(im.size) for im in res.images], "overlays": sorted(str(f) for f in out.rglob("*.heie.png")),
            "rejected": sorted(str(f) for f in out.rglob("*") if f.parent.name == "rejected")}


_inpaint_calls = []


def _bbox(mask):
    """[x1, y1, x2, y2) of a bool mask's True pixels, None when there is none."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None


def _prepare_repair(body):
    """Generation without a model from here on (img2img's sampler stubbed), the given options set, and every
    call of the extension's inpainting pass recorded: its mask, and where its result differs from its input."""
    from heie_a1111.repair import grow
    _stub_model()
    if not shared.opts.data.get("sd_model_checkpoint"):
        # What a loaded model sets; Forge's infotext parser compares the infotext's "Model" with it.
        shared.opts.data["sd_model_checkpoint"] = shared.sd_model.sd_checkpoint_info.title
    for key, value in body.get("opts", {}).items():
        shared.opts.set(key, value)
    module = type(_heie_script()).process.__globals__  # scripts/heie.py's namespace
    real = module.get("_real_inpaint") or module["_inpaint"]
    module["_real_inpaint"] = real

    def recording(p, image, mask, options):
        out = real(p, image, mask, options)
        before = np.asarray(image.convert("RGB")).astype(int)
        after = np.asarray(out.convert("RGB")).astype(int)
        changed = np.abs(before - after).sum(2) > 0
        inside = np.asarray(mask) > 0
        # The pass blurs the mask's edge outwards (a Gaussian of this sigma): 3 sigmas hold all it reaches.
        blurred = grow(inside, 3 * processing_blur(module))
        _inpaint_calls.append({"size": list(image.size), "mask_bbox": _bbox(inside), "mask_pixels": int(inside.sum()),
                               "changed_bbox": _bbox(changed), "changed_pixels": int(changed.sum()),
                               "changed_outside_mask": int((changed & ~blurred).sum()), "padding": options.padding,
                               "seed": p.seeds[p.batch_index], "prompt": p.prompts[p.batch_index]})
        return out

    module["_inpaint"] = recording
    _inpaint_calls.clear()
    return {"ok": True}


def processing_blur(module):
    return int(module.get("INPAINT_MASK_BLUR", 4))


def _parsed(text):
    from modules import infotext_utils
    return infotext_utils.parse_generation_parameters(text)


def _on_app_started(demo, app):
    from fastapi import Body

    from fastapi import HTTPException

    def run(body: dict = Body(...)):
        try:
            result = _job(body)
        except Exception:
            import traceback
            raise HTTPException(status_code=500, detail=traceback.format_exc()[-3000:])  # for the check's report
        result["parsed"] = [_parsed(t) for t in result["infotexts"]]
        return result

    def options():
        """The heie_* options the WebUI registered and their values as the WebUI's code reads them (Forge's
        /sdapi/v1/options lists only the values saved in config.json)."""
        return {k: getattr(shared.opts, k) for k in shared.opts.data_labels if k.startswith("heie_")}

    def categories():
        """The settings page's category of each heie_* option (None = "Uncategorized")."""
        return {k: getattr(v, "category_id", None) for k, v in shared.opts.data_labels.items() if k.startswith("heie_")}

    app.add_api_route("/heie-check/run", run, methods=["POST"])
    app.add_api_route("/heie-check/options", options, methods=["GET"])
    app.add_api_route("/heie-check/categories", categories, methods=["GET"])
    def prepare_repair(body: dict = Body(...)):
        return _prepare_repair(body)

    def parse(body: dict = Body(...)):
        return [_parsed(t) for t in body["texts"]]

    app.add_api_route("/heie-check/prepare-repair", prepare_repair, methods=["POST"])
    app.add_api_route("/heie-check/inpaint-calls", lambda: list(_inpaint_calls), methods=["GET"])
    app.add_api_route("/heie-check/parse", parse, methods=["POST"])
    app.add_api_route("/heie-check/ready", lambda: {"ready": True}, methods=["GET"])


script_callbacks.on_app_started(_on_app_started)
'''


def wait_ready(url: str, timeout: float, process: subprocess.Popen) -> bool:  # type: ignore[type-arg]
    """True once the helper's ready route answers its own JSON (not merely some 200 page); False when ``process``
    exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while wait_http(url, max(1.0, deadline - time.monotonic()), process):
        try:
            if get_json(url, timeout=10) == {"ready": True}:
                return True
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return False


def protobuf_pin(webui: Path) -> str:
    """The protobuf version the WebUI's requirements_versions.txt pins ('' when none)."""
    for line in (webui / "requirements_versions.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == "protobuf":
            return version.strip()
    return ""


def score_of(text: str) -> float:
    """The number of an infotext's ``HEIE score: 0.257 (badly flawed)``."""
    return float(text.split(" (")[0])


def webui_checks(report: Report, base: str, heie: str, dead: str, work: Path, label: str, forge: bool = False) -> None:
    registered = get_json(f"{base}/heie-check/options")
    keys = sorted(registered)  # type: ignore[arg-type]
    sys.path.insert(0, str(EXTENSION))
    from heie_a1111.settings import OPTIONS  # the extension's own list (stdlib-only imports)

    report.check(f"{label}: the WebUI has the heie_* options", keys == sorted(o.key for o in OPTIONS), ", ".join(keys))
    categories = get_json(f"{base}/heie-check/categories")
    report.check(f"{label}: the HEIE settings are in the category Postprocessing, not Uncategorized",
                 set(categories.values()) == {"postprocessing"}, json.dumps(categories))  # type: ignore[union-attr]
    report.check(f"{label}: heie_timeout is a float setting", isinstance(registered.get("heie_timeout"), float), repr(registered.get("heie_timeout")))  # type: ignore[union-attr]
    if not forge:  # Forge's /sdapi/v1/options leaves extensions' settings out (README, "Forge notes")
        options = get_json(f"{base}/sdapi/v1/options")
        listed = sorted(k for k in options if k.startswith("heie_"))  # type: ignore[union-attr]
        report.check(f"{label}: /sdapi/v1/options has the heie_* options", listed == keys, ", ".join(listed))
        report.check(f"{label}: /sdapi/v1/options gives heie_timeout as a float", isinstance(options.get("heie_timeout"), float))  # type: ignore[union-attr]
    config = get_json(f"{base}/config")
    labels = {c.get("props", {}).get("label") for c in config.get("components", [])}  # type: ignore[union-attr]
    report.check(f"{label}: the settings page has the HEIE widgets", "Time limit per image, seconds (0 = none)" in labels
          and "Rejected images" in labels and any(str(t).startswith("Reject images scoring below (0 = never") for t in labels)
          and any(str(t).startswith("Reject if: ") for t in labels))
    scripts = get_json(f"{base}/sdapi/v1/scripts")
    by_id = {c.get("props", {}).get("elem_id"): c for c in config.get("components", [])}  # type: ignore[union-attr]
    header = by_id.get("heie_txt2img_enabled-checkbox") or by_id.get("heie_txt2img_enabled")
    report.check(f"{label}: the HEIE accordion carries its on/off checkbox in its header (txt2img and img2img)",
                 header is not None and ("heie_img2img_enabled-checkbox" in by_id or "heie_img2img_enabled" in by_id),
                 json.dumps((header or {}).get("props", {}))[:200])
    report.check(f"{label}: the script is registered for txt2img and img2img",
          "heie" in scripts["txt2img"] and "heie" in scripts["img2img"], str(scripts["txt2img"]))  # type: ignore[index]
    common = {"heie_address": heie, "heie_explanation": False, "heie_max_tokens": 2, "heie_timeout": 120.0,
              "heie_overlay_in_gallery": False}

    r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-a"), "n_iter": 2, "batch_size": 2,
                                             "opts": {**common, "heie_save_overlay": True, "heie_threshold": 0.0,
                                                      "heie_reject_action": "keep"}, "seed": 1})
    parsed = r["parsed"]  # type: ignore[index]
    per_image = parsed[1:]
    metas = [json.loads(t["heie"]) for t in r["saved_text"] if t and "heie" in t]  # type: ignore[index]
    report.check(f"{label}: each image's infotext has its score once (no JSON repeating it), the PNG its heie JSON",
          len(metas) == 4 and all(set(m) == {"score", "mode", "summary", "version"} for m in metas)
          and all("heie" not in p and r["infotexts"][k + 1].count("HEIE score") == 1 for k, p in enumerate(per_image))  # type: ignore[index]
          and all(abs(score_of(p["HEIE score"]) - m["score"]) < 1e-3 for p, m in zip(per_image, metas)),
          r["infotexts"][1].splitlines()[-1][-200:])  # type: ignore[index]
    api = r["js_heie"] or []  # type: ignore[index]
    report.check(f"{label}: the API's info JSON has every image's verdict structured (full score)",
          [e.get("index") for e in api] == [0, 1, 2, 3] and all(abs(e["score"] - m["score"]) < 1e-4 for e, m in zip(api, metas)),
          json.dumps(api[:1])[:200])
    report.check(f"{label}: each image judged once", r["judged"] == 4, str(r["judged"]))  # type: ignore[index]
    report.check(f"{label}: the job's state released at postprocess", r["state_left"] is False, str(r["state_left"]))  # type: ignore[index]
    report.check(f"{label}: the grid's infotext carries no HEIE entry",
          not any(k.startswith("HEIE") or k == "heie" for k in parsed[0]), r["infotexts"][0].splitlines()[-1][:200])  # type: ignore[index]
    report.check(f"{label}: saved PNGs carry the heie text chunk = the infotext's",
          all(t and json.loads(t["heie"]) == m for t, m in zip(r["saved_text"], metas)))  # type: ignore[index]
    report.check(f"{label}: overlays saved beside the images", len(r["overlays"]) == 4, str(len(r["overlays"])))  # type: ignore[index]
    report.check(f"{label}: progress text set while judging", all(t and t.startswith("HEIE: image ") for t in r["progress"]), str(r["progress"][:2]))  # type: ignore[index]
    report.check(f"{label}: progress text cleared when the job ends", r["textinfo_after"] is None, str(r["textinfo_after"]))  # type: ignore[index]
    report.check(f"{label}: entries removed from the job after postprocess; Processed.js() works",
          r["params_left"] == [] and r["js_ok"])  # type: ignore[index]

    r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-b"), "n_iter": 1, "batch_size": 3,
                                             "opts": {**common, "heie_reject_action": "keep", "heie_threshold": 0.0,
                                                      "heie_save_overlay": False}, "dead_for": [1], "dead_address": dead, "seed": 2})
    a, failed, c = r["parsed"][1:]  # type: ignore[index]
    report.check(f"{label}: an image the server failed has its error and no stale score",
          failed.get("HEIE error", "").startswith("UNAVAILABLE: no HEIE server answers at ") and "Server address" in failed["HEIE error"]
          and "HEIE score" not in failed and "HEIE score" in a and "HEIE score" in c,
          json.dumps({k: v for k, v in failed.items() if "HEIE" in k or k == "heie"}))

    move = {**common, "heie_threshold": 1.0, "heie_reject_action": "move", "heie_save_overlay": False}
    for run in range(2):
        r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-c"), "n_iter": 1, "batch_size": 2,
                                                 "opts": move, "seed": 3 + run})
    rejected = r["rejected"]  # type: ignore[index]
    report.check(f"{label}: two runs of rejects moved, none overwritten", len(rejected) == 4 and len(set(rejected)) == 4,
          ", ".join(Path(f).name for f in rejected))

    r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-f"), "n_iter": 1, "batch_size": 1,
                                             "opts": {**common, "heie_max_tokens": 1000, "heie_explanation": True,
                                                      "heie_threshold": 0.0, "heie_reject_action": "keep"},
                                             "interrupt_after": 0.5, "seed": 7})
    report.check(f"{label}: Interrupt while judging cancels the call (HEIE error: CANCELLED)",
          r["parsed"][1].get("HEIE error", "").startswith("CANCELLED") and r["elapsed"] < 5,  # type: ignore[index]
          f"{r['elapsed']:.2f} s, {json.dumps({k: v for k, v in r['parsed'][1].items() if 'HEIE' in k})}")  # type: ignore[index]

    # A threshold between the scores the shown digits would round across: the infotext gives the digits
    # (and the threshold) that explain the decision.
    r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-g"), "n_iter": 1, "batch_size": 2,
                                             "opts": {**common, "heie_threshold": 0.0, "heie_save_overlay": False,
                                                      "heie_overlay_in_gallery": True}, "seed": 8})
    scores = [e["score"] for e in r["js_heie"]]  # type: ignore[index]
    report.check(f"{label}: overlays shown in the gallery after the images (heie_overlay_in_gallery)",
          r["n_images"] == 5 and r["image_sizes"][3:] == [[16, 16], [16, 16]] and r["overlays"] == []  # type: ignore[index]
          and r["infotexts"][3] == r["infotexts"][1], f"{r['n_images']} images")  # type: ignore[index]
    # Between the score and its 3-decimal rounding: that rounding would fall on the other side.
    threshold = max(round((float(f"{scores[0]:.3f}") + scores[0]) / 2, 6), 0.000001)
    r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-h"), "n_iter": 1, "batch_size": 1,
                                             "opts": {**common, "heie_threshold": threshold, "heie_save_overlay": False,
                                                      "heie_overlay_in_gallery": False}, "seed": 8})
    shown = r["parsed"][1]  # type: ignore[index]
    real = r["js_heie"][0]  # type: ignore[index]
    report.check(f"{label}: the infotext's score and threshold explain the reject decision",
          "HEIE score" in shown and float(shown["HEIE threshold"]) == threshold
          and (score_of(shown["HEIE score"]) < threshold) == real["rejected"] == (shown.get("HEIE rejected") == "yes"),
          f"score {real['score']!r}, threshold {threshold!r}: {json.dumps({k: v for k, v in shown.items() if 'HEIE' in k and k != 'HEIE summary'})}")

    r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-i"), "n_iter": 1, "batch_size": 2,
                                             "opts": {**common, "heie_max_tokens": 2048, "heie_explanation": True,
                                                      "heie_threshold": 0.0}, "seed": 9})
    errors = [t.get("HEIE error", "") for t in r["parsed"][1:]]  # type: ignore[index]
    report.check(f"{label}: 2048 tokens per section refused at once, naming the setting",
          all(e.startswith("INVALID_ARGUMENT: Settings → HEIE → “Tokens per explanation section” is 2048") for e in errors)
          and r["elapsed"] < 10, f"{r['elapsed']:.2f} s: {errors[0][:220]}")  # type: ignore[index]

    discard = {**common, "heie_reject_action": "discard", "heie_save_overlay": False}
    r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-e"), "n_iter": 1, "batch_size": 3,
                                             "opts": discard, "reject_for": [1], "seed": 6})
    grid_text = r["grid_text"] or {}  # type: ignore[index]
    report.check(f"{label}: discard of one image drops it and rebuilds the grid (gallery and file)",
          r["n_images"] == 3 and r["grid_size"] == [32, 16] and not Path(r["saved"][1]).exists()  # type: ignore[index]
          and Path(r["saved"][0]).exists() and Path(r["saved"][2]).exists() and len(r["infotexts"]) == 3  # type: ignore[index]
          and "HEIE" not in grid_text.get("parameters", "HEIE") and r["all_seeds"] == [1000, 1002],  # type: ignore[index]
          f"images {r['n_images']}, grid {r['grid_size']}, seeds {r['all_seeds']}")  # type: ignore[index]

    discard_all = {**common, "heie_threshold": 1.0, "heie_reject_action": "discard", "heie_save_overlay": False}
    r = get_json(f"{base}/heie-check/run", {"folder": str(work / f"{label}-d"), "n_iter": 1, "batch_size": 3,
                                             "opts": discard_all, "seed": 5})
    report.check(f"{label}: discard of every image removes them and the grid", r["n_images"] == 0
          and not any(Path(f).exists() for f in r["saved"]) and not Path(r["grid_file"]).exists(),  # type: ignore[index]
          f"images left {r['n_images']}")  # type: ignore[index]

FILENAME_PATTERN = "[seed]-[heie_score]-[heie_band]"
CATEGORY_NAMES = ["hand", "face", "body", "text", "object", "physics", "background", "other"]


def _png_b64(seed: int, size: int = 64) -> str:
    """A PNG of seeded noise (what the img2img API takes as init image), without PIL: the check's Python
    is any python3."""
    import base64
    import random
    import struct
    import zlib
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(size * 3)) for _ in range(size))
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


def _img2img(base: str, folder: Path, heie_args: list, opts: dict, seed: int, batch_size: int = 3) -> dict:
    """One real ``POST /sdapi/v1/img2img`` (the WebUI's API, its ScriptRunner passing our accordion's args)
    with the sampler stubbed; its ``info`` JSON, the parsed infotexts and the inpainting calls it made."""
    folder.mkdir(parents=True, exist_ok=True)
    get_json(f"{base}/heie-check/prepare-repair", {"opts": {**opts, "outdir_img2img_samples": str(folder),
                                                             "samples_filename_pattern": FILENAME_PATTERN}})
    reply = get_json(f"{base}/sdapi/v1/img2img", {
        "init_images": [_png_b64(seed)], "prompt": "a hand holding a cup", "negative_prompt": "blurry", "seed": 1000 + seed,
        "width": 64, "height": 64, "steps": 2, "denoising_strength": 0.5, "batch_size": batch_size, "n_iter": 1,
        "save_images": True, "send_images": True, "alwayson_scripts": {"heie": {"args": heie_args}}})
    info = json.loads(reply["info"])  # type: ignore[index]
    parsed = get_json(f"{base}/heie-check/parse", {"texts": info["infotexts"]})
    return {"info": info, "parsed": parsed, "calls": get_json(f"{base}/heie-check/inpaint-calls"),
            "files": sorted(str(f.relative_to(folder)) for f in folder.rglob("*.png"))}  # save_to_dirs: dated folders


def _file_suffix(seed: int, score: str) -> str:
    """The end of a saved file's name under FILENAME_PATTERN: ``-SEED-SCORE-BAND.png`` (band spaces as hyphens)."""
    number, _, band = score.partition(" (")
    return f"-{seed}-{number}-{band.rstrip(')').replace(' ', '-')}.png"


def _grown_box(boxes: list, padding: int, size: list) -> list:
    """The bounding box of ``boxes`` grown by ``padding`` and clipped to the image."""
    return [max(0, min(b[0] for b in boxes) - padding), max(0, min(b[1] for b in boxes) - padding),
            min(size[0], max(b[2] for b in boxes) + padding), min(size[1], max(b[3] for b in boxes) + padding)]


def repair_checks(report: Report, base: str, heie: str, work: Path, label: str) -> Path:
    """HEIE repair, "Reject if" and the filename pattern through the WebUI's own img2img API (only the
    sampler stubbed: it returns its input plus seeded noise, so the inpainting pass changes the masked area),
    judged by ``heie``, a server fed the reference chain of thought (REFERENCE_COT: a hand and a sign), so
    every image has regions. Returns a PNG the WebUI saved after a repair (for the screenshot)."""
    common = {"heie_address": heie, "heie_explanation": False, "heie_max_tokens": 2, "heie_timeout": 120.0,
              "heie_overlay_in_gallery": False, "heie_save_overlay": False, "heie_reject_action": "keep"}
    padding = 4
    args = [True, True, padding, 0.4, CATEGORY_NAMES, 0.0]
    r = _img2img(base, work / f"{label}-repair", args, {**common, "heie_threshold": 1.0, "heie_reject_if": ""}, seed=1)
    entries, texts, calls = r["info"]["extra_generation_params"].get("HEIE", []), r["parsed"], r["calls"]
    with_regions = [e for e in entries if e.get("repaired_regions")]
    report.check(f"{label}: repair: every rejected image with a region got one inpainting pass (the WebUI's img2img)",
                 len(entries) == 3 and len(with_regions) == len(calls) > 0 and all(e["rejected"] or e["repaired"] for e in entries),
                 f"{len(entries)} images, {len(with_regions)} with regions, {len(calls)} passes"
                 + ("" if with_regions else "; no regions: is --heie-bin built with --features fault-injection?"))
    lined_up = [c["mask_bbox"] == _grown_box([g["box"] for g in e["repaired_regions"]], c["padding"], c["size"])
                for c, e in zip(calls, with_regions)]
    report.check(f"{label}: repair: each mask is its regions' union grown by the padding, and the pass changed only it",
                 all(lined_up) and bool(calls) and all(c["changed_pixels"] > 0 and c["changed_outside_mask"] == 0 for c in calls),
                 json.dumps([{k: c[k] for k in ("mask_bbox", "changed_bbox", "changed_outside_mask")} for c in calls])[:300]
                 + " regions " + json.dumps([[g["box"] for g in e["repaired_regions"]] for e in with_regions])[:200])
    report.check(f"{label}: repair: the pass had the image's own prompt and seed",
                 bool(calls) and [c["seed"] for c in calls] == [r["info"]["all_seeds"][e["index"]] for e in with_regions]
                 and all(c["prompt"] == "a hand holding a cup" for c in calls), json.dumps([c["seed"] for c in calls]))
    both = []
    for e, t in zip(entries, texts[-len(entries):] if entries else []):
        if not e.get("repaired_regions"):
            continue
        if e["repaired"]:
            both.append("HEIE score before repair" in t and t.get("HEIE repaired") == ",".join(e["repair_categories"])
                        and score_of(t["HEIE score"]) > score_of(t["HEIE score before repair"]))
        else:
            both.append(t.get("HEIE repair result", "").startswith("not kept: the repaired image"))
    report.check(f"{label}: repair: the infotext carries the score before and after, the band beside each",
                 bool(both) and all(both) and all(" (" in t.get("HEIE score", "") for t in texts[-len(entries):]),
                 " | ".join(f"{k}: {v}" for k, v in texts[-1].items() if k.startswith("HEIE") and k != "HEIE summary")[:400])
    report.check(f"{label}: repair: the options are in the infotext (paste restores them)",
                 all(t.get("HEIE repair padding") == str(padding) and t.get("HEIE repair denoising") == "0.4" for t in texts[-len(entries):]))
    suffixes = [_file_suffix(r["info"]["all_seeds"][e["index"]], t.get("HEIE score", "")) for e, t in zip(entries, texts[-len(entries):])]
    files = [next((f for f in r["files"] if f.endswith(x)), None) for x in suffixes]
    report.check(f"{label}: [heie_score]-[heie_band] in the filename pattern name each saved file by its score",
                 bool(files) and all(files), ", ".join(r["files"])[:300])
    structured = all({"score", "band", "threshold", "rejected", "rejected_categories", "regions"} <= set(e)
                     and all(set(g) == {"id", "label", "category", "box", "severity"} for g in e["regions"]) for e in entries)
    report.check(f"{label}: the API's info has the structured entry (score, band, threshold, rejected, categories, regions)",
                 bool(entries) and structured, json.dumps(entries[0])[:400] if entries else "none")
    # For the screenshot: a saved image the repair kept, else one it was tried on, else any.
    tried = [f for f, e in zip(files, entries) if f and e.get("repaired")] + [f for f in files if f] + r["files"]
    shown = work / f"{label}-repair" / tried[0] if tried else work

    r = _img2img(base, work / f"{label}-reject-if", [True], {**common, "heie_threshold": 0.0, "heie_reject_if": "any>0"}, seed=2)
    entries, texts = r["info"]["extra_generation_params"].get("HEIE", []), r["parsed"][-3:]
    expected = [sorted({g["category"] for g in e["regions"] if g["severity"] > 0}) for e in entries]
    report.check(f"{label}: “Reject if” any>0 rejects by the regions' categories and says which",
                 len(entries) == 3 and any(expected) and all(sorted(e["rejected_categories"]) == x and e["rejected"] == bool(x)
                                                          and (t.get("HEIE rejected by", "") != "") == bool(x) for e, x, t in zip(entries, expected, texts)),
                 json.dumps([t.get("HEIE rejected by") for t in texts]))
    r = _img2img(base, work / f"{label}-reject-if-bad", [True], {**common, "heie_reject_if": "hand>>0.5"}, seed=3, batch_size=1)
    error = r["parsed"][-1].get("HEIE error", "")
    report.check(f"{label}: an unreadable “Reject if” is a clear error naming the setting, not a crash",
                 error.startswith("INVALID_ARGUMENT: Settings → HEIE → “Reject if” ('hand>>0.5'): "), error[:200])
    get_json(f"{base}/heie-check/prepare-repair", {"opts": {"heie_reject_if": "", "samples_filename_pattern": ""}})
    return shown


def panel_and_progress_checks(report: Report, base: str, slow: str, work: Path, label: str,
                              screenshots: Path | None, shot_prefix: str) -> None:
    """The judging on the WebUI's own progress bar and the verdict panel under the gallery, with ``slow``, a
    server fed the reference chain of thought (a hand, a sign: an explanation and two regions per image) whose
    every decode step is slowed, so each image's judging lasts seconds. Through the real ``/sdapi/v1/img2img``
    (sampler stubbed) while ``/sdapi/v1/progress`` is polled; then, with ``screenshots``, in the page itself
    (webui_panel_screenshots.mjs: Generate in the img2img tab, the gallery's images selected in turn)."""
    opts = {"heie_address": slow, "heie_explanation": True, "heie_max_tokens": 0, "heie_timeout": 300.0,
            "heie_threshold": 0.99, "heie_reject_if": "", "heie_reject_action": "keep", "heie_overlay_in_gallery": False,
            "heie_save_overlay": False}
    polled: list[dict] = []
    done: dict = {}

    def generate() -> None:
        done.update(_img2img(base, work / f"{label}-progress", [True], opts, seed=4, batch_size=2))

    worker = threading.Thread(target=generate)
    worker.start()
    while worker.is_alive():
        reply = get_json(f"{base}/sdapi/v1/progress?skip_current_image=true")
        polled.append({"progress": reply["progress"], "text": reply.get("textinfo") or "", **{
            k: reply["state"].get(k) for k in ("job_no", "job_count", "sampling_step", "sampling_steps")}})
        time.sleep(0.2)
    worker.join()
    judging = [s for s in polled if s["text"].startswith("HEIE: judging image ")]
    first = [s["progress"] for s in judging if s["text"].startswith("HEIE: judging image 1 of 2")]
    second = [s["progress"] for s in judging if s["text"].startswith("HEIE: judging image 2 of 2")]
    report.check(f"{label}: while judging, the WebUI's progress bar stands short of 100 % and moves on per image",
                 bool(first) and bool(second) and max(first) < min(second) < 1.0 and
                 [s["progress"] for s in judging] == sorted(s["progress"] for s in judging),
                 f"image 1 at {sorted(set(first))[:3]}, image 2 at {sorted(set(second))[:3]}; "
                 f"state {judging[-1] if judging else polled[-1:]}")
    words = [s["text"] for s in judging if s["text"].endswith(" so far")]
    report.check(f"{label}: the progress text says which image of how many and the words written so far",
                 bool(words), (words or [s["text"] for s in judging] or ["none"])[-1][:200])
    after = get_json(f"{base}/sdapi/v1/progress?skip_current_image=true")
    state = after["state"]
    # The WebUI's state.end() zeroes job_count when the job ends (webui_loop's tests check job_no == job_count then).
    report.check(f"{label}: after the job the bar is the WebUI's idle one (no HEIE text, its state ended)",
                 not after.get("textinfo") and state.get("job_count") == 0,
                 f"textinfo {after.get('textinfo')!r}, job {state.get('job_no')}/{state.get('job_count')}")
    entries = done.get("info", {}).get("extra_generation_params", {}).get("HEIE", [])
    readable = [e.get("explanation", "") for e in entries]
    report.check(f"{label}: the API's entries carry the readable explanation and each image's gallery position",
                 len(entries) == 2 and all(t and "[MAP]" not in t and "[SCORE]" not in t and "<ref>" not in t for t in readable)
                 and [e.get("image_positions") for e in entries] == [[1], [2]],
                 json.dumps([{"image_positions": e.get("image_positions"), "explanation": e.get("explanation", "")[:80]}
                             for e in entries])[:400])
    if screenshots is None:
        return
    init = work / f"{label}-init.png"
    init.write_bytes(base64.b64decode(_png_b64(5)))
    get_json(f"{base}/heie-check/prepare-repair", {"opts": {**opts, "outdir_img2img_samples": str(work / f"{label}-page")}})
    shot = subprocess.run(["node", str(Path(__file__).with_name("webui_panel_screenshots.mjs")), base, str(init),
                           str(screenshots), shot_prefix], capture_output=True, text=True, timeout=600)
    try:
        seen = json.loads(shot.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        report.check(f"{label}: the page ran Generate with the panel and progress", False, (shot.stdout + shot.stderr)[-800:])
        return
    progress = [t for t in seen["progress"] if "HEIE: judging image" in t]
    report.check(f"{label}: page: the progress bar showed the judging (screenshot {shot_prefix}-progress.png)",
                 seen.get("progress_shot") is True and bool(progress), " | ".join(progress[-3:])[:300])
    panels = seen["panels"]
    first_text, second_text = panels.get("after_generate", ""), panels.get("second_image", "")
    report.check(f"{label}: page: after Generate the panel under the gallery shows image 1's score, band, regions, explanation",
                 first_text.startswith("HEIE image 1: score") and "the left hand" in first_text and "hand" in first_text
                 and "Explanation" in first_text and "[SCORE]" not in first_text and "[MAP]" not in first_text,
                 first_text[:300].replace("\n", " / "))
    report.check(f"{label}: page: selecting the second image shows its verdict, the grid says it has none",
                 second_text.startswith("HEIE image 2: score") and "the grid has none" in panels.get("grid", "")
                 and panels.get("first_image", "").startswith("HEIE image 1: score"),
                 f"{seen.get('thumbnails')} thumbnails; " + " | ".join(f"{k}: {v[:60]}" for k, v in panels.items()).replace("\n", " / "))
    report.check(f"{label}: page: no uncaught error on the page", not seen["page_errors"], " | ".join(seen["page_errors"])[:400])


def main() -> int:
    parser = argparse.ArgumentParser(description="check the HEIE extension in a real AUTOMATIC1111 WebUI")
    parser.add_argument("--webui", type=Path, required=True)
    parser.add_argument("--python", required=True, help="the WebUI venv's python")
    parser.add_argument("--heie-bin", required=True)
    parser.add_argument("--skip-reinstall", action="store_true")
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR",
                        help="after the first start's checks, screenshot the accordion and a repaired image's PNG Info "
                             "into DIR (node and tests/browser's playwright-core)")
    parser.add_argument("--shot-prefix", default="webui", help="the panel and progress screenshots' names: PREFIX-explanation.png, "
                        "PREFIX-progress.png (e.g. forge for a Forge run)")
    parser.add_argument("--launch-arg", action="append", default=[], metavar="ARG",
                        help="one more argument of the WebUI's launch.py (repeat it), e.g. --launch-arg=--always-cpu for Forge")
    args = parser.parse_args()
    webui: Path = args.webui.resolve()
    work = Path(tempfile.mkdtemp(prefix="heie-webui-check-"))
    print(f"work folder {work}", flush=True)

    report = Report()
    with heie_http_server(args.heie_bin, work / "heie-serve.log") as (server, heie), \
            heie_http_server(args.heie_bin, work / "heie-serve-regions.log",
                             env={"HEIE_FAULT_REFERENCE_COT": str(REFERENCE_COT)}) as (grounding_server, grounding), \
            heie_http_server(args.heie_bin, work / "heie-serve-slow.log",
                             env={"HEIE_FAULT_REFERENCE_COT": str(REFERENCE_COT), STEP_DELAY_VARIABLE: str(SLOW_STEP_MS)}) \
            as (slow_server, slow), \
            restored_webui(webui, ("heie", "heie-check")):
        report.check("heie serve --http is up", wait_http(f"http://{heie}/healthz", 120, server))
        report.check("heie serve --http flagging the reference chain of thought's regions is up (a fault-injection build)",
                     wait_http(f"http://{grounding}/healthz", 120, grounding_server))
        report.check("a slowed heie serve --http with the reference chain of thought is up", wait_http(f"http://{slow}/healthz", 120, slow_server))
        sys.path.insert(0, str(EXTENSION / "tools"))
        import export_repo

        extensions = webui / "extensions"
        export = work / "heie-a1111-export"
        export_repo.export(export, commit=True)
        subprocess.run(["git", "clone", "-q", export.as_uri(), str(extensions / "heie")], check=True)
        report.check("exported repository cloned into extensions/heie (Install from URL layout)",
                     (extensions / "heie" / "scripts" / "heie.py").is_file())
        (extensions / "heie-check" / "scripts").mkdir(parents=True)
        (extensions / "heie-check" / "scripts" / "heie_check.py").write_text(HELPER)

        protobuf_before = subprocess.run([args.python, "-c", "import google.protobuf as p; print(p.__version__)"],
                                         capture_output=True, text=True).stdout.strip()
        for start in (1, 2):
            if start == 2:
                if not args.skip_reinstall:
                    t0 = time.monotonic()
                    done = subprocess.run([args.python, "-m", "pip", "install", "-q", "-r", "requirements_versions.txt"],
                                          cwd=webui, capture_output=True, text=True)
                    report.check("the WebUI's requirement install ran", done.returncode == 0,
                                 f"{time.monotonic() - t0:.0f} s {done.stderr[-300:]}")
                met = subprocess.run([args.python, "-c", "from modules import launch_utils; "
                                      "print(launch_utils.requirements_met('requirements_versions.txt'))"],
                                     cwd=webui, capture_output=True, text=True).stdout.strip()
                report.check("the WebUI sees its requirements met (it would reinstall nothing)", met.endswith("True"), met)
            port = free_port()
            log = work / f"webui-{start}.log"
            t0 = time.monotonic()
            with running_webui(webui, args.python, port, log, args.launch_arg) as webui_process:
                # The app_started callbacks (the helper's routes) run once the UI is built, which on Forge is after
                # its API already answers (/sdapi/v1/options then lacks the extensions' options): wait for those.
                up = wait_ready(f"http://127.0.0.1:{port}/heie-check/ready", 600, webui_process)
                if not report.check(f"start {start}: the WebUI serves with the extension", up, f"{time.monotonic() - t0:.0f} s"):
                    print(log.read_text(errors="replace")[-3000:])
                    break
                try:
                    webui_checks(report, f"http://127.0.0.1:{port}", heie, f"127.0.0.1:{free_port()}", work, f"start {start}",
                                 forge=(webui / "modules_forge").is_dir())
                    shown = repair_checks(report, f"http://127.0.0.1:{port}", grounding, work, f"start {start}")
                    panel_and_progress_checks(report, f"http://127.0.0.1:{port}", slow, work, f"start {start}",
                                              args.screenshots if start == 1 else None, args.shot_prefix)
                    if args.screenshots is not None and start == 1:
                        args.screenshots.mkdir(parents=True, exist_ok=True)
                        shot = subprocess.run(["node", str(Path(__file__).with_name("webui_screenshot.mjs")),
                                               f"http://127.0.0.1:{port}", str(shown), str(args.screenshots)],
                                              capture_output=True, text=True, timeout=600)
                        report.check("screenshots of the accordion and a repaired image's PNG Info", shot.returncode == 0,
                                     (shot.stdout + shot.stderr)[-600:])
                except Exception as err:  # noqa: BLE001 - report and go on to the log check
                    detail = err.read().decode(errors="replace")[-3000:] if isinstance(err, urllib.error.HTTPError) else ""
                    report.check(f"start {start}: checks ran", False, f"{err!r}"[:500] + (f"\n{detail}" if detail else ""))
            text = log.read_text(errors="replace")  # the WebUI stopped: its log is complete
            bad = [line for line in text.splitlines() if "bad options item type" in line or "heie" in line.lower() and "Error" in line]
            report.check(f"start {start}: the WebUI log has no HEIE error", not bad, " | ".join(bad[:3]))
        protobuf_after = subprocess.run([args.python, "-c", "import google.protobuf as p; print(p.__version__)"],
                                        capture_output=True, text=True).stdout.strip()
        pinned = protobuf_pin(webui)  # A1111 pins 3.20.0; Forge pins none
        report.check("the WebUI's protobuf is untouched", protobuf_before == protobuf_after and pinned in ("", protobuf_after),
                     f"{protobuf_before} → {protobuf_after}, pinned {pinned or 'nowhere'}")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
