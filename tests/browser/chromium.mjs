// What both browser tests share: Debian's Chromium started headless through playwright-core (no
// browser download), and the one-line check that prints what passed and stops at what failed.
import { chromium } from "playwright-core";

export function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

/** A headless Chromium with a throwaway profile, a laptop-sized viewport and light colours;
 * `extraArgs` go to Chromium's command line. */
export function launchChromium(profile, executablePath, extraArgs = []) {
  return chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    colorScheme: "light",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
  });
}

/** Runs `body(context)` in a headless Chromium with a throwaway profile (the executable from
 * HEIE_CHROMIUM, else /usr/bin/chromium), then exits: 0, or 1 after printing what failed. */
export async function runInChromium(body, extraArgs = []) {
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const profile = mkdtempSync(join(tmpdir(), "heie-chromium-"));
  const context = await launchChromium(profile, process.env.HEIE_CHROMIUM || "/usr/bin/chromium", extraArgs);
  let failed = false;
  try {
    await body(context);
  } catch (e) {
    failed = true;
    console.error(String(e && e.stack ? e.stack : e));
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
}
