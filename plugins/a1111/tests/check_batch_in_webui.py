"""Manual check of img2img "Batch from directory" with the extension inside a real AUTOMATIC1111 WebUI or
Stable Diffusion WebUI Forge (not collected by pytest: no test_ prefix). Needs a WebUI checkout with its
venv and requirements installed; no SD model is needed.

    python3 plugins/a1111/tests/check_batch_in_webui.py --webui /work/cache/webui --python /work/cache/venv/bin/python \
        --heie-bin target/debug/heie

Unlike check_in_webui.py, which replays process_images_inner's steps, this one runs the WebUI's own
img2img path end to end: ``modules.img2img.img2img`` (mode 5, "Batch from directory") wrapped in
``call_queue.wrap_gradio_gpu_call`` as the UI calls it, so ``process_batch``, ``process_images`` and
``process_images_inner`` (scripts' process/postprocess_image_after_composite/postprocess hooks,
``save_image``, grid making and saving, ``Processed``) are the WebUI's. Only what needs a model is
stubbed, in a throw-away helper extension ``heie-check-batch``: a fake ``shared.sd_model``, no weight
reload, no textual-inversion reload, no sampler/VAE/conditioning: the "latent" is the input image and
``sample`` returns it plus seeded noise, marked already decoded. On Forge (a ``modules_forge`` folder) the
stub also replaces ``forge_model_reload`` and carries the few ``forge_objects`` fields its
``process_images_inner`` and built-in LoRA extension read; ``img2img`` is called by parameter name (Forge's
has more image inputs and ``distilled_cfg_scale``) and the WebUI gets ``--always-cpu``.

For each run (``discard``, ``grid_save`` on, batch size 2, 6 input images, a reject threshold between
the images' scores found by a first ``keep`` run; ``return_grid`` off, then on), per input: every file
under the output folders is hashed before and after the input's job; no file that existed before may
change or disappear; the state is gone from ``p`` after the job and held only this input's images at
its postprocess; every grid file left has a ``parameters`` chunk; ``/sdapi/v1/progress`` shows no
``HEIE:`` text when idle. The extension is linked (``ln -s``) into ``extensions/heie`` as the README's
first install way says; the WebUI's config.json is backed up and restored.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: webui_harness lies beside it
from webui_harness import EXTENSION, MODEL_STUB, Report, get_json, heie_http_server, restored_webui, running_webui, free_port, wait_http  # noqa: E402

HELPER = MODEL_STUB + r'''
import dataclasses, hashlib, inspect, json, os
from pathlib import Path
from PIL import Image
from modules import call_queue, img2img, processing, scripts, script_callbacks, sd_models, sd_samplers, shared


def _hashes(folders):
    found = {}
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _heie_script():
    for script in scripts.scripts_img2img.alwayson_scripts:
        if type(script).__name__ == "HeieScript":
            return script
    raise RuntimeError("the HEIE script is not among the img2img always-on scripts")


def _run(body):
    _stub_model()
    for key, value in body["opts"].items():
        shared.opts.set(key, value)
    folders = [body["samples"], body["grids"]]
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
    heie = _heie_script()
    module_globals = type(heie).postprocess.__globals__  # scripts/heie.py's namespace
    real_postprocess = module_globals["postprocess"]
    real_postprocess_image = module_globals["postprocess_image"]
    jobs = []
    current = {"input": -1}
    plan = body.get("reject_plan")

    def postprocess_image(p, pp, settings, **kwargs):
        if plan is not None:  # this image rejected or not, whatever its score: threshold 1 or 0 (never)
            settings = dataclasses.replace(settings, threshold=1.0 if plan[current["input"]][p.batch_index] else 0.0)
        return real_postprocess_image(p, pp, settings, **kwargs)

    def postprocess(p, processed, **kwargs):
        state = getattr(p, "heie_state", None)
        job = {"held_images": len(state._by_image) if state is not None else None,
               "judged": getattr(state, "judged", None),
               "gallery_before": len(processed.images)}
        dropped = real_postprocess(p, processed, **kwargs)
        job.update(dropped=dropped, gallery_after=len(processed.images),
                   gallery_grid_parameters=[(getattr(im, "info", {}) or {}).get("parameters") for im in processed.images[:processed.index_of_first_image]])
        jobs.append(job)
        return dropped

    real_process_images = img2img.process_images

    def process_images(p):
        current["input"] += 1
        before = _hashes(folders)
        res = real_process_images(p)
        after = _hashes(folders)
        jobs[-1].update(changed=[f for f in before if f in after and after[f] != before[f]],
                        removed=[f for f in before if f not in after], new=sorted(set(after) - set(before)),
                        state_left=hasattr(p, "heie_state"), textinfo_after=shared.state.textinfo,
                        params_left=[k for k, v in p.extra_generation_params.items() if callable(v)])
        return res

    module_globals["postprocess"] = postprocess
    module_globals["postprocess_image"] = postprocess_image
    img2img.process_images = process_images
    try:
        from modules.api.api import Api
        args = Api.init_default_script_args(None, scripts.scripts_img2img)
        args[heie.args_from] = True  # the accordion's "Judge generated images"
        run = call_queue.wrap_gradio_gpu_call(img2img.img2img, extra_outputs=[None, "", ""])
        request = types.SimpleNamespace(username=None)
        # by name: Forge's img2img has more image inputs (sketch_fg, init_img_with_mask_fg, ...) and distilled_cfg_scale
        values = dict(id_task="task(heie-check-batch)", request=request, mode=5, prompt="a cat on a sofa", negative_prompt="",
                      prompt_styles=[], mask_blur=4, mask_alpha=100, inpainting_fill=1, n_iter=body["n_iter"],
                      batch_size=body["batch_size"], cfg_scale=7.0, distilled_cfg_scale=3.5, image_cfg_scale=1.5,
                      denoising_strength=0.75, selected_scale_tab=0, height=64, width=64, scale_by=1.0, resize_mode=0,
                      inpaint_full_res=False, inpaint_full_res_padding=32, inpainting_mask_invert=0,
                      img2img_batch_input_dir=body["input"], img2img_batch_output_dir=body["samples"],
                      img2img_batch_inpaint_mask_dir="", override_settings_texts=[], img2img_batch_use_png_info=False,
                      img2img_batch_png_info_props=[], img2img_batch_png_info_dir="", img2img_batch_source_type="from dir",
                      img2img_batch_upload=[])
        names = [k for k, v in inspect.signature(img2img.img2img).parameters.items() if v.kind is v.POSITIONAL_OR_KEYWORD]
        out = run(*[values.get(k) for k in names], *args)  # the image inputs (not used in batch mode) None
    finally:
        module_globals["postprocess"] = real_postprocess
        module_globals["postprocess_image"] = real_postprocess_image
        img2img.process_images = real_process_images
    gallery = out[0] if isinstance(out, (list, tuple)) and out else None
    grid_texts = {}
    for path in sorted(Path(body["grids"]).rglob("*.png")):
        with Image.open(path) as picture:
            grid_texts[str(path)] = {"parameters": picture.text.get("parameters"), "size": list(picture.size)}
    samples = {}
    for path in sorted(Path(body["samples"]).rglob("*.png")):
        with Image.open(path) as picture:
            samples[str(path)] = {"heie": picture.text.get("heie"), "parameters": picture.text.get("parameters")}
    return {"jobs": jobs, "grids": grid_texts, "samples": samples, "final": _hashes(folders),
            "gallery_len": len(gallery) if isinstance(gallery, list) else None, "html_info": str(out[2])[:400] if out else None,
            "textinfo": shared.state.textinfo}


def _on_app_started(demo, app):
    from fastapi import Body

    def run(body: dict = Body(...)):
        return _run(body)

    app.add_api_route("/heie-check-batch/run", run, methods=["POST"])
    app.add_api_route("/heie-check-batch/ready", lambda: {"ready": True}, methods=["GET"])


script_callbacks.on_app_started(_on_app_started)
'''


def make_inputs(folder: Path, count: int) -> None:
    from PIL import Image  # the caller's PIL; any will do for writing PNGs

    folder.mkdir(parents=True)
    for k in range(count):
        image = Image.new("RGB", (64, 64), ((40 * k) % 256, (90 + 30 * k) % 256, (200 - 25 * k) % 256))
        for x in range(0, 64, 8):
            for y in range(0, 64, 8):
                if (x + y + 8 * k) % 16 == 0:
                    image.paste((255 - 30 * k, 20 * k, 128), (x, y, x + 8, y + 8))
        image.save(folder / f"input-{k}.png")


def poll_progress(base: str, seen: list[str], done: threading.Event) -> None:
    while not done.is_set():
        try:
            text = get_json(f"{base}/sdapi/v1/progress?skip_current_image=true", timeout=10).get("textinfo")  # type: ignore[union-attr]
            if text and (not seen or seen[-1] != text):
                seen.append(text)
        except Exception:  # noqa: BLE001 - busy server: try again
            pass
        time.sleep(0.3)


def batch_run(base: str, work: Path, name: str, heie: str, threshold: float, action: str, return_grid: bool,
              reject_plan: list[list[bool]] | None = None) -> dict:
    opts = {"heie_address": heie, "heie_explanation": False, "heie_max_tokens": 2, "heie_timeout": 120.0,
            "heie_save_overlay": False, "heie_threshold": threshold, "heie_reject_action": action,
            "grid_save": True, "return_grid": return_grid, "grid_only_if_multiple": True, "samples_save": True,
            "outdir_img2img_grids": str(work / name / "grids"), "outdir_grids": "", "outdir_samples": "",
            "grid_save_to_dirs": False, "img2img_batch_show_results_limit": 32}
    seen: list[str] = []
    done = threading.Event()
    poller = threading.Thread(target=poll_progress, args=(base, seen, done), daemon=True)
    poller.start()
    try:
        r = get_json(f"{base}/heie-check-batch/run", {"input": str(work / "inputs"), "samples": str(work / name / "samples"),
                                                       "grids": str(work / name / "grids"), "n_iter": 1, "batch_size": 2,
                                                       "opts": opts, "reject_plan": reject_plan}, timeout=1800)
    finally:
        done.set()
        poller.join()
    r["progress_seen"] = seen  # type: ignore[index]
    time.sleep(1)
    r["idle_progress"] = get_json(f"{base}/sdapi/v1/progress?skip_current_image=true")  # type: ignore[index]
    (work / f"{name}.json").write_text(json.dumps(r, indent=1))
    return r  # type: ignore[return-value]


def scores_of(r: dict) -> list[float]:
    return [json.loads(s["heie"])["score"] for s in r["samples"].values() if s["heie"]]


def batch_checks(report: Report, r: dict, label: str, inputs: int, batch_size: int) -> None:
    jobs = r["jobs"]
    report.check(f"{label}: one job per input", len(jobs) == inputs, str(len(jobs)))
    report.check(f"{label}: the state held only this input's images at each postprocess",
          all(j["held_images"] == batch_size and j["judged"] == batch_size for j in jobs),
          str([(j["held_images"], j["judged"]) for j in jobs]))
    report.check(f"{label}: the state released after each input", all(j["state_left"] is False and j["params_left"] == [] for j in jobs),
          str([j["state_left"] for j in jobs]))
    report.check(f"{label}: no earlier file changed or removed by any input's job",
          all(not j["changed"] and not j["removed"] for j in jobs),
          "; ".join(f"input {k}: changed {j['changed']} removed {j['removed']}" for k, j in enumerate(jobs) if j["changed"] or j["removed"]))
    dropped = [j["dropped"] for j in jobs]
    report.check(f"{label}: some images rejected and discarded, some kept", 0 < sum(dropped) < inputs * batch_size, str(dropped))
    grids = r["grids"]
    report.check(f"{label}: every grid file left has its parameters infotext", bool(grids) and all(g["parameters"] for g in grids.values()),
          ", ".join(f"{Path(f).name} {g['size']} {'ok' if g['parameters'] else 'NONE'}" for f, g in grids.items()))
    expected_grids = sum(1 for d in dropped if d < batch_size)
    report.check(f"{label}: one grid per input with an image kept (rebuilt grids on disk too)", len(grids) == expected_grids,
          f"{len(grids)} grids, expected {expected_grids}")
    pixels = {}
    for f in grids:
        pixels.setdefault(r["final"][f], []).append(Path(f).name)
    report.check(f"{label}: no two grids identical", all(len(v) == 1 for v in pixels.values()), str([v for v in pixels.values() if len(v) > 1]))
    report.check(f"{label}: no HEIE text left in the state after each input", all(not (j["textinfo_after"] or "").startswith("HEIE") for j in jobs),
          str([j["textinfo_after"] for j in jobs]))
    report.check(f"{label}: HEIE progress text was shown while judging", any(t.startswith("HEIE: ") for t in r["progress_seen"]),
          str(r["progress_seen"][:4]))
    idle = r["idle_progress"].get("textinfo")
    report.check(f"{label}: /sdapi/v1/progress shows no HEIE text when idle", not (idle or "").startswith("HEIE"), repr(idle))
    per_input = []
    for j in jobs:
        kept = batch_size - j["dropped"]
        samples = [f for f in j["new"] if "/samples/" in f and f in r["final"]]
        grids_now = [f for f in j["new"] if "/grids/" in f and f in r["final"]]
        sizes = [grids[f]["size"] for f in grids_now]
        ok = len(samples) == kept and len(grids_now) == (1 if kept else 0) and all(s == [64 * kept, 64] for s in sizes) \
            and all((grids[f]["parameters"] or "").startswith("a cat on a sofa") for f in grids_now)
        per_input.append((kept, len(samples), sizes, ok))
    report.check(f"{label}: per input, its kept images saved and its grid (kept images only) with its infotext",
          all(x[3] for x in per_input), str([x[:3] for x in per_input]))
    shown = [p for j in jobs for p in j["gallery_grid_parameters"]]
    if any(j["gallery_before"] > batch_size for j in jobs):  # return_grid on
        report.check(f"{label}: every gallery grid keeps its parameters, one per input with an image kept",
              all(shown) and len(shown) == sum(1 for j in jobs if j["dropped"] < batch_size), str([bool(p) for p in shown]))


def main() -> int:
    parser = argparse.ArgumentParser(description="check img2img Batch from directory with the HEIE extension in a real A1111 or Forge")
    parser.add_argument("--webui", type=Path, required=True)
    parser.add_argument("--python", required=True, help="the WebUI venv's python")
    parser.add_argument("--heie-bin", required=True)
    parser.add_argument("--inputs", type=int, default=6)
    parser.add_argument("--threshold", type=float, default=None, help="reject threshold (default: the median score of a keep run)")
    parser.add_argument("--extension", type=Path, default=EXTENSION, help="the extension folder to link (default: this one)")
    args = parser.parse_args()
    webui: Path = args.webui.resolve()
    work = Path(tempfile.mkdtemp(prefix="heie-webui-batch-"))
    print(f"work folder {work}", flush=True)
    make_inputs(work / "inputs", args.inputs)

    report = Report()
    # Forge: its memory manager picks the device itself, CUDA unless told
    launch_args = ["--always-cpu"] if (webui / "modules_forge").is_dir() else []
    with heie_http_server(args.heie_bin, work / "heie-serve.log", ("--n-gpu-layers", "0")) as (server, heie), \
            restored_webui(webui, ("heie", "heie-check-batch")):
        report.check("heie serve --http is up", wait_http(f"http://{heie}/healthz", 120, server))
        extensions = webui / "extensions"
        (extensions / "heie").symlink_to(args.extension.resolve())
        (extensions / "heie-check-batch" / "scripts").mkdir(parents=True)
        (extensions / "heie-check-batch" / "scripts" / "heie_check_batch.py").write_text(HELPER)
        port = free_port()
        log = work / "webui.log"
        t0 = time.monotonic()
        with running_webui(webui, args.python, port, log, launch_args) as webui_process:
            base = f"http://127.0.0.1:{port}"
            # the app_started callbacks (the helper's routes) run after the API is up: wait for those
            if not report.check("the WebUI serves with the extension linked",
                                wait_http(f"{base}/heie-check-batch/ready", 600, webui_process), f"{time.monotonic() - t0:.0f} s"):
                print(log.read_text(errors="replace")[-3000:])
                return 1
            startup_log = len(log.read_text(errors="replace"))  # without a model its load fails at start: not ours
            threshold = args.threshold
            if threshold is None:
                r = batch_run(base, work, "keep", heie, 0.0, "keep", False)
                scores = sorted(scores_of(r))
                report.check("keep run: every image scored", len(scores) == 2 * args.inputs, str(scores))
                distinct = sorted(set(scores))
                if len(distinct) < 2:
                    report.check("the images' scores differ (a threshold between them exists)", False, str(distinct))
                    return 1
                threshold = round(distinct[len(distinct) // 2], 6)  # rejects the images scoring below the median
                print(f"threshold {threshold} (scores {scores})", flush=True)
            for name, return_grid in (("discard-grid-off", False), ("discard-grid-on", True)):
                r = batch_run(base, work, name, heie, threshold, "discard", return_grid)
                batch_checks(report, r, f"{name} (threshold {threshold})", args.inputs, 2)
            # The scores of the fixture model are close together, so which input gets 0, 1 or 2 rejects above is
            # chance; here each case comes for sure: per image a threshold of 1 (rejected) or 0 (kept).
            patterns = [[False, False], [True, False], [True, True], [False, True]]
            plan = [patterns[k % len(patterns)] for k in range(args.inputs)]
            for name, return_grid in (("planned-grid-off", False), ("planned-grid-on", True)):
                r = batch_run(base, work, name, heie, threshold, "discard", return_grid, reject_plan=plan)
                batch_checks(report, r, f"{name} (rejects per input {[sum(x) for x in plan]})", args.inputs, 2)
        text = log.read_text(errors="replace")  # the WebUI stopped: its log is complete
        bad = [line for line in text[startup_log:].splitlines() if "Traceback" in line or ("heie" in line.lower() and "Error" in line)]
        bad += [line for line in text[:startup_log].splitlines() if "heie" in line.lower() and "Error" in line]
        report.check("the WebUI log has no traceback during the runs, no HEIE error", not bad, " | ".join(bad[:3]))
    return report.finish(f"; files in {work}")


if __name__ == "__main__":
    sys.exit(main())
