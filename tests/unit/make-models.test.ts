import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createHash } from 'node:crypto';
import { ensureModels, buildFromSafetensors, STAMP_FILE } from '../../scripts/make-models.ts';
import { gpt2HfConfig } from '../../src/models/gpt2-build.ts';
import { seededGpt2Recipe } from '../../src/models/registry.ts';
import { seededGpt2Weights, gpt2WeightsToSafetensorsInput, gpt2WeightsFromTensors } from '../../src/models/gpt2-weights.ts';
import { writeSafetensors, readSafetensors } from '../../src/formats/safetensors.ts';

let tmp: string;
const ID = 'tiny-gpt2';

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)));
  }
  return out.sort();
}

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'statecart-models-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

const preset = () => {
  const p = seededGpt2Recipe(ID);
  return p;
};

describe('make-models', () => {
  it('builds byte-identical files from the same inputs', async () => {
    const [a] = await ensureModels([ID], join(tmp, 'a'));
    const [b] = await ensureModels([ID], join(tmp, 'b'));
    expect(a!.built && b!.built).toBe(true);
    const fa = files(a!.dir);
    expect(fa).toEqual(
      ['config.json', 'generation_config.json', 'onnx/model.onnx', 'statecart.json', STAMP_FILE, 'tokenizer.json', 'tokenizer_config.json'].sort(),
    );
    expect(files(b!.dir)).toEqual(fa);
    for (const f of fa) expect(Buffer.compare(readFileSync(join(a!.dir, f)), readFileSync(join(b!.dir, f))), f).toBe(0);

    const sc = JSON.parse(readFileSync(join(a!.dir, 'statecart.json'), 'utf8'));
    const sha = (f: string) =>
      createHash('sha256')
        .update(readFileSync(join(a!.dir, f)))
        .digest('hex');
    expect(sc).toMatchObject({
      id: ID,
      arch: 'gpt2',
      config: { n_layer: 2, n_head: 4, n_embd: 64, n_positions: 1024, vocab_size: 50257 },
      dtype: 'fp32',
      weights_sha256: sha('onnx/model.onnx'),
      tokenizer_sha256: sha('tokenizer.json'),
      weight_source: { kind: 'seeded', seed: preset().seed, scale: preset().scale },
    });
    const cfg = JSON.parse(readFileSync(join(a!.dir, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      model_type: 'gpt2',
      n_layer: 2,
      n_head: 4,
      n_embd: 64,
      n_positions: 1024,
      n_ctx: 1024,
      vocab_size: 50257,
      bos_token_id: 50256,
      eos_token_id: 50256,
    });
  });

  it('skips an up-to-date model and rebuilds when a file or the stamp changes', async () => {
    const out = join(tmp, 'a');
    const dir = join(out, ID);
    expect((await ensureModels([ID], out))[0]!.built).toBe(false);

    rmSync(join(dir, 'tokenizer_config.json'));
    expect((await ensureModels([ID], out))[0]!.built).toBe(true);
    expect((await ensureModels([ID], out))[0]!.built).toBe(false);

    writeFileSync(join(dir, 'config.json'), '{}'); // size differs
    expect((await ensureModels([ID], out))[0]!.built).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).model_type).toBe('gpt2');

    const stampPath = join(dir, STAMP_FILE);
    const stamp = JSON.parse(readFileSync(stampPath, 'utf8'));
    writeFileSync(stampPath, JSON.stringify({ ...stamp, generator_sha256: '0'.repeat(64) }));
    expect((await ensureModels([ID], out))[0]!.built).toBe(true);

    const before = readFileSync(join(dir, 'onnx', 'model.onnx'));
    expect((await ensureModels([ID], out, { force: true }))[0]!.built).toBe(true);
    expect(Buffer.compare(before, readFileSync(join(dir, 'onnx', 'model.onnx')))).toBe(0);
  });

  it('the safetensors weight source (HF gpt2 layout) gives the identical model.onnx', async () => {
    const p = preset();
    const w = seededGpt2Weights(p.config, { seed: p.seed, scale: p.scale });
    const seededOnnx = readFileSync(join(tmp, 'a', ID, 'onnx', 'model.onnx'));

    // (1) Plain names, config.json beside the file (as on the Hub: n_head comes from it).
    const d1 = join(tmp, 'st1');
    mkdirSync(d1);
    writeFileSync(join(d1, 'model.safetensors'), writeSafetensors(gpt2WeightsToSafetensorsInput(w), { format: 'pt' }));
    writeFileSync(join(d1, 'config.json'), JSON.stringify(gpt2HfConfig(p.config)));
    const r1 = await buildFromSafetensors(join(d1, 'model.safetensors'), 'from-st', join(tmp, 'out1'));
    expect(r1.built).toBe(true);
    expect(Buffer.compare(readFileSync(join(r1.dir, 'onnx', 'model.onnx')), seededOnnx)).toBe(0);
    const sc = JSON.parse(readFileSync(join(r1.dir, 'statecart.json'), 'utf8'));
    expect(sc.weight_source).toMatchObject({ kind: 'safetensors', file: 'model.safetensors' });
    expect(sc.weight_source.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect((await buildFromSafetensors(join(d1, 'model.safetensors'), 'from-st', join(tmp, 'out1'))).built).toBe(false);

    // (2) `transformer.` prefix, the attention-mask buffers and an lm_head copy, n_head given.
    const d2 = join(tmp, 'st2');
    mkdirSync(d2);
    const E = p.config.n_embd;
    const extra = [
      { name: 'lm_head.weight', dtype: 'F32' as const, shape: [p.config.vocab_size, E], data: w.tensors.get('wte.weight')!.data },
      { name: 'h.0.attn.bias', dtype: 'F32' as const, shape: [1, 1, 4, 4], data: new Float32Array(16).fill(1) },
    ];
    const prefixed = gpt2WeightsToSafetensorsInput(w).map((t) => ({ ...t, name: 'transformer.' + t.name }));
    writeFileSync(join(d2, 'model.safetensors'), writeSafetensors([...extra, ...prefixed].reverse()));
    const r2 = await buildFromSafetensors(join(d2, 'model.safetensors'), 'from-st2', join(tmp, 'out2'), { n_head: 4 });
    expect(Buffer.compare(readFileSync(join(r2.dir, 'onnx', 'model.onnx')), seededOnnx)).toBe(0);

    // (3) F16 tensors load (converted to float32).
    const st = readSafetensors(readFileSync(join(d1, 'model.safetensors')));
    const half = new Map([...st.tensors].map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape, data: v.data as Float32Array }]));
    const ln = half.get('ln_f.bias')!;
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7bff]); // 1, -2, 2^-24, 65504
    half.set('ln_f.bias', { dtype: 'F16', shape: ln.shape, data: new Uint16Array(E).map((_, i) => f16[i % 4]!) as unknown as Float32Array });
    const wh = gpt2WeightsFromTensors(half, { n_head: 4 });
    expect(Array.from(wh.tensors.get('ln_f.bias')!.data.slice(0, 4))).toEqual([1, -2, 2 ** -24, 65504]);
  });
});
