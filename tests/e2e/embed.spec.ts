import { test, expect } from '@playwright/test';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// The library as a web app gets it: `npm pack` of this repository, installed
// from the tarball (not the source) into a copy of examples/embed, type-checked
// against the shipped .d.ts, built by Vite as an app build, and driven here.

const ROOT = process.cwd();
const WORK = join(ROOT, '.cache', 'embed-test');
const APP = join(WORK, 'app');
const PORT = Number(process.env.EMBED_PORT ?? 5197);
let server: ChildProcess | null = null;

const run = (cmd: string, args: string[], cwd: string) => execFileSync(cmd, args, { cwd, stdio: 'pipe', encoding: 'utf8', timeout: 300_000 });

test.beforeAll(async () => {
  test.setTimeout(600_000);
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  run('npm', ['run', 'build:lib'], ROOT);
  run('npm', ['pack', '--pack-destination', WORK], ROOT);
  const tgz = readdirSync(WORK).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error('npm pack made no tarball');
  cpSync(join(ROOT, 'examples', 'embed'), APP, { recursive: true, filter: (s) => !s.includes('node_modules') && !s.endsWith('/dist') });
  // Only the tarball is installed (Vite is the repository's, found up the tree); it has no
  // dependencies of its own (the runtime is bundled), so it installs offline.
  writeFileSync(join(APP, 'package.json'), JSON.stringify({ name: 'statecart-embed-test', private: true, type: 'module' }));
  run('npm', ['install', '--no-save', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', join(WORK, tgz)], APP);
  if (!existsSync(join(APP, 'node_modules', 'statecart', 'dist', 'lib', 'worker.js'))) throw new Error('the tarball did not install');
  mkdirSync(join(APP, 'public', 'models'), { recursive: true });
  cpSync(join(ROOT, 'public', 'models', 'tiny-gpt2'), join(APP, 'public', 'models', 'tiny-gpt2'), { recursive: true });
  // The example type-checks against the package's own declarations.
  run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(APP, 'tsconfig.json')], APP);
  // An app build: Vite copies the worker and the wasm it finds beside the package's module.
  run(process.execPath, [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--logLevel', 'warn'], APP);
  const assets = readdirSync(join(APP, 'dist', 'assets'));
  expect(assets.some((f) => f.endsWith('.wasm'))).toBe(true);
  server = spawn(
    process.execPath,
    [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'preview', '--port', String(PORT), '--strictPort', '--host', '127.0.0.1'],
    {
      cwd: APP,
      stdio: 'ignore',
    },
  );
  for (let i = 0; i < 100; i++) {
    if (
      await fetch(`http://127.0.0.1:${PORT}/`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('the example did not start');
});

test.afterAll(() => {
  server?.kill();
});

test('an app that installs the packed library creates a state, continues it, and reuses it after a reload', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${PORT}/`);
  await page.waitForFunction(() => (window as unknown as { result?: unknown }).result !== undefined, undefined, { timeout: 120_000 });
  const first = await page.evaluate(
    () =>
      (window as unknown as { result: { base: { stateKey: string; tokens: number; reused: number }; r: { output: string; outputTokens: number[] } } }).result,
  );
  expect(errors).toEqual([]);
  expect(first.base.reused).toBe(0);
  expect(first.r.outputTokens.length).toBe(12);
  await expect(page.locator('#out')).toHaveText(first.r.output);
  const health = await page.evaluate(() =>
    (window as unknown as { statecart: { health(): Promise<{ statesStored: number; model: string | null }> } }).statecart.health(),
  );
  expect(health.model).toBe('tiny-gpt2');
  expect(health.statesStored).toBe(2);

  await page.reload();
  await page.waitForFunction(() => (window as unknown as { result?: unknown }).result !== undefined, undefined, { timeout: 120_000 });
  const second = await page.evaluate(
    () => (window as unknown as { result: { base: { stateKey: string; tokens: number; reused: number }; r: { outputTokens: number[] } } }).result,
  );
  // The base came from IndexedDB, whole; the continuation is the same.
  expect(second.base.stateKey).toBe(first.base.stateKey);
  expect(second.base.reused).toBe(second.base.tokens);
  expect(second.r.outputTokens).toEqual(first.r.outputTokens);
  expect(errors).toEqual([]);
});
