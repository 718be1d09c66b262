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
