// The page's flagged regions in a real Chromium, against a `heie serve --http` fed the two-box chain of
// thought (tests/fixtures/reference-cot/hand-and-sign.txt, through HEIE_FAULT_REFERENCE_COT):
//   node regions.test.mjs URL IMAGE OUT_DIR
// Judges IMAGE, then checks the list (label, category, severity), the band beside the score, and that
// pointing at a region outlines its box at the right place over the image and marks its sentences in
// the explanation (and only while pointed at). Screenshot (while pointing): OUT_DIR/page-regions.png.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, runInChromium } from "./chromium.mjs";

const [url, image, outDir] = process.argv.slice(2);
if (!url || !image || !outDir) {
  console.error("usage: node regions.test.mjs URL IMAGE OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const BANDS = ["badly flawed", "flawed", "typical", "good", "very plausible"];
await runInChromium(async (context) => {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("server-state").textContent === "ready", null, { timeout: 30_000 });
  await page.setInputFiles("#file", image);
  await page.click("#evaluate");
  await page.waitForFunction(() => document.getElementById("done").textContent !== "" || document.querySelector("#progress.error"), null, {
    timeout: 180_000,
  });
  const error = await page.$eval("#progress", (e) => (e.classList.contains("error") ? e.textContent : null));
  check(error === null, `the evaluation finished (${error})`);

  const band = await page.$eval("#score .verdict", (e) => e.textContent);
  check(BANDS.includes(band), `the score's band is shown beside it ("${band}")`);
  const rows = await page.$$eval("#region-list li", (items) =>
    items.map((li) => ({
      id: li.dataset.region,
      label: li.querySelector(".region-label").textContent,
      category: li.querySelector(".region-category").textContent,
      severity: li.querySelector(".region-severity").textContent,
    })),
  );
  check(rows.length === 2, `two regions listed (${JSON.stringify(rows)})`);
  check(rows[0].label === "the left hand" && rows[1].label === "the sign", "each under its grounding label");
  const categories = ["hand", "face", "body", "text", "object", "physics", "background", "other"];
  check(rows.every((r) => categories.includes(r.category)), `each with its category (${rows.map((r) => r.category)})`);
  check(rows.every((r) => /^severity [01]\.\d\d$/.test(r.severity)), `each with its severity (${rows.map((r) => r.severity)})`);
  check((await page.$$("mark.region-sentence.active")).length === 0, "no sentence is marked before pointing at a region");
  const hiddenOutline = await page.$eval('#boxes .region-outline[data-region="1"]', (r) => r.getBoundingClientRect().width);
  check(hiddenOutline === 0, "no outline before pointing at a region");

  await page.hover('#region-list li[data-region="1"]');
  // [[100,500,300,900]] on the 640×480 example: pixels 64..192 × 240..432, wherever the image is laid out.
  const placed = await page.evaluate(() => {
    const outline = document.querySelector('#boxes .region-outline[data-region="1"]').getBoundingClientRect();
    const picture = document.getElementById("picture").getBoundingClientRect();
    const sx = picture.width / 640;
    const sy = picture.height / 480;
    return {
      outline: [outline.left, outline.top, outline.right, outline.bottom],
      expected: [picture.left + 64 * sx, picture.top + 240 * sy, picture.left + 192 * sx, picture.top + 432 * sy],
    };
  });
  // The stroke (5 px, centred on the edge) widens the rectangle's box by half of it on each side.
  const off = placed.outline.map((v, i) => Math.abs(v - placed.expected[i]));
  check(off.every((d) => d <= 4), `pointing at "the left hand" outlines its box on the image (${JSON.stringify(placed)})`);
  const marked = await page.$$eval("mark.region-sentence.active", (ms) =>
    ms.map((m) => ({ text: m.textContent, background: getComputedStyle(m).backgroundColor })),
  );
  const markedText = marked.map((m) => m.text).join(" | ");
  check(markedText.includes("Hand: the left hand has six fingers that merge into the sign."), `its sentences are marked (${markedText})`);
  check(!markedText.includes("the letters of the sign are garbled"), "another region's sentence is not");
  check(marked.every((m) => m.background !== "rgba(0, 0, 0, 0)"), `marked sentences are highlighted (${marked.map((m) => m.background)})`);
  const shot = join(outDir, "page-regions.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  await page.hover("#score");
  check((await page.$$("mark.region-sentence.active")).length === 0, "moving away clears the marks");
  const cleared = await page.$eval('#boxes .region-outline[data-region="1"]', (r) => r.getBoundingClientRect().width);
  check(cleared === 0, "and the outline");
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
});
