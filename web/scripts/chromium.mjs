// Launch Debian's headless Chromium through playwright-core with a fresh profile (shared by the scripts here).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

// Flags measured to work on these machines (shared/ECOSYSTEM.md); no network services, no first-run UI.
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export async function withPage(executablePath, work) {
  const profile = mkdtempSync(join(tmpdir(), 'chromium-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath, headless: true, args: FLAGS, viewport: { width: 1000, height: 900 },
  });
  const page = context.pages()[0] || await context.newPage();
  const log = [];
  page.on('console', (message) => log.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => log.push(`pageerror: ${error.message}`));
  try {
    return await work(page, log);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

export function parseArguments() {
  return JSON.parse(process.argv[2]);
}
