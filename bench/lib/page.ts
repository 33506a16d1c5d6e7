/**
 * The benchmark page: it embeds statecart as a web app would (the client
 * library and its worker, reached only through ./statecart-adapter.ts) beside
 * the plain baseline (./plain-worker.ts: the same model, runtime and threads,
 * no statecart), and offers each measurement as a method of `window.bench`,
 * which bench/run.ts calls through Playwright. Every time it returns is a
 * page wall time around one awaited call; medians and ratios are made in
 * Node (bench/lib/rows.ts).
 */
import type { DeviceChoice } from '../../src/lib/index.ts';
import { StateStore } from '../../src/store/store.ts';
import { KeyChain } from '../../src/core/key-chain.ts';
import { isSliceable } from '../../src/core/state.ts';
import { openStatecart, type Inferred, type StatecartHandle } from './statecart-adapter.ts';
import { openPlain, type PlainHandle } from './plain.ts';
import type { AgentLoopRaw, DecodeRaw, PrefillRaw, TimedCall, TtftRaw } from './rows.ts';

const BENCH_DB = 'statecart-bench';

let sc: StatecartHandle | null = null;
let plain: PlainHandle | null = null;
let sliceable = true;
let maxTokens = Infinity;
let corpus: number[] = [];
let cursor = 0;

const now = () => performance.now();
const log = (...a: unknown[]) => console.log('[bench]', ...a);

function client(): StatecartHandle {
  if (!sc) throw new Error('bench: call start() first');
  return sc;
}

function plainApi(): PlainHandle['api'] {
  if (!plain) throw new Error('bench: the plain worker is not loaded (call load() first)');
  return plain.api;
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

/** Bases are the corpus' first tokens; deltas come from past the longest base, so a delta never repeats a base's text. */
const DELTAS_FROM = 1024;

/** `n` tokens from the corpus that no earlier call handed out (until the corpus wraps). */
function take(n: number): number[] {
  const out: number[] = [];
  while (out.length < n) {
    if (cursor >= corpus.length) cursor = DELTAS_FROM;
    out.push(corpus[cursor++]!);
  }
  return out;
}

function base(n: number): number[] {
  if (corpus.length < n) throw new Error(`bench: the corpus has ${corpus.length} tokens, ${n} were asked for`);
  return corpus.slice(0, n);
}

/** The smallest delta that makes infer() restore a state and compute its logits: a KV state re-runs its last token by itself, a fixed-size state (Mamba) keeps its logits but the bench gives it one new token, as a request would. */
const probeDelta = () => (sliceable ? [] : take(1));

async function timed<T>(f: () => Promise<T>): Promise<{ ms: number; r: T }> {
  const t = now();
  const r = await f();
  return { ms: now() - t, r };
}

/** One infer() with its page wall time, the tier it restored from checked. */
async function timedInfer(q: { stateKey: string; deltaTokens: number[]; maxNewTokens: number }, tier?: string): Promise<TimedCall & { r: Inferred }> {
  const { ms, r } = await timed(() => client().infer(q));
  if (tier && r.tier !== tier) throw new Error(`bench: expected a restore from the ${tier} tier, got ${r.tier}`);
  return { ms, timings: r.timings, r };
}

function fits(tokens: number, what: string): void {
  if (tokens > maxTokens) throw new Error(`bench: ${what} needs ${tokens} positions; the model holds ${maxTokens}`);
}

const bench = {
  async start(o: { device: DeviceChoice; numThreads?: number }) {
    sc = await openStatecart({ device: o.device, dbName: BENCH_DB, ...(o.numThreads ? { numThreads: o.numThreads } : {}) });
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

  /**
   * Loads the model in the statecart worker, then in the plain worker with the
   * thread count the statecart worker reports, and warms both up with one
   * short run (a first run is slower and would count against whichever went first).
   */
  async load(model: string, device: DeviceChoice, o: { plain: boolean }) {
    const c = client();
    const { ms, r: info } = await timed(() => c.loadModel(model, device));
    sliceable = info.sliceable;
    const h = await c.health();
    // The GPT-2 tokenizer is shared by both architectures.
    corpus = await c.tokenize(corpusText(6000));
    cursor = DELTAS_FROM;
    maxTokens = info.maxTokens;
    await c.probe(take(8));
    let plainLoad: { wallMs: number; threads: number; fingerprintMatches: boolean; sameEnv: boolean } | null = null;
    if (o.plain) {
      plain?.terminate();
      plain = await openPlain(h.threads);
      const p = await timed(() => plainApi().load({ model, device: info.device === 'webgpu' ? 'webgpu' : 'wasm' }));
      await plainApi().generate({ tokens: take(8), maxNewTokens: 1 });
      plainLoad = { wallMs: p.ms, threads: p.r.threads, fingerprintMatches: p.r.fingerprint === info.fingerprint, sameEnv: p.r.sameEnv };
    }
    const threads = (await c.health()).threads;
    log(
      `${model} loaded on ${info.device} in ${Math.round(ms)} ms; corpus ${corpus.length} tokens; threads ${threads}` +
        (plainLoad ? `; plain worker ${Math.round(plainLoad.wallMs)} ms, threads ${plainLoad.threads}` : ''),
    );
    return { wallMs: ms, info, threads, crossOriginIsolated: h.crossOriginIsolated, plain: plainLoad };
  },

  /**
   * State Pack's loop, plain and cached, step by step in turn (so that load on
   * the machine falls on both alike). Plain: each step prefills the whole text
   * so far and generates. Cached: createState(base) once, then each step is
   * infer() from the previous state. Each side continues its own outputs.
   */
  async agentLoop(o: {
    baseTokens: number;
    deltas: number[];
    gen: number;
  }): Promise<AgentLoopRaw & { health: { bytesStored: number; logicalBytes: number; states: number }; finalBytes: number }> {
    const c = client();
    const p = plainApi();
    const baseToks = base(o.baseTokens);
    const deltas = o.deltas.map((n) => take(n));
    fits(o.baseTokens + o.deltas.reduce((a, b) => a + b, 0) + o.deltas.length * o.gen, 'the agent loop');
    await c.clearStore();
    const b = await timed(() => c.createState(baseToks));
    let key = b.r.stateKey;
    let hist = baseToks;
    const plainSteps: AgentLoopRaw['plain'] = [];
    const cached: AgentLoopRaw['cached'] = [];
    for (let i = 0; i < deltas.length; i++) {
      const text = [...hist, ...deltas[i]!];
      const ps = await timed(() => p.generate({ tokens: text, maxNewTokens: o.gen }));
      plainSteps.push({ ms: ps.ms, tokens: text.length + o.gen - 1, out: ps.r.outputTokens });
      hist = [...text, ...ps.r.outputTokens];
      const cs = await timedInfer({ stateKey: key, deltaTokens: deltas[i]!, maxNewTokens: o.gen });
      cached.push({ ms: cs.ms, timings: cs.timings, tokens: cs.r.tokensProcessed, tier: cs.r.tier, out: cs.r.outputTokens });
      key = cs.r.newStateKey;
      log(`agent step ${i + 1}/${deltas.length}: ${text.length} tokens; plain ${Math.round(ps.ms)} ms, cached ${Math.round(cs.ms)} ms (${cs.r.tier})`);
    }
    const h = await c.health();
    return {
      baseTokens: o.baseTokens,
      gen: o.gen,
      deltaTokens: o.deltas,
      baseMs: b.ms,
      baseProcessed: b.r.processed,
      plain: plainSteps,
      cached,
      health: { bytesStored: h.bytesStored, logicalBytes: h.logicalBytes, states: h.statesStored },
      finalBytes: await c.stateBytes(key),
    };
  },

  /**
   * Time to first token after `newTokens` new tokens on a `baseTokens`-token
   * base. Each repetition: alone then hot on one set of new tokens, plain
   * then stored (after dropHot()) on another (the pairs the targets compare,
   * run in turn so that load on the machine falls on both alike).
   */
  async ttft(o: { baseTokens: number; newTokens: number; reps: number }): Promise<TtftRaw> {
    const c = client();
    const p = plainApi();
    fits(o.baseTokens + o.newTokens + 1, `a ${o.baseTokens} + ${o.newTokens} first token`);
    const baseToks = base(o.baseTokens);
    await c.clearStore();
    const { stateKey } = await c.createState(baseToks);
    const raw: TtftRaw = { baseTokens: o.baseTokens, newTokens: o.newTokens, alone: [], plain: [], hot: [], stored: [], identicalFirstToken: true };
    // Deltas that begin alike would let a later one reuse a token of an earlier one's stored state (a real hit, but not this measurement).
    const firsts = new Set<number>();
    const fresh = () => {
      for (;;) {
        const d = take(o.newTokens);
        if (!firsts.has(d[0]!)) {
          firsts.add(d[0]!);
          return d;
        }
      }
    };
    const reusedBase = (x: { r: Inferred }) => {
      if (x.r.tokensReused !== o.baseTokens) throw new Error(`bench: expected the ${o.baseTokens}-token base reused, got ${x.r.tokensReused}`);
    };
    for (let r = 0; r < o.reps; r++) {
      const d1 = fresh();
      raw.alone.push((await timed(() => p.generate({ tokens: d1, maxNewTokens: 1 }))).ms);
      const h = await timedInfer({ stateKey, deltaTokens: d1, maxNewTokens: 1 }, 'hot');
      reusedBase(h);
      raw.hot.push(h);
      // The hot path's first token against a plain run of the same text, once per row.
      if (r === 0 && (await p.generate({ tokens: [...baseToks, ...d1], maxNewTokens: 1 })).outputTokens[0] !== h.r.outputTokens[0])
        raw.identicalFirstToken = false;
      const d2 = fresh();
      const pl = await timed(() => p.generate({ tokens: [...baseToks, ...d2], maxNewTokens: 1 }));
      raw.plain.push(pl.ms);
      await c.dropHot();
      const s = await timedInfer({ stateKey, deltaTokens: d2, maxNewTokens: 1 }, 'stored');
      reusedBase(s);
      raw.stored.push(s);
      if (pl.r.outputTokens[0] !== s.r.outputTokens[0]) raw.identicalFirstToken = false;
    }
    log(
      `ttft ${o.baseTokens} + ${o.newTokens}: alone ${Math.round(raw.alone[0]!)} ms, hot ${Math.round(raw.hot[0]!.ms)} ms, plain ${Math.round(raw.plain[0]!)} ms, stored ${Math.round(raw.stored[0]!.ms)} ms`,
    );
    return raw;
  },

  /**
   * One generated token's cost at `context` tokens: infer() generating 1 and
   * 1 + extraTokens on the same hot base, in pairs (after one unmeasured pair,
   * which also stores both results, so later pairs store nothing); the same
   * in the plain worker from a held state.
   */
  async decode(o: { context: number; extraTokens: number; reps: number }): Promise<DecodeRaw> {
    const c = client();
    const p = plainApi();
    const k = o.extraTokens;
    fits(o.context + 1 + k, `decoding ${1 + k} tokens after ${o.context}`);
    const toks = base(o.context);
    await c.clearStore();
    const { stateKey } = await c.createState(toks);
    const one = () => timedInfer({ stateKey, deltaTokens: [], maxNewTokens: 1 }, 'hot');
    const more = () => timedInfer({ stateKey, deltaTokens: [], maxNewTokens: 1 + k }, 'hot');
    const raw: DecodeRaw = { context: o.context, extraTokens: k, pairs: [], plainPairs: [] };
    await one();
    const warm = await more();
    if (warm.r.tokensProcessed > k + 2) throw new Error(`bench: decoding on a hot base ran ${warm.r.tokensProcessed} tokens; the base was recomputed`);
    for (let r = 0; r < o.reps; r++) raw.pairs.push({ one: await one(), more: await more() });
    await p.hold(toks);
    await p.generateFromHeld(1 + k);
    for (let r = 0; r < o.reps; r++) {
      const a = await timed(() => p.generateFromHeld(1));
      const b = await timed(() => p.generateFromHeld(1 + k));
      raw.plainPairs.push({ one: a.ms, more: b.ms });
    }
    return raw;
  },

  /** Plain prefill of `tokens` tokens (and the first token's pick), nothing stored. */
  async prefill(o: { tokens: number; reps: number }): Promise<PrefillRaw> {
    const p = plainApi();
    const toks = base(o.tokens);
    const ms: number[] = [];
    for (let r = 0; r < o.reps; r++) ms.push((await timed(() => p.generate({ tokens: toks, maxNewTokens: 1 }))).ms);
    return { tokens: o.tokens, ms };
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
      const { ms, r: cs } = await timed(() => c.createState(toks));
      recompute.push(ms);
      recomputePrefill.push(cs.prefillMs);
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
      const x = await timedInfer({ stateKey: key, deltaTokens: probeDelta(), maxNewTokens: 0 }, 'hot');
      hot.push(x.timings.restoreMs);
      hotFirst.push(x.ms);
    }
    for (let r = 0; r < o.reps; r++) {
      await c.dropHot();
      const x = await timedInfer({ stateKey: key, deltaTokens: probeDelta(), maxNewTokens: 0 }, 'stored');
      stored.push(x.timings.restoreMs);
      storedFirst.push(x.ms);
    }
    for (let r = 0; r < o.reps; r++) floor.push(await rawReadFloor(key));
    const profile = await profileStoredRestore(key);
    log(`restore ${o.tokens}: recompute ${Math.round(recompute[0]!)} ms, hot ${hot[0]!.toFixed(1)} ms, stored ${stored[0]!.toFixed(1)} ms`);
    return { stateBytes: bytes, recompute, recomputePrefill, hot, hotFirst, stored, storedFirst, floor, profile };
  },

  /** One base and `count` agents continuing it: bytes stored vs one copy per agent. */
  async agents(o: { tokens: number; count: number; delta: number }) {
    const c = client();
    await c.clearStore();
    const cs = await c.createState(base(o.tokens));
    let copies = 0;
    for (let i = 0; i < o.count; i++) {
      const inf = await c.infer({ stateKey: cs.stateKey, deltaTokens: take(o.delta), maxNewTokens: 0 });
      copies += await c.stateBytes(inf.newStateKey);
    }
    const h = await c.health();
    return { baseBytes: cs.bytes, agentsBytes: h.bytesStored, naiveAgentsBytes: copies };
  },

  /** Stops both workers (the store stays). */
  async close() {
    await plain?.api.dispose().catch(() => undefined);
    plain?.terminate();
    plain = null;
    sc?.terminate();
    sc = null;
    return true;
  },
};

/**
 * The steps of a restore from IndexedDB, each timed on its own, run in the page
 * on a second StateStore over the same database (its hot tier is empty): what
 * the engine's findPrefix does on a hot miss, to show where the time goes.
 */
async function profileStoredRestore(key: string) {
  const store = new StateStore({ dbName: BENCH_DB });
  try {
    const m = await store.getManifest(key);
    if (!m) throw new Error(`bench: no manifest for ${key}`);
    let t = now();
    const keys = (await KeyChain.create(m.modelFp, m.tokens)).keysFrom(1);
    const prefixKeysMs = now() - t;
    t = now();
    await store.getManifests(keys);
    const manifestsMs = now() - t;
    t = now();
    if (isSliceable(m.tensors)) {
      const chain = await KeyChain.create(m.modelFp, m.tokens);
      for (let i = 0; i < Math.floor(m.tokens.length / 16); i++) chain.blockKey(i);
    }
    const blockChainMs = now() - t;
    t = now();
    await store.getState(key);
    const getStateMs = now() - t;
    return { prefixKeysMs, manifestsMs, blockChainMs, getStateMs };
  } finally {
    store.close();
  }
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
