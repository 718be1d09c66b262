// Screenshots of the extension in a running WebUI, for a person to look at (check_in_webui.py
// --screenshots DIR runs it): the txt2img page's HEIE accordion with its repair options, and the WebUI's
// own PNG Info tab showing the infotext of an image saved after a repair.
//
//   node webui_screenshot.mjs BASE_URL SAVED_PNG OUT_DIR
//
// Uses playwright-core and Chromium as the repository's browser tests do (tests/browser/chromium.mjs,
// whose node_modules must be installed); CHROMIUM names the browser (default /usr/bin/chromium).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium } from "../../../tests/browser/chromium.mjs";

const [base, savedPng, outDir] = process.argv.slice(2);
const context = await launchChromium(mkdtempSync(join(tmpdir(), "heie-webui-shot-")), process.env.CHROMIUM || "/usr/bin/chromium");
try {
  const page = await context.newPage();
  page.on("pageerror", (err) => console.log(`page error: ${err.message} @ ${(err.stack || "").split("\n")[1] || ""}`.trim()));
  await page.setViewportSize({ width: 1400, height: 1400 });
  await page.goto(base, { waitUntil: "domcontentloaded", timeout: 300000 });
  const accordion = page.locator("#heie_txt2img_enabled");
  await accordion.waitFor({ timeout: 300000 });
  await accordion.scrollIntoViewIfNeeded();
  const repair = page.locator("#heie_txt2img_repair input[type=checkbox]");
  if (!(await repair.isChecked())) await repair.check();  // shown ticked: the options it enables
  await accordion.screenshot({ path: join(outDir, "accordion.png") });
  console.log(`accordion: ${join(outDir, "accordion.png")}`);

  await page.locator("#tabs button", { hasText: "PNG Info" }).first().click();
  await page.locator("#pnginfo_image input[type=file]").setInputFiles(savedPng);
  const info = page.locator("#pnginfo_html_info, #html_info_x_pnginfo").first();
  await page.waitForFunction(() => document.body.innerText.includes("HEIE score"), null, { timeout: 120000 });
  await page.locator("#tab_pnginfo").screenshot({ path: join(outDir, "pnginfo.png") });
  console.log(`png info: ${join(outDir, "pnginfo.png")} (${(await info.count()) ? "info panel found" : "page"})`);
} finally {
  await context.close();
}
