// The verdict panel and the judging progress in a running WebUI's own page, as a person uses it
// (check_in_webui.py --screenshots DIR runs it, on a WebUI whose sampler the check's helper stubbed and
// whose HEIE server is slowed, so the judging lasts seconds): the img2img tab, an init image, batch size
// 2, Generate; a screenshot of the progress bar while the second image is judged (PREFIX-progress.png),
// then of the panel under the gallery (PREFIX-explanation.png); then the second image and the grid are
// selected in the gallery and the panel read again. Prints one JSON object with what it saw (the progress
// texts, each panel's text, the page's uncaught errors) for the check to judge.
//
//   node webui_panel_screenshots.mjs BASE_URL INIT_PNG OUT_DIR PREFIX
//
// Uses playwright-core and Chromium as tests/browser does; CHROMIUM names the browser (default /usr/bin/chromium).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium } from "../../../tests/browser/chromium.mjs";

const [base, initPng, outDir, prefix] = process.argv.slice(2);
const seen = { progress: [], panels: {}, page_errors: [] };
const context = await launchChromium(mkdtempSync(join(tmpdir(), "heie-webui-panel-")), process.env.CHROMIUM || "/usr/bin/chromium");
try {
  const page = await context.newPage();
  page.on("pageerror", (err) => seen.page_errors.push(`${err.message} @ ${(err.stack || "").split("\n")[1] || ""}`.trim()));
  await page.setViewportSize({ width: 1400, height: 1300 });
  await page.goto(base, { waitUntil: "domcontentloaded", timeout: 300000 });
  await page.locator("#tabs button", { hasText: "img2img" }).first().click();
  await page.locator("#img2img_image input[type=file]").setInputFiles(initPng);
  for (const [id, value] of [["img2img_batch_size", "2"], ["img2img_width", "64"], ["img2img_height", "64"], ["img2img_steps", "2"]]) {
    const box = page.locator(`#${id} input[type=number]`);
    await box.fill(value);
    await box.press("Enter");
  }
  await page.waitForTimeout(1000);
  const panel = page.locator("#heie_verdict_img2img").first();  // gradio 3 gives the HTML block and its content the id
  await page.locator("#img2img_generate").click();

  // The progress bar while the second image is judged: its text and how far the bar is filled.
  const bar = page.locator("#img2img_results .progressDiv");
  const deadline = Date.now() + 300000;
  let shot = false;
  while (Date.now() < deadline) {
    const text = (await bar.count()) ? ((await bar.first().innerText().catch(() => "")) || "") : "";
    if (text && seen.progress[seen.progress.length - 1] !== text) seen.progress.push(text);
    if (!shot && text.includes("HEIE: judging image 2 of 2: writing")) {
      // The bar sits on the gallery's top edge: the results column and a margin above it.
      const box = await page.locator("#img2img_results").boundingBox();
      await page.screenshot({ path: join(outDir, `${prefix}-progress.png`),
                              clip: { x: box.x, y: Math.max(0, box.y - 80), width: box.width, height: Math.min(box.height, 500) + 80 } });
      shot = true;
    }
    if ((await panel.innerText().catch(() => "")).includes("HEIE image")) break;
    await page.waitForTimeout(250);
  }
  await page.waitForTimeout(1000);
  seen.panels.after_generate = await panel.innerText();
  await panel.scrollIntoViewIfNeeded();
  await page.locator("#img2img_results").screenshot({ path: join(outDir, `${prefix}-explanation.png`) });

  // The gallery: the grid first, then image 1 and image 2; the panel follows the selected one.
  const thumbs = page.locator("#img2img_gallery .thumbnail-item.thumbnail-small");
  seen.thumbnails = await thumbs.count();
  for (const [name, index] of [["second_image", 2], ["grid", 0], ["first_image", 1]]) {
    if (index >= seen.thumbnails) continue;
    const before = await panel.innerText();
    await thumbs.nth(index).click();
    await page.waitForFunction(([sel, old]) => document.querySelector(sel)?.innerText !== old,
      ["#heie_verdict_img2img", before], { timeout: 15000 }).catch(() => {});
    await page.waitForTimeout(500);
    seen.panels[name] = await panel.innerText();
    if (name === "second_image") {
      await page.locator("#img2img_results").screenshot({ path: join(outDir, `${prefix}-explanation-image2.png`) });
    }
  }
  seen.progress_shot = shot;
} finally {
  await context.close();
}
console.log(JSON.stringify(seen));
