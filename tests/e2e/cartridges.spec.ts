import { test, expect, chromium, type BrowserContext, type Page } from '@playwright/test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPage, referenceGreedy, LOREM } from './helpers.ts';
import { launchOptions } from './browser.ts';
import { serveStatic } from './support/static-server.ts';

/** A persistent profile of its own: a browser that shares nothing with another one. */
async function profile(): Promise<{ ctx: BrowserContext; page: Page; close: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'statecart-cartridge-'));
  const baseURL = test.info().project.use.baseURL!;
  const ctx = await chromium.launchPersistentContext(dir, { ...launchOptions(), baseURL });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  return {
    ctx,
    page,
    close: async () => {
      await ctx.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every key and value of the page's IndexedDB store, as one string (blobs as base64); after the queued writes land. */
function snapshotStore(page: Page): Promise<string> {
  return page.evaluate(async () => {
    await window.statecart?.flush();
    return new Promise<string>((resolve, reject) => {
      const open = indexedDB.open('statecart');
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const db = open.result;
        const os = db.transaction('kv', 'readonly').objectStore('kv');
        const keys = os.getAllKeys();
        const values = os.getAll();
        values.onsuccess = () => {
          const enc = (v: unknown): unknown => {
            if (v instanceof ArrayBuffer) {
              let s = '';
              const b = new Uint8Array(v);
              for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
              return 'bytes:' + btoa(s);
            }
            if (Array.isArray(v)) return v.map(enc);
            if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, enc(x)]));
            return v;
          };
          const out = JSON.stringify(keys.result.map((k, i) => [k, enc(values.result[i])]));
          db.close();
          resolve(out);
        };
        values.onerror = () => reject(values.error);
      };
    });
  });
}

test.describe('cartridges: a state carried from one browser profile to another', () => {
  test('export in one profile, import in a fresh one: whole and delta cartridges continue with the same tokens', async () => {
    const text = LOREM.repeat(2);
    const a = await profile();
    let exported: {
      base: { key: string; tokens: number[]; file: string };
      child: { key: string; delta: string };
      wantInput: number[];
      want: number[];
      wantChild: number[];
      parentTokens: string | undefined;
    };
    try {
      await openPage(a.page);
      exported = await a.page.evaluate(async (t) => {
        const sc = window.statecart!;
        const b64 = async (blob: Blob) => {
          const u = new Uint8Array(await blob.arrayBuffer());
          let s = '';
          for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]!);
          return btoa(s);
        };
        const base = await sc.createState({ text: t });
        const want = await sc.infer({ stateKey: base.stateKey, delta: ' And then', maxNewTokens: 10 });
        const child = await sc.infer({ stateKey: base.stateKey, delta: ' So', maxNewTokens: 5 });
        const wantChild = await sc.infer({ stateKey: child.newStateKey, delta: ' but', maxNewTokens: 8 });
        const file = await sc.exportCartridge({ stateKey: base.stateKey });
        const delta = await sc.exportCartridge({ stateKey: child.newStateKey, delta: base.stateKey });
        const head = new Uint8Array(await delta.arrayBuffer());
        const n = new DataView(head.buffer).getUint32(0, true);
        const meta = JSON.parse(new TextDecoder().decode(head.subarray(8, 8 + n))).__metadata__ as Record<string, string>;
        return {
          base: { key: base.stateKey, tokens: await sc.tokenize({ text: t }), file: await b64(file) },
          child: { key: child.newStateKey, delta: await b64(delta) },
          wantInput: [...(await sc.tokenize({ text: t })), ...(await sc.tokenize({ text: ' And then' }))],
          want: want.outputTokens,
          wantChild: wantChild.outputTokens,
          parentTokens: meta.parent_tokens,
        };
      }, text);
    } finally {
      await a.close();
    }
    expect(Number(exported.parentTokens)).toBe(exported.base.tokens.length);
    // The known answer: the reference forward pass, no cache at all.
    expect(exported.want).toEqual(referenceGreedy(exported.wantInput, 10));

    const b = await profile();
    try {
      await openPage(b.page);
      const r = await b.page.evaluate(async (x) => {
        const sc = window.statecart!;
        const bytes = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
        const before = await sc.listStates();
        const missing = await sc.importCartridge({ source: new Blob([bytes(x.child.delta)]) }).then(
          () => 'imported!',
          (e: Error) => `${e.name}: ${e.message}`,
        );
        // A URL (here a blob: URL of the page) goes through the worker's download path.
        const url = URL.createObjectURL(new Blob([bytes(x.base.file)]));
        const base = await sc.importCartridge({ source: url });
        const again = await sc.importCartridge({ source: bytes(x.base.file) });
        const child = await sc.importCartridge({ source: new Blob([bytes(x.child.delta)]) });
        await window.statecartTesting!.dropHot();
        const out = await sc.infer({ stateKey: x.base.key, delta: ' And then', maxNewTokens: 10 });
        const outChild = await sc.infer({ stateKey: x.child.key, delta: ' but', maxNewTokens: 8 });
        return { before: before.length, missing, base, again, child, out, outChild, states: (await sc.listStates()).length };
      }, exported);
      expect(r.before).toBe(0);
      expect(r.missing).toContain('MissingParent');
      expect(r.missing).toContain(exported.base.key);
      expect(r.base).toMatchObject({ stateKey: exported.base.key, reused: false, codec: 'fp32' });
      expect(r.again).toMatchObject({ stateKey: exported.base.key, reused: true });
      expect(r.child).toMatchObject({ stateKey: exported.child.key, parent: exported.base.key, reused: false });
      expect(r.out.tier).toBe('stored');
      expect(r.out.savings.tokensReused).toBe(exported.base.tokens.length);
      expect(r.out.outputTokens).toEqual(exported.want);
      expect(r.outChild.outputTokens).toEqual(exported.wantChild);
      // base, child, and the two continuations.
      expect(r.states).toBe(4);
    } finally {
      await b.close();
    }
  });

  test('tiny-mamba: whole and delta cartridges carried to a fresh profile continue with the same tokens', async () => {
    const text = LOREM;
    const a = await profile();
    let x: { base: string; child: string; baseFile: string; delta: string; want: number[]; wantChild: number[]; codec: string };
    try {
      await openPage(a.page, { model: 'tiny-mamba' });
      x = await a.page.evaluate(async (t) => {
        const sc = window.statecart!;
        const b64 = async (blob: Blob) => {
          const u = new Uint8Array(await blob.arrayBuffer());
          let s = '';
          for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]!);
          return btoa(s);
        };
        const base = await sc.createState({ text: t });
        const want = await sc.infer({ stateKey: base.stateKey, delta: ' And then', maxNewTokens: 8 });
        const child = await sc.infer({ stateKey: base.stateKey, delta: ' So', maxNewTokens: 4 });
        const wantChild = await sc.infer({ stateKey: child.newStateKey, delta: ' but', maxNewTokens: 8 });
        const delta = await sc.exportCartridge({ stateKey: child.newStateKey, delta: base.stateKey });
        const u = new Uint8Array(await delta.arrayBuffer());
        const n = new DataView(u.buffer).getUint32(0, true);
        const codec = (JSON.parse(new TextDecoder().decode(u.subarray(8, 8 + n))).__metadata__ as Record<string, string>).codec!;
        return {
          base: base.stateKey,
          child: child.newStateKey,
          baseFile: await b64(await sc.exportCartridge({ stateKey: base.stateKey })),
          delta: await b64(delta),
          want: want.outputTokens,
          wantChild: wantChild.outputTokens,
          codec,
        };
      }, text);
    } finally {
      await a.close();
    }
    expect(x.codec).toBe('delta');
    expect(new Set(x.want).size, 'the continuation must vary').toBeGreaterThan(2);
    const b = await profile();
    try {
      await openPage(b.page, { model: 'tiny-mamba' });
      const r = await b.page.evaluate(async (x) => {
        const sc = window.statecart!;
        const bytes = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
        const missing = await sc.importCartridge({ source: bytes(x.delta) }).then(
          () => 'imported!',
          (e: Error) => e.name,
        );
        const base = await sc.importCartridge({ source: new Blob([bytes(x.baseFile)]) });
        const child = await sc.importCartridge({ source: new Blob([bytes(x.delta)]) });
        await window.statecartTesting!.dropHot();
        const out = await sc.infer({ stateKey: x.base, delta: ' And then', maxNewTokens: 8 });
        const outChild = await sc.infer({ stateKey: x.child, delta: ' but', maxNewTokens: 8 });
        return { missing, base, child, out, outChild };
      }, x);
      expect(r.missing).toBe('MissingParent');
      expect(r.base).toMatchObject({ stateKey: x.base, reused: false });
      expect(r.child).toMatchObject({ stateKey: x.child, parent: x.base, codec: 'delta', reused: false });
      expect(r.out.savings.tokensReused).toBeGreaterThan(0);
      expect(r.out.outputTokens).toEqual(x.want);
      expect(r.outChild.outputTokens).toEqual(x.wantChild);
    } finally {
      await b.close();
    }
  });

  test('a broken file is refused with a typed error and the store is left exactly as it was', async ({ page }) => {
    // A real host that answers 404 (not a Playwright route: the page's engine runs in a SharedWorker, whose requests routes do not see).
    const empty = mkdtempSync(join(tmpdir(), 'statecart-empty-host-'));
    const host = await serveStatic(empty, 0);
    const missing = `${host.url}missing/cartridge.safetensors`;
    await openPage(page);
    const key = await page.evaluate(async (t) => (await window.statecart!.createState({ text: t })).stateKey, LOREM);
    const before = await snapshotStore(page);
    expect(before).toContain('bytes:');
    const errors = await page.evaluate(
      async ({ k, missing }) => {
        const sc = window.statecart!;
        const good = new Uint8Array(await (await sc.exportCartridge({ stateKey: k })).arrayBuffer());
        const flip = (at: number) => {
          const c = good.slice();
          c[at]! ^= 0x10;
          return c;
        };
        const n = new DataView(good.buffer).getUint32(0, true);
        const head = new TextDecoder().decode(good.subarray(8, 8 + n));
        const tries: [string, Uint8Array | Blob | string][] = [
          ['truncated', good.subarray(0, good.length - 100)],
          ['data bit flip', flip(good.length - 5)],
          // (inside a checked field, the tensors' digests: informative keys such as receipts or provenance are not checked)
          ['header bit flip', flip(8 + head.indexOf('sha256:', head.indexOf('"digests"')) + 10)],
          [
            'huge header length',
            (() => {
              const c = good.slice();
              new DataView(c.buffer).setUint32(4, 1, true);
              return c;
            })(),
          ],
          ['not safetensors', new Blob(['hello, this is not a cartridge'])],
          // The dev server answers unknown paths with its HTML page (HTTP 200).
          ['an HTML page', new URL('no-such-cartridge.safetensors', location.href).href],
          ['HTTP 404', missing],
        ];
        const out: Record<string, string> = {};
        for (const [what, data] of tries) {
          out[what] = await sc.importCartridge({ source: data }).then(
            () => 'imported!',
            (e: Error) => `${e.name}: ${e.message}`,
          );
        }
        return out;
      },
      { k: key, missing },
    );
    await host.close();
    rmSync(empty, { recursive: true, force: true });
    for (const what of ['truncated', 'data bit flip', 'header bit flip', 'huge header length', 'not safetensors', 'an HTML page']) {
      expect(errors[what], what).toMatch(/^InvalidCartridge: /);
    }
    expect(errors['data bit flip']).toMatch(/damaged/);
    expect(errors['HTTP 404']).toMatch(/^InvalidInput: Could not download the cartridge .*HTTP 40\d/);
    expect(await snapshotStore(page)).toBe(before);
  });
});
