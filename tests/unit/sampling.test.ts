import { describe, it, expect } from 'vitest';
import { makeSampler, argmax, mulberry32, validateSampling } from '../../src/engine/sampling.ts';
import { nodeEngine } from './support/node-engine.ts';

const logits = Float32Array.from([2, 1, 0.5, 3, -1, 2.5, 0, 1.5]);
const softmax = (l: Float32Array, t: number) => {
  const m = Math.max(...l);
  const e = Array.from(l, (x) => Math.exp((x - m) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
};
const draw = (s: Parameters<typeof makeSampler>[0], n: number) => {
  const f = makeSampler(s);
  return Array.from({ length: n }, () => f(logits));
};

describe('sampling', () => {
  it('greedy without a temperature; the same seed gives the same draws, another seed others', () => {
    expect(draw(undefined, 5)).toEqual([3, 3, 3, 3, 3]);
    expect(draw({ temperature: 0, seed: 9 }, 3)).toEqual([3, 3, 3]);
    expect(argmax(logits)).toBe(3);
    const a = draw({ temperature: 1, seed: 42 }, 200);
    expect(draw({ temperature: 1, seed: 42 }, 200)).toEqual(a);
    expect(draw({ temperature: 1, seed: 43 }, 200)).not.toEqual(a);
  });

  it('draws follow softmax(logits / T)', () => {
    for (const T of [0.5, 1, 2]) {
      const n = 20000;
      const counts = new Array(logits.length).fill(0);
      for (const t of draw({ temperature: T, seed: 7 }, n)) counts[t]++;
      const p = softmax(logits, T);
      p.forEach((q, i) => expect(Math.abs(counts[i] / n - q), `token ${i} at T=${T}`).toBeLessThan(4 * Math.sqrt((q * (1 - q)) / n) + 1e-3));
    }
  });

  it('top-k and top-p limit the candidates to the most likely tokens', () => {
    expect(new Set(draw({ temperature: 1, topK: 2, seed: 1 }, 500))).toEqual(new Set([3, 5]));
    expect(new Set(draw({ temperature: 1, topK: 1, seed: 1 }, 50))).toEqual(new Set([3]));
    // The nucleus, computed here from the probabilities: the fewest most likely tokens reaching topP.
    const p = softmax(logits, 1);
    const order = p.map((q, i) => [q, i] as const).sort((x, y) => y[0] - x[0]);
    for (const topP of [0.5, 0.7, 0.9]) {
      const want = new Set<number>();
      let c = 0;
      for (const [q, i] of order) {
        want.add(i);
        c += q;
        if (c >= topP) break;
      }
      expect(want.size).toBeGreaterThan(1);
      expect(want.size).toBeLessThan(logits.length);
      expect(new Set(draw({ temperature: 1, topP, seed: 2 }, 3000)), `topP ${topP}`).toEqual(want);
    }
    expect(new Set(draw({ temperature: 1, topP: 0.01, seed: 2 }, 100))).toEqual(new Set([3]));
  });

  it('mulberry32 is uniform on [0, 1) and seeded', () => {
    const r = mulberry32(123);
    const xs = Array.from({ length: 10000 }, r);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(Math.abs(xs.reduce((a, b) => a + b, 0) / xs.length - 0.5)).toBeLessThan(0.01);
    expect(Array.from({ length: 5 }, mulberry32(123))).toEqual(xs.slice(0, 5));
  });

  it('rejects bad settings', () => {
    for (const s of [{ temperature: -1 }, { temperature: NaN }, { topK: 1.5 }, { topP: 0 }, { topP: 1.5 }, { seed: 0.5 }])
      expect(() => validateSampling(s)).toThrow(/sampling/);
  });

  it('infer from a stored state equals recomputing the whole text, greedy and seeded', async () => {
    const base = 'A stored state continued by a delta must give what the whole text gives. '.repeat(4);
    const delta = ' And then';
    for (const sampling of [undefined, { temperature: 0.9, topK: 40, topP: 0.95, seed: 1234 }, { temperature: 1.3, seed: 7 }]) {
      const { engine, store } = await nodeEngine();
      const a = await engine.createState({ text: base });
      await store.dropHot();
      const cached = await engine.infer({ stateKey: a.stateKey, delta, maxNewTokens: 16, sampling });
      expect(cached.savings.tokensReused).toBe(a.tokens);
      const { engine: e2, model } = await nodeEngine();
      const whole = await e2.createState({ tokens: await model.tokenize(base + delta) });
      const recomputed = await e2.infer({ stateKey: whole.stateKey, maxNewTokens: 16, sampling });
      expect(cached.outputTokens).toEqual(recomputed.outputTokens);
      expect(cached.newStateKey).toBe(recomputed.newStateKey);
      if (sampling) {
        // And the draws are not simply greedy: the seed matters.
        const other = await e2.infer({ stateKey: whole.stateKey, maxNewTokens: 16, sampling: { ...sampling, seed: sampling.seed + 1 } });
        expect(other.outputTokens).not.toEqual(recomputed.outputTokens);
      }
    }
  });
});
