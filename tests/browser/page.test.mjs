// Drives the HEIE page in a real Chromium against a running `heie serve --http`:
//   node page.test.mjs URL IMAGE OUT_DIR
// Loads the page, submits IMAGE, checks that explanation text streams in before the score and that the
// heatmap overlay is drawn, then checks the opacity slider, dark mode, a refused image, the progress
// shown while queued and the message when the server is full (the server must run with --parallel 1
// --max-queue 2), the ranking of several images and a phone-width layout. Screenshots go to OUT_DIR
// (their paths are printed).
// Exits non-zero with the reason on the first failed check.
import { check, launchChromium } from "./chromium.mjs";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const [url, image, outDir] = process.argv.slice(2);
if (!url || !image || !outDir) {
  console.error("usage: node page.test.mjs URL IMAGE OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const executablePath = process.env.HEIE_CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "heie-chromium-"));
const EVALUATION_TIMEOUT = 180_000;


/** Records, in the page, when explanation text, the score and the overlay first appear. */
async function watch(page) {
  await page.evaluate(() => {
    const seen = { textUpdates: 0, textUpdatesBeforeScore: 0 };
    window.__heieSeen = seen;
    let lastLength = 0;
    new MutationObserver(() => {
      const now = performance.now();
      const length = [...document.querySelectorAll("#sections .text")].reduce((n, e) => n + e.textContent.length, 0);
      if (length > lastLength) {
        lastLength = length;
        seen.textUpdates += 1;
        if (seen.text === undefined) seen.text = now;
        if (seen.score === undefined) seen.textUpdatesBeforeScore += 1;
      }
      if (seen.score === undefined && !document.getElementById("score").hidden) seen.score = now;
      if (seen.overlay === undefined && document.getElementById("overlay").dataset.drawn === "true") seen.overlay = now;
    }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

/** Keeps `n` long evaluations in flight through the API itself (hot sampling, large caps; a new one
 * whenever one ends, since a random-weight model ends its sections at random), so the server's slot
 * and queue places stay taken. `open` counts those the server accepted; stop() closes them all, which
 * cancels them on the server. */
function saturate(n) {
  const body = JSON.stringify({
    image: { encoded: readFileSync(image).toString("base64") },
    // 1100 per section: three sections fit the default 4096-token context (2048 would be refused).
    options: { maxTokensPerSection: 1100, temperature: 5, seed: "9" },
  });
  const state = { open: 0, stopped: false, controllers: new Set() };
  async function keepOne() {
    while (!state.stopped) {
      const controller = new AbortController();
      state.controllers.add(controller);
      try {
        const response = await fetch(new URL("/v1/evaluate", url), {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
          signal: controller.signal,
        });
        if (response.ok) {
          state.open += 1;
          try {
            await response.text();
          } finally {
            state.open -= 1;
          }
        } else {
          await response.text();
          await new Promise((r) => setTimeout(r, 20));
        }
      } catch (_) {
        // Aborted by stop().
      } finally {
        state.controllers.delete(controller);
      }
    }
  }
  for (let i = 0; i < n; i++) keepOne();
  return {
    state,
    async accepted(k) {
      const until = Date.now() + 30_000;
      while (state.open < k) {
        if (Date.now() > until) throw new Error(`only ${state.open} of ${k} long evaluations were accepted`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    stop() {
      state.stopped = true;
      for (const c of state.controllers) c.abort();
    },
  };
}

async function submit(page, file) {
  await page.setInputFiles("#file", file);
  await page.fill("#prompt", "a test picture");
  await page.click("#evaluate");
}

async function evaluateImage(page, file) {
  await submit(page, file);
  await waitDone(page);
}

async function waitDone(page) {
  await page.waitForFunction(() => document.getElementById("done").textContent !== "" || document.querySelector("#progress.error"), null, {
    timeout: EVALUATION_TIMEOUT,
  });
  const error = await page.$eval("#progress", (e) => (e.classList.contains("error") ? e.textContent : null));
  if (error) throw new Error(`the evaluation failed in the page: ${error}`);
  await page.waitForSelector("#overlay[data-drawn=true]", { state: "visible", timeout: 10_000 });
}

const context = await launchChromium(profile, executablePath);
let failed = false;
try {
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  // --- Laptop, light: one image, streamed ------------------------------------------------------
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("server-state").textContent === "ready", null, { timeout: 30_000 });
  check(true, "the page loads and reports the server ready");
  await page.waitForFunction(() => document.getElementById("info").textContent.includes("slots"), null, { timeout: 10_000 });
  check(true, "the footer shows the server's info");
  await watch(page);
  await page.setInputFiles("#file", image);
  const shown = await page.evaluate(() =>
    ["score", "overlay", "opacity-control", "legend"].filter((id) => document.getElementById(id).getBoundingClientRect().height > 0),
  );
  check(shown.length === 0, `no empty result boxes before an evaluation (${shown.join(", ") || "none shown"})`);
  await evaluateImage(page, image);
  const seen = await page.evaluate(() => window.__heieSeen);
  console.log(`timeline (ms): ${JSON.stringify(seen)}`);
  check(seen.text !== undefined && seen.score !== undefined, "explanation text and a score appeared");
  check(seen.text < seen.score, "the explanation text arrived before the score");
  check(seen.textUpdatesBeforeScore >= 2, `the text streamed in pieces (${seen.textUpdatesBeforeScore} updates before the score)`);
  check(seen.overlay !== undefined, "the heatmap overlay was drawn");
  const sections = await page.$$eval("#sections .section h2", (hs) => hs.map((h) => h.textContent));
  check(sections.length >= 2 && sections[0] === "Image description", `sections shown in order: ${sections.join(", ")}`);
  const score = await page.$eval("#score .value", (e) => e.textContent);
  check(/^[01]\.\d\d$/.test(score), `the score is shown (${score})`);
  const texts = await page.$$eval("#sections .text", (ts) => ts.map((t) => ({ shown: t.textContent, raw: t.dataset.raw })));
  const raw = texts.map((t) => t.raw).join("\n");
  const shownText = texts.map((t) => t.shown).join("\n");
  check(raw.includes("[MAP]") && raw.includes("[SCORE]"), "the model's raw text has its [MAP] and [SCORE] markers");
  check(!/\[MAP\]|\[SCORE\]/.test(shownText), "no raw marker is shown to people");
  check(shownText.includes("shown in the heatmap") && shownText.includes(`is ${score}`), `the markers read as the heatmap and the score (${score})`);
  const overlay = await page.$eval("#overlay", (c) => {
    const r = c.getBoundingClientRect();
    const p = document.getElementById("picture").getBoundingClientRect();
    return { w: r.width, h: r.height, pw: p.width, ph: p.height, opacity: getComputedStyle(c).opacity };
  });
  check(overlay.w > 100 && Math.abs(overlay.w - overlay.pw) < 2 && Math.abs(overlay.h - overlay.ph) < 2, `the overlay covers the image (${JSON.stringify(overlay)})`);
  check(Math.abs(Number(overlay.opacity) - 0.55) < 0.01, "the overlay starts at the slider's opacity");
  const painted = await page.$eval("#overlay", (c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n += 1;
    return { n, of: d.length / 4, w: c.width, h: c.height };
  });
  check(painted.n === painted.of && painted.w > 0, `the heatmap is painted on every pixel (${painted.w}×${painted.h})`);
  const progress = await page.$eval("#progress", (e) => e.textContent);
  check(progress === "Done.", `the progress line says it finished (${progress})`);
  const done = await page.$eval("#done", (e) => e.textContent);
  check(/tokens at/.test(done), `timings are shown (${done})`);
  const shot = resolve(outDir, "page.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  await page.$eval("#opacity", (e) => {
    e.value = "100";
    e.dispatchEvent(new Event("input"));
  });
  check((await page.$eval("#overlay", (c) => getComputedStyle(c).opacity)) === "1", "the opacity slider changes the overlay");
  await page.$eval("#opacity", (e) => {
    e.value = "55";
    e.dispatchEvent(new Event("input"));
  });

  // --- Dark mode ---------------------------------------------------------------------------------
  await page.emulateMedia({ colorScheme: "dark" });
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = background.match(/\d+/g).map(Number);
  check(r + g + b < 120, `dark mode has a dark background (${background})`);
  const textColour = await page.$eval(".section .text", (e) => getComputedStyle(e).color);
  const [tr, tg, tb] = textColour.match(/\d+/g).map(Number);
  check(tr + tg + tb > 500, `and light text (${textColour})`);
  const darkShot = resolve(outDir, "page-dark.png");
  await page.screenshot({ path: darkShot, fullPage: true });
  console.log(`screenshot: ${darkShot}`);
  await page.emulateMedia({ colorScheme: "light" });

  // --- A refused image: the API's error text is shown ------------------------------------------
  const bogus = join(profile, "not-an-image.png");
  writeFileSync(bogus, "this is text, not a PNG");
  await page.setInputFiles("#file", bogus);
  await page.click("#evaluate");
  await page.waitForSelector("#progress.error", { timeout: 30_000 });
  const refusal = await page.$eval("#progress", (e) => e.textContent);
  check(refusal.startsWith("The request was refused: image.encoded:"), `a refused image says why (${refusal})`);

  // --- Queued, then full: progress while waiting, and RESOURCE_EXHAUSTED explained ----------------
  const one = saturate(1);
  await one.accepted(1);
  await submit(page, image);
  await page.waitForFunction(() => /Queued for a free slot/.test(document.getElementById("progress").textContent), null, { timeout: 30_000 });
  const queued = await page.$eval("#progress", (e) => ({ text: e.textContent, busy: e.classList.contains("busy") }));
  check(queued.busy && / \d+\.\d s$/.test(queued.text), `progress is shown while queued (${queued.text})`);
  const queuedShot = resolve(outDir, "page-queued.png");
  await page.screenshot({ path: queuedShot });
  console.log(`screenshot: ${queuedShot}`);
  one.stop();
  await waitDone(page);
  check(true, "the queued evaluation ran once the slot was free");

  // The slot and both queue places taken: a page's request is refused. A long evaluation may end
  // and its replacement arrive just after the page's request; then the page's request was queued
  // instead, and it is stopped and tried again.
  const three = saturate(3);
  await three.accepted(3);
  let full = "";
  for (let attempt = 0; attempt < 5 && !full.startsWith("The server is full"); attempt++) {
    await submit(page, image);
    await page.waitForFunction(
      () => document.querySelector("#progress.error") || /Queued|Writing/.test(document.getElementById("progress").textContent),
      null,
      { timeout: 30_000 },
    );
    full = await page.$eval("#progress", (e) => (e.classList.contains("error") ? e.textContent : ""));
    if (!full) {
      await page.click("#stop");
      await page.waitForSelector("#progress.error", { timeout: 30_000 });
      await three.accepted(3);
    }
  }
  check(full.startsWith("The server is full (RESOURCE_EXHAUSTED)") && full.includes("busy"), `a full server is explained (${full})`);
  const fullShot = resolve(outDir, "page-full.png");
  await page.screenshot({ path: fullShot });
  console.log(`screenshot: ${fullShot}`);
  three.stop();

  // --- Several images ranked ---------------------------------------------------------------------
  // Cancelled queued requests keep their queue places until the slot frees; wait for the server to drain.
  await page.waitForTimeout(500);
  await page.click("#tab-batch");
  await page.setInputFiles("#batch-files", [image, image]);
  await page.click("#rank");
  await page.waitForFunction(() => /Ranked/.test(document.getElementById("batch-progress").textContent) || document.querySelector("#batch-progress.error"), null, {
    timeout: EVALUATION_TIMEOUT,
  });
  const ranked = await page.$$eval("#ranking li .rank", (els) => els.map((e) => e.textContent));
  const batchProgress = await page.$eval("#batch-progress", (e) => e.textContent);
  check(ranked.join(",") === "#1,#2", `two images ranked (${batchProgress})`);
  await page.screenshot({ path: resolve(outDir, "page-batch.png"), fullPage: true });
  console.log(`screenshot: ${resolve(outDir, "page-batch.png")}`);

  // --- Phone width -------------------------------------------------------------------------------
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(url);
  await phone.waitForFunction(() => document.getElementById("server-state").textContent === "ready", null, { timeout: 30_000 });
  await watch(phone);
  await evaluateImage(phone, image);
  const widths = await phone.evaluate(() => ({ scroll: document.documentElement.scrollWidth, view: window.innerWidth }));
  check(widths.scroll <= widths.view, `no sideways scrolling on a phone (${widths.scroll} ≤ ${widths.view})`);
  const stage = await phone.$eval("#stage", (e) => e.getBoundingClientRect().width);
  check(stage > 300 && stage <= 390, `the image fills the phone's width (${stage}px)`);
  const phoneShot = resolve(outDir, "page-phone.png");
  await phone.screenshot({ path: phoneShot, fullPage: true });
  console.log(`screenshot: ${phoneShot}`);

  // Chromium logs every refused request (the 400 and 429 above, on purpose); anything else is a fault.
  const faults = consoleErrors.filter((e) => !/^Failed to load resource: the server responded with a status of (400|429) /.test(e));
  check(faults.length === 0, `no script errors (${faults.join(" | ") || "none"})`);
} catch (e) {
  failed = true;
  console.error(String(e && e.stack ? e.stack : e));
  try {
    const pages = context.pages();
    if (pages.length) {
      const failShot = resolve(outDir, "failure.png");
      await pages[pages.length - 1].screenshot({ path: failShot, fullPage: true });
      console.error(`screenshot of the failure: ${failShot}`);
    }
  } catch (_) {
    // The browser itself is gone; the error above says why.
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
