import { test, expect, type Browser, type Page } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPage, LOREM } from './helpers.ts';
import { serveStatic, type StaticServer } from './support/static-server.ts';

// Issue 17, part 1: a read-through tier on any static host. The layout is
// written by `npm run publish-states` and served by a plain static server
// (another origin, CORS), which counts the GETs it answers.

const TEXT = LOREM.repeat(6);

/** npm run publish-states -- <args> */
function publish(args: string[]): string {
  return execFileSync(process.execPath, ['--import', 'tsx', 'scripts/publish-states.ts', ...args], { encoding: 'utf8', timeout: 180_000 });
}

/** Every key and value of the page's IndexedDB store, as one string (blobs as base64). */
function snapshotStore(page: Page): Promise<string> {
  return page.evaluate(
    () =>
      new Promise<string>((resolve, reject) => {
        const open = indexedDB.open('statecart');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const db = open.result;
          const tx = db.transaction(db.objectStoreNames, 'readonly');
          const out: unknown[] = [];
          for (const name of Array.from(db.objectStoreNames)) {
            const os = tx.objectStore(name);
            const k = os.getAllKeys();
            const v = os.getAll();
            v.onsuccess = () =>
              out.push([name, k.result, v.result.map((x) => (x instanceof ArrayBuffer ? btoa(String.fromCharCode(...new Uint8Array(x))) : x))]);
          }
          tx.oncomplete = () => {
            db.close();
            resolve(JSON.stringify(out, (_k, x) => (x instanceof ArrayBuffer ? btoa(String.fromCharCode(...new Uint8Array(x))) : x)));
          };
        };
      }),
  );
}

/** The one cartridge publish-states wrote under <dir>/states, as a URL path. */
function publishedCartridge(dir: string): string {
  const fp = readdirSync(join(dir, 'states')).find((f) => /^[0-9a-f]{64}$/.test(f))!;
  const idx = JSON.parse(readFileSync(join(dir, 'states', fp, 'index.json'), 'utf8')) as { states: { key: string }[] };
  return `/states/${fp}/${idx.states[0]!.key.slice('sha256:'.length)}.safetensors`;
}

const cartridges = (s: StaticServer) => s.gets.filter((g) => g.endsWith('.safetensors'));
const indexes = (s: StaticServer) => s.gets.filter((g) => g.endsWith('/index.json'));

async function freshPage(browser: Browser, remotes?: string[]): Promise<Page> {
  const ctx = await browser.newContext({ baseURL: test.info().project.use.baseURL });
  // The page's remotes field, as a visitor would have set it (the page keeps it in localStorage).
  if (remotes) await ctx.addInitScript((r) => localStorage.setItem('statecart:remotes', r), remotes.join(' '));
  return ctx.newPage();
}

test.describe('remote state hosts: a read-through tier on a static host', () => {
  let dir: string;
  let host: StaticServer;
  let remote: string;

  test.beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'statecart-remote-e2e-'));
    // Computed in Node (onnxruntime-node): the same keys as the browser's.
    const log = publish(['--out', join(dir, 'states'), '--model', 'tiny-gpt2', '--label', 'Lorem', '--text', TEXT]);
    expect(log).toContain('1 states');
    host = await serveStatic(dir, 0, { immutable: true });
    remote = `${host.url}states/`;
  });

  test.afterAll(async () => {
    await host?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a fresh profile gets a base with one GET of the cartridge, continues exactly as a local compute, and needs none on the second visit', async ({
    browser,
  }) => {
    host.gets.length = 0;
    const page = await freshPage(browser, [remote]);
    await openPage(page);
    const first = await page.evaluate(async (text) => {
      const sc = window.statecart!;
      const status = await sc.remoteStatus();
      const r = await sc.createState({ text });
      const next = await sc.infer({ stateKey: r.stateKey, delta: ' And then', maxNewTokens: 8 });
      return { status, r, next };
    }, TEXT);
    expect(first.status).toEqual([expect.objectContaining({ remote })]);
    expect(first.r.processed).toBe(0);
    expect(first.r.reused).toBe(first.r.tokens);
    expect(first.r.remote?.from).toMatchObject({ remote, stateKey: first.r.stateKey, tokens: first.r.tokens });
    expect(cartridges(host)).toEqual([publishedCartridge(dir)]);
    expect(indexes(host)).toHaveLength(1);
    // The page says where the tokens came from.
    await expect(page.getByTestId('remote-status')).toContainText('1 states for this model');

    // The same request computed in this browser, on a store of its own and no remote: the same key and continuation.
    const local = await page.evaluate(async (text) => {
      const lib = '/src/lib/index.ts';
      const { createStatecart } = (await import(/* @vite-ignore */ lib)) as typeof import('../../src/lib/index.ts');
      const sc = await createStatecart({ model: 'tiny-gpt2', device: 'wasm', dbName: 'remote-e2e-local', shared: false });
      await sc.clearStore();
      const r = await sc.createState({ text });
      const next = await sc.infer({ stateKey: r.stateKey, delta: ' And then', maxNewTokens: 8 });
      sc.terminate();
      return { r, next };
    }, TEXT);
    expect(local.r.stateKey).toBe(first.r.stateKey);
    expect(first.next.outputTokens).toEqual(local.next.outputTokens);
    const from = first.r.remote!.from!;
    console.log(
      `[remote] ${first.r.tokens} tokens (${from.bytes} bytes): fetched in ${from.fetchMs.toFixed(1)} ms + checked and stored in ${from.importMs.toFixed(1)} ms, createState ${first.r.timings.totalMs.toFixed(1)} ms; prefilled here instead: ${local.r.timings.prefillMs.toFixed(1)} ms, createState ${local.r.timings.totalMs.toFixed(1)} ms`,
    );

    // Second visit, same profile: the state is in the local store; the remote is not asked.
    const before = host.gets.length;
    await page.reload();
    await page.evaluate(async () => void (await window.statecartReady));
    const again = await page.evaluate(async (text) => window.statecart!.createState({ text }), TEXT);
    expect(again.stateKey).toBe(first.r.stateKey);
    expect(again.processed).toBe(0);
    expect(again.remote).toBeUndefined();
    expect(host.gets.length).toBe(before);
    await page.context().close();
  });

  test('a flipped byte in a remote cartridge is refused with InvalidCartridge and the local store is unchanged', async ({ browser }) => {
    const page = await freshPage(browser, [remote]);
    await openPage(page);
    const path = publishedCartridge(dir);
    const good = readFileSync(join(dir, path));
    const bad = Buffer.from(good);
    bad[good.length - 100]! ^= 0x10;
    host.override.set(path, bad);
    try {
      const before = await snapshotStore(page);
      const r = await page.evaluate(async (text) => {
        const sc = window.statecart!;
        const err = await sc.createState({ text }).then(
          () => null,
          (e: Error & { details?: Record<string, unknown> }) => ({ name: e.name, message: e.message, url: e.details?.url }),
        );
        return { err, states: (await sc.listStates()).length };
      }, TEXT);
      expect(r.err?.name).toBe('InvalidCartridge');
      expect(r.err?.url).toBe(new URL(path, host.url).href);
      expect(r.states).toBe(0);
      expect(await snapshotStore(page)).toBe(before);
    } finally {
      host.override.delete(path);
      await page.context().close();
    }
  });

  test('a remote that does not answer: the state is computed locally, with a notice', async ({ browser }) => {
    const page = await freshPage(browser);
    await openPage(page);
    const hanging = await serveStatic(dir, 0);
    hanging.override.set('*', 'hang');
    try {
      const r = await page.evaluate(
        async ({ text, url }) => {
          const sc = window.statecart!;
          await sc.setRemotes([url], { timeoutMs: 1500 });
          const t0 = performance.now();
          const res = await sc.createState({ text });
          return { res, ms: performance.now() - t0, status: await sc.remoteStatus() };
        },
        // Every file of this host hangs: its index never comes.
        { text: TEXT, url: `${hanging.url}states/` },
      );
      expect(r.res.processed).toBe(r.res.tokens);
      expect(r.res.remote?.from).toBeNull();
      expect(r.res.remote?.notices).toEqual([expect.objectContaining({ error: 'Unreachable', remote: `${hanging.url}states/` })]);
      expect(r.status[0]).toMatchObject({ reachable: false });
      console.log(`[remote] unreachable remote: computed locally in ${r.ms.toFixed(0)} ms (timeout 1500 ms)`);
    } finally {
      await hanging.close();
      await page.context().close();
    }
  });

  test('publish-states output served statically round-trips: publish from one profile, reuse from another', async ({ browser }) => {
    const text = `${LOREM}A second base, made in a browser and published from its cartridge.`;
    const a = await freshPage(browser);
    await openPage(a);
    const made = await a.evaluate(async (t) => {
      const sc = window.statecart!;
      const base = await sc.createState({ text: t });
      const next = await sc.infer({ stateKey: base.stateKey, delta: ' Then', maxNewTokens: 8 });
      const u = new Uint8Array(await (await sc.exportCartridge({ stateKey: base.stateKey })).arrayBuffer());
      let s = '';
      for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]!);
      return { key: base.stateKey, tokens: base.tokens, want: next.outputTokens, file: btoa(s) };
    }, text);
    await a.context().close();
    const site = mkdtempSync(join(tmpdir(), 'statecart-published-'));
    const file = join(site, 'from-profile-a.safetensors');
    writeFileSync(file, Buffer.from(made.file, 'base64'));
    publish(['--out', join(site, 'states'), '--catalog', join(site, 'catalog.json'), file]);
    const served = await serveStatic(site, 0, { immutable: true });
    try {
      const b = await freshPage(browser, [`${served.url}states/`]);
      await openPage(b);
      const r = await b.evaluate(
        async ({ t, key }) => {
          const sc = window.statecart!;
          const before = (await sc.listStates()).length;
          const c = await sc.createState({ text: t });
          const next = await sc.infer({ stateKey: key, delta: ' Then', maxNewTokens: 8 });
          return { before, c, next };
        },
        { t: text, key: made.key },
      );
      expect(r.before).toBe(0);
      expect(r.c.stateKey).toBe(made.key);
      expect(r.c.processed).toBe(0);
      expect(r.c.remote?.from?.stateKey).toBe(made.key);
      expect(r.next.outputTokens).toEqual(made.want);
      expect(cartridges(served)).toHaveLength(1);
      const catalog = JSON.parse(readFileSync(join(site, 'catalog.json'), 'utf8'));
      expect(catalog.cartridges).toEqual([expect.objectContaining({ key: made.key, tokens: made.tokens, name: 'from-profile-a' })]);
      await b.context().close();
    } finally {
      await served.close();
      rmSync(site, { recursive: true, force: true });
    }
  });
});
