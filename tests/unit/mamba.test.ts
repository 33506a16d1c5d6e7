import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as ort from 'onnxruntime-node';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildMambaModel, convertMambaCheckpoint, mambaWeightsToSafetensorsInput, type StatecartJson } from '../../src/models/mamba-build.ts';
import { writeMambaModel } from '../../scripts/make-models.ts';
import { writeSafetensors } from '../../src/formats/safetensors.ts';
import { mambaReferenceForward, zeroMambaState, type MambaRefState, type MambaWeights } from '../../src/models/mamba-reference.ts';
import { createMambaModel, type MambaModel, type OrtLike } from '../../src/models/mamba.ts';
import type { ModelState } from '../../src/models/types.ts';

const TOL = 1e-4;
// Deterministic pseudo-text: ids spread over the whole vocabulary.
const prompt = (n: number, salt = 0): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % 50257);

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
const maxAbs = (a: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};
const argmax = (a: Float32Array): number => {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[b]!) b = i;
  return b;
};

/** Largest state difference, relative to the largest state value of each tensor. */
function stateDiff(a: ModelState, b: ModelState): number {
  let m = 0;
  a.tensors.forEach((t, i) => {
    const u = b.tensors[i]!;
    expect(u.name).toBe(t.name);
    m = Math.max(m, maxDiff(t.data, u.data) / Math.max(1, maxAbs(u.data)));
  });
  return m;
}

function refToModelState(r: MambaRefState, tokens: number[]): ModelState {
  const tensors = r.conv.flatMap((c, l) => [
    { name: `layers.${l}.conv`, dims: [], data: c },
    { name: `layers.${l}.ssm`, dims: [], data: r.ssm[l]! },
  ]);
  return { tokens, tensors };
}

let dir: string;
let meta: StatecartJson;
let weights: MambaWeights;
let model: MambaModel;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'statecart-mamba-'));
  meta = await writeMambaModel(dir, { preset: 'tiny-mamba', seed: 1 });
  weights = (await buildMambaModel({ preset: 'tiny-mamba', seed: 1 })).weights;
  model = await createMambaModel({
    ort: ort as unknown as OrtLike,
    baseUrl: dir,
    modelId: 'tiny-mamba',
    device: 'cpu',
    fetchBytes: async (p) => new Uint8Array(await readFile(p)),
    tokenizer: { encode: (s) => Array.from(s, (c) => c.charCodeAt(0)), decode: (ids) => String.fromCharCode(...ids) },
    sessionOptions: { intraOpNumThreads: 1 },
  });
});

afterAll(async () => {
  await model?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('tiny-mamba files', () => {
  it('are byte-identical for the same inputs and record what made them', async () => {
    const again = await buildMambaModel({ preset: 'tiny-mamba', seed: 1 });
    for (const k of ['prefill', 'tail', 'step'] as const) {
      expect(Buffer.compare(again.files.get(`onnx/${k}.onnx`)!, await readFile(join(dir, 'onnx', `${k}.onnx`)))).toBe(0);
    }
    expect(Buffer.compare(again.files.get('onnx/weights.bin')!, await readFile(join(dir, 'onnx', 'weights.bin')))).toBe(0);
    expect(meta).toMatchObject({
      id: 'tiny-mamba',
      arch: 'mamba',
      dtype: 'fp32',
      config: { n_layer: 2, d_model: 64, d_inner: 128, d_state: 16, d_conv: 4, dt_rank: 4, vocab_size: 50257 },
    });
    expect(meta.weights_sha256).toMatch(/^[0-9a-f]{64}$/);
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ model_type: 'mamba', hidden_size: 64, state_size: 16, num_hidden_layers: 2, conv_kernel: 4, expand: 2 });
    const other = await buildMambaModel({ preset: 'tiny-mamba', seed: 2 });
    expect(other.statecart.weights_sha256).not.toBe(meta.weights_sha256);
  });

  it('load the same weights back from a Hub-layout model.safetensors', async () => {
    const st = join(dir, 'model.safetensors');
    await writeFile(st, writeSafetensors(mambaWeightsToSafetensorsInput(weights)));
    const m = await buildMambaModel({ preset: 'tiny-mamba', safetensors: await readFile(st) });
    expect(m.statecart.weights_sha256).toBe(meta.weights_sha256);
    expect(m.statecart.id).toBe('state-spaces/mamba-130m-hf');
    expect(m.statecart.weight_source).toMatchObject({ kind: 'safetensors', file: 'model.safetensors' });
  });
});

describe('a Hub checkpoint converted in memory (what the worker does for state-spaces/mamba-130m-hf)', () => {
  it('gives the files, fingerprint and logits of the offline build of the same weights', async () => {
    const st = writeSafetensors(mambaWeightsToSafetensorsInput(weights));
    const conv = await convertMambaCheckpoint(st, { id: 'tiny-mamba' });
    expect(conv.statecart.weights_sha256).toBe(meta.weights_sha256);
    expect(conv.statecart.config).toEqual(meta.config);
    for (const k of ['prefill', 'tail', 'step'] as const) {
      expect(Buffer.compare(conv.files.get(`onnx/${k}.onnx`)!, await readFile(join(dir, 'onnx', `${k}.onnx`))), k).toBe(0);
    }
    expect(Buffer.compare(conv.files.get('onnx/weights.bin')!, await readFile(join(dir, 'onnx', 'weights.bin')))).toBe(0);
    const tokenizerJson = await readFile(join(dir, 'tokenizer.json'));
    const hub = await createMambaModel({
      ort: ort as unknown as OrtLike,
      baseUrl: 'hub:',
      device: 'cpu',
      fetchBytes: async (url) => {
        const p = url.slice('hub:/'.length);
        const f = p === 'tokenizer.json' ? new Uint8Array(tokenizerJson) : conv.files.get(p);
        if (!f) throw new Error(`no ${p}`);
        return f;
      },
      tokenizer: { encode: () => [], decode: () => '' },
      sessionOptions: { intraOpNumThreads: 1 },
    });
    try {
      expect(hub.fingerprint).toBe(model.fingerprint);
      const toks = prompt(21, 13);
      const want = mambaReferenceForward(weights, toks, zeroMambaState(weights.dims));
      expect(maxDiff((await hub.prefill(toks)).logits, want)).toBeLessThanOrEqual(TOL);
    } finally {
      await hub.dispose();
    }
    // A checkpoint that is not Mamba's layout is refused with a reason.
    await expect(
      convertMambaCheckpoint(writeSafetensors([{ name: 'h.0.attn.c_attn.weight', dtype: 'F32', shape: [2], data: new Float32Array(2) }]), { id: 'x' }),
    ).rejects.toThrow(/embeddings/);
  });
});

describe('tiny-mamba graphs (onnxruntime-node) against the TypeScript reference', () => {
  it('prefill, tail and step match the reference in logits and state', async () => {
    const toks = prompt(43);
    const ref = zeroMambaState(weights.dims);
    const refLogits = mambaReferenceForward(weights, toks, ref);
    // 43 = 40 (prefill) + 3 (tail); then one step.
    const { state, logits } = await model.prefill(toks);
    expect(maxDiff(logits, refLogits)).toBeLessThanOrEqual(TOL);
    expect(maxAbs(refLogits)).toBeGreaterThan(0.5);
    expect(stateDiff(state, refToModelState(ref, toks))).toBeLessThanOrEqual(TOL);
    const s2 = await model.prefill([toks[5]!], state);
    const refStep = mambaReferenceForward(weights, [toks[5]!], ref);
    expect(maxDiff(s2.logits, refStep)).toBeLessThanOrEqual(TOL);
    expect(s2.state.tokens).toEqual([...toks, toks[5]]);
  });

  it('feeding the prompt in pieces of 1, 7 or 64 tokens gives the same final state', async () => {
    const toks = prompt(100, 1);
    const ref = zeroMambaState(weights.dims);
    const refLogits = mambaReferenceForward(weights, toks, ref);
    const refState = refToModelState(ref, toks);
    for (const piece of [1, 7, 64]) {
      let st: ModelState | undefined;
      let logits: Float32Array = new Float32Array();
      for (let i = 0; i < toks.length; i += piece) ({ state: st, logits } = await model.prefill(toks.slice(i, i + piece), st));
      expect(st!.tokens).toEqual(toks);
      expect(stateDiff(st!, refState), `pieces of ${piece}`).toBeLessThanOrEqual(TOL);
      expect(maxDiff(logits, refLogits), `pieces of ${piece}`).toBeLessThanOrEqual(TOL);
    }
  });

  it('prefill then steps equals steps from the start', async () => {
    const toks = prompt(24, 2);
    const a = await model.prefill(toks.slice(0, 20));
    let la = a.logits;
    let sa = a.state;
    for (const t of toks.slice(20)) ({ state: sa, logits: la } = await model.prefill([t], sa));
    let sb: ModelState | undefined;
    let lb: Float32Array = new Float32Array();
    for (const t of toks) ({ state: sb, logits: lb } = await model.prefill([t], sb));
    expect(maxDiff(la, lb)).toBeLessThanOrEqual(TOL);
    expect(stateDiff(sa, sb!)).toBeLessThanOrEqual(TOL);
  });

  it('greedy continuations vary and match the reference', async () => {
    let { state, logits } = await model.prefill(prompt(9, 3));
    const ref = zeroMambaState(weights.dims);
    let refLogits = mambaReferenceForward(weights, prompt(9, 3), ref);
    const out: number[] = [];
    const refOut: number[] = [];
    for (let i = 0; i < 16; i++) {
      out.push(argmax(logits));
      refOut.push(argmax(refLogits));
      ({ state, logits } = await model.prefill([out[i]!], state));
      refLogits = mambaReferenceForward(weights, [refOut[i]!], ref);
    }
    expect(out).toEqual(refOut);
    expect(new Set(out).size).toBeGreaterThan(8);
  });
});

describe('MambaModel (the runner)', () => {
  it('prefill in one call equals two calls equals the reference', async () => {
    const toks = prompt(77, 4);
    const one = await model.prefill(toks);
    const first = await model.prefill(toks.slice(0, 30));
    const two = await model.prefill(toks.slice(30), first.state);
    const ref = zeroMambaState(weights.dims);
    const refLogits = mambaReferenceForward(weights, toks, ref);
    expect(maxDiff(one.logits, refLogits)).toBeLessThanOrEqual(TOL);
    expect(maxDiff(two.logits, refLogits)).toBeLessThanOrEqual(TOL);
    expect(stateDiff(two.state, one.state)).toBeLessThanOrEqual(TOL);
    expect(two.state.tokens).toEqual(toks);
    // The input state is left as it was.
    const again = await model.prefill(toks.slice(30), first.state);
    expect(maxDiff(again.logits, two.logits)).toBe(0);
  });

  it('reports identity, state layout, progress and honours abort', async () => {
    expect(model.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(model.identity).toMatchObject({ arch: 'mamba', dtype: 'fp32', weights_sha256: meta.weights_sha256 });
    expect(model.identity.tokenizer_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(model.device).toBe('cpu');
    expect(model.maxTokens).toBe(Infinity);
    expect(model.vocabSize).toBe(50257);
    expect(model.stateSpecs.slice(0, 2)).toEqual([
      { name: 'layers.0.conv', dims: [128, 3] },
      { name: 'layers.0.ssm', dims: [128, 16] },
    ]);
    const seen: number[] = [];
    const { state } = await model.prefill(prompt(150, 5), undefined, { onProgress: (p) => seen.push(p.done) });
    expect(seen).toEqual([0, 64, 128, 144, 150]); // 2 chunks of 64, 16 (multiple of 8), a tail of 6
    expect(state.tensors.map((t) => t.data.byteLength).reduce((a, b) => a + b)).toBe(2 * 128 * (3 + 16) * 4);

    const ac = new AbortController();
    const run = model.prefill(prompt(200, 6), undefined, { signal: ac.signal, onProgress: (p) => p.done >= 64 && ac.abort() });
    await expect(run).rejects.toMatchObject({ name: 'Aborted' });
    await expect(model.prefill([])).rejects.toMatchObject({ name: 'InvalidInput' });
    await expect(model.prefill([50257])).rejects.toMatchObject({ name: 'InvalidInput' });
    const wrong: ModelState = { ...state, tensors: state.tensors.slice(1) };
    await expect(model.prefill([1], wrong)).rejects.toMatchObject({ name: 'ModelMismatch' });
  });

  it('refuses weights that do not match statecart.json', async () => {
    const fetchBytes = async (p: string): Promise<Uint8Array> => {
      const b = new Uint8Array(await readFile(p));
      if (p.endsWith('weights.bin')) b[100] ^= 1;
      return b;
    };
    await expect(
      createMambaModel({ ort: ort as unknown as OrtLike, baseUrl: dir, device: 'cpu', fetchBytes, tokenizer: { encode: () => [], decode: () => '' } }),
    ).rejects.toMatchObject({ name: 'CorruptBlob' });
  });
});
