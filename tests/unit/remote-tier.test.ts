// The remote tier in Node (issue 17, part 1): a static HTTP server holding the
// layout that scripts/publish-states.ts writes, and stores that read through it.
import 'fake-indexeddb/auto';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalStatecart } from '../../src/engine/statecart.ts';
import { RemoteStateStore, RemoteTier, reportRemote } from '../../src/engine/remote.ts';
import { StateStore } from '../../src/store/store.ts';
import { cartridgePath, indexPath } from '../../src/formats/remote-layout.ts';
import { publishStates } from '../../scripts/publish-states.ts';
import { nodeHost } from './support/node-engine.ts';
import { snapshot } from './support/idb-snapshot.ts';

const TEXT =
  'You are a careful assistant for a hardware store. Answer in two sentences, name the aisle, and never guess a price. Say so when the store does not sell it.';
const MORE = ' The customer asks about wood glue and clamps.';

interface Static {
  url: string;
  gets: string[];
  server: Server;
  /** Replaces a file's bytes as served (the file on disk stays). */
  override: Map<string, Buffer | 'hang' | 'html'>;
}

/** A static file server with CORS, counting GETs by path; `override` makes it lie or hang. */
function serve(root: string): Promise<Static> {
  const gets: string[] = [];
  const override = new Map<string, Buffer | 'hang' | 'html'>();
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    gets.push(path);
    const o = override.get(path);
    if (o === 'hang') return; // accepts, never answers
    if (o === 'html') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><p>not an index</p>');
    try {
      const body = o ?? readFileSync(join(root, normalize(path)));
      res.writeHead(200, { 'content-type': path.endsWith('.json') ? 'application/json' : 'application/octet-stream', 'content-length': body.length });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}/states/`, gets, server, override })),
  );
}

let n = 0;
/** An in-thread statecart on a fresh database, reading through the given remotes. */
async function client(remotes: string[], o: { timeoutMs?: number } = {}) {
  const store = new RemoteStateStore({ dbName: `remote-tier-${process.pid}-${++n}` });
  const sc = new LocalStatecart(store, nodeHost);
  store.remote = new RemoteTier({ remotes, timeoutMs: o.timeoutMs ?? 5000 });
  store.currentModel = () => sc.model;
  await sc.loadModel({ model: 'tiny-gpt2' });
  // What the worker does with every result: the remote's part of it.
  const call = async <T>(method: 'createState' | 'infer' | 'compact', req: object): Promise<T> => {
    const r = await (sc[method] as (r: object) => Promise<T>)(req);
    reportRemote(store.remote, method, req, r);
    return r;
  };
  return { sc, store, call };
}

let dir: string;
let root: string;
let host: Static;
let base: { key: string; tokens: number; want: number[]; file: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'statecart-remote-'));
  root = join(dir, 'site');
  // "One profile": a store of its own makes the base and its continuation, and exports the cartridge.
  const a = new LocalStatecart(new StateStore({ dbName: `remote-tier-a-${process.pid}` }), nodeHost);
  await a.loadModel({ model: 'tiny-gpt2' });
  const s = await a.createState({ text: TEXT });
  const want = await a.infer({ stateKey: s.stateKey, delta: MORE, maxNewTokens: 8 });
  const file = join(dir, 'base.safetensors');
  writeFileSync(file, new Uint8Array(await (await a.exportCartridge({ stateKey: s.stateKey })).arrayBuffer()));
  a.store.close();
  base = { key: s.stateKey, tokens: s.tokens, want: want.outputTokens, file };
  // publish-states from that file: the layout and the catalog.
  await publishStates({ out: join(root, 'states'), catalog: join(root, 'catalog.json'), cartridges: [file] });
  host = await serve(root);
});

afterAll(() => {
  host?.server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('remote tier (Node, a static server with the publish-states layout)', () => {
  it('publish-states wrote the layout: index.json with the key, its token count, bytes and codec; the cartridge under its key; catalog.json', async () => {
    const fp = (await nodeHost.load({ model: 'tiny-gpt2' })).fingerprint;
    const idx = JSON.parse(readFileSync(join(root, 'states', indexPath(fp)), 'utf8'));
    expect(idx).toMatchObject({ format: 'statecart-remote/1', model_fp: fp, model_id: 'tiny-gpt2' });
    const bytes = readFileSync(join(root, 'states', cartridgePath(fp, base.key)));
    expect(idx.states).toEqual([{ key: base.key, tokens: base.tokens, bytes: bytes.length, codec: 'fp32', label: 'base' }]);
    // A whole cartridge is published as it was given.
    expect(bytes.equals(readFileSync(base.file))).toBe(true);
    const cat = JSON.parse(readFileSync(join(root, 'catalog.json'), 'utf8'));
    expect(cat.remote).toBe('states/');
    expect(cat.cartridges[0]).toMatchObject({ url: `states/${cartridgePath(fp, base.key)}`, model: 'tiny-gpt2', key: base.key, size: bytes.length });
  });

  it('a fresh store takes the base from the remote with one GET of the cartridge, continues exactly, and needs the network no more', async () => {
    host.gets.length = 0;
    const b = await client([host.url]);
    const r = await b.call<Awaited<ReturnType<LocalStatecart['createState']>>>('createState', { text: TEXT });
    expect(r.stateKey).toBe(base.key);
    expect(r.processed).toBe(0);
    expect(r.reused).toBe(base.tokens);
    expect(r.remote?.from).toMatchObject({ remote: host.url, stateKey: base.key, tokens: base.tokens });
    expect(r.remote?.notices).toEqual([]);
    const cartGets = host.gets.filter((g) => g.endsWith('.safetensors'));
    expect(cartGets).toHaveLength(1);
    expect(host.gets.filter((g) => g.endsWith('index.json'))).toHaveLength(1);
    // The continuation is the one the first store computed.
    await b.store.dropHot();
    const c = await b.call<Awaited<ReturnType<LocalStatecart['infer']>>>('infer', { stateKey: base.key, delta: MORE, maxNewTokens: 8 });
    expect(c.outputTokens).toEqual(base.want);
    expect(c.tier).toBe('stored');
    expect(c.remote).toBeUndefined();
    // Again: found locally, nothing asked of the remote.
    const before = host.gets.length;
    const again = await b.call<Awaited<ReturnType<LocalStatecart['createState']>>>('createState', { text: TEXT });
    expect(again.stateKey).toBe(base.key);
    expect(again.remote).toBeUndefined();
    expect(host.gets.length).toBe(before);
    b.store.close();
  });

  it('a longer request reuses the remote prefix and prefills only the rest; infer on a key only the remote holds fetches it (tier remote)', async () => {
    const b = await client([host.url]);
    const r = await b.call<Awaited<ReturnType<LocalStatecart['createState']>>>('createState', { text: TEXT + MORE });
    expect(r.reused).toBe(base.tokens);
    expect(r.processed).toBe(r.tokens - base.tokens);
    expect(r.remote?.from?.stateKey).toBe(base.key);
    expect(r.receipt.receipt.input_keys).toEqual([base.key]);
    b.store.close();

    const c = await client([host.url]);
    const i = await c.call<Awaited<ReturnType<LocalStatecart['infer']>>>('infer', { stateKey: base.key, delta: MORE, maxNewTokens: 8 });
    expect(i.tier).toBe('remote');
    expect(i.remote?.from?.stateKey).toBe(base.key);
    expect(i.outputTokens).toEqual(base.want);
    expect(i.savings.tokensReused).toBe(base.tokens);
    c.store.close();
  });

  it('a flipped byte in the remote cartridge is refused with InvalidCartridge and the store is unchanged; the next request computes locally', async () => {
    const fp = (await nodeHost.load({ model: 'tiny-gpt2' })).fingerprint;
    const path = `/states/${cartridgePath(fp, base.key)}`;
    const good = readFileSync(join(root, path));
    for (const at of [good.length - 5, 200]) {
      const bad = Buffer.from(good);
      bad[at]! ^= 0x01;
      host.override.set(path, bad);
      const b = await client([host.url]);
      await b.store.ready;
      const before = await snapshot(b.store);
      const err = await b.call('createState', { text: TEXT }).then(
        () => null,
        (e: Error & { details?: Record<string, unknown> }) => e,
      );
      expect(err?.name, `flip at byte ${at}`).toBe('InvalidCartridge');
      expect(err?.details?.url).toBe(host.url + cartridgePath(fp, base.key));
      expect(await snapshot(b.store)).toEqual(before);
      expect(await b.sc.listStates()).toEqual([]);
      // Remembered: the same request now computes locally, with a notice naming the refusal.
      const r = await b.call<Awaited<ReturnType<LocalStatecart['createState']>>>('createState', { text: TEXT });
      expect(r.stateKey).toBe(base.key);
      expect(r.processed).toBe(base.tokens);
      expect(r.remote?.from).toBeNull();
      expect(r.remote?.notices[0]).toMatchObject({ error: 'InvalidCartridge' });
      b.store.close();
    }
    host.override.delete(path);
  });

  it('a remote that does not answer, or answers with something else, means local compute with a notice', async () => {
    const fp = (await nodeHost.load({ model: 'tiny-gpt2' })).fingerprint;
    const idx = `/states/${indexPath(fp)}`;
    host.override.set(idx, 'hang');
    const b = await client([host.url], { timeoutMs: 300 });
    const r = await b.call<Awaited<ReturnType<LocalStatecart['createState']>>>('createState', { text: TEXT });
    expect(r.stateKey).toBe(base.key);
    expect(r.processed).toBe(base.tokens);
    expect(r.remote?.from).toBeNull();
    expect(r.remote?.notices).toEqual([expect.objectContaining({ remote: host.url, error: 'Unreachable' })]);
    expect(r.remote?.notices[0]?.message).toMatch(/no answer within 300 ms/);
    // Skipped for a while: the next miss does not wait for it again.
    const asked = host.gets.length;
    const t0 = performance.now();
    const r2 = await b.call<Awaited<ReturnType<LocalStatecart['createState']>>>('createState', { text: MORE });
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(r2.remote?.notices[0]?.error).toBe('Unreachable');
    expect(host.gets.length).toBe(asked);
    expect(b.store.remote!.statuses()[0]).toMatchObject({ reachable: false });
    b.store.close();

    host.override.set(idx, 'html');
    const c = await client([host.url]);
    const r3 = await c.call<Awaited<ReturnType<LocalStatecart['createState']>>>('createState', { text: TEXT });
    expect(r3.processed).toBe(base.tokens);
    expect(r3.remote?.notices[0]).toMatchObject({ error: 'BadIndex' });
    c.store.close();
    host.override.delete(idx);

    // Nothing listening at all.
    const d = await client(['http://127.0.0.1:5299/states/']);
    const r4 = await d.call<Awaited<ReturnType<LocalStatecart['createState']>>>('createState', { text: TEXT });
    expect(r4.processed).toBe(base.tokens);
    expect(r4.remote?.notices[0]?.error).toBe('Unreachable');
    d.store.close();
  });
});
