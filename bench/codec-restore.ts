// Restoring a stored state: is an int8 (or fp16, kivi4) state slower to get
// back than fp32? A synthetic gpt2-shape state (12 layers × key/value
// [12 heads, T tokens, 64]) is stored with each codec in a fresh store, the
// hot tier is dropped, and getState is timed: IndexedDB read (fake-indexeddb
// in Node), SHA-256 of every blob, decode, and joining the blocks.
//
//   npx tsx bench/codec-restore.ts [--tokens 1024] [--runs 7]
//
// Writes bench/results/codec-restore.json.
import 'fake-indexeddb/auto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cpus } from 'node:os';
import { StateStore } from '../src/store/store.ts';
import { KeyChain, stateKey } from '../src/core/key-chain.ts';
import { ALL_CODECS } from '../src/engine/codec-optimizer.ts';
import { cutBlocks, decodeBlock, encodeBlock, tensorSpecs } from '../src/store/blocks.ts';
import type { ModelState } from '../src/models/types.ts';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}
const T = Number(arg('tokens', '1024'));
const RUNS = Number(arg('runs', '7'));
const L = 12;
const H = 12;
const D = 64;

// KV-like values: a per-channel scale (outlier channels, as in real KV
// caches) times a smooth random walk over tokens.
function synthState(): ModelState {
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return (seed / 2 ** 32) * 2 - 1;
  };
  const tensors = [];
  for (let l = 0; l < L; l++) {
    for (const kind of ['key', 'value']) {
      const data = new Float32Array(H * T * D);
      for (let h = 0; h < H; h++) {
        for (let d = 0; d < D; d++) {
          const scale = d % 16 === 0 ? 8 : 1 + Math.abs(rnd());
          let x = rnd();
          for (let t = 0; t < T; t++) {
            x = 0.9 * x + 0.3 * rnd();
            data[(h * T + t) * D + d] = scale * x;
          }
        }
      }
      tensors.push({ name: `layers.${l}.${kind}`, dims: [H, T, D], tokenAxis: 1, data });
    }
  }
  return { tokens: Array.from({ length: T }, (_, i) => (i * 31 + 7) % 50257), tensors };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const state = synthState();
const fp = 'ab'.repeat(32);
const key = await stateKey(fp, state.tokens);
const specs = tensorSpecs(state);
const blocks = cutBlocks(state);

// Codecs take turns within each run, so that load from other processes on
// the machine falls on all of them alike.
const stores = new Map<string, { store: StateStore; bytes: number; restore: number[]; decode: number[]; encoded: Uint8Array[] }>();
for (const codec of ALL_CODECS) {
  const store = new StateStore({ dbName: `bench-restore-${codec}` });
  await store.clear();
  const { manifest: m } = await store.putState({
    state,
    chain: await KeyChain.create(fp, state.tokens),
    modelId: 'gpt2-shape-synthetic',
    modelFp: fp,
    arch: 'gpt2',
    parent: null,
    codec,
  });
  stores.set(codec, { store, bytes: m.bytes, restore: [], decode: [], encoded: blocks.map((b) => encodeBlock(specs, b, codec)) });
}
for (let r = 0; r < RUNS + 1; r++) {
  for (const codec of ALL_CODECS) {
    const x = stores.get(codec)!;
    await x.store.dropHot();
    let t0 = performance.now();
    const got = await x.store.getState(key);
    const ms = performance.now() - t0;
    if (got.tier !== 'stored') throw new Error('expected a stored read');
    // Decode alone (no IndexedDB, no digest): the codec's own cost.
    t0 = performance.now();
    for (let i = 0; i < blocks.length; i++) decodeBlock(specs, blocks[i]!.start, blocks[i]!.end, codec, x.encoded[i]!);
    const dms = performance.now() - t0;
    if (r > 0) x.restore.push(ms), x.decode.push(dms); // the first run warms up the JIT
  }
}
const rows = [];
for (const codec of ALL_CODECS) {
  const x = stores.get(codec)!;
  rows.push({ codec, bytes: x.bytes, restoreMs: median(x.restore), decodeMs: median(x.decode), restoreRunsMs: x.restore });
  await x.store.clear();
}

const fp32 = rows.find((r) => r.codec === 'fp32')!;
console.log(
  `restore of a synthetic gpt2-shape state, ${T} tokens (${(fp32.bytes / 2 ** 20).toFixed(1)} MiB fp32), median of ${RUNS} runs, Node ${process.version}, fake-indexeddb\n`,
);
console.log('| codec | stored bytes | restore (getState) ms | of which decode ms | restore vs fp32 |');
console.log('|---|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(
    `| ${r.codec} | ${(r.bytes / 2 ** 20).toFixed(2)} MiB | ${r.restoreMs.toFixed(1)} | ${r.decodeMs.toFixed(1)} | ${(r.restoreMs / fp32.restoreMs).toFixed(2)}× |`,
  );
}
await mkdir(join(process.cwd(), 'bench/results'), { recursive: true });
await writeFile(
  join(process.cwd(), 'bench/results/codec-restore.json'),
  JSON.stringify(
    {
      command: 'npx tsx bench/codec-restore.ts ' + process.argv.slice(2).join(' '),
      node: process.version,
      cpus: cpus().length,
      tokens: T,
      runs: RUNS,
      date: new Date().toISOString(),
      rows,
    },
    null,
    2,
  ) + '\n',
);
