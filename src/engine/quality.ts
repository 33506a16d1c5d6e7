import type { ModelState, StateModel } from '../models/types.ts';
import { InvalidInput } from '../core/errors.ts';
import { argmax } from './sampling.ts';

/**
 * How much a state changed by encoding changes what the model does next,
 * measured by running the model (weights of a state say little on their own:
 * a big error in a channel attention ignores costs nothing, a small one in a
 * channel it reads can flip a token).
 *
 * The probe: feed `probeTokens` after the state, then decode `greedyTokens`
 * greedily from the fp32 state. The candidate state is teacher-forced along
 * the same tokens, so every position compares like with like; greedy decoding
 * from the candidate is identical exactly when its argmax agrees with fp32's
 * at every position.
 */
export interface ProbeOptions {
  /** Fed after the state before the first compared position (default: the state's last token again). */
  probeTokens?: number[];
  /** Positions compared after the probe, each one greedy token (default 32). */
  greedyTokens?: number;
  /**
   * Teacher forcing: the tokens fed between compared positions instead of
   * fp32's greedy ones (held-out text after the state). Then there are
   * teacherTokens.length + 1 positions and greedyTokens is ignored.
   */
  teacherTokens?: number[];
}

export interface Reference {
  probeTokens: number[];
  /** fp32's greedy tokens after the probe. */
  greedy: number[];
  /** fp32 logits at each compared position (greedy.length of them). */
  logits: Float32Array[];
  /** The tokens fed after each position but the last (teacher forcing); absent: the greedy ones. */
  fed?: number[];
}

export interface QualityMetrics {
  /** max |logit − fp32 logit| over every compared position and vocabulary entry. */
  maxLogitError: number;
  meanLogitError: number;
  /** KL(fp32 ‖ candidate) of the next-token distributions, in nats: the largest and the mean over positions. */
  klMax: number;
  klMean: number;
  /** Greedy decoding picks fp32's tokens at every compared position. */
  greedyMatch: boolean;
  /** Positions (of `positions`) where the candidate's argmax equals fp32's token. */
  greedyAgree: number;
  positions: number;
}

function defaultProbe(state: ModelState, o: ProbeOptions): { probe: number[]; n: number } {
  const n = o.teacherTokens ? o.teacherTokens.length + 1 : (o.greedyTokens ?? 32);
  if (!Number.isInteger(n) || n < 1) throw new InvalidInput(`quality probe: greedyTokens is a whole number ≥ 1, got ${n}`);
  const probe = o.probeTokens && o.probeTokens.length > 0 ? [...o.probeTokens] : state.tokens.slice(-1);
  if (probe.length === 0) throw new InvalidInput('quality probe: the state has no tokens and no probe tokens were given');
  return { probe, n };
}

/** fp32's side of the comparison: its greedy continuation and logits at each position. */
export async function referenceRun(model: StateModel, state: ModelState, o: ProbeOptions = {}): Promise<Reference> {
  const { probe, n } = defaultProbe(state, o);
  checkRoom(model, state, probe.length + n - 1);
  let r = await model.prefill(probe, state);
  const logits: Float32Array[] = [];
  const greedy: number[] = [];
  const fed = o.teacherTokens;
  for (let i = 0; i < n; i++) {
    logits.push(r.logits);
    const t = argmax(r.logits);
    greedy.push(t);
    // The last greedy token needs no run: nothing after it is compared.
    if (i < n - 1) r = await model.prefill([fed ? fed[i]! : t], r.state);
  }
  return { probeTokens: probe, greedy, logits, ...(fed ? { fed: [...fed] } : {}) };
}

/** Runs `candidate` along the reference's tokens and compares every position. */
export async function compareToReference(model: StateModel, candidate: ModelState, ref: Reference): Promise<QualityMetrics> {
  let r = await model.prefill(ref.probeTokens, candidate);
  let maxErr = 0;
  let sumErr = 0;
  let count = 0;
  let klMax = 0;
  let klSum = 0;
  let agree = 0;
  const n = ref.greedy.length;
  for (let i = 0; i < n; i++) {
    const p = ref.logits[i]!;
    const q = r.logits;
    if (p.length !== q.length) throw new InvalidInput(`quality probe: logits of length ${q.length}, the reference has ${p.length}`);
    for (let j = 0; j < p.length; j++) {
      const d = Math.abs(p[j]! - q[j]!);
      if (d > maxErr || d !== d) maxErr = d !== d ? Infinity : d;
      sumErr += d;
    }
    count += p.length;
    const kl = klDivergence(p, q);
    klMax = Math.max(klMax, kl);
    klSum += kl;
    if (argmax(q) === ref.greedy[i]) agree++;
    if (i < n - 1) r = await model.prefill([ref.fed ? ref.fed[i]! : ref.greedy[i]!], r.state);
  }
  return {
    maxLogitError: maxErr,
    meanLogitError: count ? sumErr / count : 0,
    klMax,
    klMean: n ? klSum / n : 0,
    greedyMatch: agree === n,
    greedyAgree: agree,
    positions: n,
  };
}

/** Metrics of `candidate` against `reference` (the fp32 state), for one probe. */
export async function measureQuality(model: StateModel, reference: ModelState, candidate: ModelState, o: ProbeOptions = {}): Promise<QualityMetrics> {
  return compareToReference(model, candidate, await referenceRun(model, reference, o));
}

/** KL(softmax(p) ‖ softmax(q)) in nats, in float64 with the usual max shift. */
export function klDivergence(p: Float32Array, q: Float32Array): number {
  const lp = logSoftmax(p);
  const lq = logSoftmax(q);
  let kl = 0;
  for (let i = 0; i < lp.length; i++) {
    const a = lp[i]!;
    if (a > -745) kl += Math.exp(a) * (a - lq[i]!);
  }
  // Rounding can leave a tiny negative for equal distributions.
  return Math.max(kl, 0);
}

function logSoftmax(x: Float32Array): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i]! > m) m = x[i]!;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i]! - m);
  const lse = m + Math.log(s);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! - lse;
  return out;
}

function checkRoom(model: StateModel, state: ModelState, extra: number): void {
  if (state.tokens.length + extra > model.maxTokens) {
    throw new InvalidInput(
      `quality probe: the state has ${state.tokens.length} tokens and the probe needs ${extra} more, past ${model.id}'s limit of ${model.maxTokens}; use fewer probe or greedy tokens`,
    );
  }
}
