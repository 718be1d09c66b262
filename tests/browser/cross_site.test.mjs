// A hostile page in a real Chromium against a running `heie serve --http` without a key:
//   node cross_site.test.mjs SERVER_URL IMAGE
// 1. Cross-site requests: a page served from another origin (another port, by this script) tries a
//    `text/plain` form POST (the classic way to smuggle JSON), a `no-cors` fetch, and a JSON fetch
//    that needs a CORS preflight, all to /v1/evaluate. The Rust side then checks, from the server's
//    metrics, that none of them ran an evaluation.
// 2. DNS rebinding: Chromium is told that `rebind.test` resolves to the server (as a rebinding DNS
//    server would make it), and the page and API loaded under that name must be refused (403, JSON).
// Exits non-zero with the reason on the first failed check.
import { check, launchChromium } from "./chromium.mjs";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [serverUrl, image] = process.argv.slice(2);
if (!serverUrl || !image) {
  console.error("usage: node cross_site.test.mjs SERVER_URL IMAGE");
  process.exit(2);
}
const target = new URL(serverUrl);
const evaluate = new URL("/v1/evaluate", target).href;
const body = JSON.stringify({ image: { encoded: readFileSync(image).toString("base64") }, options: { maxTokensPerSection: 2 } });

// The attacker's page. The form's one field is named so that `name=value` in text/plain is the
// JSON body: {"image":…,"pad":"=" }.
const [namePart, valuePart] = [body.slice(0, -1) + ',"pad":"', '"}'];
const attack = `<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" action="${evaluate}" target="sink">
<input type="hidden" id="field"></form>
<script>
const results = {};
window.__results = results;
const field = document.getElementById("field");
field.name = ${JSON.stringify(namePart)};
field.value = ${JSON.stringify(valuePart)};
document.getElementById("f").submit();
fetch(${JSON.stringify(evaluate)}, { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body: ${JSON.stringify(body)} })
  .then((r) => { results.noCors = "opaque:" + r.type; }, (e) => { results.noCors = "error:" + e; });
fetch(${JSON.stringify(evaluate)}, { method: "POST", headers: { "content-type": "application/json" }, body: ${JSON.stringify(body)} })
  .then((r) => { results.cors = "status:" + r.status; }, (e) => { results.cors = "blocked:" + e.name; });
</script></body></html>`;

const attacker = createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(attack);
});
await new Promise((ok) => attacker.listen(0, "127.0.0.1", ok));
const attackerUrl = `http://127.0.0.1:${attacker.address().port}/`;

const executablePath = process.env.HEIE_CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "heie-chromium-"));
const context = await launchChromium(profile, executablePath, [`--host-resolver-rules=MAP rebind.test ${target.hostname}`]);
let failed = false;
try {
  const page = await context.newPage();
  await page.goto(attackerUrl);
  await page.waitForFunction(() => window.__results && window.__results.noCors && window.__results.cors, null, { timeout: 30_000 });
  const results = await page.evaluate(() => window.__results);
  console.log(`attacker page (${attackerUrl}): ${JSON.stringify(results)}`);
  check(results.cors.startsWith("blocked:"), "a JSON fetch from another origin is blocked at its preflight");
  check(results.noCors === "opaque:opaque", "the no-cors fetch got an opaque answer (refused on the server: see the metrics)");
  // The form's answer lands in the iframe (another origin: read through the browser driver).
  const sink = page.frames().find((f) => f.name() === "sink");
  let sinkText = "";
  for (let i = 0; i < 300 && !sinkText; i++) {
    if (sink.url() === evaluate) {
      sinkText = await sink.evaluate(() => (document.body ? document.body.innerText : "")).catch(() => "");
    }
    if (!sinkText) await new Promise((ok) => setTimeout(ok, 100));
  }
  console.log(`form POST answer: ${sinkText}`);
  check(/PERMISSION_DENIED|INVALID_ARGUMENT/.test(sinkText), "the text/plain form POST is refused with a JSON error");

  // DNS rebinding: the same server under a name the attacker controls.
  const rebound = `http://rebind.test:${target.port}`;
  for (const path of ["/", "/v1/info"]) {
    const response = await page.goto(rebound + path);
    const text = await response.text();
    console.log(`${rebound}${path}: ${response.status()} ${text}`);
    check(response.status() === 403 && JSON.parse(text).error.code === "PERMISSION_DENIED", `${path} under a rebound name is refused 403 with a JSON error`);
  }
} catch (e) {
  failed = true;
  console.error(String(e && e.stack ? e.stack : e));
} finally {
  await context.close();
  attacker.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
