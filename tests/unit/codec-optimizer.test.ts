import { describe, it, expect } from 'vitest';
import { nodeEngine } from './support/node-engine.ts';
import { loadNodeModel, pseudoTokens } from './support/codec-models.ts';
import { chooseCodec, codecChooser, evaluateCodecs, encodeState, ALL_CODECS, type CodecReport } from '../../src/engine/codec-optimizer.ts';
import { klDivergence, measureQuality } from '../../src/engine/quality.ts';
import { InvalidInput, StateNotFound } from '../../src/core/errors.ts';
import type { CodecConstraints } from '../../src/store/records.ts';
import type { ModelState, StateModel } from '../../src/models/types.ts';
import { storeState } from './support/put.ts';

const BASE = 'The optimizer tries every codec on the state itself and keeps the smallest that still answers the same. '.repeat(2);

function row(r: CodecReport, c: string) {
  const x = r.rows.find((y) => y.codec === c);
  expect(x, c).toBeDefined();
  return x!;
}

/** Stores the state with the chosen codec, reads it back, and measures again from scratch. */
async function remeasure(model: StateModel, reference: ModelState, r: CodecReport, c: CodecConstraints) {
  const { store } = await nodeEngine();
  const { key } = await storeState(store, { state: reference, modelId: model.id, modelFp: model.fingerprint, codec: r.choice });
  await store.dropHot();
  const back = (await store.getState(key)).state;
  const q = await measureQuality(model, reference, back, { probeTokens: c.probeTokens, greedyTokens: c.greedyTokens ?? 32 });
  if (c.maxLogitError !== undefined) expect(q.maxLogitError).toBeLessThanOrEqual(c.maxLogitError);
  if (c.maxKL !== undefined) expect(q.klMax).toBeLessThanOrEqual(c.maxKL);
  if (c.requireGreedyMatch ?? true) expect(q.greedyMatch).toBe(true);
  return q;
}

describe('quality metrics', () => {
  it('KL is 0 for equal logits and positive otherwise', () => {
    const p = new Float32Array([1, 2, 3, 0.5]);
    expect(klDivergence(p, p)).toBe(0);
    expect(klDivergence(p, new Float32Array([1, 2, 2.5, 0.5]))).toBeGreaterThan(0);
    // Shifting all logits leaves the distribution as it was.
    expect(
      klDivergence(
        p,
        p.map((x) => x + 7),
      ),
    ).toBeLessThan(1e-12);
  });

  it('fp32 against itself measures zero; a perturbed state measures more than zero', async () => {
    const { model } = await nodeEngine();
    const { state } = await model.prefill(await model.tokenize(BASE));
    const same = await measureQuality(model, state, state, { greedyTokens: 4 });
    expect(same).toMatchObject({ maxLogitError: 0, klMax: 0, greedyMatch: true, greedyAgree: 4, positions: 4 });
    const noisy: ModelState = { ...state, tensors: state.tensors.map((t) => ({ ...t, data: t.data.map((x, i) => x + (i % 7 === 0 ? 0.05 : 0)) })) };
    const q = await measureQuality(model, state, noisy, { greedyTokens: 4 });
    expect(q.maxLogitError).toBeGreaterThan(0);
    expect(q.meanLogitError).toBeGreaterThan(0);
    expect(q.meanLogitError).toBeLessThanOrEqual(q.maxLogitError);
    expect(q.klMax).toBeGreaterThan(0);
  });
});

describe('chooseCodec', () => {
  it('evaluates every codec; maxLogitError 0 picks fp32', async () => {
    const { engine, store, model } = await nodeEngine();
    const a = await engine.createState({ text: BASE });
    const r = await chooseCodec({ store, getModel: async () => model }, a.stateKey, { maxLogitError: 0, greedyTokens: 8 });
    expect(r.rows.map((x) => x.codec)).toEqual([...ALL_CODECS]);
    expect(r.choice).toBe('fp32');
    expect(row(r, 'fp32')).toMatchObject({ ratio: 1, lossless: true, meets: true });
    // Every lossy codec is smaller, and measurably not exact, so each was refused for its error.
    for (const c of ['fp16', 'int8', 'kivi4']) {
      const x = row(r, c);
      expect(x.bytes).toBeLessThan(r.fp32Bytes);
      expect(x.metrics!.maxLogitError).toBeGreaterThan(0);
      expect(x.meets).toBe(false);
      expect(x.failed.join(' ')).toMatch(/max logit error/);
    }
    expect(row(r, 'int8').bytes).toBeLessThan(row(r, 'fp16').bytes);
    expect(row(r, 'kivi4').bytes).toBeLessThan(row(r, 'int8').bytes);
    expect(r.stateKey).toBe(a.stateKey);
  });

  it('picks a smaller codec when the bound allows, and its choice holds when re-measured', async () => {
    const { engine, store, model } = await nodeEngine();
    const a = await engine.createState({ text: BASE });
    const deps = { store, getModel: async () => model };
    const open = await chooseCodec(deps, a.stateKey, { requireGreedyMatch: false, greedyTokens: 8 });
    // With no limit the smallest codec wins.
    expect(open.choice).toBe([...open.rows].sort((x, y) => x.bytes - y.bytes)[0]!.codec);
    expect(open.choice).not.toBe('fp32');

    // A bound just above int8's measured error admits int8 (and anything at least as good).
    const int8Err = row(open, 'int8').metrics!.maxLogitError;
    const c: CodecConstraints = { maxLogitError: int8Err * 1.01, greedyTokens: 8 };
    const r = await chooseCodec(deps, a.stateKey, c);
    expect(r.choice).not.toBe('fp32');
    expect(row(r, r.choice).bytes).toBeLessThanOrEqual(row(r, 'int8').bytes);
    for (const x of r.rows) if (x.meets) expect(x.bytes).toBeGreaterThanOrEqual(row(r, r.choice).bytes);
    const { state } = await store.getState(a.stateKey);
    await remeasure(model, state, r, c);

    // A KL limit works the same way.
    const kl = { maxKL: row(open, 'fp16').metrics!.klMax * 1.01 + 1e-12, greedyTokens: 8 };
    const rk = await chooseCodec(deps, a.stateKey, kl);
    expect(rk.choice).not.toBe('fp32');
    await remeasure(model, state, rk, kl);
  });

  it('a lossy stored state is measured against its fp32 recompute, not itself', async () => {
    const { engine, store, model } = await nodeEngine();
    store.setCodecPolicy({ codec: 'kivi4' });
    const a = await engine.createState({ text: BASE });
    const r = await chooseCodec({ store, getModel: async () => model }, a.stateKey, { greedyTokens: 4 });
    // Were the kivi4 state its own reference, kivi4 would measure zero error.
    expect(row(r, 'kivi4').metrics!.maxLogitError).toBeGreaterThan(0);
    expect(row(r, 'fp32').metrics!.maxLogitError).toBe(0);
  });

  it("the store's 'auto' policy stores what the optimizer chooses", async () => {
    const { engine, store, model } = await nodeEngine();
    const c: CodecConstraints = { maxLogitError: 0.05, greedyTokens: 8 };
    store.setCodecPolicy(
      { codec: 'auto', constraints: c },
      codecChooser(async () => model),
    );
    const a = await engine.createState({ text: BASE });
    const m = (await store.getManifest(a.stateKey))!;
    const { state } = await model.prefill(m.tokens);
    const r = await evaluateCodecs(model, state, c);
    expect(m.codec).toBe(r.choice);
    expect(m.bytes).toBe(encodeState(state, r.choice).bytes);
  });

  it('works on a Mamba state, and says what it measured', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const { state } = await model.prefill(pseudoTokens(40, model.vocabSize, 1));
    const r = await evaluateCodecs(model, state, { maxLogitError: 0, greedyTokens: 8 });
    expect(r.choice).toBe('fp32');
    expect(r.rows).toHaveLength(4);
    expect(r.fp32Bytes).toBe(state.tensors.reduce((a, t) => a + t.data.byteLength, 0));
    const open = await evaluateCodecs(model, state, { requireGreedyMatch: false, greedyTokens: 8 });
    expect(row(open, open.choice).bytes).toBeLessThan(r.fp32Bytes);
    for (const x of open.rows) expect(x.metrics!.positions).toBe(8);
  });

  it('refuses bad constraints and unknown states', async () => {
    const { store, model } = await nodeEngine();
    const deps = { store, getModel: async () => model };
    await expect(chooseCodec(deps, 'sha256:' + '00'.repeat(32))).rejects.toBeInstanceOf(StateNotFound);
    const { state } = await model.prefill([1, 2, 3]);
    await expect(evaluateCodecs(model, state, { maxLogitError: -1 })).rejects.toBeInstanceOf(InvalidInput);
    await expect(evaluateCodecs(model, state, { probeTokens: [model.vocabSize] })).rejects.toBeInstanceOf(InvalidInput);
    await expect(evaluateCodecs(model, state, { greedyTokens: 0 })).rejects.toBeInstanceOf(InvalidInput);
  });
});
