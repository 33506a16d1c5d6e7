// Runs every test runner (Vitest, then Playwright), and ends with one line
// "N passed, N failed, N skipped" summing both. Exits non-zero on any failure.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';

const run = (cmd, args, env = {}) => spawnSync(cmd, args, { stdio: 'inherit', env: { ...process.env, ...env } }).status ?? 1;

function ensureChromium() {
  if (process.env.CHROMIUM_PATH || ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].some((p) => existsSync(p))) return;
  try {
    // A machine with Playwright's own browser keeps using it.
    if (existsSync(createRequire(import.meta.url)('playwright-core').chromium.executablePath())) return;
  } catch {
    /* not installed */
  }
  if (process.getuid?.() === 0 && existsSync('/usr/bin/apt-get')) {
    console.log('[test] installing Debian chromium for the browser tests…');
    run('sh', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null']);
  } else {
    console.log('[test] no Chromium found: install the "chromium" package, or set CHROMIUM_PATH');
  }
}

mkdirSync('test-results', { recursive: true });
rmSync('test-results/unit.json', { force: true });
rmSync('test-results/e2e.json', { force: true });

const only = process.argv[2];
let unitStatus = 0;
let e2eStatus = 0;
if (only !== 'e2e') unitStatus = run('npx', ['vitest', 'run', '--reporter=default', '--reporter=json', '--outputFile.json=test-results/unit.json']);
if (only !== 'unit') {
  ensureChromium();
  e2eStatus = run('npx', ['playwright', 'test'], { CI: process.env.CI ?? '' });
}

let passed = 0,
  failed = 0,
  skipped = 0;
if (existsSync('test-results/unit.json')) {
  const u = JSON.parse(readFileSync('test-results/unit.json', 'utf8'));
  passed += u.numPassedTests ?? 0;
  failed += u.numFailedTests ?? 0;
  skipped += (u.numPendingTests ?? 0) + (u.numTodoTests ?? 0);
  // A file that failed to load has no tests but is a failure.
  failed += (u.testResults ?? []).filter((f) => f.status === 'failed' && (f.assertionResults ?? []).length === 0).length;
} else if (only !== 'e2e') failed += 1;
if (existsSync('test-results/e2e.json')) {
  const e = JSON.parse(readFileSync('test-results/e2e.json', 'utf8'));
  const s = e.stats ?? {};
  passed += (s.expected ?? 0) + (s.flaky ?? 0);
  failed += s.unexpected ?? 0;
  skipped += s.skipped ?? 0;
  if ((e.errors ?? []).length) failed += e.errors.length;
} else if (only !== 'unit') failed += 1;

if ((unitStatus !== 0 || e2eStatus !== 0) && failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
