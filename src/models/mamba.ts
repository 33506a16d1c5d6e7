// Mamba-1 as a StateModel, on onnxruntime directly (transformers.js has no
// Mamba model type). The runtime module is injected: the page passes
// `onnxruntime-web/webgpu` (the one transformers.js uses, so a page loads one
// copy), the unit tests pass `onnxruntime-node`. Nothing here touches the DOM
// or Node APIs beyond `fetch` (replaceable with `fetchBytes`).
//
// Files under `baseUrl` (built by src/models/mamba-build.ts):
//   statecart.json, tokenizer.json, onnx/{prefill,tail,step,prefill-scan}.onnx, onnx/weights.bin
// The graphs share the weights file; each session still holds its own copy in
// the runtime's heap (516 MB for mamba-130m). A GPU (WebGPU) runs prefill +
// tail + step; a CPU (WASM, onnxruntime-node) prefill-scan + step, so it holds
// two copies, not three (src/models/mamba-onnx.ts says why).

import { prefillByRun, type Device, type ModelRun, type ModelState, type RunOptions, type StateModel, type StateTensor, type TensorSpec } from './types.ts';
import type { ModelIdentity } from '../core/model-fingerprint.ts';
import type { MambaDims } from './mamba-reference.ts';
import { graphsDigest, modelFingerprint } from '../core/model-fingerprint.ts';
import { sha256Hex } from '../core/sha256.ts';
import { CorruptBlob, InvalidInput, ModelMismatch, ModelNotLoaded, throwIfAborted } from '../core/errors.ts';

/** The slice of the onnxruntime API used here; onnxruntime-web and -node both fit. */
export interface OrtTensorLike {
  readonly data: unknown;
  readonly dims: readonly number[];
}
export interface OrtSessionLike {
  run(feeds: Record<string, OrtTensorLike>): Promise<Record<string, OrtTensorLike>>;
  release(): Promise<void>;
}
export interface OrtLike {
  InferenceSession: { create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSessionLike> };
  Tensor: new (type: 'int64' | 'float32', data: BigInt64Array | Float32Array, dims: readonly number[]) => OrtTensorLike;
}

/** transformers.js' tokenizer fits: `encode(text)` → ids, `decode(ids)` → text. */
export interface MambaTokenizer {
  encode(text: string): number[] | Promise<number[]>;
  decode(ids: number[], opts?: Record<string, unknown>): string;
}

export interface MambaConfigJson extends MambaDims {
  /** Tokens per prefill run (a multiple of `subchunk`). */
  chunk: number;
  /** The prefill graph takes multiples of this many tokens; default 8. */
  subchunk?: number;
}

export interface MambaStatecartJson {
  id: string;
  arch: 'mamba';
  config: MambaConfigJson;
  dtype: 'fp32';
  weights_sha256: string;
  weight_source?: unknown;
  /** prefill_scan is absent from folders made before it existed; CPUs then run prefill + tail. */
  files?: { prefill: string; tail: string; step: string; prefill_scan?: string; weights: string };
}

/**
 * How a run of more than one token is computed: `scan`, the recurrence in an
 * ONNX Scan (prefill-scan.onnx, any length); `chunked`, its closed form over
 * multiples of the sub-chunk (prefill.onnx) plus tail.onnx for the rest.
 */
export type MambaPrefillGraphs = 'scan' | 'chunked';

export interface CreateMambaOptions {
  ort: OrtLike;
  /** Folder (URL or, with a custom fetchBytes, anything) holding statecart.json. */
  baseUrl: string;
  /** When given, must equal statecart.json's id. */
  modelId?: string;
  /** 'webgpu' or 'wasm' in a browser (the worker picks, see src/worker/device.ts); 'cpu' for onnxruntime-node. */
  device: Device;
  adapter?: string | null;
  deviceReason?: string;
  fetchBytes?: (url: string) => Promise<Uint8Array>;
  tokenizer: MambaTokenizer;
  /** Re-hash the weights file and compare with statecart.json (default true). */
  verifyWeights?: boolean;
  /** Merged into every session's options (e.g. intraOpNumThreads, logSeverityLevel). */
  sessionOptions?: Record<string, unknown>;
  /**
   * Default: `chunked` on WebGPU (Scan would fall back to the CPU there), else
   * `scan` when the folder has prefill-scan.onnx (several times faster on a CPU).
   */
  prefillGraphs?: MambaPrefillGraphs;
}

type GraphKind = 'prefill' | 'tail' | 'step' | 'scan';

const join = (base: string, path: string): string => (base.endsWith('/') ? base : base + '/') + path;

async function defaultFetchBytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok)
    throw new ModelNotLoaded({
      reason: `could not fetch ${url} (HTTP ${r.status}); run \`npm run models\` to generate the model files.`,
      url,
      status: r.status,
    });
  return new Uint8Array(await r.arrayBuffer());
}

/** The state's tensor names and dims (no batch axis), in the order a cartridge lists them. */
function mambaStateSpec(c: MambaConfigJson): TensorSpec[] {
  const out: TensorSpec[] = [];
  for (let l = 0; l < c.n_layer; l++) {
    out.push({ name: `layers.${l}.conv`, dims: [c.d_inner, c.d_conv - 1] });
    out.push({ name: `layers.${l}.ssm`, dims: [c.d_inner, c.d_state] });
  }
  return out;
}

export class MambaModel implements StateModel {
  readonly arch = 'mamba';
  readonly maxTokens = Infinity;
  /** A fixed-size state: it exists at the end of its text only. */
  readonly sliceable = false;
  /** So a request that adds no tokens needs no re-run of the whole text. */
  readonly keepsLastLogits = true;
  readonly vocabSize: number;
  /** layers.N.conv [d_inner, d_conv-1], layers.N.ssm [d_inner, d_state]. */
  readonly stateSpecs: TensorSpec[];
  private readonly subchunk: number;
  private lastYield = 0;

  constructor(
    readonly id: string,
    readonly config: MambaConfigJson,
    readonly identity: ModelIdentity,
    readonly fingerprint: string,
    readonly device: Device,
    readonly adapter: string | null,
    readonly deviceReason: string,
    private readonly ort: OrtLike,
    private readonly sessions: Partial<Record<GraphKind, OrtSessionLike>>,
    private readonly tokenizer: MambaTokenizer,
    /** Which graphs compute runs of more than one token. */
    readonly prefillGraphs: MambaPrefillGraphs = 'chunked',
  ) {
    this.vocabSize = config.vocab_size;
    this.subchunk = config.subchunk ?? 8;
    this.stateSpecs = mambaStateSpec(config);
  }

  async tokenize(text: string): Promise<number[]> {
    return Array.from(await this.tokenizer.encode(text));
  }

  decode(tokens: number[]): string {
    return this.tokenizer.decode(tokens);
  }

  /** A state of zeros (no tokens), the start of every sequence. */
  emptyState(): ModelState {
    return { tokens: [], tensors: this.stateSpecs.map((s) => ({ ...s, data: new Float32Array(s.dims[0]! * s.dims[1]!) })) };
  }

  /** The state is small (2.8 MB for the 130m shape): a run keeps it as arrays between calls. */
  open(from?: ModelState): ModelRun {
    let cur = from ?? this.emptyState();
    const tokens = [...cur.tokens];
    return {
      tokens,
      feed: async (ids, ro) => {
        const r = await this.run(ids, cur, ro);
        cur = r.state;
        tokens.push(...ids);
        return r.logits;
      },
      state: async () => cur,
      close: () => undefined,
    };
  }

  prefill(tokens: number[], from?: ModelState, opts?: RunOptions): Promise<{ state: ModelState; logits: Float32Array }> {
    return prefillByRun(this, tokens, from, opts);
  }

  private async run(tokens: number[], start: ModelState, opts: RunOptions = {}): Promise<{ state: ModelState; logits: Float32Array }> {
    if (tokens.length === 0) throw new InvalidInput('prefill needs at least one new token.');
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0 || t >= this.vocabSize)
        throw new InvalidInput(`token id ${t} is outside the vocabulary (0..${this.vocabSize - 1}).`, { token: t });
    }
    let tensors = this.checkState(start);
    const c = this.config;
    const plan: [GraphKind, number][] = [];
    let left = tokens.length;
    if (this.prefillGraphs === 'scan') {
      // Any length: whole chunks, then the rest; one token alone takes the step graph.
      while (left > 1) plan.push(['scan', Math.min(left, c.chunk)]), (left -= Math.min(left, c.chunk));
    } else {
      while (left >= c.chunk) plan.push(['prefill', c.chunk]), (left -= c.chunk);
      const bulk = left - (left % this.subchunk);
      if (bulk > 0) plan.push(['prefill', bulk]), (left -= bulk);
      if (left > 1) plan.push(['tail', left]), (left = 0);
    }
    if (left === 1) plan.push(['step', 1]);

    let done = 0;
    let logits: Float32Array | null = null;
    opts.onProgress?.({ done, total: tokens.length });
    for (const [kind, n] of plan) {
      // A run's promise settles in a microtask, so without this a long prefill (or
      // a caller's loop of one-token steps) never lets the worker read a message:
      // no cancel(), no heartbeat answer. Every 50 ms at most, so steps stay cheap.
      if (performance.now() - this.lastYield > 50) {
        await yieldToEventLoop();
        this.lastYield = performance.now();
      }
      throwIfAborted(opts.signal);
      const ids = BigInt64Array.from(tokens.slice(done, done + n), (t) => BigInt(t));
      const feeds: Record<string, OrtTensorLike> = { input_ids: new this.ort.Tensor('int64', ids, [1, n]) };
      for (let l = 0; l < c.n_layer; l++) {
        feeds[`conv_state.${l}`] = new this.ort.Tensor('float32', tensors[2 * l]!.data, [1, c.d_inner, c.d_conv - 1]);
        feeds[`ssm_state.${l}`] = new this.ort.Tensor('float32', tensors[2 * l + 1]!.data, [1, c.d_inner, c.d_state]);
      }
      const out = await this.sessions[kind]!.run(feeds);
      const next: StateTensor[] = [];
      for (let l = 0; l < c.n_layer; l++) {
        next.push({ name: `layers.${l}.conv`, dims: [c.d_inner, c.d_conv - 1], data: copyF32(out[`conv_state_out.${l}`]!) });
        next.push({ name: `layers.${l}.ssm`, dims: [c.d_inner, c.d_state], data: copyF32(out[`ssm_state_out.${l}`]!) });
      }
      tensors = next;
      logits = copyF32(out.logits!);
      done += n;
      opts.onProgress?.({ done, total: tokens.length });
    }
    return { state: { tokens: [...start.tokens, ...tokens], tensors }, logits: logits! };
  }

  async dispose(): Promise<void> {
    for (const s of Object.values(this.sessions)) await s?.release();
  }

  /** The state's tensors in layer order, after checking names and sizes. */
  private checkState(s: ModelState): StateTensor[] {
    const spec = this.stateSpecs;
    const byName = new Map(s.tensors.map((t) => [t.name, t]));
    return spec.map((sp) => {
      const t = byName.get(sp.name);
      const n = sp.dims[0]! * sp.dims[1]!;
      if (!t || t.data.length !== n || t.dims.length !== 2 || t.dims[0] !== sp.dims[0] || t.dims[1] !== sp.dims[1]) {
        throw new ModelMismatch({
          kind: 'tensor',
          modelId: this.id,
          tensor: sp.name,
          expected: `[${sp.dims.join(', ')}]`,
          got: t ? `[${t.dims.join(', ')}]` : 'missing',
        });
      }
      return t;
    });
  }
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

function copyF32(t: OrtTensorLike): Float32Array {
  // Outputs may be views into the runtime's memory; a state must own its bytes.
  return Float32Array.from(t.data as Float32Array);
}

export async function createMambaModel(o: CreateMambaOptions): Promise<MambaModel> {
  const fetchBytes = o.fetchBytes ?? defaultFetchBytes;
  const meta = JSON.parse(new TextDecoder().decode(await fetchBytes(join(o.baseUrl, 'statecart.json')))) as MambaStatecartJson;
  if (meta.arch !== 'mamba') throw new ModelMismatch({ kind: 'files', url: o.baseUrl, holds: `a ${meta.arch} model`, wanted: 'a Mamba model' });
  if (o.modelId !== undefined && meta.id !== o.modelId) throw new ModelMismatch({ kind: 'files', url: o.baseUrl, holds: meta.id, wanted: o.modelId });
  const files = meta.files ?? { prefill: 'onnx/prefill.onnx', tail: 'onnx/tail.onnx', step: 'onnx/step.onnx', weights: 'onnx/weights.bin' };
  const graphs: MambaPrefillGraphs = o.prefillGraphs ?? (o.device !== 'webgpu' && files.prefill_scan ? 'scan' : 'chunked');
  if (graphs === 'scan' && !files.prefill_scan) {
    throw new ModelNotLoaded({ model: meta.id, reason: 'its folder has no prefill-scan graph; rebuild it with `npm run models`.' });
  }
  // Every graph of the folder is read (they are small; weights are apart) and
  // goes into the fingerprint, whichever this device runs, so that a state's
  // key does not depend on the device. Only the device's graphs are started.
  const all: [GraphKind, string][] = [
    ['prefill', files.prefill],
    ['tail', files.tail],
    ['step', files.step],
  ];
  if (files.prefill_scan) all.push(['scan', files.prefill_scan]);
  const wanted = new Set<GraphKind>(graphs === 'scan' ? ['scan', 'step'] : ['prefill', 'tail', 'step']);
  const [weights, tokenizerJson, ...graphBytes] = await Promise.all(
    [files.weights, 'tokenizer.json', ...all.map(([, f]) => f)].map((f) => fetchBytes(join(o.baseUrl, f))),
  );
  const bytes = new Map(all.map(([k], i) => [k, graphBytes[i]!]));
  if (o.verifyWeights ?? true) {
    const got = await sha256Hex(weights!);
    if (got !== meta.weights_sha256) {
      throw new CorruptBlob({
        problem: `the weights of ${meta.id} do not match statecart.json (sha256 ${got.slice(0, 12)}…, expected ${meta.weights_sha256.slice(0, 12)}…); regenerate or re-download the model.`,
      });
    }
  }
  const c = meta.config;
  const identity: ModelIdentity = {
    arch: 'mamba',
    // Only what shapes a state; chunking changes float rounding, not meaning.
    config: { n_layer: c.n_layer, d_model: c.d_model, d_inner: c.d_inner, d_state: c.d_state, d_conv: c.d_conv, dt_rank: c.dt_rank, vocab_size: c.vocab_size },
    weights_sha256: meta.weights_sha256,
    // The graphs hold the computation, apart from the weights: a change to the
    // graph builder must give states new keys too. A folder made before
    // prefill-scan.onnx existed keeps the digest (and keys) it had.
    graphs_sha256: await graphsDigest({
      prefill: bytes.get('prefill')!,
      tail: bytes.get('tail')!,
      step: bytes.get('step')!,
      ...(bytes.has('scan') ? { prefill_scan: bytes.get('scan')! } : {}),
    }),
    tokenizer_sha256: await sha256Hex(tokenizerJson!),
    dtype: meta.dtype,
  };
  const fingerprint = await modelFingerprint(identity);
  const dev = { device: o.device, adapter: o.adapter ?? null, reason: o.deviceReason ?? '' };
  const weightsName = files.weights.slice(files.weights.lastIndexOf('/') + 1);
  const sessionOptions = {
    executionProviders: [dev.device],
    graphOptimizationLevel: 'all',
    externalData: [{ path: weightsName, data: weights }],
    ...o.sessionOptions,
  };
  const sessions: Partial<Record<GraphKind, OrtSessionLike>> = {};
  try {
    for (const [k, b] of bytes) if (wanted.has(k)) sessions[k] = await o.ort.InferenceSession.create(b, sessionOptions);
  } catch (e) {
    for (const s of Object.values(sessions)) await s?.release();
    throw new ModelNotLoaded({ model: meta.id, reason: `it could not start on ${dev.device}: ${e instanceof Error ? e.message : String(e)}` });
  }
  return new MambaModel(meta.id, c, identity, fingerprint, dev.device, dev.adapter, dev.reason, o.ort, sessions, o.tokenizer, graphs);
}
