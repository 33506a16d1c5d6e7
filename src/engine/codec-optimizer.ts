import type { ModelState, StateModel } from '../models/types.ts';
import type { StateStore, CodecChooser } from '../store/store.ts';
import type { CodecConstraints } from '../store/records.ts';
import { cutBlocks, decodeBlock, encodeBlock, joinBlocks, tensorSpecs, type BlockCodec } from '../store/blocks.ts';
import { InvalidInput, ModelMismatch, StateNotFound } from '../core/errors.ts';
import { compareToReference, referenceRun, type ProbeOptions, type QualityMetrics } from './quality.ts';

/**
 * TenPak's idea applied to states: try every codec on the state itself, run
 * the model on each decoded copy, and keep the smallest whose behaviour stays
 * within the limits. The whole table is returned, so a person can see what
 * the choice cost and what it saved.
 */
export const ALL_CODECS: readonly BlockCodec[] = ['fp32', 'fp16', 'int8', 'kivi4'];

export interface CodecRow {
  codec: BlockCodec;
  /** Bytes the store would write for this state with this codec (all blocks). */
  bytes: number;
  /** bytes / fp32 bytes. */
  ratio: number;
  lossless: boolean;
  /** Measured against fp32; null when the codec could not encode the state (see `error`). */
  metrics: QualityMetrics | null;
  /** Every constraint holds (fp32, being the original bytes, always does). */
  meets: boolean;
  /** The constraints this codec broke, in words. */
  failed: string[];
  error?: string;
}

export interface CodecReport {
  model: string;
  tokens: number;
  fp32Bytes: number;
  constraints: Required<Pick<CodecConstraints, 'requireGreedyMatch' | 'greedyTokens'>> & CodecConstraints;
  probeTokens: number[];
  rows: CodecRow[];
  /** The smallest codec meeting every constraint. */
  choice: BlockCodec;
  /**
   * What fp32 does on the probe, to read the table by: on a flat
   * distribution (seeded weights at init scale) greedy agreement says little.
   */
  reference: { greedy: number[]; distinctGreedy: number; maxAbsLogit: number; meanTopProb: number };
  stateKey?: string;
}

/** A state as the store would write it with `codec`, and as it would read it back. */
export function encodeState(state: ModelState, codec: BlockCodec): { bytes: number; blobs: Uint8Array[]; decoded: ModelState } {
  const specs = tensorSpecs(state);
  const blocks = cutBlocks(state);
  const blobs: Uint8Array[] = [];
  const back: { start: number; end: number; data: Float32Array }[] = [];
  let bytes = 0;
  for (const b of blocks) {
    const blob = encodeBlock(specs, b, codec);
    blobs.push(blob);
    bytes += blob.byteLength;
    back.push({ start: b.start, end: b.end, data: codec === 'fp32' ? b.data : decodeBlock(specs, b.start, b.end, codec, blob) });
  }
  return { bytes, blobs, decoded: joinBlocks(state.tokens, specs, back) };
}

function checkConstraints(c: CodecConstraints): CodecReport['constraints'] {
  for (const k of ['maxLogitError', 'maxKL'] as const) {
    const v = c[k];
    if (v !== undefined && !(typeof v === 'number' && v >= 0)) throw new InvalidInput(`chooseCodec: ${k} is a number ≥ 0, got ${String(v)}`);
  }
  if (c.probeTokens !== undefined && !Array.isArray(c.probeTokens)) throw new InvalidInput('chooseCodec: probeTokens is an array of token ids');
  return { ...c, requireGreedyMatch: c.requireGreedyMatch ?? true, greedyTokens: c.greedyTokens ?? 32 };
}

/** Evaluates every codec on an fp32 state and picks the smallest meeting `constraints`. */
export async function evaluateCodecs(
  model: StateModel,
  state: ModelState,
  constraints: CodecConstraints = {},
  codecs: readonly BlockCodec[] = ALL_CODECS,
): Promise<CodecReport> {
  const c = checkConstraints(constraints);
  const want = model.stateSpecs.map((s) => s.name).join(',');
  const got = state.tensors.map((t) => t.name).join(',');
  if (want !== got)
    throw new ModelMismatch({
      kind: 'tensor',
      modelId: model.id,
      tensor: 'the state',
      expected: `tensors ${want.slice(0, 80)}`,
      got: `tensors ${got.slice(0, 80)}`,
    });
  for (const t of c.probeTokens ?? []) {
    if (!Number.isInteger(t) || t < 0 || t >= model.vocabSize) throw new InvalidInput(`chooseCodec: probe token ${t} is not in ${model.id}'s vocabulary`);
  }
  const ref = await referenceRun(model, state, { probeTokens: c.probeTokens, greedyTokens: c.greedyTokens });
  let fp32Bytes = 0;
  for (const t of state.tensors) fp32Bytes += t.data.byteLength;
  const rows: CodecRow[] = [];
  for (const codec of codecs) {
    const lossless = codec === 'fp32';
    let enc: ReturnType<typeof encodeState>;
    try {
      enc = encodeState(state, codec);
    } catch (e) {
      // fp16 refuses values beyond ±65504; that codec is then simply not a candidate.
      rows.push({
        codec,
        bytes: 0,
        ratio: 0,
        lossless,
        metrics: null,
        meets: false,
        failed: ['cannot encode this state'],
        error: e instanceof Error ? e.message : String(e),
      });
      continue;
    }
    const metrics = await compareToReference(model, enc.decoded, ref);
    const failed: string[] = [];
    if (!lossless) {
      if (c.maxLogitError !== undefined && !(metrics.maxLogitError <= c.maxLogitError))
        failed.push(`max logit error ${fmt(metrics.maxLogitError)} > ${c.maxLogitError}`);
      if (c.maxKL !== undefined && !(metrics.klMax <= c.maxKL)) failed.push(`KL ${fmt(metrics.klMax)} > ${c.maxKL}`);
      if (c.requireGreedyMatch && !metrics.greedyMatch) failed.push(`greedy differs (${metrics.greedyAgree}/${metrics.positions} positions agree)`);
    }
    rows.push({ codec, bytes: enc.bytes, ratio: enc.bytes / fp32Bytes, lossless, metrics, meets: failed.length === 0, failed });
  }
  let best: CodecRow | undefined;
  for (const r of rows) if (r.meets && (!best || r.bytes < best.bytes)) best = r;
  return {
    model: model.id,
    tokens: state.tokens.length,
    fp32Bytes,
    constraints: c,
    probeTokens: ref.probeTokens,
    rows,
    choice: best?.codec ?? 'fp32',
    reference: describeReference(ref.logits, ref.greedy),
  };
}

function describeReference(logits: Float32Array[], greedy: number[]): CodecReport['reference'] {
  let maxAbs = 0;
  let top = 0;
  for (const l of logits) {
    let m = -Infinity;
    for (let i = 0; i < l.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(l[i]!));
      if (l[i]! > m) m = l[i]!;
    }
    let s = 0;
    for (let i = 0; i < l.length; i++) s += Math.exp(l[i]! - m);
    top += 1 / s;
  }
  return { greedy, distinctGreedy: new Set(greedy).size, maxAbsLogit: maxAbs, meanTopProb: logits.length ? top / logits.length : 0 };
}

function fmt(x: number): string {
  return x === 0 ? '0' : x < 1e-3 ? x.toExponential(2) : x.toPrecision(3);
}

/**
 * chooseCodec(stateKey, constraints) on a stored state. The reference is the
 * fp32 state: the stored one when it is fp32, else recomputed from its
 * tokens (a lossy state is not its own reference).
 */
export async function chooseCodec(
  deps: { store: StateStore; getModel: (id?: string) => Promise<StateModel> },
  stateKey: string,
  constraints: CodecConstraints = {},
): Promise<CodecReport> {
  const m = await deps.store.getManifest(stateKey);
  if (!m) throw new StateNotFound(stateKey, 'chooseCodec');
  const model = await deps.getModel(m.modelId);
  if (m.modelFp !== model.fingerprint)
    throw new ModelMismatch({ kind: 'state', key: stateKey, modelId: m.modelId, stateFp: m.modelFp, loadedFp: model.fingerprint });
  const state = m.codec === 'fp32' ? (await deps.store.getState(stateKey)).state : (await model.prefill(m.tokens)).state;
  return { ...(await evaluateCodecs(model, state, constraints)), stateKey };
}

/** The store's 'auto' policy: measure every codec on each new state, store the choice. */
export function codecChooser(getModel: (id?: string) => Promise<StateModel>): CodecChooser {
  return async (state, policy, modelId) => {
    const model = await getModel(modelId);
    const c = policy.constraints ?? {};
    // The default probe needs room for its tokens after the state; a state at
    // the model's limit cannot be probed, and is kept lossless.
    const room = model.maxTokens - state.tokens.length;
    const need = (c.probeTokens?.length || 1) + (c.greedyTokens ?? 32) - 1;
    if (room < need) return 'fp32';
    return (await evaluateCodecs(model, state, c)).choice;
  };
}

/** One codec on one state, in the terms of the bench's codec table and a cartridge's quality record. */
export interface CodecQuality {
  codec: BlockCodec;
  /** Bytes the store would write for the state with this codec (all blocks). */
  bytes: number;
  /** bytes / the fp16 bytes of the same state. */
  bytesVsFp16: number;
  /** Against fp32, over the probe's positions. */
  maxLogitError: number;
  meanKL: number;
  maxKL: number;
  /** Positions where the codec's argmax equals fp32's, of greedyTotal. */
  greedyAgree: number;
  greedyTotal: number;
  /** The first tokens fed after the state (the probe, then teacher tokens if any). */
  probeTokens: number[];
  error?: string;
}

/**
 * Measures each codec on an fp32 state: its size against fp16 and how far
 * the model's next-token distributions move over the probe (teacher-forced
 * along `probe.teacherTokens` when given, e.g. held-out text after the
 * state). A codec that cannot encode the state gets a row with `error`.
 */
export async function measureCodecs(
  model: StateModel,
  state: ModelState,
  probe: ProbeOptions,
  codecs: readonly BlockCodec[] = ALL_CODECS,
): Promise<CodecQuality[]> {
  const ref = await referenceRun(model, state, probe);
  const fed = [...ref.probeTokens, ...(ref.fed ?? [])];
  const encoded = new Map<BlockCodec, ReturnType<typeof encodeState> | Error>();
  for (const c of [...new Set<BlockCodec>([...codecs, 'fp16'])]) {
    try {
      encoded.set(c, encodeState(state, c));
    } catch (e) {
      encoded.set(c, e instanceof Error ? e : new Error(String(e)));
    }
  }
  const fp16 = encoded.get('fp16');
  // fp16 refuses values past ±65504; its size is still exactly half of fp32's payload plus headers, so count it without values.
  const fp16Bytes =
    fp16 instanceof Error
      ? encodeState({ ...state, tensors: state.tensors.map((t) => ({ ...t, data: new Float32Array(t.data.length) })) }, 'fp16').bytes
      : fp16!.bytes;
  const rows: CodecQuality[] = [];
  for (const codec of codecs) {
    const enc = encoded.get(codec)!;
    if (enc instanceof Error) {
      rows.push({
        codec,
        bytes: 0,
        bytesVsFp16: NaN,
        maxLogitError: NaN,
        meanKL: NaN,
        maxKL: NaN,
        greedyAgree: 0,
        greedyTotal: ref.greedy.length,
        probeTokens: fed,
        error: enc.message,
      });
      continue;
    }
    const m = await compareToReference(model, enc.decoded, ref);
    rows.push({
      codec,
      bytes: enc.bytes,
      bytesVsFp16: enc.bytes / fp16Bytes,
      maxLogitError: m.maxLogitError,
      meanKL: m.klMean,
      maxKL: m.klMax,
      greedyAgree: m.greedyAgree,
      greedyTotal: m.positions,
      probeTokens: fed,
    });
  }
  return rows;
}
