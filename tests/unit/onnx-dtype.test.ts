import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';
import { AutoModelForCausalLM, AutoTokenizer, env, type PreTrainedTokenizer, type Tensor } from '@huggingface/transformers';
import { float16ToFloat32, HALF_MAX } from '../../src/formats/fp16.ts';
import { buildGpt2Onnx } from '../../src/models/gpt2-onnx.ts';
import { seededGpt2Weights } from '../../src/models/gpt2-weights.ts';
import { convertModelToFp16, quantizeModelDynamic, quantizeWeight, tensorFloats } from '../../src/models/onnx-dtype.ts';
import type p from 'onnx-proto';
import { DT, onnx } from '../../src/models/onnx-util.ts';
import { seededGpt2Recipe } from '../../src/models/registry.ts';
import { GPT2_REPO, makeHubRepos } from '../../scripts/make-hub-repos.ts';
import { startMirror, type Mirror } from '../../scripts/mirror.ts';

/*
 * Tolerances come from measurements on tiny-gpt2 (seeded, scale 15, max |logit| ≈ 10), onnxruntime-node 1.30 CPU.
 * Seen: fp16 vs fp32 logits max 0.014 (last position), 0.042 (after a past), rms 0.004; q8 max 0.68 (last
 * position), 1.13 (after a past), up to 1.46 on other token ids, rms 0.12–0.16 (dynamic per-tensor int8 on
 * random weights this large). The bounds leave about twice that.
 */
const FP16_TOL = 0.1;
const Q8_TOL = 3;
const Q8_RMS_TOL = 0.35;
const V = 50257;
const L = 2;
const H = 4;
const D = 16;

let fp32: Uint8Array;
let fp16: Uint8Array;
let q8: Uint8Array;
const sessions: Record<'fp32' | 'fp16' | 'q8', ort.InferenceSession> = {} as never;
const prompt = (n: number, salt = 0): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % V);
const i64 = (xs: number[], d: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), d);
const floats = (t: ort.Tensor): Float32Array => (t.type === 'float16' ? float16ToFloat32(t.data as Uint16Array) : (t.data as Float32Array));

function stats(a: Float32Array, b: Float32Array): { max: number; rms: number } {
  expect(a.length).toBe(b.length);
  let max = 0;
  let sq = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= max)) max = d; // NaN fails below
    sq += d * d;
  }
  return { max, rms: Math.sqrt(sq / a.length) };
}
const argmax = (a: Float32Array, row = 0): number => {
  let b = 0;
  for (let i = 1; i < V; i++) if (a[row * V + i]! > a[row * V + b]!) b = i;
  return b;
};

type Kind = keyof typeof sessions;
async function run(kind: Kind, ids: number[], past?: ort.Tensor[], keep = 0) {
  const kv = kind === 'fp16' ? 'float16' : 'float32';
  const P = past ? past[0]!.dims[2]! : 0;
  const S = ids.length;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(ids, [1, S]),
    attention_mask: i64(new Array(P + S).fill(1), [1, P + S]),
    position_ids: i64(
      ids.map((_, i) => P + i),
      [1, S],
    ),
    num_logits_to_keep: i64([keep], []),
  };
  for (let l = 0; l < L; l++)
    for (const [j, k] of ['key', 'value'].entries()) {
      feeds[`past_key_values.${l}.${k}`] = past?.[2 * l + j] ?? new ort.Tensor(kv, kv === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, H, 0, D]);
    }
  const out = await sessions[kind].run(feeds);
  const present: ort.Tensor[] = [];
  for (let l = 0; l < L; l++) present.push(out[`present.${l}.key`]!, out[`present.${l}.value`]!);
  return { logits: out.logits!, present };
}

async function greedy(kind: Kind, ids: number[], n: number): Promise<number[]> {
  let r = await run(kind, ids, undefined, 1);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = argmax(floats(r.logits));
    out.push(t);
    r = await run(kind, [t], r.present, 1);
  }
  return out;
}

const decodeModel = (b: Uint8Array) => onnx.ModelProto.decode(b);
const ioOf = (b: Uint8Array) => {
  const g = decodeModel(b).graph!;
  const io = (vs: p.onnx.IValueInfoProto[]) =>
    vs.map((v) => ({ name: v.name, type: v.type!.tensorType!.elemType, dims: v.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue)) }));
  return { inputs: io(g.input!), outputs: io(g.output!) };
};

beforeAll(async () => {
  const r = seededGpt2Recipe('tiny-gpt2');
  fp32 = buildGpt2Onnx(seededGpt2Weights(r.config, { seed: r.seed, scale: r.scale }));
  fp16 = convertModelToFp16(fp32);
  q8 = quantizeModelDynamic(fp32);
  sessions.fp32 = await ort.InferenceSession.create(fp32);
  sessions.fp16 = await ort.InferenceSession.create(fp16);
  sessions.q8 = await ort.InferenceSession.create(q8);
});

afterAll(async () => {
  for (const s of Object.values(sessions)) await s?.release();
});

describe('fp16 and q8 graphs from our exporter (src/models/onnx-dtype.ts)', () => {
  it('keep every input and output name, the symbolic axes, and num_logits_to_keep; fp16 I/O is float16, q8 I/O stays float32', () => {
    const a = ioOf(fp32);
    const h = ioOf(fp16);
    const q = ioOf(q8);
    expect(h.inputs.map((x) => x.name)).toEqual(a.inputs.map((x) => x.name));
    expect(h.outputs.map((x) => x.name)).toEqual(a.outputs.map((x) => x.name));
    expect(q).toEqual(a);
    expect(a.inputs.find((x) => x.name === 'num_logits_to_keep')).toEqual({ name: 'num_logits_to_keep', type: DT.INT64, dims: [] });
    for (const [x, y] of h.inputs.map((x, i) => [x, a.inputs[i]!] as const)) {
      expect(x.dims).toEqual(y.dims);
      expect(x.type).toBe(y.type === DT.FLOAT ? DT.FLOAT16 : y.type);
    }
    expect(h.inputs.find((x) => x.name === 'past_key_values.1.value')).toEqual({
      name: 'past_key_values.1.value',
      type: DT.FLOAT16,
      dims: ['batch_size', H, 'past_sequence_length', D],
    });
    expect(h.outputs.every((x) => x.type === DT.FLOAT16)).toBe(true);
  });

  it('fp16: every weight float16, the -FLT_MAX mask score clamped to -65504 (no Infinity)', () => {
    const g = decodeModel(fp16).graph!;
    expect(g.initializer!.filter((t) => t.dataType === DT.FLOAT)).toEqual([]);
    let min = 0;
    let nonFinite = 0;
    for (const t of g.initializer!.filter((t) => t.dataType === DT.FLOAT16)) {
      const f = float16ToFloat32(new Uint16Array(Uint8Array.from(t.rawData!).buffer));
      for (let i = 0; i < f.length; i++) {
        if (!Number.isFinite(f[i]!)) nonFinite++;
        else if (f[i]! < min) min = f[i]!;
      }
    }
    expect(nonFinite).toBe(0);
    expect(min).toBe(-HALF_MAX);
  });

  it('q8: each constant-weight MatMul (and the tied LM head) becomes DynamicQuantizeLinear + MatMulInteger + Cast + Mul; attention stays float', () => {
    const g = decodeModel(q8).graph!;
    const ops = (op: string) => g.node!.filter((n) => n.opType === op).length;
    expect(ops('MatMulInteger')).toBe(4 * L + 1);
    expect(ops('DynamicQuantizeLinear')).toBe(4 * L + 1);
    expect(ops('MatMul')).toBe(2 * L); // Q·Kᵀ and P·V
    expect(ops('Transpose')).toBe(decodeModel(fp32).graph!.node!.filter((n) => n.opType === 'Transpose').length - 1);
    const ints = g.initializer!.filter((t) => t.dataType === DT.INT8 && t.dims!.length === 2);
    expect(ints.map((t) => t.name).sort()).toContain('wte.weight_transposed_quantized');
    expect(ints).toHaveLength(4 * L + 1);
    // The embedding stays float32 for the Gather; no float copy of a quantized weight is left.
    const names = new Set(g.initializer!.map((t) => t.name));
    expect(names.has('wte.weight')).toBe(true);
    expect(names.has('h.0.attn.c_attn.weight')).toBe(false);
    // Deterministic, and not the fp32 bytes.
    expect(Buffer.compare(quantizeModelDynamic(fp32), q8)).toBe(0);
    expect(Buffer.compare(convertModelToFp16(fp32), fp16)).toBe(0);
    expect(Buffer.compare(q8, fp32)).not.toBe(0);
    expect(Buffer.compare(fp16, fp32)).not.toBe(0);
    const f32 = g.initializer!.find((t) => t.name === 'wte.weight')!;
    expect(tensorFloats(f32).length).toBe(V * 64);
    console.log(
      `[onnx-dtype] tiny-gpt2 sizes: fp32 ${fp32.length} B, fp16 ${fp16.length} B (${(fp16.length / fp32.length).toFixed(3)}), q8 ${q8.length} B (${(q8.length / fp32.length).toFixed(3)})`,
    );
    expect(fp16.length / fp32.length).toBeGreaterThan(0.49);
    expect(fp16.length / fp32.length).toBeLessThan(0.51);
  });

  it('weights are quantized as onnxruntime does it: int8 symmetric (zero point 0, ±127), uint8 over a range that holds 0, ties to even', () => {
    const w = new Float32Array([-1.27, 0, 0.005, 0.015, 0.635, 1]);
    const a = quantizeWeight(w, 'int8');
    expect(a.zeroPoint).toBe(0);
    expect(a.scale).toBeCloseTo(1.27 / 127, 9);
    expect(Array.from(a.q)).toEqual([-127, 0, 0, 2, 64, 100]); // 0.5 → 0, 1.5 → 2, 63.5 → 64
    const b = quantizeWeight(new Float32Array([0.5, 2]), 'uint8');
    expect(b.zeroPoint).toBe(0); // the range is widened to [0, 2]
    expect(Array.from(b.q)).toEqual([64, 255]);
    const c = quantizeWeight(new Float32Array([-1, 3]), 'uint8');
    expect(c.q[0]).toBe(0);
    expect(c.q[1]).toBe(255);
    expect(Math.abs(c.zeroPoint * c.scale - 1)).toBeLessThan(c.scale); // 0 maps near the zero point
  });

  it('run in onnxruntime-node with logits close to fp32, with and without past; greedy tokens mostly agree', async () => {
    const ids = prompt(24);
    const more = prompt(8, 1);
    const ref = await run('fp32', ids);
    const refNext = await run('fp32', more, ref.present);
    const seen: string[] = [];
    for (const [kind, tol, rmsTol] of [
      ['fp16', FP16_TOL, FP16_TOL / 4],
      ['q8', Q8_TOL, Q8_RMS_TOL],
    ] as const) {
      const r = await run(kind, ids);
      expect(r.logits.type).toBe(kind === 'fp16' ? 'float16' : 'float32');
      expect(r.present[0]!.type).toBe(kind === 'fp16' ? 'float16' : 'float32');
      expect(r.logits.dims).toEqual([1, 24, V]);
      const all = stats(floats(r.logits), floats(ref.logits));
      const last = stats(floats(r.logits).subarray(23 * V), floats(ref.logits).subarray(23 * V));
      const next = await run(kind, more, r.present);
      expect(next.present[1]!.dims).toEqual([1, H, 32, D]);
      const cont = stats(floats(next.logits), floats(refNext.logits));
      const kv = stats(floats(next.present[1]!), floats(refNext.present[1]!));
      seen.push(
        `${kind}: last-position max ${last.max.toFixed(4)}, all positions max ${all.max.toFixed(4)} rms ${all.rms.toFixed(4)}, after past max ${cont.max.toFixed(4)}, present max ${kv.max.toFixed(4)}`,
      );
      for (const s of [all, last, cont]) {
        expect(s.max).toBeLessThanOrEqual(tol);
        expect(s.rms).toBeLessThanOrEqual(rmsTol);
      }
      // Argmax per position of the prefill.
      let agree = 0;
      for (let p = 0; p < 24; p++) if (argmax(floats(r.logits), p) === argmax(floats(ref.logits), p)) agree++;
      seen.push(`${kind}: prefill argmax agrees at ${agree}/24 positions`);
      expect(agree).toBeGreaterThanOrEqual(kind === 'fp16' ? 23 : 18);
    }
    // Greedy next tokens: along fp32's own greedy continuation, does each graph pick the same next token?
    const start = prompt(12, 2);
    const want = await greedy('fp32', start, 24);
    for (const kind of ['fp16', 'q8'] as const) {
      const r = await run(kind, [...start, ...want.slice(0, -1)]);
      let agree = 0;
      for (let i = 0; i < want.length; i++) if (argmax(floats(r.logits), start.length - 1 + i) === want[i]) agree++;
      const free = await greedy(kind, start, 24);
      let same = 0;
      while (same < free.length && free[same] === want[same]) same++;
      seen.push(`${kind}: next token along fp32's greedy path agrees ${agree}/24; free-running greedy equals fp32 for the first ${same}/24`);
      expect(agree).toBeGreaterThanOrEqual(kind === 'fp16' ? 22 : 16);
    }
    console.log(`[onnx-dtype] ${seen.join('\n[onnx-dtype] ')}`);
  });

  it('load and run in onnxruntime-web’s WASM backend (the ops are ones it has)', async () => {
    ortWeb.env.wasm.numThreads = 1;
    const ids = prompt(10, 3);
    for (const [kind, bytes] of [
      ['fp16', fp16],
      ['q8', q8],
    ] as const) {
      const s = await ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
      const kv = kind === 'fp16' ? 'float16' : 'float32';
      const feeds: Record<string, ortWeb.Tensor> = {
        input_ids: new ortWeb.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, 10]),
        attention_mask: new ortWeb.Tensor('int64', new BigInt64Array(10).fill(1n), [1, 10]),
        position_ids: new ortWeb.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, 10]),
        num_logits_to_keep: new ortWeb.Tensor('int64', BigInt64Array.from([1n]), []),
      };
      for (let l = 0; l < L; l++)
        for (const k of ['key', 'value'])
          feeds[`past_key_values.${l}.${k}`] = new ortWeb.Tensor(kv, kv === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, H, 0, D]);
      const web = (await s.run(feeds)).logits!;
      const node = (await run(kind, ids, undefined, 1)).logits;
      const d = stats(floats(web as unknown as ort.Tensor), floats(node));
      console.log(`[onnx-dtype] ${kind}: onnxruntime-web wasm vs onnxruntime-node max ${d.max.toExponential(2)}`);
      expect(d.max).toBeLessThanOrEqual(kind === 'fp16' ? FP16_TOL : 0.05);
      await s.release();
    }
  });
});

describe('transformers.js (Node) loads Xenova/gpt2 from the mirror in fp32, fp16 and q8', () => {
  let tmp: string;
  let mirror: Mirror;
  let tok: PreTrainedTokenizer;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'statecart-dtype-'));
    const { root } = await makeHubRepos({ out: join(tmp, 'hub') });
    mirror = await startMirror({ root });
    env.remoteHost = mirror.url;
    env.allowRemoteModels = true;
    env.allowLocalModels = false;
    env.useBrowserCache = false;
    env.cacheDir = join(tmp, 'transformers-cache');
    tok = await AutoTokenizer.from_pretrained(GPT2_REPO);
  });
  afterAll(async () => {
    await mirror?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('fetches config, generation config and one model file per dtype (the weights through the LFS redirect), then nothing on a second load', async () => {
    const fetched: Record<string, string[]> = {};
    const file = { fp32: 'model.onnx', fp16: 'model_fp16.onnx', q8: 'model_quantized.onnx' } as const;
    const prompt = 'The quick brown fox';
    const inputs = tok(prompt);
    const ids = Array.from(inputs.input_ids.data as BigInt64Array, Number);
    for (const dtype of ['fp32', 'fp16', 'q8'] as const) {
      mirror.reset();
      const model = await AutoModelForCausalLM.from_pretrained(GPT2_REPO, { dtype, device: 'cpu' });
      fetched[dtype] = mirror.log.map((e) => `${e.method} ${e.path.replace(/[0-9a-f]{64}$/, '<sha256>')} ${e.status}`);
      const weightsGets = mirror.log.filter((e) => e.path.startsWith('/cdn-lfs/'));
      expect(weightsGets).toHaveLength(1);
      expect(mirror.log).toContainEqual(expect.objectContaining({ method: 'GET', path: `/${GPT2_REPO}/resolve/main/onnx/${file[dtype]}`, status: 302 }));
      // Generation uses the graph's own cache dtype (float16 for fp16) and equals our greedy run of the same graph.
      const out = (await model.generate({ ...inputs, max_new_tokens: 10, do_sample: false })) as Tensor;
      const gen = (out.tolist() as bigint[][])[0]!.map(Number).slice(ids.length);
      expect(gen).toEqual(await greedy(dtype, ids, 10));
      const fw = await model({ ...inputs });
      expect(fw['present.0.key'].type).toBe(dtype === 'fp16' ? 'float16' : 'float32');
      await model.dispose();
    }
    // Config first; transformers.js then asks for the generation config and the model at once, in either order.
    expect(fetched.fp32![0]).toBe(`GET /${GPT2_REPO}/resolve/main/config.json 200`);
    expect([...fetched.fp32!].sort()).toEqual(
      [
        `GET /${GPT2_REPO}/resolve/main/config.json 200`,
        `GET /${GPT2_REPO}/resolve/main/onnx/model.onnx 302`,
        `GET /${GPT2_REPO}/resolve/main/generation_config.json 200`,
        'GET /cdn-lfs/repos/Xenova/gpt2/<sha256> 200',
      ].sort(),
    );
    expect(fetched.fp32!.indexOf(`GET /${GPT2_REPO}/resolve/main/onnx/model.onnx 302`)).toBeLessThan(
      fetched.fp32!.indexOf('GET /cdn-lfs/repos/Xenova/gpt2/<sha256> 200'),
    );
    console.log(
      `[onnx-dtype] transformers.js requests:\n${Object.entries(fetched)
        .map(([k, v]) => `  ${k}: ${v.join(' | ')}`)
        .join('\n')}`,
    );
    mirror.reset();
    for (const dtype of ['fp32', 'fp16', 'q8'] as const) await (await AutoModelForCausalLM.from_pretrained(GPT2_REPO, { dtype, device: 'cpu' })).dispose();
    expect(mirror.log).toEqual([]);
  });

  it('a dtype the repository lacks is a ModelFileNotFoundError naming the repository and the file', async () => {
    const err = await AutoModelForCausalLM.from_pretrained(GPT2_REPO, { dtype: 'q4', device: 'cpu' }).then(
      () => null,
      (e: unknown) => e as Error & { status?: number },
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.name).toBe('ModelFileNotFoundError');
    expect(err!.status).toBe(404);
    expect(err!.message).toContain(`${GPT2_REPO}/resolve/main/onnx/model_q4.onnx`);
  });
});
