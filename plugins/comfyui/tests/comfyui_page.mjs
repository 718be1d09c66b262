// Drives a running ComfyUI's own page in headless Chromium (not run by CI: it needs a real ComfyUI).
//
//   node comfyui_page.mjs to-ui URL API_JSON UI_JSON PNG
//     loads an API-format workflow into the editor (ComfyUI's own loader and layout), writes what the
//     editor saves (UI format: version, nodes, links …) to UI_JSON and a screenshot of the graph to PNG;
//     the example workflows and their thumbnails are made this way.
//   node comfyui_page.mjs template URL PACK NAME PNG
//     opens the Templates browser, picks category PACK and the card NAME, as a person would; prints
//     whether the card's thumbnail loaded and the node types of the graph it opened; screenshots the
//     browser (PNG with -browser) and the graph (PNG).
//   node comfyui_page.mjs template-run URL PACK NAME PNG
//     the same, then queues the opened workflow from the page (as a user presses Run), waits for the
//     queue to drain, prints the text shown on each HEIE node as JSON and screenshots the graph (PNG).
//   node comfyui_page.mjs template-cancel URL PACK NAME PNG
//     opens the template the same way and queues it; once a HEIE node's text shows a model download
//     ("downloading … %"), screenshots the graph (PNG with -downloading), presses Cancel (the page's
//     api.interrupt, as the Cancel button does), waits for the queue to drain, prints the HEIE nodes'
//     texts as JSON and screenshots the graph (PNG).
//   node comfyui_page.mjs run URL UI_JSON PNG
//     loads a UI workflow, queues it from the page, waits for the queue to drain and screenshots the graph
//     (the HEIE nodes show their text); prints the text shown on each HEIE node as JSON.
//   node comfyui_page.mjs run-api URL API_JSON PNG
//     the same for an API-format workflow (loaded with ComfyUI's own loader); also prints, per HEIE node,
//     the preview images the node shows (their size once loaded, and the /view URL).
//   node comfyui_page.mjs manager-installed URL PNG
//     opens ComfyUI-Manager's Custom Nodes Manager (its own command, as its menu button does), filters
//     it to "Installed", prints the rows' text as JSON and screenshots the page (PNG).
//
// playwright-core comes from tests/browser (installed by `npm ci` there; HEIE_BROWSER_DIR names another
// folder holding its node_modules); the browser is Debian's chromium.
import { createRequire } from "node:module";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(process.env.HEIE_BROWSER_DIR || resolve(here, "../../../tests/browser"), "package.json"));
const { chromium } = require("playwright-core");

const [mode, url, ...rest] = process.argv.slice(2);
const usage = "usage: node comfyui_page.mjs to-ui URL API_JSON UI_JSON PNG | template URL PACK NAME PNG"
  + " | template-run URL PACK NAME PNG | template-cancel URL PACK NAME PNG | run URL UI_JSON PNG"
  + " | run-api URL API_JSON PNG | manager-installed URL PNG";
if (!mode || !url) {
  console.error(usage);
  process.exit(2);
}

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "heie-comfy-")), {
  executablePath: process.env.HEIE_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 2000, height: 1000 },
  args: ["--no-sandbox"],
});
const page = context.pages()[0] ?? (await context.newPage());
page.on("pageerror", (err) => console.error(`page error: ${err.message}`));

try {
  await page.goto(url);
  await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph && window.LiteGraph?.registered_node_types?.HeieFilter,
                             null, { timeout: 120_000 });
  await page.waitForTimeout(1500); // the first-run dialogs and the default graph settle
  await page.keyboard.press("Escape");

  if (mode === "to-ui") {
    const [apiJson, uiJson, png] = rest;
    const api = JSON.parse(readFileSync(apiJson, "utf8"));
    const workflow = await page.evaluate(async (api) => {
      const app = window.comfyAPI.app.app;
      app.loadApiJson(api, "workflow");
      await new Promise((r) => setTimeout(r, 500));
      // ComfyUI's loader lays the graph out in one long row of columns; wrap the columns into rows so
      // that the whole graph is about 3:2 (readable on screen and as a template thumbnail).
      const GAP = 60;
      const byColumn = new Map();
      for (const node of app.graph.nodes) {
        const x = Math.round(node.pos[0]);
        byColumn.set(x, [...(byColumn.get(x) ?? []), node]);
      }
      const columns = [...byColumn.entries()].sort((a, b) => a[0] - b[0]).map(([, nodes]) => {
        nodes.sort((a, b) => a.pos[1] - b.pos[1]);
        return { nodes, width: Math.max(...nodes.map((n) => n.size[0])),
                 height: nodes.reduce((h, n) => h + n.size[1] + GAP, 0) };
      });
      const place = (perRow) => {
        let x = 0, y = 0, rowHeight = 0, width = 0;
        const spots = [];
        columns.forEach((column, i) => {
          if (i > 0 && i % perRow === 0) { x = 0; y += rowHeight + GAP; rowHeight = 0; }
          spots.push([x, y]);
          x += column.width + GAP;
          width = Math.max(width, x);
          rowHeight = Math.max(rowHeight, column.height);
        });
        return { spots, aspect: width / (y + rowHeight) };
      };
      let best = place(columns.length);
      for (let perRow = columns.length - 1; perRow >= 2; perRow--) {
        const candidate = place(perRow);
        if (Math.abs(Math.log(candidate.aspect / 1.5)) < Math.abs(Math.log(best.aspect / 1.5))) best = candidate;
      }
      columns.forEach((column, i) => {
        let y = best.spots[i][1];
        for (const node of column.nodes) {
          node.pos = [best.spots[i][0], y];
          y += node.size[1] + GAP;
        }
      });
      app.graph.setDirtyCanvas(true, true);
      return (await app.graphToPrompt()).workflow;
    }, api);
    writeFileSync(uiJson, JSON.stringify(workflow, null, 2) + "\n");
    await fitAndShoot(png);
  } else if (mode === "template" || mode === "template-run" || mode === "template-cancel") {
    const [pack, name, png] = rest;
    // The way a person does it: Templates in the sidebar, the pack's category, the workflow's card.
    // The browser may be showing already (the frontend opens it for a new user by itself) and its list
    // loads slowly on a busy machine: open it only while the pack's category is not there.
    const category = page.getByText(pack, { exact: true }).first();
    for (let tries = 0; tries < 3 && !(await category.isVisible()); tries++) {
      await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
      await category.waitFor({ state: "visible", timeout: 60_000 }).catch(() => {});
    }
    if (!(await category.isVisible())) {
      await page.screenshot({ path: png.replace(/\.png$/, "-no-templates.png") });
      throw new Error(`the Templates browser shows no category ${pack} (screenshot ${png.replace(/\.png$/, "-no-templates.png")})`);
    }
    await category.click();
    await page.waitForTimeout(1500);
    await page.screenshot({ path: png.replace(/\.png$/, "-browser.png") });
    console.log(`screenshot: ${png.replace(/\.png$/, "-browser.png")}`);
    // The browser fetches each card's <name>.jpg and shows it from a blob: URL.
    const thumbnails = await page.evaluate(() => [...document.querySelectorAll("img")]
      .filter((i) => i.src.startsWith("blob:") && i.naturalWidth > 0).map((i) => [i.naturalWidth, i.naturalHeight]));
    await page.getByText(name, { exact: true }).first().click({ timeout: 30_000 });
    await page.waitForTimeout(2000);
    const loaded = await page.evaluate(() => window.comfyAPI.app.app.graph.nodes.map((n) => n.type));
    console.log(JSON.stringify({ thumbnails, loaded }));
    if (mode === "template-run") {
      const texts = await page.evaluate(async () => {
        const app = window.comfyAPI.app.app;
        const api = window.comfyAPI.api.api;
        const idle = new Promise((done) => api.addEventListener("status", (e) => {
          if (e.detail?.exec_info?.queue_remaining === 0) done();
        }));
        await app.queuePrompt(0);
        await idle;
        await new Promise((r) => setTimeout(r, 2000)); // the previews load from /view
        return app.graph.nodes.filter((n) => n.type.startsWith("Heie")).map((n) => ({
          id: n.id, type: n.type, text: n.widgets?.find((w) => w.name === "$$node-text-preview")?.value ?? null,
        }));
      });
      console.log(JSON.stringify({ texts }));
    }
    if (mode === "template-cancel") {
      await page.evaluate(() => {
        const api = window.comfyAPI.api.api;
        window.heieIdle = new Promise((done) => api.addEventListener("status", (e) => {
          if (e.detail?.exec_info?.queue_remaining === 0) done();
        }));
        window.comfyAPI.app.app.queuePrompt(0);
      });
      await page.waitForFunction(() => window.comfyAPI.app.app.graph.nodes.some((n) =>
        /downloading .*%/.test(n.widgets?.find((w) => w.name === "$$node-text-preview")?.value ?? "")),
        null, { timeout: 300_000, polling: 250 });
      await fitAndShoot(png.replace(/\.png$/, "-downloading.png"));
      const texts = await page.evaluate(async () => {
        const app = window.comfyAPI.app.app;
        await window.comfyAPI.api.api.interrupt(null);
        await window.heieIdle;
        await new Promise((r) => setTimeout(r, 1000));
        return app.graph.nodes.filter((n) => n.type.startsWith("Heie")).map((n) => ({
          id: n.id, type: n.type, text: n.widgets?.find((w) => w.name === "$$node-text-preview")?.value ?? null,
        }));
      });
      console.log(JSON.stringify({ texts }));
    }
    await fitAndShoot(png);
  } else if (mode === "run" || mode === "run-api") {
    const [workflowJson, png] = rest;
    const workflow = JSON.parse(readFileSync(workflowJson, "utf8"));
    const texts = await page.evaluate(async ([workflow, isApi]) => {
      const app = window.comfyAPI.app.app;
      const api = window.comfyAPI.api.api;
      if (isApi) {
        app.loadApiJson(workflow, "run");
      } else {
        await app.loadGraphData(workflow, true, true, "run");
      }
      const idle = new Promise((done) => api.addEventListener("status", (e) => {
        if (e.detail?.exec_info?.queue_remaining === 0) done();
      }));
      await app.queuePrompt(0);
      await idle;
      await new Promise((r) => setTimeout(r, 2000)); // the previews load from /view
      if (isApi) {  // loadApiJson stacks the nodes: one row, each tall enough for its preview and text
        let x = 0;
        for (const node of app.graph.nodes) {
          node.pos = [x, 0];
          if (node.type.startsWith("Heie") || node.type === "PreviewImage") {  // room for the text and the pictures
            node.size = [Math.max(node.size[0], 520), Math.max(node.size[1], 760)];
          }
          x += node.size[0] + 60;
        }
        app.graph.setDirtyCanvas(true, true);
        await new Promise((r) => setTimeout(r, 500));
      }
      return app.graph.nodes.filter((n) => n.type.startsWith("Heie")).map((n) => ({
        id: n.id, type: n.type,
        text: n.widgets?.find((w) => w.name === "$$node-text-preview")?.value ?? null,
        images: (n.imgs ?? []).map((i) => ({ width: i.naturalWidth, height: i.naturalHeight, src: i.src })),
      }));
    }, [workflow, mode === "run-api"]);
    console.log(JSON.stringify({ texts }));
    await fitAndShoot(png);
  } else if (mode === "manager-installed") {
    const [png] = rest;
    await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute(
      "Comfy.Manager.CustomNodesManager.ToggleVisibility"));
    const filter = page.locator(".cn-manager-filter");
    await filter.waitFor({ state: "visible", timeout: 60_000 });
    await filter.selectOption("installed");
    // the grid fills from /customnode/getlist; give the installed rows time to come in
    await page.waitForFunction(() => /heie/i.test(document.querySelector(".cn-manager-grid")?.innerText ?? ""),
                               null, { timeout: 20_000 }).catch(() => {});
    await page.waitForTimeout(1000);
    const rows = await page.evaluate(() => document.querySelector(".cn-manager-grid")?.innerText ?? "");
    console.log(JSON.stringify({ installed: rows }));
    await page.screenshot({ path: png });
    console.log(`screenshot: ${png}`);
  } else {
    console.error(usage);
    process.exitCode = 2;
  }
} finally {
  await context.close();
}

async function fitAndShoot(png) {
  // Shows the whole graph at 70 % (below about 60 % the editor draws nodes without their text) and
  // screenshots just the part of the canvas it covers.
  const SCALE = 0.7;
  const MARGIN = 40;
  const bounds = await page.evaluate(async () => {
    const app = window.comfyAPI.app.app;
    await app.extensionManager?.setting?.set?.("Comfy.Minimap.Visible", false);
    app.canvas.deselectAll?.();
    const nodes = app.graph.nodes;
    const title = window.LiteGraph.NODE_TITLE_HEIGHT ?? 30;
    const x1 = Math.min(...nodes.map((n) => n.pos[0]));
    const y1 = Math.min(...nodes.map((n) => n.pos[1] - title));
    const x2 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
    const y2 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
    return { x1, y1, x2, y2 };
  });
  const width = Math.ceil((bounds.x2 - bounds.x1) * SCALE) + 2 * MARGIN;
  const height = Math.ceil((bounds.y2 - bounds.y1) * SCALE) + 2 * MARGIN;
  await page.setViewportSize({ width: Math.max(1200, width + 200), height: Math.max(700, height + 200) });
  await page.waitForTimeout(500);
  const clip = await page.evaluate(([b, scale, margin]) => {
    const canvas = window.comfyAPI.app.app.canvas;
    canvas.ds.scale = scale;
    canvas.ds.offset = [margin / scale - b.x1, margin / scale - b.y1 + 10];
    canvas.setDirty(true, true);
    const rect = canvas.canvas.getBoundingClientRect();
    return { x: rect.x, y: rect.y };
  }, [bounds, SCALE, MARGIN]);
  await page.waitForTimeout(800);
  await page.screenshot({ path: png, clip: { x: clip.x, y: clip.y, width, height: height + 10 } });
  console.log(`screenshot: ${png}`);
}
