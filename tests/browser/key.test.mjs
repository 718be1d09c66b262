// The page against a server started with --api-key, in a real Chromium:
//   node key.test.mjs URL IMAGE KEY OUT_DIR
// Without a key the page opens its key box and says why an evaluation was refused; once the key is
// entered the server's info loads and the same image is judged to its heatmap. Screenshot: page-key.png.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, runInChromium } from "./chromium.mjs";

const [url, image, key, outDir] = process.argv.slice(2);
if (!url || !image || !key || !outDir) {
  console.error("usage: node key.test.mjs URL IMAGE KEY OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
await runInChromium(async (context) => {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("server-state").textContent === "ready", null, { timeout: 30_000 });
  await page.waitForSelector("#key-box[open]", { state: "visible", timeout: 10_000 });
  check(true, "a 401 on /v1/info opens the key box");
  check((await page.textContent("#info")) === "", "no server info is shown without the key");

  await page.setInputFiles("#file", image);
  await page.click("#evaluate");
  await page.waitForSelector("#progress.error", { timeout: 30_000 });
  const refused = await page.textContent("#progress");
  check(refused.includes("Not allowed") && refused.includes("API key"), `the refusal says a key is needed: "${refused}"`);

  await page.fill("#api-key", key);
  await page.dispatchEvent("#api-key", "change");
  await page.waitForFunction(() => document.getElementById("info").textContent.includes("slots"), null, { timeout: 10_000 });
  check(true, "with the key the server's info loads");
  await page.click("#evaluate");
  await page.waitForFunction(() => document.getElementById("done").textContent !== "" || document.querySelector("#progress.error"), null, {
    timeout: 180_000,
  });
  const error = await page.$eval("#progress", (e) => (e.classList.contains("error") ? e.textContent : null));
  check(error === null, `the evaluation with the key succeeds (${error})`);
  await page.waitForSelector("#overlay[data-drawn=true]", { state: "visible", timeout: 10_000 });
  check(true, "the heatmap overlay is drawn");
  const stored = await page.evaluate(() => sessionStorage.getItem("heie-api-key"));
  check(stored === key, "the key is kept for this tab only (sessionStorage)");
  const shot = join(outDir, "page-key.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
});
