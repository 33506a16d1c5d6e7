import { InvalidInput } from '../core/errors.ts';
import { mulberry32 } from '../core/prng.ts';

export interface Sampling {
  /** 0 or absent: greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampler; the same seed and inputs give the same tokens. */
  seed?: number;
}

export { mulberry32 } from '../core/prng.ts';

export function argmax(logits: Float32Array): number {
  let best = 0;
  let v = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i]! > v) {
      v = logits[i]!;
      best = i;
    }
  }
  return best;
}

export function validateSampling(s: Sampling | undefined): void {
  if (!s) return;
  if (s.temperature !== undefined && !(s.temperature >= 0 && Number.isFinite(s.temperature)))
    throw new InvalidInput('sampling.temperature must be a number ≥ 0 (0 is greedy)');
  if (s.topK !== undefined && !(Number.isInteger(s.topK) && s.topK >= 0)) throw new InvalidInput('sampling.topK must be a whole number ≥ 0 (0 turns it off)');
  if (s.topP !== undefined && !(s.topP > 0 && s.topP <= 1)) throw new InvalidInput('sampling.topP must be in (0, 1]');
  if (s.seed !== undefined && !Number.isInteger(s.seed)) throw new InvalidInput('sampling.seed must be an integer');
}

/** A sampler over one request: greedy without a temperature, else seeded top-k / top-p. */
export function makeSampler(s: Sampling | undefined): (logits: Float32Array) => number {
  const temp = s?.temperature ?? 0;
  if (!temp) return argmax;
  const rand = mulberry32(s?.seed ?? 0);
  const topK = s?.topK ?? 0;
  const topP = s?.topP ?? 1;
  return (logits) => {
    const idx = Array.from({ length: logits.length }, (_, i) => i);
    // Ties broken by id so the order, and thus the draw, is the same everywhere.
    idx.sort((a, b) => logits[b]! - logits[a]! || a - b);
    const k = topK > 0 ? Math.min(topK, idx.length) : idx.length;
    const cand = idx.slice(0, k);
    const max = logits[cand[0]!]!;
    const w = cand.map((i) => Math.exp((logits[i]! - max) / temp));
    const sum = w.reduce((a, b) => a + b, 0);
    let keep = cand.length;
    if (topP < 1) {
      let c = 0;
      for (let j = 0; j < cand.length; j++) {
        c += w[j]! / sum;
        if (c >= topP) {
          keep = j + 1;
          break;
        }
      }
    }
    const total = w.slice(0, keep).reduce((a, b) => a + b, 0);
    let r = rand() * total;
    for (let j = 0; j < keep; j++) {
      r -= w[j]!;
      if (r <= 0) return cand[j]!;
    }
    return cand[keep - 1]!;
  };
}
