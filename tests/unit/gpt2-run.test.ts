import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as ort from 'onnxruntime-node';
import { buildGpt2Onnx } from '../../src/models/gpt2-onnx.ts';
import { seededGpt2Weights } from '../../src/models/gpt2-weights.ts';
import { gpt2Forward, type GPT2Weights } from '../../src/models/gpt2-reference.ts';
import { convertModelToFp16, quantizeModelDynamic } from '../../src/models/onnx-dtype.ts';
import { seededGpt2Recipe } from '../../src/models/registry.ts';
import {
  createGpt2Runner,
  LOST_WAIT_MS,
  RowBuffer,
  type GpuDeviceLike,
  type Gpt2RunnerOptions,
  type OrtSessionLike,
  type OrtTensorLike,
} from '../../src/models/gpt2-run.ts';
import type { ModelState } from '../../src/models/types.ts';
import { float16ToFloat32, float32ToFloat16 } from '../../src/formats/fp16.ts';
import { MODELS_DIR, nodeModel } from './support/node-engine.ts';
import { ensureModels } from '../../scripts/make-models.ts';

const TOL = 1e-4;
const V = 50257;
let w: GPT2Weights;
const graphs: Record<string, Uint8Array> = {};
const sessions: Record<string, ort.InferenceSession> = {};
const ids = (n: number, salt = 0): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % V);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates as a failure
  }
  return m;
}

/** Bit-for-bit equality of two float arrays (NaN-safe, -0 ≠ +0). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function expectSameState(a: ModelState, b: ModelState, what: string): void {
  expect(a.tokens, what).toEqual(b.tokens);
  expect(
    a.tensors.map((t) => [t.name, t.dims, t.tokenAxis]),
    what,
  ).toEqual(b.tensors.map((t) => [t.name, t.dims, t.tokenAxis]));
  a.tensors.forEach((t, i) => expect(sameBits(t.data, b.tensors[i]!.data), `${what}: ${t.name} bit for bit`).toBe(true));
}

const tensor: Gpt2RunnerOptions['tensor'] = (type, data, dims) => new ort.Tensor(type, data, dims) as unknown as OrtTensorLike;

function runner(kind: string, o: Partial<Gpt2RunnerOptions> = {}) {
  return createGpt2Runner({
    modelId: `tiny-gpt2 (${kind})`,
    session: sessions[kind] as unknown as OrtSessionLike,
    tensor,
    config: { ...w.config },
    device: 'cpu',
    ...o,
  });
}

/** Feeds `parts` in turn on top of `from`; the logits after each part, and the state. */
async function feedAll(r: ReturnType<typeof runner>, parts: number[][], from?: ModelState) {
  const run = r.open(from);
  try {
    const logits: Float32Array[] = [];
    for (const p of parts) logits.push(await run.feed(p));
    return { logits, state: await run.state(), tokens: [...run.tokens] };
  } finally {
    run.close();
  }
}

/** The reference's state (float64 math, as float32) for `tokens`. */
function referenceState(tokens: number[]) {
  const r = gpt2Forward(w, tokens, { lastOnly: true });
  return { logits: r.logits, kv: r.present.flatMap((l) => [Float32Array.from(l.key), Float32Array.from(l.value)]) };
}

beforeAll(async () => {
  const r = seededGpt2Recipe('tiny-gpt2');
  w = seededGpt2Weights(r.config, { seed: r.seed, scale: r.scale });
  graphs.rows = buildGpt2Onnx(w);
  graphs.hub = buildGpt2Onnx(w, { newRows: false });
  graphs.fp16 = convertModelToFp16(graphs.rows);
  graphs.q8 = quantizeModelDynamic(graphs.rows);
  graphs.fp16hub = convertModelToFp16(graphs.hub);
  for (const [k, b] of Object.entries(graphs)) sessions[k] = await ort.InferenceSession.create(b);
});

afterAll(async () => {
  for (const s of Object.values(sessions)) await s.release();
});

describe('RowBuffer: the run-owned [n_head, T, head_dim] cache grown in place', () => {
  it('equals concatenating along the token axis, across re-allocations, float32 and float16', () => {
    const H = 3;
    const D = 5;
    for (const type of ['float32', 'float16'] as const) {
      const b = new RowBuffer(H, D, type, 1000);
      const want: number[][] = Array.from({ length: H }, () => []);
      let v = 1;
      for (const S of [1, 7, 1, 1, 64, 2, 130, 1, 3]) {
        const rows = type === 'float32' ? new Float32Array(H * S * D) : new Uint16Array(H * S * D);
        for (let h = 0; h < H; h++)
          for (let i = 0; i < S * D; i++) {
            rows[h * S * D + i] = v;
            want[h]!.push(v);
            v = (v % 60000) + 1;
          }
        b.append(rows, S);
        expect(Array.from(b.view())).toEqual(want.flat());
      }
      expect(b.T).toBe(210);
    }
  });

  it('starts on a state without copying it and never writes to it', () => {
    const start = Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i);
    const keep = start.slice();
    const b = new RowBuffer(2, 4, 'float32', 100, start);
    expect(b.T).toBe(3);
    expect(b.view().buffer).toBe(start.buffer);
    b.append(new Float32Array(8).fill(-1), 1);
    expect(start).toEqual(keep);
    expect(b.view().buffer).not.toBe(start.buffer);
    expect(Array.from(b.view())).toEqual([...keep.slice(0, 12), -1, -1, -1, -1, ...keep.slice(12), -1, -1, -1, -1]);
  });

  it('never grows past the model context and re-allocates rarely', () => {
    const b = new RowBuffer(2, 4, 'float32', 100);
    const views = new Set<ArrayBufferLike>();
    for (let i = 0; i < 100; i++) {
      b.append(new Float32Array(8).fill(i), 1);
      views.add(b.view().buffer);
    }
    expect(views.size).toBeLessThanOrEqual(3);
    expect(b.view().buffer.byteLength).toBeLessThanOrEqual(100 * 2 * 4 * 4);
    expect(b.view()[4 * 99]).toBe(99);
  });
});

describe('graph: new_key / new_value rows', () => {
  it('are the last rows of present, bit for bit, and change nothing else', async () => {
    const all = ids(30, 1);
    const past = await sessions.rows!.run(feedsFor(all.slice(0, 21)));
    const withRows = await sessions.rows!.run(feedsFor(all.slice(21), past));
    const without = await sessions.hub!.run(feedsFor(all.slice(21), past));
    expect(sessions.rows!.outputNames).toEqual([...sessions.hub!.outputNames, 'new_key.0', 'new_value.0', 'new_key.1', 'new_value.1']);
    expect(sameBits(withRows.logits!.data as Float32Array, without.logits!.data as Float32Array)).toBe(true);
    for (const n of ['present.0.key', 'present.1.value']) expect(sameBits(withRows[n]!.data as Float32Array, without[n]!.data as Float32Array)).toBe(true);
    for (let l = 0; l < 2; l++) {
      for (const kind of ['key', 'value']) {
        const rows = withRows[`new_${kind}.${l}`]!;
        expect(rows.dims).toEqual([1, 4, 9, 16]);
        const present = withRows[`present.${l}.${kind}`]!.data as Float32Array;
        const last = new Float32Array(4 * 9 * 16);
        for (let h = 0; h < 4; h++) last.set(present.subarray((h * 30 + 21) * 16, (h * 30 + 30) * 16), h * 9 * 16);
        expect(sameBits(rows.data as Float32Array, last)).toBe(true);
      }
    }
  });
});

function feedsFor(tokens: number[], past?: ort.InferenceSession.OnnxValueMapType): Record<string, ort.Tensor> {
  const P = past ? (past['present.0.key'] as ort.Tensor).dims[2]! : 0;
  const i64 = (xs: number[], d: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), d);
  const f: Record<string, ort.Tensor> = {
    input_ids: i64(tokens, [1, tokens.length]),
    attention_mask: i64(new Array(P + tokens.length).fill(1), [1, P + tokens.length]),
    position_ids: i64(
      tokens.map((_, i) => P + i),
      [1, tokens.length],
    ),
    num_logits_to_keep: i64([0], []),
  };
  for (let l = 0; l < 2; l++)
    for (const k of ['key', 'value'])
      f[`past_key_values.${l}.${k}`] = (past?.[`present.${l}.${k}`] as ort.Tensor) ?? new ort.Tensor('float32', new Float32Array(0), [1, 4, 0, 16]);
  return f;
}

describe('a run keeps its cache between feeds (onnxruntime-node)', () => {
  const all = ids(170, 2);
  // 170 tokens: one prefill (two session runs: 128 + 42) ; in pieces ; the last 40 token by token.
  const patterns: Record<string, number[][]> = {
    prefill: [all],
    pieces: [all.slice(0, 37), all.slice(37, 38), all.slice(38, 39), all.slice(39, 99), all.slice(99)],
    tokens: [all.slice(0, 130), ...all.slice(130).map((t) => [t])],
  };

  it('picks rows for our graph and present for a graph without new rows', () => {
    expect(runner('rows').mode).toBe('rows');
    expect(runner('rows', { cache: 'present' }).mode).toBe('present');
    expect(runner('hub').mode).toBe('present');
    expect(runner('fp16').mode).toBe('rows');
    expect(runner('fp16').kvType).toBe('float16');
    expect(runner('q8').kvType).toBe('float32');
    expect(runner('fp16hub').mode).toBe('present');
  });

  for (const [name, parts] of Object.entries(patterns)) {
    it(`${name}: rows equal present bit for bit, on the graph with and without new rows, and the reference within ${TOL}`, async () => {
      const rows = await feedAll(runner('rows'), parts);
      const present = await feedAll(runner('rows', { cache: 'present' }), parts);
      const hub = await feedAll(runner('hub'), parts);
      expect(rows.tokens).toEqual(all);
      for (const other of [present, hub]) {
        expectSameState(rows.state, other.state, name);
        rows.logits.forEach((l, i) => expect(sameBits(l, other.logits[i]!), `${name}: logits after part ${i}`).toBe(true));
      }
      const ref = referenceState(all);
      expect(maxAbsDiff(rows.logits.at(-1)!, ref.logits)).toBeLessThanOrEqual(TOL);
      rows.state.tensors.forEach((t, i) => {
        expect(t.dims).toEqual([4, 170, 16]);
        expect(maxAbsDiff(t.data, ref.kv[i]!), t.name).toBeLessThanOrEqual(TOL);
      });
      // Every part's logits are the reference's at that point.
      let n = 0;
      for (const [i, p] of parts.entries()) {
        n += p.length;
        if (i % 7 === 0 || i === parts.length - 1) expect(maxAbsDiff(rows.logits[i]!, referenceState(all.slice(0, n)).logits)).toBeLessThanOrEqual(TOL);
      }
    });
  }

  it('a run from a stored state equals the run that computed everything, bit for bit (rows and present)', async () => {
    for (const kind of ['rows', 'hub'] as const) {
      const r = runner(kind);
      const whole = await feedAll(r, [all.slice(0, 50), all.slice(50, 51), all.slice(51, 60), [all[60]!]]);
      const first = await feedAll(r, [all.slice(0, 50)]);
      expect(first.state.tensors[0]!.dims).toEqual([4, 50, 16]);
      const rest = await feedAll(r, [all.slice(50, 51), all.slice(51, 60), [all[60]!]], first.state);
      expectSameState(whole.state, rest.state, `${kind}: from a stored state`);
      expect(sameBits(whole.logits.at(-1)!, rest.logits.at(-1)!)).toBe(true);
      // The stored state is not touched by the run that started from it.
      expectSameState(first.state, (await feedAll(r, [all.slice(0, 50)])).state, `${kind}: start state unchanged`);
    }
  });

  it('state() in the middle of a run, then more tokens: both states right, the first not changed by the rest', async () => {
    const run = runner('rows').open();
    try {
      await run.feed(all.slice(0, 20));
      const mid = await run.state();
      const midCopy = mid.tensors.map((t) => t.data.slice());
      await run.feed(all.slice(20, 25));
      for (const t of all.slice(25, 30)) await run.feed([t]);
      const end = await run.state();
      mid.tensors.forEach((t, i) => expect(sameBits(t.data, midCopy[i]!)).toBe(true));
      const ref = referenceState(all.slice(0, 30));
      end.tensors.forEach((t, i) => expect(maxAbsDiff(t.data, ref.kv[i]!)).toBeLessThanOrEqual(TOL));
      expect(end.tokens).toEqual(all.slice(0, 30));
    } finally {
      run.close();
    }
  });

  it('float16 and q8 graphs: rows equal present bit for bit; float16 states are the float16 cache as float32', async () => {
    const parts = [all.slice(0, 40), [all[40]!], [all[41]!], all.slice(42, 50)];
    for (const [kind, hub] of [
      ['fp16', 'fp16hub'],
      ['q8', null],
    ] as const) {
      const rows = await feedAll(runner(kind), parts);
      const present = await feedAll(runner(kind, { cache: 'present' }), parts);
      expectSameState(rows.state, present.state, kind);
      expect(sameBits(rows.logits.at(-1)!, present.logits.at(-1)!)).toBe(true);
      if (hub) expectSameState(rows.state, (await feedAll(runner(hub), parts)).state, `${kind} without new rows`);
      // A state of a float16 cache holds values a float16 can hold.
      if (kind === 'fp16') {
        const t = rows.state.tensors[1]!.data;
        expect(sameBits(t, float16ToFloat32(float32ToFloat16(t)))).toBe(true);
      }
      // And it is still the model (the precisions' own tolerances are tested in onnx-dtype.test.ts).
      const ref = referenceState(all.slice(0, 50));
      expect(maxAbsDiff(rows.logits.at(-1)!, ref.logits)).toBeLessThanOrEqual(kind === 'fp16' ? 0.1 : 3);
      // From the state, in the same precision.
      const first = await feedAll(runner(kind), parts.slice(0, 2));
      const rest = await feedAll(runner(kind), parts.slice(2), first.state);
      expectSameState(rows.state, rest.state, `${kind}: from a stored state`);
    }
  });

  it('refuses a state of another shape, an empty feed, a feed past the context and a closed run', async () => {
    const r = runner('rows');
    const good = (await feedAll(r, [all.slice(0, 5)])).state;
    const bad: ModelState = { tokens: good.tokens.slice(0, 4), tensors: good.tensors };
    expect(() => r.open(bad)).toThrow(/holds 320 values, not 256/);
    const run = r.open(good);
    await expect(run.feed([])).rejects.toThrow(/at least one/);
    await expect(run.feed(new Array(1020).fill(5))).rejects.toThrow(/holds at most 1024/);
    run.close();
    await expect(run.feed([1])).rejects.toThrow(/closed/);
  });

  it('refuses a graph that is not a GPT-2 decoder with a cache, naming what is missing', async () => {
    const fake = { inputNames: ['input_ids', 'attention_mask'], outputNames: ['logits'], run: async () => ({}) };
    expect(() => createGpt2Runner({ modelId: 'x', session: fake, tensor, config: { ...w.config }, device: 'cpu' })).toThrow(
      /missing inputs past_key_values\.0\.key/,
    );
  });
});

/**
 * The WebGPU path's bookkeeping, in Node: a session whose present.* come back
 * as "GPU" tensors (data only through getData, counted dispose), as
 * onnxruntime-web's do with preferredOutputLocation 'gpu-buffer'.
 */
describe('gpu: present.* kept as runtime tensors, released once, never while still the past', () => {
  it('equals rows bit for bit and releases every buffer exactly once', async () => {
    const live = new Set<object>();
    const disposed = new Set<object>();
    let maxLive = 0;
    let made = 0;
    const inner = sessions.rows!;
    const session: OrtSessionLike = {
      inputNames: inner.inputNames,
      outputNames: inner.outputNames,
      async run(feeds, fetches) {
        for (const t of Object.values(feeds)) if (disposed.has(t)) throw new Error('a released buffer was fed');
        const cpu: Record<string, ort.Tensor> = {};
        for (const [k, t] of Object.entries(feeds))
          cpu[k] = live.has(t) ? ((t as unknown as { inner: ort.Tensor }).inner as ort.Tensor) : (t as unknown as ort.Tensor);
        const out = await inner.run(cpu, fetches as string[]);
        const res: Record<string, OrtTensorLike> = {};
        for (const [k, t] of Object.entries(out)) {
          if (!k.startsWith('present.')) {
            res[k] = t as unknown as OrtTensorLike;
            continue;
          }
          const g = {
            inner: t,
            type: t.type,
            dims: t.dims,
            location: 'gpu-buffer',
            get data(): unknown {
              throw new Error('on the GPU');
            },
            async getData() {
              if (disposed.has(g)) throw new Error('read after release');
              return (t.data as Float32Array).slice();
            },
            dispose() {
              if (disposed.has(g)) throw new Error('released twice');
              disposed.add(g);
              live.delete(g);
            },
          };
          live.add(g);
          made++;
          res[k] = g;
        }
        maxLive = Math.max(maxLive, live.size);
        return res;
      },
    };
    const gpu = createGpt2Runner({ modelId: 'tiny-gpt2 (gpu)', session, tensor, config: { ...w.config }, device: 'webgpu' });
    expect(gpu.mode).toBe('gpu');
    const all = ids(60, 3);
    const parts = [all.slice(0, 30), [all[30]!], [all[31]!], all.slice(32, 40)];
    for (let rep = 0; rep < 3; rep++) {
      const a = await feedAll(gpu, parts);
      const b = await feedAll(runner('rows'), parts);
      expectSameState(a.state, b.state, 'gpu vs rows');
      expect(live.size, 'nothing held after close').toBe(0);
      // From a stored state, with state() twice and a feed between.
      const run = gpu.open(b.state);
      await run.feed(all.slice(40, 45));
      const s1 = await run.state();
      await run.feed([all[45]!]);
      const s2 = await run.state();
      expect(await run.state()).toEqual(s2);
      run.close();
      const c = await feedAll(runner('rows'), [all.slice(40, 45), [all[45]!]], b.state);
      expectSameState(s2, c.state, 'gpu from a stored state');
      expect(s1.tensors[0]!.dims).toEqual([4, 45, 16]);
      expect(live.size).toBe(0);
    }
    // A run holds one step's buffers, plus the next step's while it runs.
    expect(maxLive).toBe(2 * 4);
    expect(disposed.size).toBe(made);
    expect(made).toBeGreaterThan(3 * 4 * 4);
  });
});

/**
 * A device lost mid-run: onnxruntime-web's WebGPU backend never returns from
 * a run started on a destroyed device (the worker's thread is held for good),
 * so after a failed run the runner starts no other one once the device's
 * `lost` promise settles; a failure on a device that stays up is the run's own.
 */
describe('gpu: no run starts on a lost device', () => {
  function failingSession(): { session: OrtSessionLike; calls: () => number; fail: (runs: number) => void } {
    const inner = sessions.rows!;
    let calls = 0;
    let failing = 0;
    const session: OrtSessionLike = {
      inputNames: inner.inputNames,
      outputNames: inner.outputNames,
      async run(feeds, fetches) {
        calls++;
        if (failing > 0 && failing--) throw new Error('Failed to download data from buffer (mapAsync aborted)');
        return (await inner.run(feeds as unknown as Record<string, ort.Tensor>, fetches as string[])) as unknown as Record<string, OrtTensorLike>;
      },
    };
    return { session, calls: () => calls, fail: (runs) => (failing = runs) };
  }

  it('a run queued behind the failed one fails with its error, without reaching the session, once the device is lost', async () => {
    const s = failingSession();
    let loseDevice = (): void => undefined;
    const lost = new Promise((r) => (loseDevice = () => r({ reason: 'destroyed', message: '' })));
    const r = createGpt2Runner({
      modelId: 'tiny-gpt2 (gpu)',
      session: s.session,
      tensor,
      config: { ...w.config },
      device: 'webgpu',
      gpuDevice: async () => ({ lost }) as unknown as GpuDeviceLike,
    });
    s.fail(1);
    const a = r.open().feed(ids(5, 1));
    const b = r.open().feed(ids(5, 2));
    await expect(a).rejects.toThrow(/mapAsync aborted/);
    loseDevice();
    await expect(b).rejects.toThrow(/mapAsync aborted/);
    await expect(r.open().feed(ids(3, 3))).rejects.toThrow(/mapAsync aborted/);
    expect(s.calls()).toBe(1);
  });

  it('a read-back that fails as the device goes (state()) also stops every later run', async () => {
    const inner = sessions.rows!;
    let calls = 0;
    const session: OrtSessionLike = {
      inputNames: inner.inputNames,
      outputNames: inner.outputNames,
      async run(feeds, fetches) {
        calls++;
        const out = await inner.run(feeds as unknown as Record<string, ort.Tensor>, fetches as string[]);
        const res: Record<string, OrtTensorLike> = {};
        for (const [k, t] of Object.entries(out))
          res[k] = k.startsWith('present.')
            ? {
                type: t.type,
                dims: t.dims,
                location: 'gpu-buffer',
                data: null,
                getData: async () => {
                  throw new Error('mapAsync aborted: the device was destroyed');
                },
                dispose: () => undefined,
              }
            : (t as unknown as OrtTensorLike);
        return res;
      },
    };
    const r = createGpt2Runner({
      modelId: 'tiny-gpt2 (gpu)',
      session,
      tensor,
      config: { ...w.config },
      device: 'webgpu',
      gpuDevice: async () => ({ lost: Promise.resolve({ reason: 'destroyed' }) }) as unknown as GpuDeviceLike,
    });
    const run = r.open();
    await run.feed(ids(5, 1));
    await expect(run.state()).rejects.toThrow(/device was destroyed/);
    await expect(r.open().feed(ids(3, 2))).rejects.toThrow(/device was destroyed/);
    expect(calls).toBe(1);
  });

  it('a failure on a device that stays up is the run’s own: the next run goes ahead', async () => {
    const s = failingSession();
    const r = createGpt2Runner({
      modelId: 'tiny-gpt2 (gpu)',
      session: s.session,
      tensor,
      config: { ...w.config },
      device: 'webgpu',
      gpuDevice: async () => ({ lost: new Promise(() => undefined) }) as unknown as GpuDeviceLike,
    });
    s.fail(1);
    const a = r.open().feed(ids(5, 1));
    const b = r.open().feed(ids(5, 2));
    await expect(a).rejects.toThrow(/mapAsync aborted/);
    const t0 = Date.now();
    expect((await b).length).toBe(V);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(LOST_WAIT_MS - 50);
    expect(s.calls()).toBe(2);
  });
});

describe('loadGpt2 (transformers.js, onnxruntime-node): the model runs through the runner', () => {
  it('generation token by token equals the reference greedy, and the run from its state continues it', async () => {
    await ensureModels(['tiny-gpt2']);
    // The served model has the new rows, so its runs take the rows path.
    const served = await ort.InferenceSession.create(`${MODELS_DIR}/tiny-gpt2/onnx/model.onnx`);
    expect(served.outputNames).toContain('new_value.1');
    await served.release();
    const model = await nodeModel('tiny-gpt2');
    const prompt = ids(25, 4);
    const run = model.open();
    const out: number[] = [];
    let logits = await run.feed(prompt);
    expect(maxAbsDiff(logits, referenceState(prompt).logits)).toBeLessThanOrEqual(TOL);
    const argmax = (a: Float32Array) => a.reduce((b, x, i) => (x > a[b]! ? i : b), 0);
    for (let i = 0; i < 8; i++) {
      out.push(argmax(logits));
      logits = await run.feed([out.at(-1)!]);
    }
    const state = await run.state();
    run.close();
    let want = [...prompt];
    for (let i = 0; i < 8; i++) want = [...want, argmax(gpt2Forward(w, want, { lastOnly: true }).logits)];
    expect([...prompt, ...out]).toEqual(want);
    expect(state.tokens).toEqual(want);
    const ref = referenceState(want);
    state.tensors.forEach((t, i) => expect(maxAbsDiff(t.data, ref.kv[i]!)).toBeLessThanOrEqual(TOL));
    const again = model.open(state);
    expect(maxAbsDiff(await again.feed([262]), referenceState([...want, 262]).logits)).toBeLessThanOrEqual(TOL);
    again.close();
  });
});
