import { afterEach, describe, expect, it, vi } from 'vitest';
import { promisifyRequest } from 'idb-keyval';
import { nodeEngine } from './support/node-engine.ts';
import { cartridgeMutators, editMeta, rng } from './support/cartridge-mutators.ts';
import { exportCartridge, importCartridge, type CartridgeHost, type ImportResult } from '../../src/engine/cartridges.ts';
import { buildCartridgeBytes, type CartridgeConfig } from '../../src/formats/cartridge.ts';
import { readSafetensors } from '../../src/formats/safetensors.ts';
import { float16ToFloat32, float32ToFloat16 } from '../../src/formats/fp16.ts';
import { StateStore } from '../../src/store/store.ts';
import { sha256Hex } from '../../src/core/sha256.ts';
import { stateKey } from '../../src/core/key-chain.ts';
import { verifyReceipts } from '../../src/core/receipts.ts';
import { InvalidCartridge, InvalidInput, MissingParent, ModelMismatch, StateNotFound } from '../../src/core/errors.ts';
import type { ModelState, StateModel } from '../../src/models/types.ts';
import { storeState } from './support/put.ts';

const BASE = 'A cartridge carries a state from one browser to another, checked before a single byte is stored. '.repeat(2);
const NEXT = ' The next question is';

/** Every IndexedDB key and value of a store, blobs included, as one string. */
async function snapshot(store: StateStore): Promise<string> {
  const [keys, values] = await store.idb('readonly', (s) => Promise.all([promisifyRequest(s.getAllKeys()), promisifyRequest(s.getAll())]));
  return JSON.stringify(
    keys.map((k, i) => [k, values[i]]),
    (_k, v) => (v instanceof ArrayBuffer ? 'bytes:' + Buffer.from(v).toString('base64') : v),
  );
}

const hostOf = (store: StateStore, model: StateModel): CartridgeHost => ({ store, getModel: async () => model });
const bytesOf = async (b: Blob) => new Uint8Array(await b.arrayBuffer());

async function refused(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a refusal, but it succeeded');
}

function sameState(a: ModelState, b: ModelState): void {
  expect(b.tokens).toEqual(a.tokens);
  expect(b.tensors.map((t) => t.name)).toEqual(a.tensors.map((t) => t.name));
  a.tensors.forEach((t, i) => {
    expect(b.tensors[i]!.dims).toEqual(t.dims);
    expect(
      Buffer.from(b.tensors[i]!.data.buffer, b.tensors[i]!.data.byteOffset, b.tensors[i]!.data.byteLength).equals(
        Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      ),
    ).toBe(true);
  });
}

describe('cartridges: export and import through the store (tiny-gpt2, Node)', () => {
  it('round trip, whole and fp32: a fresh store continues the imported state exactly as the original', async () => {
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const want = await a.engine.infer({ stateKey: base.stateKey, delta: NEXT, maxNewTokens: 10 });
    expect(new Set(want.outputTokens).size, 'the continuation must vary, or a wrong state could not show').toBeGreaterThan(3);

    const out = await exportCartridge(hostOf(a.store, a.model), base.stateKey);
    expect(out.blob).toBeInstanceOf(Blob);
    expect(out.bytes).toBe(out.blob.size);
    expect(out.codec).toBe('fp32');
    expect(out.receipts).toBe(1);
    const bytes = await bytesOf(out.blob);
    const file = readSafetensors(bytes);
    expect(file.metadata.state_key).toBe(base.stateKey);
    expect(JSON.parse(file.metadata.tokens!)).toHaveLength(base.tokens);

    const b = await nodeEngine();
    const r = await importCartridge(hostOf(b.store, b.model), bytes);
    expect(r).toMatchObject({ stateKey: base.stateKey, tokens: base.tokens, codec: 'fp32', reused: false, parent: null, receiptsVerified: true });
    expect(r.receipt!.receipt.op).toBe('import');
    expect(r.receipt!.receipt.prev).toBe(base.receipt.hash);
    expect((await b.store.verify(base.stateKey)).ok).toBe(true);
    sameState((await a.store.getState(base.stateKey)).state, (await b.store.getState(base.stateKey)).state);

    await b.store.dropHot();
    const got = await b.engine.infer({ stateKey: base.stateKey, delta: NEXT, maxNewTokens: 10 });
    expect(got.tier).toBe('stored');
    expect(got.savings.tokensReused).toBe(base.tokens);
    expect(got.outputTokens).toEqual(want.outputTokens);
    expect(got.newStateKey).toBe(want.newStateKey);
    // The receipt chain goes on across the import: infer's receipt follows the import's.
    expect(got.receipt.receipt.prev).toBe(r.receipt!.hash);
  });

  it('round trip of a Blob, and codecs: fp16 stores exactly the fp16-rounded state; int8 and kivi4 import and continue', async () => {
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const orig = (await a.store.getState(base.stateKey)).state;
    for (const codec of ['fp16', 'int8', 'kivi4'] as const) {
      const out = await exportCartridge(hostOf(a.store, a.model), base.stateKey, { codec });
      expect(out.codec).toBe(codec);
      const b = await nodeEngine();
      const r = await importCartridge(hostOf(b.store, b.model), out.blob);
      expect(r).toMatchObject({ stateKey: base.stateKey, codec, reused: false });
      const got = (await b.store.getState(base.stateKey)).state;
      if (codec === 'fp16') {
        sameState({ ...orig, tensors: orig.tensors.map((t) => ({ ...t, data: float16ToFloat32(float32ToFloat16(t.data)) })) }, got);
      } else {
        let maxDiff = 0;
        got.tensors.forEach((t, i) => t.data.forEach((x, j) => (maxDiff = Math.max(maxDiff, Math.abs(x - orig.tensors[i]!.data[j]!)))));
        expect(maxDiff).toBeGreaterThan(0); // lossy: proves the codec path ran
        expect(maxDiff).toBeLessThan(1);
      }
      const cont = await b.engine.infer({ stateKey: base.stateKey, maxNewTokens: 4 });
      expect(cont.outputTokens).toHaveLength(4);
    }
  });

  it('a lossy cartridge carries its measured quality; import returns it; a malformed one is refused and the store is unchanged', async () => {
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const plain = await exportCartridge(hostOf(a.store, a.model), base.stateKey, { codec: 'fp32' });
    expect(plain.quality).toBeNull();
    expect(readSafetensors(await bytesOf(plain.blob)).metadata.quality).toBeUndefined();
    for (const codec of ['int8', 'kivi4'] as const) {
      const out = await exportCartridge(hostOf(a.store, a.model), base.stateKey, { codec, quality: { greedyTokens: 8 } });
      const q = out.quality!;
      expect(q).toMatchObject({ codec, greedyTotal: 8 });
      expect(q.probeTokens).toEqual([(await a.store.getManifest(base.stateKey))!.tokens.at(-1)]);
      expect(q.greedyAgree).toBeGreaterThanOrEqual(0);
      expect(q.maxLogitError).toBeGreaterThan(0); // lossy, measured on the file's own decoded state
      expect(q.meanKL).toBeGreaterThanOrEqual(0);
      expect(q.maxKL).toBeGreaterThanOrEqual(q.meanKL);
      const bytes = await bytesOf(out.blob);
      expect(JSON.parse(readSafetensors(bytes).metadata.quality!)).toEqual(q);
      // Import returns it, and importing again (nothing written) still does.
      const b = await nodeEngine();
      const r = await importCartridge(hostOf(b.store, b.model), bytes);
      expect(r).toMatchObject({ stateKey: base.stateKey, codec, reused: false, quality: q });
      expect((await importCartridge(hostOf(b.store, b.model), bytes)).quality).toEqual(q);
      // Malformed: refused with InvalidCartridge, the store byte-identical.
      const c = await nodeEngine();
      const before = await snapshot(c.store);
      for (const bad of [
        'not json',
        JSON.stringify({ ...q, greedyAgree: q.greedyTotal + 1 }),
        JSON.stringify({ ...q, meanKL: -1 }),
        JSON.stringify({ ...q, codec: 'fp16' }),
        JSON.stringify([q]),
      ]) {
        const e = await refused(
          importCartridge(
            hostOf(c.store, c.model),
            editMeta(bytes, (m) => (m.quality = bad)),
          ),
        );
        expect(e).toBeInstanceOf(InvalidCartridge);
        expect(e.message).toMatch(/quality/);
        expect(await snapshot(c.store)).toBe(before);
      }
    }
    // quality: false skips the measurement; a lossless codec never has one.
    expect((await exportCartridge(hostOf(a.store, a.model), base.stateKey, { codec: 'int8', quality: false })).quality).toBeNull();
  });

  it('delta cartridges: only the tokens after the parent; refused with MissingParent without it; exact once the parent is there', async () => {
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const child = await a.engine.infer({ stateKey: base.stateKey, delta: NEXT, maxNewTokens: 6 });
    const want = await a.engine.infer({ stateKey: child.newStateKey, delta: ' and', maxNewTokens: 8 });
    const childTokens = (await a.store.getManifest(child.newStateKey))!.tokens.length;

    const whole = await exportCartridge(hostOf(a.store, a.model), child.newStateKey);
    const delta = await exportCartridge(hostOf(a.store, a.model), child.newStateKey, { delta: base.stateKey });
    expect(delta.parent).toBe(base.stateKey);
    const file = readSafetensors(await bytesOf(delta.blob));
    expect(file.metadata.parent_state_key).toBe(base.stateKey);
    expect(Number(file.metadata.parent_tokens)).toBe(base.tokens);
    // Only the blocks after the parent: [n_head, new tokens, head_dim].
    expect(file.tensors.get('layers.0.key')!.shape[1]).toBe(childTokens - base.tokens);
    expect(delta.bytes).toBeLessThan(whole.bytes / 2);
    expect(delta.receipts).toBe(2);

    const b = await nodeEngine();
    const before = await snapshot(b.store);
    const e = await refused(importCartridge(hostOf(b.store, b.model), delta.blob));
    expect(e).toBeInstanceOf(MissingParent);
    expect(e.message).toContain(base.stateKey);
    expect((e as MissingParent).details.parentStateKey).toBe(base.stateKey);
    expect(await snapshot(b.store)).toBe(before);

    const p = await importCartridge(hostOf(b.store, b.model), await exportCartridge(hostOf(a.store, a.model), base.stateKey).then((x) => x.blob));
    expect(p.stateKey).toBe(base.stateKey);
    const r = await importCartridge(hostOf(b.store, b.model), delta.blob);
    expect(r).toMatchObject({ stateKey: child.newStateKey, tokens: childTokens, parent: base.stateKey, reused: false, receiptsVerified: true });
    sameState((await a.store.getState(child.newStateKey)).state, (await b.store.getState(child.newStateKey)).state);
    await b.store.dropHot();
    const got = await b.engine.infer({ stateKey: child.newStateKey, delta: ' and', maxNewTokens: 8 });
    expect(got.outputTokens).toEqual(want.outputTokens);
    // The parent's full blocks are shared, not stored twice.
    const u = await b.store.usage();
    expect(u.bytes).toBeLessThan(u.logicalBytes);
  });

  it('a delta parent that is not an ancestor is refused at export', async () => {
    const a = await nodeEngine();
    const x = await a.engine.createState({ text: BASE });
    const y = await a.engine.createState({ text: 'Something else entirely, with other tokens.' });
    const e = await refused(exportCartridge(hostOf(a.store, a.model), x.stateKey, { delta: y.stateKey }));
    expect(e.name).toBe('InvalidInput');
    expect(e.message).toContain(y.stateKey);
    expect((await refused(exportCartridge(hostOf(a.store, a.model), 'sha256:' + '0'.repeat(64)))).name).toBe(StateNotFound.name);
  });

  it('importing the same cartridge twice stores it once', async () => {
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const bytes = await bytesOf((await exportCartridge(hostOf(a.store, a.model), base.stateKey)).blob);
    const b = await nodeEngine();
    const first = await importCartridge(hostOf(b.store, b.model), bytes);
    const after = await snapshot(b.store);
    const second = await importCartridge(hostOf(b.store, b.model), new Blob([bytes]));
    expect(first.reused).toBe(false);
    expect(second).toMatchObject({ stateKey: first.stateKey, reused: true, bytes: first.bytes, receipt: null });
    expect(await snapshot(b.store)).toBe(after);
    expect(await b.engine.listStates()).toHaveLength(1);
  });

  it('a cartridge of another model is refused, naming both models, before its data is read', async () => {
    const b = await nodeEngine();
    const otherFp = await sha256Hex(new TextEncoder().encode('another gpt2 build'));
    const tokens = [464, 6940, 318];
    const tensors = b.model.stateSpecs.map((s) => ({
      name: s.name,
      dims: [s.dims[0]!, tokens.length, s.dims[2]!],
      data: new Float32Array(s.dims[0]! * tokens.length * s.dims[2]!).fill(0.5),
    }));
    const cfg = b.model.identity.config as CartridgeConfig;
    const bytes = await buildCartridgeBytes({
      modelId: 'gpt2-other',
      modelFp: otherFp,
      arch: 'gpt2',
      config: cfg,
      specs: b.model.stateSpecs,
      state: { tokens, tensors },
      codec: 'fp32',
    });
    const before = await snapshot(b.store);
    const e = await refused(importCartridge(hostOf(b.store, b.model), bytes));
    expect(e).toBeInstanceOf(ModelMismatch);
    expect(e.message).toContain('gpt2-other');
    expect(e.message).toContain(b.model.id);

    // Through a Blob, only the 8-byte length and the header are read.
    const reads: [number, number][] = [];
    class CountingBlob extends Blob {
      override slice(start?: number, end?: number, type?: string): Blob {
        reads.push([start ?? 0, end ?? this.size]);
        return super.slice(start, end, type);
      }
    }
    const blob = new CountingBlob([bytes as Uint8Array<ArrayBuffer>]);
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    expect((await refused(importCartridge(hostOf(b.store, b.model), blob))).name).toBe('ModelMismatch');
    expect(reads.length).toBeGreaterThan(0);
    expect(Math.max(...reads.map((r) => r[1]))).toBe(8 + n);
    expect(await snapshot(b.store)).toBe(before);
  });

  it('a file larger than any state of the model is refused from its header', async () => {
    const b = await nodeEngine();
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const bytes = await bytesOf((await exportCartridge(hostOf(a.store, a.model), base.stateKey)).blob);
    // A claimed 2 GiB tensor: the header is well formed, the size is impossible.
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    const json = new TextEncoder().encode(
      JSON.stringify({ __metadata__: header.__metadata__, 'layers.0.key': { dtype: 'F32', shape: [2 ** 29], data_offsets: [0, 2 ** 31] } }),
    );
    const head = new Uint8Array(8 + json.length);
    new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
    head.set(json, 8);
    // A Blob that says it is 2 GiB without holding it: the parts are never read.
    const fake = Object.create(Blob.prototype, {
      size: { value: head.length + 2 ** 31 },
      slice: { value: (s: number, e: number) => new Blob([head.subarray(s, Math.min(e, head.length))]) },
    }) as Blob;
    const e = await refused(importCartridge(hostOf(b.store, b.model), fake));
    expect(e).toBeInstanceOf(InvalidCartridge);
    expect(e.message).toMatch(/more than any state of tiny-gpt2/);
  });

  it('fuzz: 1,200 mutated cartridges through importCartridge; each refused with a typed error and the store byte-identical, or imported whole', async () => {
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const child = await a.engine.infer({ stateKey: base.stateKey, delta: NEXT, maxNewTokens: 3 });
    const host = hostOf(a.store, a.model);
    const bases: Uint8Array[] = [];
    for (const codec of ['fp32', 'fp16', 'int8', 'kivi4'] as const)
      bases.push(await bytesOf((await exportCartridge(host, child.newStateKey, { codec, codecParams: { residual: 4 } })).blob));
    bases.push(await bytesOf((await exportCartridge(host, child.newStateKey, { delta: base.stateKey, codec: 'int8' })).blob));
    bases.push(await bytesOf((await exportCartridge(host, child.newStateKey, { delta: base.stateKey })).blob));

    // The target holds the parent, so that delta cartridges can apply.
    const b = await nodeEngine();
    await importCartridge(hostOf(b.store, b.model), (await exportCartridge(host, base.stateKey)).blob);
    const target = hostOf(b.store, b.model);
    const otherFp = await sha256Hex(new TextEncoder().encode('another model'));
    const r = rng(6_2024);
    const { pick, mutations } = cartridgeMutators(r, [a.model.fingerprint, otherFp, 'f'.repeat(64)]);
    let before = await snapshot(b.store);
    expect(before).toContain('bytes:');
    const counts: Record<string, number> = {};
    for (let k = 0; k < 1200; k++) {
      const src = bases[k % bases.length]!;
      let m = pick(mutations)(src);
      if (r() < 0.25) {
        try {
          m = pick(mutations)(m);
        } catch {
          /* the test's own JSON rewriting may not apply to an already broken header */
        }
      }
      let res: ImportResult;
      try {
        res = await importCartridge(target, k % 3 === 0 ? new Blob([m as Uint8Array<ArrayBuffer>]) : m);
      } catch (e) {
        const name = (e as Error)?.name;
        if (!(e instanceof InvalidCartridge || e instanceof ModelMismatch || e instanceof MissingParent))
          throw new Error(`mutation ${k}: leaked ${name}: ${(e as Error)?.message}`);
        if ((e as Error).message.includes('could not be read')) throw new Error(`mutation ${k}: an unchecked failure was caught late: ${(e as Error).message}`);
        const after = await snapshot(b.store);
        if (after !== before) throw new Error(`mutation ${k}: refused with ${name} but the store changed`);
        counts[name] = (counts[name] ?? 0) + 1;
        continue;
      }
      counts[res.reused ? 'reused' : 'imported'] = (counts[res.reused ? 'reused' : 'imported'] ?? 0) + 1;
      expect((await b.store.verify(res.stateKey)).ok).toBe(true);
      expect(await stateKey(a.model.fingerprint, (await b.store.getManifest(res.stateKey))!.tokens)).toBe(res.stateKey);
      before = await snapshot(b.store);
    }
    console.log(`import fuzz: ${JSON.stringify(counts)}`);
    expect(counts.InvalidCartridge).toBeGreaterThan(900);
    expect(counts.ModelMismatch).toBeGreaterThan(0);
  });
});

// A Mamba model for the store side only (shapes and fingerprint; it never runs):
// the runner has its own tests, and a round trip through infer waits for it in the worker.
async function fakeMamba(): Promise<StateModel> {
  const config = { n_layer: 2, d_model: 3, d_inner: 6, d_state: 4, d_conv: 4, dt_rank: 1, vocab_size: 50280 };
  const stateSpecs = [0, 1].flatMap((l) => [
    { name: `layers.${l}.conv`, dims: [6, 3] },
    { name: `layers.${l}.ssm`, dims: [6, 4] },
  ]);
  return {
    id: 'test-mamba',
    arch: 'mamba',
    fingerprint: await sha256Hex(new TextEncoder().encode('test-mamba')),
    identity: { arch: 'mamba', config, weights_sha256: '0'.repeat(64), tokenizer_sha256: '0'.repeat(64), dtype: 'fp32' },
    device: 'cpu',
    adapter: null,
    deviceReason: 'test',
    maxTokens: Infinity,
    vocabSize: 50280,
    stateSpecs,
    sliceable: false,
    keepsLastLogits: true,
    tokenize: async () => [],
    decode: () => '',
    open: () => {
      throw new Error('the test model does not run');
    },
    prefill: async () => {
      throw new Error('the test model does not run');
    },
    dispose: async () => undefined,
  };
}

function mambaState(tokens: number[], seed: number, base?: ModelState): ModelState {
  const r = rng(seed);
  return {
    tokens,
    tensors: [0, 1].flatMap((l) =>
      (
        [
          ['conv', 3],
          ['ssm', 4],
        ] as const
      ).map(([kind, w]) => {
        const name = `layers.${l}.${kind}`;
        const b = base?.tensors.find((t) => t.name === name);
        return { name, dims: [6, w], data: Float32Array.from({ length: 6 * w }, (_, i) => (b ? b.data[i]! * 0.9 : 0) + r() - 0.5) };
      }),
    ),
  };
}

describe('cartridges: Mamba states through the store (shapes only; the runner is tested elsewhere)', () => {
  it('whole and delta cartridges round trip exactly; a delta needs its parent', async () => {
    const model = await fakeMamba();
    const a = new StateStore({ dbName: `mamba-a-${Math.random()}` });
    const tokens = [10, 20, 30, 40, 50, 60, 70];
    const parent = mambaState(tokens.slice(0, 4), 1);
    const child = mambaState(tokens, 2, parent);
    const pk = await stateKey(model.fingerprint, parent.tokens);
    const ck = await stateKey(model.fingerprint, child.tokens);
    await storeState(a, { state: parent, modelId: model.id, modelFp: model.fingerprint });
    await storeState(a, { state: child, modelId: model.id, modelFp: model.fingerprint, parent: pk });

    const whole = await exportCartridge(hostOf(a, model), ck);
    const delta = await exportCartridge(hostOf(a, model), ck, { delta: pk, codec: 'fp32' });
    expect(delta.codec).toBe('delta');
    const f = readSafetensors(await bytesOf(delta.blob));
    expect(JSON.parse(f.metadata.codec_params!).inner).toBe('fp32');

    const b = new StateStore({ dbName: `mamba-b-${Math.random()}` });
    const before = await snapshot(b);
    const e = await refused(importCartridge(hostOf(b, model), delta.blob));
    expect(e).toBeInstanceOf(MissingParent);
    expect(e.message).toContain(pk);
    expect(await snapshot(b)).toBe(before);

    await importCartridge(hostOf(b, model), (await exportCartridge(hostOf(a, model), pk)).blob);
    const r = await importCartridge(hostOf(b, model), delta.blob);
    expect(r).toMatchObject({ stateKey: ck, parent: pk, codec: 'delta', reused: false });
    await b.dropHot();
    // fp32 inside the delta is XOR of the bits: exact.
    sameState(child, (await b.getState(ck)).state);

    const c = new StateStore({ dbName: `mamba-c-${Math.random()}` });
    expect((await importCartridge(hostOf(c, model), whole.blob)).stateKey).toBe(ck);
    await c.dropHot();
    sameState(child, (await c.getState(ck)).state);

    // Under the parent's key, a state with other numbers: the delta is refused, the store unchanged.
    const d = new StateStore({ dbName: `mamba-d-${Math.random()}` });
    await storeState(d, { state: mambaState(parent.tokens, 99), modelId: model.id, modelFp: model.fingerprint, arch: 'mamba' });
    const snap = await snapshot(d);
    const wrong = await refused(importCartridge(hostOf(d, model), delta.blob));
    expect(wrong).toBeInstanceOf(MissingParent);
    expect(wrong.message).toMatch(/not the one it was made from/);
    expect(await snapshot(d)).toBe(snap);
  });

  it('a GPT-2 cartridge offered to a Mamba model is refused, naming both', async () => {
    const g = await nodeEngine();
    const base = await g.engine.createState({ text: BASE });
    const bytes = await bytesOf((await exportCartridge(hostOf(g.store, g.model), base.stateKey)).blob);
    const model = await fakeMamba();
    const s = new StateStore({ dbName: `mamba-e-${Math.random()}` });
    const e = await refused(
      importCartridge(
        hostOf(s, model),
        editMeta(bytes, (m) => {
          m.model_id = 'tiny-gpt2';
        }),
      ),
    );
    expect(e).toBeInstanceOf(ModelMismatch);
    expect(e.message).toContain('tiny-gpt2');
    expect(e.message).toContain('test-mamba');
  });
});

describe('receipts in a cartridge', () => {
  it('carry the chain that made the state, verifiable by anyone', async () => {
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const child = await a.engine.infer({ stateKey: base.stateKey, delta: NEXT, maxNewTokens: 2 });
    const f = readSafetensors(await bytesOf((await exportCartridge(hostOf(a.store, a.model), child.newStateKey)).blob));
    const chain = JSON.parse(f.metadata.receipts!) as { json: string; hash: string }[];
    expect(chain.map((c) => c.hash)).toEqual([base.receipt.hash, child.receipt.hash]);
    expect(await verifyReceipts(chain)).toEqual({ ok: true });
  });
});

describe('importCartridge(url)', () => {
  afterEach(() => vi.unstubAllGlobals());

  it('downloads and imports; an HTTP failure or an impossible size is a clear error, and nothing is written', async () => {
    const a = await nodeEngine();
    const base = await a.engine.createState({ text: BASE });
    const bytes = await bytesOf((await exportCartridge(hostOf(a.store, a.model), base.stateKey)).blob);
    const asked: string[] = [];
    vi.stubGlobal('fetch', async (url: string) => {
      asked.push(url);
      if (url.endsWith('/ok.safetensors')) return new Response(bytes as Uint8Array<ArrayBuffer>, { status: 200 });
      if (url.endsWith('/huge.safetensors')) return new Response('x', { status: 200, headers: { 'content-length': String(2 ** 40) } });
      if (url.startsWith('https://offline.example/')) throw new TypeError('fetch failed');
      return new Response('no', { status: 404, statusText: 'Not Found' });
    });
    const b = await nodeEngine();
    const host = hostOf(b.store, b.model);
    const before = await snapshot(b.store);
    const e404 = await refused(importCartridge(host, 'https://cartridges.example/missing.safetensors'));
    expect(e404).toBeInstanceOf(InvalidInput);
    expect(e404.message).toMatch(/HTTP 404 Not Found/);
    expect(e404.message).toContain('https://cartridges.example/missing.safetensors');
    const eNet = await refused(importCartridge(host, 'https://offline.example/a.safetensors'));
    expect(eNet).toBeInstanceOf(InvalidInput);
    expect(eNet.message).toMatch(/fetch failed/);
    const eHuge = await refused(importCartridge(host, 'https://cartridges.example/huge.safetensors'));
    expect(eHuge).toBeInstanceOf(InvalidCartridge);
    expect(eHuge.message).toMatch(/more than any cartridge of tiny-gpt2/);
    expect(await snapshot(b.store)).toBe(before);
    const ok = await importCartridge(host, new URL('https://cartridges.example/ok.safetensors'));
    expect(ok).toMatchObject({ stateKey: base.stateKey, reused: false });
    expect(asked).toHaveLength(4);
  });
});
