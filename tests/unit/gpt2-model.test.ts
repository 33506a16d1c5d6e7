import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { AutoModelForCausalLM, AutoTokenizer, DynamicCache, env, Tensor, type PreTrainedModel, type PreTrainedTokenizer } from '@huggingface/transformers';
import { ensureModels, PUBLIC_MODELS } from '../../scripts/make-models.ts';
import { seededGpt2Recipe } from '../../src/models/registry.ts';
import { seededGpt2Weights } from '../../src/models/gpt2-weights.ts';
import { gpt2Forward, argmaxRow, type GPT2Weights, type GPT2LayerKV } from '../../src/models/gpt2-reference.ts';

const DIR = join(PUBLIC_MODELS, 'tiny-gpt2');
const TOL = 1e-4;
let w: GPT2Weights;
let session: ort.InferenceSession;
let tok: PreTrainedTokenizer;
const V = 50257;

const i64 = (xs: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), dims);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates as a failure
  }
  return m;
}

/** Runs the ONNX graph directly; batch 1 unless `batch` rows are given. */
async function runOrt(rows: number[][], opts: { past?: ort.Tensor[][]; mask?: number[][]; positions?: number[][]; keep?: number } = {}) {
  const c = w.config;
  const B = rows.length;
  const S = rows[0]!.length;
  const P = opts.past ? opts.past[0]![0]!.dims[2]! : 0;
  const D = c.n_embd / c.n_head;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(rows.flat(), [B, S]),
    attention_mask: i64(opts.mask ? opts.mask.flat() : new Array(B * (P + S)).fill(1), [B, P + S]),
    position_ids: i64(opts.positions ? opts.positions.flat() : rows.flatMap(() => Array.from({ length: S }, (_, i) => P + i)), [B, S]),
    num_logits_to_keep: i64([opts.keep ?? 0], []),
  };
  for (let l = 0; l < c.n_layer; l++) {
    feeds[`past_key_values.${l}.key`] = opts.past?.[l]?.[0] ?? new ort.Tensor('float32', new Float32Array(0), [B, c.n_head, 0, D]);
    feeds[`past_key_values.${l}.value`] = opts.past?.[l]?.[1] ?? new ort.Tensor('float32', new Float32Array(0), [B, c.n_head, 0, D]);
  }
  const out = await session.run(feeds);
  const present: ort.Tensor[][] = [];
  for (let l = 0; l < c.n_layer; l++) present.push([out[`present.${l}.key`]!, out[`present.${l}.value`]!]);
  return { logits: out.logits!, present };
}

beforeAll(async () => {
  await ensureModels(['tiny-gpt2']);
  const p = seededGpt2Recipe('tiny-gpt2');
  const sc = JSON.parse(readFileSync(join(DIR, 'statecart.json'), 'utf8'));
  expect(sc.weight_source).toMatchObject({ kind: 'seeded', seed: p.seed, scale: p.scale });
  w = seededGpt2Weights(p.config, { seed: p.seed, scale: p.scale });
  session = await ort.InferenceSession.create(join(DIR, 'onnx', 'model.onnx'));
  env.allowLocalModels = true;
  env.allowRemoteModels = false;
  env.localModelPath = PUBLIC_MODELS + '/';
  tok = await AutoTokenizer.from_pretrained('tiny-gpt2');
});

afterAll(async () => {
  await session?.release();
});

const TEXT =
  'The quick brown fox jumps over the lazy dog, and then the fox sat down to think about what it had done. Later that day, the dog woke up and wondered where the fox had gone.';

describe('tiny-gpt2 ONNX graph vs the TypeScript reference', () => {
  it('has the expected inputs and outputs', () => {
    expect(session.inputNames).toEqual([
      'input_ids',
      'attention_mask',
      'position_ids',
      'past_key_values.0.key',
      'past_key_values.0.value',
      'past_key_values.1.key',
      'past_key_values.1.value',
      'num_logits_to_keep',
    ]);
    // new_key / new_value: only each call's rows, for runs that keep the cache themselves (gpt2-run.ts).
    expect(session.outputNames).toEqual([
      'logits',
      'present.0.key',
      'present.0.value',
      'present.1.key',
      'present.1.value',
      'new_key.0',
      'new_value.0',
      'new_key.1',
      'new_value.1',
    ]);
  });

  it('logits match without past', async () => {
    const ids = tok.encode(TEXT).slice(0, 20);
    expect(ids).toHaveLength(20);
    const { logits, present } = await runOrt([ids]);
    expect(logits.dims).toEqual([1, 20, V]);
    expect(present[0]![0]!.dims).toEqual([1, 4, 20, 16]);
    const ref = gpt2Forward(w, ids);
    expect(maxAbsDiff(logits.data as Float32Array, ref.logits)).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(present[1]![1]!.data as Float32Array, ref.present[1]!.value)).toBeLessThanOrEqual(TOL);
    // Logits are finite and not flat.
    const row = ref.logits.subarray(0, V);
    const max = Math.max(...row);
    const min = Math.min(...row);
    expect(Number.isFinite(max) && Number.isFinite(min) && max - min > 5).toBe(true);
  });

  it('num_logits_to_keep k gives exactly the last k rows of the logits (with and without past)', async () => {
    const ids = tok.encode(TEXT).slice(0, 20);
    const all = await runOrt([ids]);
    for (const k of [1, 3, 20, 50]) {
      const some = await runOrt([ids], { keep: k });
      const rows = Math.min(k, 20);
      expect(some.logits.dims).toEqual([1, rows, V]);
      const want = (all.logits.data as Float32Array).subarray((20 - rows) * V);
      expect(maxAbsDiff(some.logits.data as Float32Array, want)).toBeLessThanOrEqual(1e-6);
    }
    const first = await runOrt([ids.slice(0, 12)]);
    const last = await runOrt([ids.slice(12)], { past: first.present, keep: 1 });
    expect(last.logits.dims).toEqual([1, 1, V]);
    const ref = gpt2Forward(w, ids, { lastOnly: true });
    expect(maxAbsDiff(last.logits.data as Float32Array, ref.logits)).toBeLessThanOrEqual(TOL);
  });

  it('a continuation with past_key_values matches the reference on all 27 tokens at once', async () => {
    const ids = tok.encode(TEXT).slice(0, 27);
    expect(ids).toHaveLength(27);
    const first = await runOrt([ids.slice(0, 20)]);
    const second = await runOrt([ids.slice(20)], { past: first.present });
    expect(second.logits.dims).toEqual([1, 7, V]);
    expect(second.present[0]![0]!.dims).toEqual([1, 4, 27, 16]);
    const ref = gpt2Forward(w, ids);
    expect(maxAbsDiff(second.logits.data as Float32Array, ref.logits.subarray(20 * V))).toBeLessThanOrEqual(TOL);
    for (let l = 0; l < 2; l++) {
      expect(maxAbsDiff(second.present[l]![0]!.data as Float32Array, ref.present[l]!.key)).toBeLessThanOrEqual(TOL);
      expect(maxAbsDiff(second.present[l]![1]!.data as Float32Array, ref.present[l]!.value)).toBeLessThanOrEqual(TOL);
    }
    // The reference's own past path agrees with itself.
    const r1 = gpt2Forward(w, ids.slice(0, 20));
    const r2 = gpt2Forward(w, ids.slice(20), { past: r1.present });
    expect(maxAbsDiff(r2.logits, ref.logits.subarray(20 * V))).toBeLessThanOrEqual(1e-9);
    // And a wrong cache (another prefix) shows.
    const other = gpt2Forward(w, tok.encode('Completely different words at the start of this prompt here'.repeat(2)).slice(0, 20));
    const wrong: GPT2LayerKV[] = other.present;
    const r3 = gpt2Forward(w, ids.slice(20), { past: wrong });
    expect(argmaxRow(r3.logits, V, 6) === argmaxRow(r2.logits, V, 6) && maxAbsDiff(r3.logits, r2.logits) < 1e-3).toBe(false);
  });

  it('honours attention_mask zeros (left padding, batch of 2)', async () => {
    const a = tok.encode(TEXT).slice(0, 10);
    const b = [50256, 50256, 50256, ...tok.encode(' jumps over the lazy dog and then some more').slice(0, 7)];
    expect(b).toHaveLength(10);
    const maskB = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1];
    const posB = [0, 0, 0, 0, 1, 2, 3, 4, 5, 6];
    const out = await runOrt([a, b], { mask: [new Array(10).fill(1), maskB], positions: [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], posB] });
    const lo = out.logits.data as Float32Array;
    const refA = gpt2Forward(w, a);
    const refB = gpt2Forward(w, b, { attentionMask: maskB, positions: posB });
    expect(maxAbsDiff(lo.subarray(0, 10 * V), refA.logits)).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(lo.subarray(10 * V), refB.logits)).toBeLessThanOrEqual(TOL);
    // The unpadded tokens see exactly what they would see alone.
    const alone = gpt2Forward(w, b.slice(3));
    expect(maxAbsDiff(refB.logits.subarray(3 * V), alone.logits)).toBeLessThanOrEqual(1e-6);
  });
});

describe('tiny-gpt2 in transformers.js (Node, cpu)', () => {
  let model: PreTrainedModel;
  const prompt = 'Hello world, my name is';
  const cacheFrom = (out: Record<string, Tensor>) => {
    const entries: Record<string, Tensor> = {};
    for (const k of Object.keys(out)) if (k.startsWith('present.')) entries[k.replace('present.', 'past_key_values.')] = out[k]!;
    return new DynamicCache(entries);
  };

  beforeAll(async () => {
    model = await AutoModelForCausalLM.from_pretrained('tiny-gpt2', { dtype: 'fp32', device: 'cpu' });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it('generates varied greedy text that equals the reference greedy', async () => {
    const inputs = tok(prompt);
    const ids = Array.from(inputs.input_ids.data as BigInt64Array, Number);
    const out = (await model.generate({ ...inputs, max_new_tokens: 20, do_sample: false })) as Tensor;
    const gen = (out.tolist() as bigint[][])[0]!.map(Number).slice(ids.length);
    expect(gen).toHaveLength(20);
    expect(new Set(gen).size).toBeGreaterThanOrEqual(8);
    // Reference greedy, step by step with its own cache.
    const want: number[] = [];
    let r = gpt2Forward(w, ids, { lastOnly: true });
    for (let i = 0; i < 20; i++) {
      const t = argmaxRow(r.logits, V);
      want.push(t);
      r = gpt2Forward(w, [t], { past: r.present, lastOnly: true });
    }
    expect(gen).toEqual(want);
  });

  it('one forward with past_key_values gives the reference logits and presents', async () => {
    const all = tok.encode(TEXT).slice(0, 27);
    const t = (xs: number[]) => new Tensor('int64', BigInt64Array.from(xs.map(BigInt)), [1, xs.length]);
    const ones = (n: number) => new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
    const o1 = await model({ input_ids: t(all.slice(0, 20)), attention_mask: ones(20) });
    expect(o1.logits.dims).toEqual([1, 20, V]);
    expect(o1['present.0.key'].dims).toEqual([1, 4, 20, 16]);
    const cache = cacheFrom(o1);
    expect(cache.get_seq_length()).toBe(20);
    // attention_mask covers past + new; position_ids are derived from it.
    const o2 = await model({ input_ids: t(all.slice(20)), attention_mask: ones(27), past_key_values: cache });
    expect(o2.logits.dims).toEqual([1, 7, V]);
    expect(o2['present.1.value'].dims).toEqual([1, 4, 27, 16]);
    const ref = gpt2Forward(w, all);
    expect(maxAbsDiff(o2.logits.data as Float32Array, ref.logits.subarray(20 * V))).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(o2['present.1.value'].data as Float32Array, ref.present[1]!.value)).toBeLessThanOrEqual(TOL);
  });

  it('greedy continuation from a past_key_values equals greedy from scratch', async () => {
    const inputs = tok(prompt);
    const P = inputs.input_ids.dims[1]!;
    const scratch = ((await model.generate({ ...inputs, max_new_tokens: 16, do_sample: false })) as Tensor).tolist() as bigint[][];

    // (a) The prompt's cache from a plain forward, then generate on top of it.
    const fw = await model({ ...inputs });
    const cache = cacheFrom(fw);
    const firstTok = BigInt(argmaxRow(fw.logits.data as Float32Array, V, P - 1));
    const ids1 = [...(inputs.input_ids.tolist() as bigint[][])[0]!, firstTok];
    const cont = (await model.generate({
      input_ids: new Tensor('int64', BigInt64Array.from(ids1), [1, ids1.length]),
      attention_mask: new Tensor('int64', new BigInt64Array(ids1.length).fill(1n), [1, ids1.length]),
      past_key_values: cache,
      max_new_tokens: 15,
      do_sample: false,
    })) as Tensor;
    expect(cont.tolist()).toEqual(scratch);
    // generate mutated the cache in place (it now holds everything but the last token).
    expect(cache.get_seq_length()).toBe(P + 15);

    // (b) The cache returned by generate, cloned before reuse.
    const half = (await model.generate({ ...inputs, max_new_tokens: 8, do_sample: false, return_dict_in_generate: true })) as unknown as {
      sequences: Tensor;
      past_key_values: DynamicCache;
    };
    expect(half.past_key_values.get_seq_length()).toBe(P + 7);
    const clone = new DynamicCache({ ...half.past_key_values });
    const seq = half.sequences;
    const rest = (await model.generate({
      input_ids: seq,
      attention_mask: new Tensor('int64', new BigInt64Array(seq.dims[1]!).fill(1n), [1, seq.dims[1]!]),
      past_key_values: clone,
      max_new_tokens: 8,
      do_sample: false,
    })) as Tensor;
    expect(rest.tolist()).toEqual(scratch);
    expect(half.past_key_values.get_seq_length()).toBe(P + 7);
    expect(clone.get_seq_length()).toBe(P + 15);
  });
});
