/**
 * The benchmark page: it embeds statecart exactly as a web app would (the
 * client library and its worker) and offers each measurement as a method of
 * `window.bench`, which bench/run.ts calls through Playwright. It returns raw
 * samples; medians and ratios are made in Node (bench/lib/report.ts).
 */
import { createStatecart, type StatecartClient, type DeviceChoice } from '../../src/lib/index.ts';
import { StateStore } from '../../src/store/store.ts';
import { blockChain, prefixKeys } from '../../src/core/state-key.ts';

export const BENCH_DB = 'statecart-bench';

let sc: StatecartClient | null = null;
let arch: 'gpt2' | 'mamba' = 'gpt2';
let corpus: number[] = [];
let cursor = 0;

const now = () => performance.now();
const log = (...a: unknown[]) => console.log('[bench]', ...a);

function client(): StatecartClient {
  if (!sc) throw new Error('bench: call start() first');
  return sc;
}

/** A seeded text with a varied vocabulary, so that tokens look like prose and never repeat in a way a cache could exploit. */
function corpusText(words: number): string {
  const vocab = (
    'agent reads file returns tool result error line function state cache token model prompt user system answer ' +
    'search index query table column value build test passes fails retry plan step next check output input ' +
    'memory browser worker store block hash key prefix delta base merge compact receipt digest shard layer head ' +
    'alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo ' +
    'sierra tango uniform victor whiskey xray yankee zulu red green blue amber violet silver copper iron river stone'
  ).split(' ');
  let s = 0x9e3779b9;
  const rnd = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const out: string[] = [];
  for (let i = 0; i < words; i++) {
    if (i % 14 === 0) out.push(`\n${Math.floor(rnd() * 1000)}.`);
    out.push(vocab[Math.floor(rnd() * vocab.length)]!);
  }
  return out.join(' ');
}

/** `n` tokens from the corpus that no earlier call handed out (until the corpus wraps). */
function take(n: number): number[] {
  const out: number[] = [];
  while (out.length < n) {
    if (cursor >= corpus.length) cursor = 1;
    out.push(corpus[cursor++]!);
  }
  return out;
}

function base(n: number): number[] {
  if (corpus.length < n) throw new Error(`bench: the corpus has ${corpus.length} tokens, ${n} were asked for`);
  return corpus.slice(0, n);
}

/** The smallest delta that makes infer() restore a state and compute its logits: GPT-2 re-runs the last token by itself, Mamba needs one new token. */
const probeDelta = () => (arch === 'gpt2' ? [] : take(1));

async function timed<T>(f: () => Promise<T>): Promise<{ ms: number; r: T }> {
  const t = now();
  const r = await f();
  return { ms: now() - t, r };
}

const bench = {
  async start(o: { device: DeviceChoice; numThreads?: number }) {
    sc = await createStatecart({
      device: o.device,
      modelsBase: new URL('/models/', location.href).href,
      ortBase: new URL('/ort/', location.href).href,
      dbName: BENCH_DB,
      ...(o.numThreads ? { numThreads: o.numThreads } : {}),
    });
    await sc.clearStore();
    return true;
  },

  async env() {
    let adapter: string | null = null;
    let software: boolean | null = null;
    const gpu = (navigator as { gpu?: { requestAdapter: (o?: object) => Promise<unknown> } }).gpu;
    if (gpu) {
      const a = (await gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null)) as {
        info?: { vendor?: string; architecture?: string; description?: string; device?: string; isFallbackAdapter?: boolean };
        isFallbackAdapter?: boolean;
      } | null;
      if (a) {
        const i = a.info ?? {};
        adapter = [i.vendor, i.architecture, i.description || i.device].filter(Boolean).join(' ') || 'unknown adapter';
        software = Boolean(i.isFallbackAdapter ?? a.isFallbackAdapter) || /swiftshader|llvmpipe|software/i.test(adapter);
      }
    }
    return {
      userAgent: navigator.userAgent,
      hardwareConcurrency: navigator.hardwareConcurrency,
      crossOriginIsolated: self.crossOriginIsolated,
      adapter,
      software,
    };
  },

  async load(model: string, device: DeviceChoice) {
    const c = client();
    const { ms, r: info } = await timed(() => c.loadModel(model, { device }));
    arch = info.arch;
    const h = await c.health();
    // The GPT-2 tokenizer is shared by both architectures.
    corpus = await c.tokenize(corpusText(6000));
    cursor = 1;
    log(`${model} loaded on ${info.device} in ${Math.round(ms)} ms; corpus ${corpus.length} tokens; threads ${h.threads}`);
    return { wallMs: ms, info, threads: h.threads, crossOriginIsolated: h.crossOriginIsolated };
  },

  /** State Pack's loop, once without the cache and once with it, on the same token stream. */
  async agentLoop(o: { baseTokens: number; deltas: number[]; gen: number }) {
    const c = client();
    const baseToks = base(o.baseTokens);
    const deltas = o.deltas.map((n) => take(n));
    const naive: { ms: number; computeMs: number; tokens: number; out: number[] }[] = [];
    let hist = baseToks;
    for (let i = 0; i < deltas.length; i++) {
      // A cleared store: nothing of the earlier steps can be reused.
      await c.clearStore();
      const full = [...hist, ...deltas[i]!];
      const t = now();
      const cs = await c.createState({ tokens: full });
      const inf = await c.infer({ stateKey: cs.stateKey, maxNewTokens: o.gen });
      const ms = now() - t;
      naive.push({
        ms,
        computeMs: cs.timings.prefillMs + inf.timings.prefillMs + inf.timings.generateMs,
        tokens: cs.processed + inf.savings.tokensProcessed,
        out: inf.outputTokens,
      });
      hist = [...full, ...inf.outputTokens];
      log(`naive step ${i + 1}/${deltas.length}: ${full.length} tokens, ${Math.round(ms)} ms`);
    }
    await c.clearStore();
    const t0 = now();
    const cs = await c.createState({ tokens: baseToks });
    const baseMs = now() - t0;
    let key = cs.stateKey;
    const cached: { ms: number; tokens: number; tier: string; out: number[]; timings: Record<string, number> }[] = [];
    for (let i = 0; i < deltas.length; i++) {
      const t = now();
      const inf = await c.infer({ stateKey: key, deltaTokens: deltas[i]!, maxNewTokens: o.gen });
      const ms = now() - t;
      cached.push({ ms, tokens: inf.savings.tokensProcessed, tier: inf.tier, out: inf.outputTokens, timings: inf.timings });
      key = inf.newStateKey;
    }
    const cachedMs = now() - t0;
    log(`cached loop: ${Math.round(cachedMs)} ms`);
    const h = await c.health();
    const final = await c.getState(key);
    return {
      baseProcessed: cs.processed,
      baseMs,
      cachedMs,
      naive,
      cached,
      deltaTokens: o.deltas,
      health: { bytesStored: h.bytesStored, logicalBytes: h.logicalBytes, states: h.statesStored },
      finalBytes: final.bytes,
      finalTokens: final.tokens,
    };
  },

  /** Recompute a base vs restore it from the hot tier and from IndexedDB, and the raw read floor. */
  async restore(o: { tokens: number; reps: number }) {
    const c = client();
    const toks = base(o.tokens);
    const recompute: number[] = [];
    const recomputePrefill: number[] = [];
    let key = '';
    let bytes = 0;
    for (let r = 0; r < o.reps; r++) {
      await c.clearStore();
      const { ms, r: cs } = await timed(() => c.createState({ tokens: toks }));
      recompute.push(ms);
      recomputePrefill.push(cs.timings.prefillMs);
      key = cs.stateKey;
      bytes = cs.bytes;
      if (cs.processed !== toks.length) throw new Error(`bench: recompute reused ${cs.reused} tokens; the store was not empty`);
    }
    const hot: number[] = [];
    const hotFirst: number[] = [];
    const stored: number[] = [];
    const storedFirst: number[] = [];
    const floor: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      const { ms, r: inf } = await timed(() => c.infer({ stateKey: key, deltaTokens: probeDelta(), maxNewTokens: 0 }));
      if (inf.tier !== 'hot') throw new Error(`bench: expected a hot restore, got ${inf.tier}`);
      hot.push(inf.timings.restoreMs);
      hotFirst.push(ms);
    }
    for (let r = 0; r < o.reps; r++) {
      await c.dropHot();
      const { ms, r: inf } = await timed(() => c.infer({ stateKey: key, deltaTokens: probeDelta(), maxNewTokens: 0 }));
      if (inf.tier !== 'stored') throw new Error(`bench: expected a restore from IndexedDB, got ${inf.tier}`);
      stored.push(inf.timings.restoreMs);
      storedFirst.push(ms);
    }
    for (let r = 0; r < o.reps; r++) floor.push(await rawReadFloor(key));
    const profile = await profileStoredRestore(key);
    log(`restore ${o.tokens}: recompute ${Math.round(recompute[0]!)} ms, hot ${hot[0]!.toFixed(1)} ms, stored ${stored[0]!.toFixed(1)} ms`);
    return { stateBytes: bytes, recompute, recomputePrefill, hot, hotFirst, stored, storedFirst, floor, profile };
  },

  /** Prefill a base vs continue it by `newTokens` (issue #3), and the new tokens with no base. */
  async continue(o: { tokens: number; newTokens: number; reps: number }) {
    const c = client();
    const toks = base(o.tokens);
    await c.clearStore();
    const prefill: number[] = [];
    for (let r = 0; r < o.reps; r++) prefill.push((await timed(() => c.probe({ tokens: toks }))).ms);
    const cs = await c.createState({ tokens: toks });
    const hot: number[] = [];
    const stored: number[] = [];
    const fresh: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      const { ms, r: inf } = await timed(() => c.infer({ stateKey: cs.stateKey, deltaTokens: take(o.newTokens), maxNewTokens: 0 }));
      if (inf.tier !== 'hot') throw new Error(`bench: expected a hot continuation, got ${inf.tier}`);
      hot.push(ms);
    }
    for (let r = 0; r < o.reps; r++) {
      await c.dropHot();
      const { ms, r: inf } = await timed(() => c.infer({ stateKey: cs.stateKey, deltaTokens: take(o.newTokens), maxNewTokens: 0 }));
      if (inf.tier !== 'stored') throw new Error(`bench: expected a continuation from IndexedDB, got ${inf.tier}`);
      stored.push(ms);
    }
    for (let r = 0; r < o.reps; r++) {
      const t = take(o.newTokens);
      fresh.push((await timed(() => c.probe({ tokens: t }))).ms);
    }
    return { prefill, hot, stored, fresh };
  },

  /** One base and `count` agents continuing it: bytes stored vs one copy per agent. */
  async agents(o: { tokens: number; count: number; delta: number }) {
    const c = client();
    await c.clearStore();
    const cs = await c.createState({ tokens: base(o.tokens) });
    let copies = 0;
    for (let i = 0; i < o.count; i++) {
      const inf = await c.infer({ stateKey: cs.stateKey, deltaTokens: take(o.delta), maxNewTokens: 0 });
      copies += (await c.getState(inf.newStateKey)).bytes;
    }
    const h = await c.health();
    return { baseBytes: cs.bytes, agentsBytes: h.bytesStored, naiveAgentsBytes: copies };
  },
};

/**
 * The steps of a restore from IndexedDB, each timed on its own, run in the page
 * on a second StateStore over the same database (its hot tier is empty): what
 * the engine's findPrefix does on a hot miss, to show where the time goes.
 */
async function profileStoredRestore(key: string) {
  const store = new StateStore({ dbName: BENCH_DB });
  const m = await store.getManifest(key);
  if (!m) throw new Error(`bench: no manifest for ${key}`);
  let t = now();
  const keys = await prefixKeys(m.modelFp, m.tokens);
  const prefixKeysMs = now() - t;
  t = now();
  await store.getManifests(keys);
  const manifestsMs = now() - t;
  t = now();
  if (m.arch === 'gpt2') await blockChain(m.modelFp, m.tokens);
  const blockChainMs = now() - t;
  t = now();
  await store.getState(key);
  const getStateMs = now() - t;
  return { prefixKeysMs, manifestsMs, blockChainMs, getStateMs };
}

/** A raw IndexedDB read of a stored state's blobs plus SHA-256 of their bytes: what no restore can beat. */
async function rawReadFloor(key: string): Promise<number> {
  const db = await new Promise<IDBDatabase>((res, rej) => {
    const q = indexedDB.open(BENCH_DB);
    q.onsuccess = () => res(q.result);
    q.onerror = () => rej(q.error);
  });
  try {
    const req = <T>(r: IDBRequest<T>) =>
      new Promise<T>((res, rej) => {
        r.onsuccess = () => res(r.result);
        r.onerror = () => rej(r.error);
      });
    const manifest = (await req(
      db
        .transaction('kv', 'readonly')
        .objectStore('kv')
        .get('m:' + key),
    )) as { blocks: { key: string }[] } | undefined;
    if (!manifest) throw new Error(`bench: no manifest for ${key}`);
    const t = now();
    const s = db.transaction('kv', 'readonly').objectStore('kv');
    const recs = (await Promise.all(manifest.blocks.map((b) => req(s.get('b:' + b.key))))) as { data: ArrayBuffer }[];
    for (const rec of recs) await crypto.subtle.digest('SHA-256', rec.data);
    return now() - t;
  } finally {
    db.close();
  }
}

export type Bench = typeof bench;
(window as unknown as { bench: Bench }).bench = bench;
