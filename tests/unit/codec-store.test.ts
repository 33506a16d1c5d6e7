import { describe, it, expect } from 'vitest';
import { promisifyRequest } from 'idb-keyval';
import { nodeEngine } from './support/node-engine.ts';
import { loadNodeModel, pseudoTokens } from './support/codec-models.ts';
import { codecs, maxErrorBound, type CodecName } from '../../src/formats/codecs.ts';
import { codecParamsFor, cutBlocks, decodeBlock, encodeBlock, tensorSpecs, sliceDims } from '../../src/store/blocks.ts';
import { encodeState } from '../../src/engine/codec-optimizer.ts';
import { Engine } from '../../src/engine/engine.ts';
import { StateStore } from '../../src/store/store.ts';
import { digestOf } from '../../src/core/sha256.ts';
import { KeyChain, stateKey } from '../../src/core/key-chain.ts';
import { CorruptBlob, InvalidInput } from '../../src/core/errors.ts';
import type { ModelState } from '../../src/models/types.ts';
import type { BlockRecord } from '../../src/store/records.ts';
import { storeState } from './support/put.ts';

const BASE = 'A state stored with a smaller codec must restore, continue, and prove its bytes like any other. '.repeat(2);
const LOSSY: CodecName[] = ['fp16', 'int8', 'kivi4'];

/** Every element within the codec's stated bound; returns the worst error/bound ratio seen. */
function expectWithinBound(codec: CodecName, dims: number[], data: Float32Array, name: string): number {
  const params = codecParamsFor(name);
  const enc = codecs[codec].encode({ dims, data }, params);
  const dec = codecs[codec].decode(enc);
  expect(dec.dims).toEqual(dims);
  const bound = maxErrorBound(codec, { dims, data }, params);
  let worst = 0;
  let bad = -1;
  for (let i = 0; i < data.length; i++) {
    const e = Math.abs(dec.data[i]! - data[i]!);
    if (e > bound[i]!) bad = i;
    if (bound[i]! > 0) worst = Math.max(worst, e / bound[i]!);
    else if (e !== 0) bad = i;
  }
  expect(bad, `${codec} ${name}: element ${bad} off by more than its bound`).toBe(-1);
  return worst;
}

/** Every tensor slice of every block of a real state, as the store encodes them. */
function checkStateBlocks(state: ModelState): void {
  const specs = tensorSpecs(state);
  for (const b of cutBlocks(state)) {
    const dims = sliceDims(specs, b.end - b.start);
    let o = 0;
    specs.forEach((s, i) => {
      const n = dims[i]!.reduce((a, c) => a * c, 1);
      const slice = b.data.slice(o, o + n);
      o += n;
      expect(expectWithinBound('fp32', dims[i]!, slice, s.name)).toBe(0);
      for (const c of LOSSY) expectWithinBound(c, dims[i]!, slice, s.name);
    });
    // The block frame carries the same encodings, in tensor order, and decodes
    // to exactly what the codecs decode (int8 has its own fused path there).
    for (const c of LOSSY) {
      const back = decodeBlock(specs, b.start, b.end, c, encodeBlock(specs, b, c));
      expect(back.length).toBe(b.data.length);
      let at = 0;
      specs.forEach((s, i) => {
        const n = dims[i]!.reduce((a, x) => a * x, 1);
        const want = codecs[c].decode(codecs[c].encode({ dims: dims[i]!, data: b.data.slice(at, at + n) }, codecParamsFor(s.name))).data;
        expect(maxAbsDiff(back.subarray(at, at + n), want), `${c} ${s.name}`).toBe(0);
        at += n;
      });
    }
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('codecs on real states', () => {
  it('round-trip within their bounds on tiny-gpt2 KV blocks', async () => {
    const { model } = await nodeEngine();
    const { state } = await model.prefill(await model.tokenize(BASE));
    expect(state.tokens.length).toBeGreaterThan(32);
    // The KV values are not trivially small: a bound check on zeros would prove nothing.
    expect(Math.max(...state.tensors.map((t) => Math.max(...Array.from(t.data, Math.abs))))).toBeGreaterThan(0.5);
    checkStateBlocks(state);
  });

  it('round-trip within their bounds on tiny-mamba conv and SSM states', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const { state } = await model.prefill(pseudoTokens(40, model.vocabSize));
    expect(state.tensors.map((t) => t.name)).toEqual(model.stateSpecs.map((s) => s.name));
    checkStateBlocks(state);
  });

  it('a lossy codec changes the state, and the store reads back exactly what it wrote', async () => {
    const { model } = await nodeEngine();
    const { state } = await model.prefill(await model.tokenize(BASE));
    for (const c of LOSSY) {
      const { decoded, bytes } = encodeState(state, c);
      expect(bytes).toBeLessThan(encodeState(state, 'fp32').bytes);
      expect(maxAbsDiff(decoded.tensors[0]!.data, state.tensors[0]!.data)).toBeGreaterThan(0);
    }
  });
});

describe('store with a codec policy', () => {
  it('stores a state as int8: keys, manifest and sizes say so, and it restores and continues', async () => {
    const { engine, store, model } = await nodeEngine();
    store.setCodecPolicy({ codec: 'int8' });
    const a = await engine.createState({ text: BASE });
    const m = (await store.getManifest(a.stateKey))!;
    expect(m.codec).toBe('int8');
    expect(m.blocks.every((b) => b.codec === 'int8' && b.key.endsWith('/int8'))).toBe(true);
    const fp32Bytes = m.tokens.length * model.stateSpecs.length * model.stateSpecs[0]!.dims[0]! * model.stateSpecs[0]!.dims[2]! * 4;
    expect(m.bytes).toBeLessThan(fp32Bytes / 2);
    expect(m.bytes).toBeGreaterThan(fp32Bytes / 4);

    // What the store reads back is exactly the int8 round trip of the state the model made.
    const { state: fresh } = await model.prefill(m.tokens);
    const expected = encodeState(fresh, 'int8').decoded;
    // The hot tier serves the decoded int8 numbers too, not the fp32 state it was given.
    const warm = await store.getState(a.stateKey);
    expect(warm.tier).toBe('hot');
    warm.state.tensors.forEach((t, i) => expect(maxAbsDiff(t.data, expected.tensors[i]!.data)).toBe(0));
    await store.dropHot();
    const got = await store.getState(a.stateKey);
    expect(got.tier).toBe('stored');
    got.state.tensors.forEach((t, i) => expect(Array.from(t.data)).toEqual(Array.from(expected.tensors[i]!.data)));

    // It continues, and the hot and the stored tier agree token for token.
    const hot = await engine.infer({ stateKey: a.stateKey, delta: ' Then', maxNewTokens: 8 });
    await store.dropHot();
    const cold = await engine.infer({ stateKey: a.stateKey, delta: ' Then', maxNewTokens: 8 });
    expect(cold.tier).toBe('stored');
    expect(cold.outputTokens).toEqual(hot.outputTokens);
    expect(cold.savings.tokensReused).toBe(m.tokens.length);
    // And matches running the model by hand on the decoded int8 state.
    let r = await model.prefill(await model.tokenize(' Then'), expected);
    const byHand: number[] = [];
    for (let i = 0; i < 8; i++) {
      let best = 0;
      for (let j = 1; j < r.logits.length; j++) if (r.logits[j]! > r.logits[best]!) best = j;
      byHand.push(best);
      r = await model.prefill([best], r.state);
    }
    expect(hot.outputTokens).toEqual(byHand);
  });

  it("an int8 block's digest covers its encoded bytes; one flipped byte is a CorruptBlob", async () => {
    const { engine, store, model } = await nodeEngine();
    store.setCodecPolicy({ codec: 'int8' });
    const a = await engine.createState({ text: BASE });
    const m = (await store.getManifest(a.stateKey))!;
    const { state } = await model.prefill(m.tokens);
    const specs = tensorSpecs(state);
    const blocks = cutBlocks(state);
    for (let i = 0; i < blocks.length; i++) {
      const enc = encodeBlock(specs, blocks[i]!, 'int8');
      expect(m.blocks[i]!.bytes).toBe(enc.byteLength);
      expect(m.blocks[i]!.digest).toBe(await digestOf(enc));
    }
    const victim = m.blocks[1]!;
    await store.idb('readwrite', async (s) => {
      const rec = (await promisifyRequest(s.get('b:' + victim.key))) as BlockRecord;
      const bytes = new Uint8Array(rec.data);
      bytes[bytes.length - 5]! ^= 0x01;
      s.put({ ...rec, data: bytes.buffer }, 'b:' + victim.key);
      return promisifyRequest(s.transaction);
    });
    await store.dropHot();
    await expect(store.getState(a.stateKey)).rejects.toBeInstanceOf(CorruptBlob);
    expect((await store.verify(a.stateKey)).ok).toBe(false);
  });

  it('prefix lookup finds stored int8 blocks, and the next state reuses them', async () => {
    const { engine, store, model } = await nodeEngine();
    store.setCodecPolicy({ codec: 'int8' });
    const a = await engine.createState({ text: BASE + ' one branch' });
    const b = await engine.createState({ text: BASE + ' another, different branch' });
    const common = await model.tokenize(BASE);
    // Only the full blocks inside the common text can come from a block run.
    expect(b.reused).toBe(Math.floor(common.length / 16) * 16);
    expect(b.reused).toBeGreaterThan(0);
    const ma = (await store.getManifest(a.stateKey))!;
    const full = Math.floor(ma.tokens.length / 16);
    const chain = await KeyChain.create(model.fingerprint, ma.tokens);
    // Every full block is stored as int8 only, under its chain name.
    expect(await store.storedBlockRun(chain, 0, full)).toBe(full);
    expect(ma.blocks.slice(0, full).map((x) => x.key)).toEqual(Array.from({ length: full }, (_, i) => `${chain.blockKey(i)}/int8`));
    // A state whose tokens are all in stored blocks is rebuilt from them alone.
    const tokens = (await store.getManifest(b.stateKey))!.tokens.slice(0, b.reused);
    const rebuilt = await store.restoreBlockPrefix(await KeyChain.create(model.fingerprint, tokens), tokens.length / 16, model.stateSpecs);
    expect(rebuilt?.tokens).toEqual(tokens);
  });

  it('states of different codecs sit side by side; each reads back its own', async () => {
    const { engine, store, model } = await nodeEngine();
    const tokens = await model.tokenize(BASE);
    const { state } = await model.prefill(tokens);
    const key = await stateKey(model.fingerprint, tokens);
    for (const c of ['fp32', 'fp16', 'kivi4'] as const) {
      await storeState(store, { state, modelId: model.id, modelFp: model.fingerprint, codec: c });
      await store.dropHot();
      const back = await store.getState(key);
      expect(back.manifest.codec).toBe(c);
      const want = encodeState(state, c).decoded;
      back.state.tensors.forEach((t, i) => expect(maxAbsDiff(t.data, want.tensors[i]!.data)).toBe(0));
    }
    void engine;
  });

  it('a Mamba state stored as kivi4 restores as its kivi4 round trip and continues', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const store = new StateStore({ dbName: `codec-mamba-${process.pid}`, codec: { codec: 'kivi4' } });
    const engine = new Engine(store, async () => model);
    const tokens = pseudoTokens(40, model.vocabSize, 3);
    const a = await engine.createState({ tokens });
    const m = (await store.getManifest(a.stateKey))!;
    expect(m.codec).toBe('kivi4');
    expect(m.blocks).toHaveLength(1);
    const { state, logits } = await model.prefill(tokens);
    state.logits = logits; // a Mamba state is stored with its last logits
    const want = encodeState(state, 'kivi4');
    expect(m.bytes).toBe(want.bytes);
    await store.dropHot();
    const back = await store.getState(a.stateKey);
    back.state.tensors.forEach((t, i) => expect(maxAbsDiff(t.data, want.decoded.tensors[i]!.data)).toBe(0));
    const cont = await engine.infer({ stateKey: a.stateKey, deltaTokens: [5, 6], maxNewTokens: 4 });
    expect(cont.outputTokens).toHaveLength(4);
    expect(cont.savings.tokensReused).toBe(tokens.length);
  });

  it("refuses an unknown codec and 'auto' without a chooser", () => {
    const store = new StateStore({ dbName: `codec-bad-${process.pid}` });
    expect(() => store.setCodecPolicy({ codec: 'int4' as 'int8' })).toThrow(InvalidInput);
    expect(() => store.setCodecPolicy({ codec: 'auto' })).toThrow(InvalidInput);
    expect(store.getCodecPolicy().codec).toBe('fp32');
  });
});
