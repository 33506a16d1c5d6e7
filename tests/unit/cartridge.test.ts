import { describe, expect, it } from 'vitest';
import {
  buildCartridge,
  buildCartridgeBytes,
  parseCartridge,
  resolveDelta,
  CARTRIDGE_FORMAT,
  type BuildInput,
  type CartridgeQuality,
  type ExpectedModel,
  type ParsedCartridge,
} from '../../src/formats/cartridge.ts';
import { readSafetensors } from '../../src/formats/safetensors.ts';
import { maxErrorBound, type CodecName } from '../../src/formats/codecs.ts';
import { digestOf, sha256Hex } from '../../src/core/sha256.ts';
import { stateKey } from '../../src/core/key-chain.ts';
import { InvalidCartridge, InvalidInput, MissingParent, ModelMismatch } from '../../src/core/errors.ts';
import type { ModelState } from '../../src/models/types.ts';
import { cartridgeMutators, editMeta, rewriteHeader, rng } from './support/cartridge-mutators.ts';

const enc = new TextEncoder();
const FP = await sha256Hex(enc.encode('tiny-gpt2 test model'));
const FP_MAMBA = await sha256Hex(enc.encode('tiny-mamba test model'));
const FP_OTHER = await sha256Hex(enc.encode('another model'));

const GPT2: ExpectedModel = {
  modelFp: FP,
  modelId: 'tiny-gpt2',
  arch: 'gpt2',
  config: { n_layer: 2, n_head: 2, n_embd: 8, n_positions: 64, vocab_size: 50257 },
  specs: ['0.key', '0.value', '1.key', '1.value'].map((n) => ({ name: `layers.${n}`, dims: [2, 0, 4], tokenAxis: 1 })),
  vocabSize: 50257,
  maxTokens: 64,
};
const MAMBA: ExpectedModel = {
  modelFp: FP_MAMBA,
  modelId: 'tiny-mamba',
  arch: 'mamba',
  config: { n_layer: 2, d_inner: 6, d_state: 4, d_conv: 4 },
  specs: ['0.conv', '0.ssm', '1.conv', '1.ssm'].map((n) => ({ name: `layers.${n}`, dims: n.endsWith('conv') ? [6, 3] : [6, 4] })),
  vocabSize: 50280,
  maxTokens: Infinity,
};

function gpt2State(tokens: number[], seed: number): ModelState {
  const r = rng(seed);
  const tensors = [];
  for (let l = 0; l < 2; l++)
    for (const kind of ['key', 'value'])
      tensors.push({
        name: `layers.${l}.${kind}`,
        dims: [2, tokens.length, 4],
        tokenAxis: 1,
        data: Float32Array.from({ length: 2 * tokens.length * 4 }, () => r() * 4 - 2),
      });
  return { tokens, tensors };
}

function mambaState(tokens: number[], seed: number, base?: ModelState): ModelState {
  const r = rng(seed);
  const tensors = [];
  for (let l = 0; l < 2; l++) {
    for (const [kind, dims] of [
      ['conv', [6, 3]],
      ['ssm', [6, 4]],
    ] as const) {
      const name = `layers.${l}.${kind}`;
      const b = base?.tensors.find((t) => t.name === name);
      tensors.push({ name, dims: [...dims], data: Float32Array.from({ length: dims[0] * dims[1] }, (_, i) => (b ? b.data[i]! * 0.9 : 0) + r() - 0.5) });
    }
  }
  return { tokens, tensors };
}

// int8 codec id 6 (one-byte steps) since issue 16; files written with id 3 still import.
const PINNED = 'sha256:dff146f34ae64e3900fd4f0a17dd313cf82a7b0188e1573e95ced238f7769d6c';
const PINNED_LENGTH = 1424;
const TOKENS = [15496, 11, 995, 0, 50256, 7, 1000, 42, 3, 9, 2, 1, 0, 5, 6, 7, 8, 9];

function gpt2Input(codec: CodecName, extra: Partial<BuildInput> = {}): BuildInput {
  return { modelId: 'tiny-gpt2', modelFp: FP, arch: 'gpt2', config: GPT2.config, specs: GPT2.specs, state: gpt2State(TOKENS, 1), codec, ...extra };
}

async function refusedWith(p: Promise<unknown>, cls: typeof InvalidCartridge | typeof ModelMismatch, pattern?: RegExp): Promise<Error> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, 'should have been refused').toBeInstanceOf(cls);
  if (pattern) expect((err as Error).message).toMatch(pattern);
  return err as Error;
}

describe('build and parse', () => {
  for (const codec of ['fp32', 'fp16', 'int8', 'kivi4'] as const) {
    it(`GPT-2 round trip with ${codec}`, async () => {
      const input = gpt2Input(codec, { receipts: [{ op: 'create' }] });
      const built = await buildCartridge(input);
      const bytes = await buildCartridgeBytes(input);
      expect(bytes.length).toBe(built.byteLength);
      const p = await parseCartridge(bytes, GPT2);
      expect(p.format).toBe(CARTRIDGE_FORMAT);
      expect(p.tokens).toEqual(TOKENS);
      expect(p.stateKey).toBe(await stateKey(FP, TOKENS));
      expect(p.codec).toBe(codec);
      expect(p.receipts).toEqual([{ op: 'create' }]);
      expect(p.parent).toBeNull();
      expect(p.state!.tensors.map((t) => t.name)).toEqual(['layers.0.key', 'layers.0.value', 'layers.1.key', 'layers.1.value']);
      for (const t of p.state!.tensors) {
        const src = input.state.tensors.find((s) => s.name === t.name)!;
        expect(t.dims).toEqual(src.dims);
        const bound = maxErrorBound(codec, src, { kind: t.name.endsWith('key') ? 'key' : 'value', residual: 16 });
        for (let i = 0; i < t.data.length; i++) expect(Math.abs(t.data[i]! - src.data[i]!)).toBeLessThanOrEqual(bound[i]!);
      }
      // Another reader sees plain safetensors with the documented dtypes.
      const st = readSafetensors(bytes);
      const dt = st.tensors.get('layers.0.key')!;
      expect(dt.dtype).toBe({ fp32: 'F32', fp16: 'F16', int8: 'U8', kivi4: 'U8' }[codec]);
      expect(dt.shape).toEqual(codec === 'fp32' || codec === 'fp16' ? [2, TOKENS.length, 4] : [dt.byteLength]);
      for (const [k, v] of Object.entries(st.metadata)) expect(typeof v).toBe('string'), expect(k).toBeTruthy();
      for (const t of p.tensors) expect(await digestOf(st.tensors.get(t.name)!.bytes)).toBe(t.digest);
    });
  }

  it('fp32 is exact and its tensors are plain F32 data', async () => {
    const input = gpt2Input('fp32');
    const p = await parseCartridge(await buildCartridgeBytes(input), GPT2);
    for (const t of p.state!.tensors) expect(Array.from(t.data)).toEqual(Array.from(input.state.tensors.find((s) => s.name === t.name)!.data));
  });

  it('GPT-2 delta: stores only the new tokens, and resolves against the parent', async () => {
    const child = gpt2State(TOKENS, 3);
    const parentState: ModelState = {
      tokens: TOKENS.slice(0, 7),
      tensors: child.tensors.map((t) => {
        const data = new Float32Array(2 * 7 * 4);
        for (let h = 0; h < 2; h++) data.set(t.data.subarray(h * TOKENS.length * 4, (h * TOKENS.length + 7) * 4), h * 7 * 4);
        return { name: t.name, dims: [2, 7, 4], data };
      }),
    };
    const parent = { stateKey: await stateKey(FP, TOKENS.slice(0, 7)), tokens: 7 };
    const bytes = await buildCartridgeBytes(gpt2Input('fp32', { state: child, parent }));
    const p = await parseCartridge(bytes, GPT2);
    expect(p.parent).toEqual(parent);
    expect(p.state).toBeNull();
    expect(p.decoded![0]!.dims).toEqual([2, TOKENS.length - 7, 4]);
    const full = resolveDelta(p, parentState);
    for (const t of full.tensors) expect(Array.from(t.data)).toEqual(Array.from(child.tensors.find((c) => c.name === t.name)!.data));
    expect(() => resolveDelta(p, { ...parentState, tokens: TOKENS.slice(1, 8) })).toThrow(MissingParent);
    // A wrong parent key is refused at build and at parse.
    await expect(buildCartridge(gpt2Input('fp32', { state: child, parent: { ...parent, tokens: 6 } }))).rejects.toThrow(InvalidInput);
    await refusedWith(
      parseCartridge(
        editMeta(bytes, (m) => (m.parent_tokens = '6')),
        GPT2,
      ),
      InvalidCartridge,
    );
  });

  it('Mamba: whole states and deltas (fp32 XOR exact, int8 within bound)', async () => {
    const base = mambaState(TOKENS.slice(0, 5), 8);
    const child = mambaState(TOKENS, 9, base);
    const common = { modelId: 'tiny-mamba', modelFp: FP_MAMBA, arch: 'mamba' as const, config: MAMBA.config, specs: MAMBA.specs };
    const whole = await parseCartridge(await buildCartridgeBytes({ ...common, state: child, codec: 'int8' }), MAMBA);
    expect(whole.state!.tensors[0]!.dims).toEqual([6, 3]);
    expect(whole.state!.tensors[1]!.dims).toEqual([6, 4]);
    const parent = { stateKey: await stateKey(FP_MAMBA, TOKENS.slice(0, 5)), tokens: 5, state: base };
    for (const inner of ['fp32', 'int8'] as const) {
      const p = await parseCartridge(await buildCartridgeBytes({ ...common, state: child, codec: inner, parent }), MAMBA);
      expect(p.codec).toBe('delta');
      expect(p.codecParams.inner).toBe(inner);
      expect(p.state).toBeNull();
      const full = resolveDelta(p, base);
      for (const t of full.tensors) {
        const src = child.tensors.find((c) => c.name === t.name)!;
        const b = maxErrorBound(
          'delta',
          src,
          { inner, residual: 0 },
          base.tensors.find((c) => c.name === t.name),
        );
        for (let i = 0; i < t.data.length; i++) expect(Math.abs(t.data[i]! - src.data[i]!)).toBeLessThanOrEqual(b[i]!);
      }
      expect(() => resolveDelta(p, { ...base, tensors: mambaState(TOKENS.slice(0, 5), 10).tensors })).toThrow(MissingParent);
    }
  });
});

describe('refusals, each with a typed error and a message that says what to do', () => {
  let good: Uint8Array;
  const get = async () => (good ??= await buildCartridgeBytes(gpt2Input('int8')));

  it('another model: ModelMismatch naming both', async () => {
    const e = await refusedWith(parseCartridge(await get(), { ...GPT2, modelFp: FP_OTHER, modelId: 'other' }), ModelMismatch);
    expect(e.message).toContain('tiny-gpt2');
    expect(e.message).toContain('other');
    expect(e.message).toContain(FP.slice(0, 16));
    expect(e.message).toContain(FP_OTHER.slice(0, 16));
    await refusedWith(parseCartridge(await get(), { ...MAMBA, modelFp: FP }), ModelMismatch);
  });
  it('not a cartridge', async () => {
    await refusedWith(parseCartridge(new Uint8Array(3), GPT2), InvalidCartridge, /at least 8/);
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => delete m.format),
        GPT2,
      ),
      InvalidCartridge,
      /not a statecart cartridge/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.format = 'statecart/2')),
        GPT2,
      ),
      InvalidCartridge,
      /understands "statecart\/1"/,
    );
  });
  it('metadata missing or of the wrong type', async () => {
    for (const k of ['model_id', 'model_fp', 'arch', 'config', 'tokens', 'state_key', 'codec', 'codec_params', 'digests', 'receipts', 'shapes'])
      await refusedWith(
        parseCartridge(
          editMeta(await get(), (m) => delete m[k]),
          GPT2,
        ),
        InvalidCartridge,
        /missing|must be|should be/,
      );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.tokens = '[1,2,')),
        GPT2,
      ),
      InvalidCartridge,
      /not valid JSON/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.tokens = '{"a":1}')),
        GPT2,
      ),
      InvalidCartridge,
      /array of token ids/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.receipts = '{}')),
        GPT2,
      ),
      InvalidCartridge,
      /receipts/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.digests = '[]')),
        GPT2,
      ),
      InvalidCartridge,
      /digests/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.tokens = 5)),
        GPT2,
      ),
      InvalidCartridge,
      /must be strings/,
    );
  });
  it('tokens out of the vocabulary, fractional, too many, or none', async () => {
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.tokens = JSON.stringify([...TOKENS.slice(0, -1), 50257]))),
        GPT2,
      ),
      InvalidCartridge,
      /token 17 is 50257/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.tokens = JSON.stringify([1.5, ...TOKENS.slice(1)]))),
        GPT2,
      ),
      InvalidCartridge,
      /token 0/,
    );
    await refusedWith(parseCartridge(await get(), { ...GPT2, maxTokens: 10 }), InvalidCartridge, /more than this model's 10/);
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.tokens = '[]')),
        GPT2,
      ),
      InvalidCartridge,
      /empty/,
    );
  });
  it('edited tokens or key: the state key no longer matches', async () => {
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.tokens = JSON.stringify([16, ...TOKENS.slice(1)]))),
        GPT2,
      ),
      InvalidCartridge,
      /state_key/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.state_key = 'sha256:' + '0'.repeat(64))),
        GPT2,
      ),
      InvalidCartridge,
      /state_key/,
    );
  });
  it('a damaged tensor: the digest says which', async () => {
    const b = (await get()).slice();
    b[b.length - 3]! ^= 4;
    await refusedWith(parseCartridge(b, GPT2), InvalidCartridge, /layers\.\d\.(key|value)" is damaged/);
  });
  it('missing, extra, mistyped and misshapen tensors', async () => {
    await refusedWith(
      parseCartridge(
        rewriteHeader(await get(), (h) => {
          const e = h['layers.1.value'];
          delete h['layers.1.value'];
          h['layers.9.value'] = e;
        }),
        GPT2,
      ),
      InvalidCartridge,
      /unexpected tensor "layers.9.value"/,
    );
    const fp32 = await buildCartridgeBytes(gpt2Input('fp32'));
    await refusedWith(
      parseCartridge(
        rewriteHeader(fp32, (h) => (h['layers.0.key'].dtype = 'I32')),
        GPT2,
      ),
      InvalidCartridge,
      /is I32; with codec fp32 it must be F32/,
    );
    await refusedWith(
      parseCartridge(
        rewriteHeader(fp32, (h) => (h['layers.0.key'].shape = [4, TOKENS.length, 2])),
        GPT2,
      ),
      InvalidCartridge,
      /shape/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.shapes = m.shapes.replace('[2,18,4]', '[2,17,4]'))),
        GPT2,
      ),
      InvalidCartridge,
      /shapes/,
    );
    await refusedWith(
      parseCartridge(await buildCartridgeBytes(gpt2Input('fp32')), { ...GPT2, config: { ...GPT2.config, n_layer: 3 } }),
      InvalidCartridge,
      /n_layer/,
    );
  });
  it('codec unknown or not matching the bytes', async () => {
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.codec = 'zstd')),
        GPT2,
      ),
      InvalidCartridge,
      /unknown/,
    );
    await refusedWith(
      parseCartridge(
        editMeta(await get(), (m) => (m.codec = 'kivi4')),
        GPT2,
      ),
      InvalidCartridge,
      /encoded with int8/,
    );
  });
});

describe('fuzz: 1,500 mutated cartridges', () => {
  it('each is refused with a typed error or parses into something whose digests check', async () => {
    const r = rng(20240917);
    const bases: { bytes: Uint8Array; expect: ExpectedModel }[] = [];
    for (const codec of ['fp32', 'fp16', 'int8', 'kivi4'] as const)
      bases.push({ bytes: await buildCartridgeBytes(gpt2Input(codec, { codecParams: { residual: 4 } })), expect: GPT2 });
    bases.push({
      bytes: await buildCartridgeBytes(gpt2Input('int8', { parent: { stateKey: await stateKey(FP, TOKENS.slice(0, 16)), tokens: 16 } })),
      expect: GPT2,
    });
    const mbase = mambaState(TOKENS.slice(0, 5), 8);
    const mcommon = {
      modelId: 'tiny-mamba',
      modelFp: FP_MAMBA,
      arch: 'mamba' as const,
      config: MAMBA.config,
      specs: MAMBA.specs,
      state: mambaState(TOKENS, 9, mbase),
    };
    bases.push({ bytes: await buildCartridgeBytes({ ...mcommon, codec: 'fp32' }), expect: MAMBA });
    bases.push({
      bytes: await buildCartridgeBytes({
        ...mcommon,
        codec: 'int8',
        parent: { stateKey: await stateKey(FP_MAMBA, TOKENS.slice(0, 5)), tokens: 5, state: mbase },
      }),
      expect: MAMBA,
    });

    const { pick, mutations } = cartridgeMutators(r, [FP, FP_MAMBA, FP_OTHER]);

    const counts: Record<string, number> = {};
    const t0 = performance.now();
    for (let k = 0; k < 1500; k++) {
      const base = bases[k % bases.length]!;
      let m = pick(mutations)(base.bytes);
      if (r() < 0.25) {
        // A second mutation on top; the test's own JSON rewriting may not apply to an already broken header.
        try {
          m = pick(mutations)(m);
        } catch {
          /* keep the first mutation */
        }
      }
      let parsed: ParsedCartridge | null = null;
      try {
        parsed = await parseCartridge(m, base.expect);
      } catch (e) {
        if (!(e instanceof InvalidCartridge || e instanceof ModelMismatch))
          throw new Error(`mutation ${k}: leaked ${(e as Error)?.name}: ${(e as Error)?.message}`);
        if ((e as Error).message.includes('could not be read')) throw new Error(`mutation ${k}: an unchecked failure was caught late: ${(e as Error).message}`);
        counts[(e as Error).name] = (counts[(e as Error).name] ?? 0) + 1;
        continue;
      }
      counts.parsed = (counts.parsed ?? 0) + 1;
      // Whatever parsed must be self-consistent.
      for (const t of parsed.tensors) expect(await digestOf(t.bytes)).toBe(parsed.digests[t.name]);
      expect(await stateKey(base.expect.modelFp, parsed.tokens)).toBe(parsed.stateKey);
    }
    const ms = performance.now() - t0;
    console.log(`fuzz: ${JSON.stringify(counts)} in ${ms.toFixed(0)} ms`);
    expect(counts.InvalidCartridge).toBeGreaterThan(1000);
    expect(ms).toBeLessThan(20_000);
  });
});

describe('quality metadata', () => {
  const q: CartridgeQuality = { codec: 'int8', maxLogitError: 0.01, meanKL: 1e-6, maxKL: 2e-6, greedyAgree: 63, greedyTotal: 64, probeTokens: [5] };
  const input = (codec: 'fp32' | 'int8', quality?: unknown): BuildInput => ({
    modelId: 'tiny-gpt2',
    modelFp: FP,
    arch: 'gpt2',
    config: GPT2.config,
    specs: GPT2.specs,
    state: gpt2State(TOKENS.slice(0, 3), 77),
    codec,
    ...(quality !== undefined ? { quality: quality as CartridgeQuality } : {}),
  });
  it('round trips; a file without it parses with quality null', async () => {
    const withQ = await parseCartridge(await buildCartridgeBytes(input('int8', { ...q, probeTokens: [...q.probeTokens] })), GPT2);
    expect(withQ.quality).toEqual(q);
    expect((await parseCartridge(await buildCartridgeBytes(input('int8')), GPT2)).quality).toBeNull();
  });
  it('the writer refuses a malformed record, one for another codec, and one on fp32 (InvalidInput)', async () => {
    for (const [codec, bad] of [
      ['int8', { ...q, greedyTotal: 0 }],
      ['int8', { ...q, maxLogitError: Number.NaN }],
      ['int8', { ...q, codec: 'kivi4' }],
      ['fp32', { ...q, codec: 'fp32' }],
    ] as const)
      await expect(buildCartridgeBytes(input(codec, bad))).rejects.toThrow(InvalidInput);
  });
});

describe('known answer', () => {
  it('the same state builds the same bytes (pinned: a format change must be deliberate)', async () => {
    const state = gpt2State(TOKENS.slice(0, 3), 77);
    const bytes = await buildCartridgeBytes({ modelId: 'tiny-gpt2', modelFp: FP, arch: 'gpt2', config: GPT2.config, specs: GPT2.specs, state, codec: 'int8' });
    expect(await digestOf(bytes)).toBe(PINNED);
    expect(bytes.length).toBe(PINNED_LENGTH);
  });
});
