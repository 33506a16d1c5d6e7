import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

/**
 * Playwright's own Chromium when it is installed; otherwise Debian's
 * (`/usr/lib/chromium/chromium` is the binary without the wrapper's noise).
 */
function chromiumPath(): string | undefined {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
  try {
    const own = chromium.executablePath();
    if (own && existsSync(own)) return undefined; // let Playwright use its own
  } catch {
    /* not installed */
  }
  for (const p of ['/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser']) if (existsSync(p)) return p;
  return undefined;
}

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

export const launchOptions = () => ({ executablePath: chromiumPath(), args: CHROMIUM_ARGS, headless: true });
