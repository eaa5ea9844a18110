// Headless Chromium (Debian's chromium package, installed by scripts/setup-tests.sh) driven
// by playwright-core, for the report page and the agent's /ui. A missing browser fails the
// test that needs it (it is not skipped).
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

import { root } from './heaptap.ts';

export const CHROMIUM = process.env.HEAPTAP_CHROMIUM ?? '/usr/bin/chromium';

/** Where screenshots go (gitignored): $HEAPTAP_ARTIFACTS, else test/artifacts. */
export function artifactsDir(): string {
  const dir = process.env.HEAPTAP_ARTIFACTS ?? join(root, 'test/artifacts');
  mkdirSync(dir, { recursive: true });
  return dir;
}

export async function launch(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/setup-tests.sh installs Debian's chromium package`);
  const args = ['--disable-gpu', '--disable-dev-shm-usage'];
  if (process.getuid?.() === 0) args.push('--no-sandbox');
  return chromium.launch({ executablePath: CHROMIUM, args, headless: true, timeout: 120_000 });
}

/** A page that records console errors and uncaught exceptions. */
export async function openPage(browser: Browser, opts: { headers?: Record<string, string> } = {}): Promise<{ page: Page; errors: string[] }> {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 }, extraHTTPHeaders: opts.headers });
  const page = await ctx.newPage();
  const errors: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  return { page, errors };
}

export interface Drawn {
  name: string;
  /** the full name (the hover shows it) */
  full: string;
  x: number;
  y: number;
  w: number;
  h: number;
  value: number;
}

/** What the page's flame graph drew (window.heaptap, src/report/client.js). */
export async function flameState(page: Page): Promise<{ ready: boolean; view: string; focus: string; drawn: Drawn[]; matched: number; peakMarker: string | null }> {
  return page.evaluate(() => {
    const s = (window as unknown as { heaptap: Record<string, unknown> }).heaptap;
    return { ready: s.ready, view: s.view, focus: s.focus, drawn: s.drawn, matched: s.matched, peakMarker: s.peakMarker } as never;
  });
}
