// The errors a host's page raises while it loads, for telling a host's own from an extension's: load the
// page with and without the extension and compare. Prints one JSON object: each uncaught page error's
// message and stack (the stack names the script file that threw), and each console error.
//
//   node plugins/tools/page_errors.mjs URL [SETTLE_MS]
//
// SETTLE_MS (default 20000): how long after the page's load event to keep listening (the WebUI and ComfyUI
// build their UI in scripts after load). Uses playwright-core from tests/browser (HEIE_BROWSER_DIR names
// another folder holding its node_modules) and Debian's chromium (HEIE_CHROMIUM names another).
import { createRequire } from "node:module";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(process.env.HEIE_BROWSER_DIR || resolve(here, "../../tests/browser"), "package.json"));
const { chromium } = require("playwright-core");

const [url, settle = "20000"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node page_errors.mjs URL [SETTLE_MS]");
  process.exit(2);
}
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "heie-page-errors-")), {
  executablePath: process.env.HEIE_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: ["--no-sandbox", "--disable-gpu"],
});
const found = { url, page_errors: [], console_errors: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => found.page_errors.push({ message: err.message, stack: err.stack }));
  page.on("console", (msg) => {
    if (msg.type() === "error") found.console_errors.push({ text: msg.text(), at: msg.location()?.url || "" });
  });
  await page.goto(url, { waitUntil: "load", timeout: 300000 });
  await page.waitForTimeout(Number(settle));
} finally {
  await context.close();
}
console.log(JSON.stringify(found, null, 1));
