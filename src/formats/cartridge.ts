import type { Provenance } from '../core/model-fingerprint.ts';
import { InvalidCartridge, InvalidInput, MissingParent, ModelMismatch, StatecartError } from '../core/errors.ts';
import { digestOf } from '../core/sha256.ts';
import { stateKey } from '../core/key-chain.ts';
import { concatTokens, dimsAt, isSliceable, sliceTokens, type ModelState, type StateTensor, type TensorSpec } from '../core/state.ts';
import { readSafetensors, safetensorsParts, type SafetensorsFile, type TensorInput } from './safetensors.ts';
import { float16ToFloat32 } from './fp16.ts';
import { checkDelta, codecs, decodeDelta, encodeDelta, isCodecName, peekCodec, type CodecName, type CodecParams } from './codecs.ts';

/**
 * A cartridge: one state as a `.safetensors` file. The byte format is written
 * down in docs/cartridge-format.md; this file is its reference reader and
 * writer. Everything is validated before anything is returned.
 */

export const CARTRIDGE_FORMAT = 'statecart/1';

export type CartridgeCodec = CodecName | 'delta';

/** The model's numbers (its fingerprint's config), written into the file and checked on import. */
export type CartridgeConfig = Record<string, number | string>;

export interface BuildInput {
  modelId: string;
  /** Hex SHA-256 model fingerprint. */
  modelFp: string;
  /** The architecture's name (metadata, compared on import). */
  arch: string;
  config: CartridgeConfig;
  /** The model's state tensors (names, dims, token axes): what the file must hold. */
  specs: TensorSpec[];
  /** The whole state: tokens from the first, tensors over all of them. */
  state: ModelState;
  codec: CodecName;
  /** kivi4: `residual` (default 16 for a sliceable state, 0 for a fixed-size one); `kind` follows the tensor name. */
  codecParams?: CodecParams;
  receipts?: unknown[];
  /** What computed the state (device, runtimes, dtype): written as metadata "provenance", informative only. */
  provenance?: Provenance;
  /**
   * Makes a delta cartridge. A sliceable state (KV): only the tokens after the
   * parent's are stored (pass the whole child state, or tensors already cut to
   * the new tokens). A fixed-size state (SSM): each tensor is stored as a
   * `delta` of `parent.state`'s, with `codec` inside.
   */
  parent?: { stateKey: string; tokens: number; state?: ModelState };
  /** What the lossy `codec` did to this state, measured by the exporter: written as metadata "quality". */
  quality?: CartridgeQuality;
}

/**
 * A lossy cartridge's measured quality (metadata "quality"): the model run on
 * the decoded state against the fp32 state, over a probe after it. Measured
 * by whoever exported the file and not covered by any digest, so it is a
 * claim about the file, checked for shape only.
 */
export interface CartridgeQuality {
  /** The codec measured: the file's (a delta's inner codec). */
  codec: CodecName;
  /** max |logit − fp32 logit| over every probe position and vocabulary entry. */
  maxLogitError: number;
  /** KL(fp32 ‖ decoded) of the next-token distributions, nats: mean and largest over the positions. */
  meanKL: number;
  maxKL: number;
  /** Positions where the decoded state's argmax is fp32's, of greedyTotal. */
  greedyAgree: number;
  greedyTotal: number;
  /** The token fed after the state first (then fp32's greedy tokens). */
  probeTokens: number[];
}

const MAX_PROBE = 4096;

/** The quality record if it has the documented shape, else a reason it has not. */
export function checkQuality(q: unknown, codec: CodecName): CartridgeQuality | string {
  if (typeof q !== 'object' || q === null || Array.isArray(q)) return 'it should be a JSON object';
  const o = q as Record<string, unknown>;
  if (o.codec !== codec) return `it measures codec ${JSON.stringify(o.codec)}, the file uses ${codec}`;
  if (codec === 'fp32') return 'fp32 is lossless: there is nothing to measure';
  for (const k of ['maxLogitError', 'meanKL', 'maxKL'] as const) {
    const v = o[k];
    if (typeof v !== 'number' || !(v >= 0) || v === Infinity) return `${k} should be a finite number ≥ 0, is ${JSON.stringify(v)}`;
  }
  const total = o.greedyTotal;
  const agree = o.greedyAgree;
  if (!Number.isInteger(total) || (total as number) < 1 || (total as number) > MAX_PROBE) return `greedyTotal should be an integer from 1 to ${MAX_PROBE}`;
  if (!Number.isInteger(agree) || (agree as number) < 0 || (agree as number) > (total as number))
    return `greedyAgree should be an integer from 0 to greedyTotal`;
  const probe = o.probeTokens;
  if (!Array.isArray(probe) || probe.length > MAX_PROBE || !probe.every((t) => Number.isInteger(t) && t >= 0))
    return 'probeTokens should be an array of token ids';
  return {
    codec,
    maxLogitError: o.maxLogitError as number,
    meanKL: o.meanKL as number,
    maxKL: o.maxKL as number,
    greedyAgree: agree as number,
    greedyTotal: total as number,
    probeTokens: [...(probe as number[])],
  };
}

export interface ExpectedModel {
  modelFp: string;
  modelId: string;
  arch: string;
  config: CartridgeConfig;
  /** The model's state tensors (names, dims, token axes). */
  specs: TensorSpec[];
  vocabSize: number;
  /** Most tokens a state may hold (GPT-2: n_positions; Mamba: Infinity). */
  maxTokens: number;
}

export interface CartridgeTensor {
  name: string;
  /** As stored: F32, F16 or U8 (codec bytes). */
  dtype: string;
  shape: number[];
  /** The logical tensor's dims (for a sliceable delta the token axis counts new tokens only). */
  dims: number[];
  tokenAxis?: number;
  /** The stored bytes (a view into the input), and their "sha256:" digest, checked. */
  bytes: Uint8Array;
  digest: string;
}

export interface ParsedCartridge {
  format: typeof CARTRIDGE_FORMAT;
  modelId: string;
  modelFp: string;
  arch: string;
  config: Record<string, unknown>;
  /** Every token of the state, from the first (also for a delta). */
  tokens: number[];
  stateKey: string;
  codec: CartridgeCodec;
  codecParams: Record<string, unknown>;
  digests: Record<string, string>;
  receipts: unknown[];
  parent: { stateKey: string; tokens: number } | null;
  metadata: Record<string, string>;
  tensors: CartridgeTensor[];
  /**
   * Decoded tensors in layer order. A sliceable delta: the new tokens only.
   * A fixed-size delta: null (needs the parent; use `resolveDelta`).
   */
  decoded: StateTensor[] | null;
  /** The state, ready to use; null for a delta (use `resolveDelta`). */
  state: ModelState | null;
  /** The lossy codec's measured quality on this state, when the exporter recorded it. */
  quality: CartridgeQuality | null;
}

const HEX64 = /^[0-9a-f]{64}$/;
const KEY = /^sha256:[0-9a-f]{64}$/;

const invalid = (msg: string, details: Record<string, unknown> = {}): InvalidCartridge => new InvalidCartridge(msg, details);

// ---------------------------------------------------------------- shapes

/** Tensor names and dims, in the model's order, for a file that stores `storedTokens` tokens of a sliceable state. */
function expectedTensors(specs: TensorSpec[], storedTokens: number): { name: string; dims: number[]; tokenAxis?: number }[] {
  return specs.map((s) => ({ name: s.name, dims: dimsAt(s, storedTokens), ...(s.tokenAxis !== undefined ? { tokenAxis: s.tokenAxis } : {}) }));
}

const sameDims = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

function kindOf(name: string): 'key' | 'value' {
  return name.endsWith('.key') ? 'key' : 'value';
}

// ---------------------------------------------------------------- build

export interface BuiltCartridge {
  /** Header first, then each tensor's bytes: `new Blob(parts)` is the file. */
  parts: Uint8Array[];
  byteLength: number;
  stateKey: string;
  metadata: Record<string, string>;
}

export async function buildCartridge(input: BuildInput): Promise<BuiltCartridge> {
  const { arch, state, codec } = input;
  if (typeof arch !== 'string' || arch.length === 0) throw new InvalidInput("arch names the model's architecture");
  const sliceable = isSliceable(input.specs ?? []);
  if (!HEX64.test(input.modelFp)) throw new InvalidInput('modelFp must be 64 lowercase hex digits');
  if (!isCodecName(codec)) throw new InvalidInput(`unknown codec "${String(codec)}" (known: ${Object.keys(codecs).join(', ')})`);
  const tokens = state.tokens;
  if (!Array.isArray(tokens) || tokens.length === 0) throw new InvalidInput('a state has at least one token');
  const key = await stateKey(input.modelFp, tokens);

  const parent = input.parent;
  let parentTokens = 0;
  if (parent) {
    parentTokens = parent.tokens;
    if (!Number.isInteger(parentTokens) || parentTokens < 1 || parentTokens >= tokens.length) {
      throw new InvalidInput(`parent.tokens must be between 1 and ${tokens.length - 1}, got ${parentTokens}`);
    }
    const pk = await stateKey(input.modelFp, tokens.slice(0, parentTokens));
    if (pk !== parent.stateKey)
      throw new InvalidInput(`parent.stateKey ${parent.stateKey} is not the key of this state's first ${parentTokens} tokens (${pk})`);
    if (!sliceable && !parent.state) throw new InvalidInput('a delta cartridge of a fixed-size state needs parent.state');
  }
  const stored = sliceable ? tokens.length - parentTokens : 0;
  const specs = expectedTensors(input.specs, stored);
  const byName = new Map(state.tensors.map((t) => [t.name, t]));
  if (byName.size !== specs.length || specs.some((s) => !byName.has(s.name))) {
    throw new InvalidInput(`the state's tensors (${[...byName.keys()].join(', ')}) are not the ${specs.length} the model has`);
  }
  const parentByName = new Map((parent?.state?.tensors ?? []).map((t) => [t.name, t]));

  const residual = input.codecParams?.residual ?? (sliceable ? 16 : 0);
  const codecParams: Record<string, unknown> = codec === 'kivi4' ? { residual } : {};
  const fileCodec: CartridgeCodec = !sliceable && parent ? 'delta' : codec;
  const tensors: TensorInput[] = [];
  const shapes: Record<string, number[]> = {};
  for (const spec of specs) {
    const t = byName.get(spec.name)!;
    let data = t.data;
    if (sliceable && parentTokens > 0 && sameDims(t.dims, dimsAt(spec, tokens.length)))
      data = sliceTokens({ ...t, tokenAxis: spec.tokenAxis }, parentTokens, tokens.length);
    else if (!sameDims(t.dims, spec.dims)) throw new InvalidInput(`tensor ${spec.name} has dims [${t.dims.join(', ')}], expected [${spec.dims.join(', ')}]`);
    if (data.length !== spec.dims.reduce((a, b) => a * b, 1))
      throw new InvalidInput(`tensor ${spec.name} has ${data.length} elements for dims [${spec.dims.join(', ')}]`);
    const logical = { dims: spec.dims, data };
    const params: CodecParams = { kind: kindOf(spec.name), residual };
    if (fileCodec === 'delta') {
      const p = parentByName.get(spec.name);
      if (!p) throw new InvalidInput(`parent.state has no tensor ${spec.name}`);
      tensors.push({ name: spec.name, dtype: 'U8', shape: [0], data: encodeDelta(logical, p, codec, params) });
      shapes[spec.name] = spec.dims;
    } else if (codec === 'fp32') {
      tensors.push({ name: spec.name, dtype: 'F32', shape: spec.dims, data });
    } else if (codec === 'fp16') {
      const enc = codecs.fp16.encode(logical);
      const h = enc.length - 2 * data.length; // the codec header: F16 stores the raw halves
      tensors.push({ name: spec.name, dtype: 'F16', shape: spec.dims, data: new Uint16Array(enc.buffer, h, data.length) });
    } else {
      tensors.push({ name: spec.name, dtype: 'U8', shape: [0], data: codecs[codec].encode(logical, params) });
      shapes[spec.name] = spec.dims;
    }
  }
  for (const t of tensors) if (t.dtype === 'U8') t.shape = [t.data.byteLength];

  const digests: Record<string, string> = {};
  for (const t of tensors) digests[t.name] = await digestOf(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));

  const metadata: Record<string, string> = {
    format: CARTRIDGE_FORMAT,
    model_id: String(input.modelId),
    model_fp: input.modelFp,
    arch,
    config: JSON.stringify(input.config),
    tokens: JSON.stringify(tokens),
    state_key: key,
    codec: fileCodec,
    codec_params: JSON.stringify(fileCodec === 'delta' ? { ...codecParams, inner: codec } : codecParams),
    digests: JSON.stringify(digests),
    receipts: JSON.stringify(input.receipts ?? []),
  };
  if (Object.keys(shapes).length > 0) metadata.shapes = JSON.stringify(shapes);
  if (input.quality !== undefined) {
    const q = checkQuality(input.quality, codec);
    if (typeof q === 'string') throw new InvalidInput(`quality: ${q}`);
    metadata.quality = JSON.stringify(q);
  }
  if (input.provenance) metadata.provenance = JSON.stringify(input.provenance);
  if (parent) {
    metadata.parent_state_key = parent.stateKey;
    metadata.parent_tokens = String(parentTokens);
  }
  const parts = safetensorsParts(tensors, metadata);
  let byteLength = 0;
  for (const p of parts) byteLength += p.length;
  return { parts, byteLength, stateKey: key, metadata };
}

/** The cartridge in one buffer. */
export async function buildCartridgeBytes(input: BuildInput): Promise<Uint8Array> {
  const { parts, byteLength } = await buildCartridge(input);
  const out = new Uint8Array(byteLength);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---------------------------------------------------------------- parse

function jsonField<T>(meta: Record<string, string>, key: string, check: (v: unknown) => v is T, what: string): T {
  const raw = meta[key];
  if (raw === undefined) throw invalid(`metadata "${key}" is missing`, { field: key });
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw invalid(`metadata "${key}" is not valid JSON (it should be ${what})`, { field: key });
  }
  if (!check(v)) throw invalid(`metadata "${key}" should be ${what}`, { field: key });
  return v;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isArray = (v: unknown): v is unknown[] => Array.isArray(v);

function stringField(meta: Record<string, string>, key: string): string {
  const v = meta[key];
  if (v === undefined) throw invalid(`metadata "${key}" is missing`, { field: key });
  return v;
}

const short = (fp: string): string => (fp.length > 16 ? fp.slice(0, 16) + '…' : fp);

/**
 * Validates a cartridge completely — safetensors structure, format, model,
 * tokens, tensor set, dtypes, shapes, digests, state key, codec bytes — and
 * returns it decoded. Throws InvalidCartridge or ModelMismatch, nothing else.
 */
export async function parseCartridge(bytes: Uint8Array, expect: ExpectedModel): Promise<ParsedCartridge> {
  try {
    return await parse(bytes, expect);
  } catch (e) {
    if (e instanceof InvalidCartridge || e instanceof ModelMismatch) throw e;
    // Anything else is a check we missed; it still must not leak as a TypeError.
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    throw invalid(`the file could not be read (${msg})`, { cause: e instanceof StatecartError ? e.name : 'internal' });
  }
}

async function parse(bytes: Uint8Array, expect: ExpectedModel): Promise<ParsedCartridge> {
  if (!(bytes instanceof Uint8Array)) throw invalid('expected the file as bytes (Uint8Array)');
  const file: SafetensorsFile = readSafetensors(bytes);
  const meta = file.metadata;

  const format = meta.format;
  if (format === undefined) throw invalid('no "format" in __metadata__: this is a safetensors file but not a statecart cartridge');
  if (format !== CARTRIDGE_FORMAT)
    throw invalid(`format is "${format.slice(0, 40)}"; this reader understands "${CARTRIDGE_FORMAT}" — update statecart or re-export the state`, { format });

  const modelId = stringField(meta, 'model_id');
  const modelFp = stringField(meta, 'model_fp');
  const arch = stringField(meta, 'arch');
  if (!HEX64.test(modelFp)) throw invalid('metadata "model_fp" must be 64 lowercase hex digits');
  if (arch !== expect.arch || modelFp !== expect.modelFp) {
    throw new ModelMismatch({
      kind: 'cartridge',
      cartridgeModelId: modelId.slice(0, 80),
      cartridgeArch: arch.slice(0, 40),
      cartridgeFp: modelFp,
      loadedModelId: expect.modelId,
      loadedArch: expect.arch,
      loadedFp: expect.modelFp,
    });
  }
  const sliceable = isSliceable(expect.specs);

  const config = jsonField(meta, 'config', isObject, 'a JSON object');
  for (const [k, want] of Object.entries(expect.config)) {
    if (config[k] !== want)
      throw invalid(
        `metadata "config" says ${k} = ${JSON.stringify(config[k])} but the model has ${JSON.stringify(want)}, although the fingerprints match — the file was edited`,
        { field: k },
      );
  }

  const tokens = jsonField(meta, 'tokens', isArray, 'a JSON array of token ids');
  if (tokens.length === 0) throw invalid('"tokens" is empty; a state has at least one token');
  if (tokens.length > expect.maxTokens)
    throw invalid(`the state has ${tokens.length} tokens, more than this model's ${expect.maxTokens}`, { tokens: tokens.length });
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!Number.isInteger(t) || (t as number) < 0 || (t as number) >= expect.vocabSize) {
      throw invalid(`token ${i} is ${JSON.stringify(t)}; token ids are integers in [0, ${expect.vocabSize})`, { index: i });
    }
  }
  const ids = tokens as number[];

  const key = stringField(meta, 'state_key');
  if (!KEY.test(key)) throw invalid('metadata "state_key" must be "sha256:" and 64 lowercase hex digits');

  const codec = stringField(meta, 'codec');
  if (codec !== 'delta' && !isCodecName(codec))
    throw invalid(`codec "${codec.slice(0, 40)}" is unknown (known: ${Object.keys(codecs).join(', ')}, delta)`, { codec });
  const codecParams = jsonField(meta, 'codec_params', isObject, 'a JSON object');
  const digests = jsonField(meta, 'digests', isObject, 'a JSON object of tensor name → "sha256:…"');
  const receipts = jsonField(meta, 'receipts', isArray, 'a JSON array');

  let parent: { stateKey: string; tokens: number } | null = null;
  const pk = meta.parent_state_key;
  const pt = meta.parent_tokens;
  if ((pk === undefined) !== (pt === undefined)) throw invalid('"parent_state_key" and "parent_tokens" come together; one is missing');
  if (pk !== undefined && pt !== undefined) {
    if (!KEY.test(pk)) throw invalid('metadata "parent_state_key" must be "sha256:" and 64 lowercase hex digits');
    if (!/^[1-9][0-9]{0,15}$/.test(pt) || Number(pt) >= ids.length)
      throw invalid(`metadata "parent_tokens" is "${pt.slice(0, 20)}"; it must be an integer from 1 to ${ids.length - 1}`);
    parent = { stateKey: pk, tokens: Number(pt) };
  }
  if (codec === 'delta' && (sliceable || !parent))
    throw invalid('codec "delta" is only for delta cartridges (with a parent) of fixed-size states such as Mamba\'s');
  if (!sliceable && parent && codec !== 'delta') throw invalid('a delta cartridge of a fixed-size state (Mamba) must use codec "delta"');
  let inner: CodecName | null = null;
  if (codec === 'delta') {
    const i = codecParams.inner;
    if (!isCodecName(i)) throw invalid(`codec_params.inner is ${JSON.stringify(i)}; it must name a codec (${Object.keys(codecs).join(', ')})`);
    inner = i;
  }

  // The tensor set and each tensor's dtype and shape.
  const stored = sliceable ? ids.length - (parent?.tokens ?? 0) : 0;
  const specs = expectedTensors(expect.specs, stored);
  const packed = codec !== 'fp32' && codec !== 'fp16';
  const shapes = packed ? jsonField(meta, 'shapes', isObject, 'a JSON object of tensor name → dims') : {};
  for (const name of file.tensors.keys()) {
    if (!specs.some((s) => s.name === name))
      throw invalid(
        `unexpected tensor "${name.slice(0, 80)}"; a cartridge of ${expect.modelId} holds ${specs.length} tensors, ${specs[0]?.name} … ${specs[specs.length - 1]?.name}`,
        { tensor: name },
      );
  }
  const tensors: CartridgeTensor[] = [];
  for (const spec of specs) {
    const e = file.tensors.get(spec.name);
    if (!e) throw invalid(`tensor "${spec.name}" is missing`, { tensor: spec.name });
    const dtype = codec === 'fp32' ? 'F32' : codec === 'fp16' ? 'F16' : 'U8';
    if (e.dtype !== dtype) throw invalid(`tensor "${spec.name}" is ${e.dtype}; with codec ${codec} it must be ${dtype}`, { tensor: spec.name });
    if (packed) {
      if (!sameDims(e.shape, [e.byteLength]))
        throw invalid(`tensor "${spec.name}" holds codec bytes, so its shape must be [${e.byteLength}], not [${e.shape.join(', ')}]`, { tensor: spec.name });
      const s = shapes[spec.name];
      if (!Array.isArray(s) || !sameDims(s as number[], spec.dims)) {
        throw invalid(`metadata "shapes" gives "${spec.name}" as ${JSON.stringify(s)}; the model and token count make it [${spec.dims.join(', ')}]`, {
          tensor: spec.name,
        });
      }
    } else if (!sameDims(e.shape, spec.dims)) {
      throw invalid(`tensor "${spec.name}" has shape [${e.shape.join(', ')}]; the model and token count make it [${spec.dims.join(', ')}]`, {
        tensor: spec.name,
      });
    }
    const d = digests[spec.name];
    if (typeof d !== 'string' || !KEY.test(d)) throw invalid(`metadata "digests" has no "sha256:…" digest for "${spec.name}"`, { tensor: spec.name });
    tensors.push({
      name: spec.name,
      dtype,
      shape: e.shape,
      dims: spec.dims,
      ...(spec.tokenAxis !== undefined ? { tokenAxis: spec.tokenAxis } : {}),
      bytes: e.bytes,
      digest: d,
    });
  }
  if (Object.keys(digests).length !== specs.length)
    throw invalid(`metadata "digests" lists ${Object.keys(digests).length} tensors; the file has ${specs.length}`);
  if (packed && Object.keys(shapes).length !== specs.length)
    throw invalid(`metadata "shapes" lists ${Object.keys(shapes).length} tensors; the file has ${specs.length}`);

  for (const t of tensors) {
    const actual = await digestOf(t.bytes);
    if (actual !== t.digest)
      throw invalid(`tensor "${t.name}" is damaged: its bytes hash to ${short(actual)}, the file says ${short(t.digest)}`, { tensor: t.name });
  }

  const recomputed = await stateKey(modelFp, ids);
  if (recomputed !== key)
    throw invalid(
      `"state_key" ${short(key)} is not the key of these ${ids.length} tokens on this model (${short(recomputed)}) — the tokens or the key were edited`,
    );
  if (parent) {
    const pk2 = await stateKey(modelFp, ids.slice(0, parent.tokens));
    if (pk2 !== parent.stateKey) throw invalid(`"parent_state_key" is not the key of the first ${parent.tokens} tokens — the file was edited`);
  }

  // The codec bytes must decode to the expected dims.
  let decoded: StateTensor[] | null = [];
  for (const t of tensors) {
    try {
      const spec = { name: t.name, dims: t.dims, ...(t.tokenAxis !== undefined ? { tokenAxis: t.tokenAxis } : {}) };
      if (codec === 'fp32') decoded.push({ ...spec, data: new Float32Array(t.bytes.slice().buffer) });
      else if (codec === 'fp16') {
        decoded.push({ ...spec, data: float16ToFloat32(new Uint16Array(t.bytes.slice().buffer)) });
      } else if (codec === 'delta') {
        const c = checkDelta(t.bytes);
        if (c.inner !== inner) throw invalid(`tensor "${t.name}" is a delta over ${c.inner}, metadata says ${inner}`);
        if (!sameDims(c.dims, t.dims)) throw invalid(`tensor "${t.name}" decodes to dims [${c.dims.join(', ')}], expected [${t.dims.join(', ')}]`);
      } else {
        const p = peekCodec(t.bytes);
        if (p.codec !== codec) throw invalid(`tensor "${t.name}" is encoded with ${p.codec}, metadata says ${codec}`, { tensor: t.name });
        const dec = codecs[codec].decode(t.bytes);
        if (!sameDims(dec.dims, t.dims)) throw invalid(`tensor "${t.name}" decodes to dims [${dec.dims.join(', ')}], expected [${t.dims.join(', ')}]`);
        decoded.push({ ...spec, data: dec.data });
      }
    } catch (e) {
      if (e instanceof InvalidCartridge) throw e;
      throw invalid(`tensor "${t.name}" does not decode as ${codec}: ${(e as Error).message}`, { tensor: t.name });
    }
  }
  if (codec === 'delta') decoded = null;

  let quality: CartridgeQuality | null = null;
  if (meta.quality !== undefined) {
    let q: unknown;
    try {
      q = JSON.parse(meta.quality);
    } catch {
      throw invalid('metadata "quality" is not valid JSON', { field: 'quality' });
    }
    const c = checkQuality(q, (codec === 'delta' ? inner : codec) as CodecName);
    if (typeof c === 'string') throw invalid(`metadata "quality" is malformed: ${c}`, { field: 'quality' });
    quality = c;
  }

  return {
    format: CARTRIDGE_FORMAT,
    modelId,
    modelFp,
    arch,
    config,
    tokens: ids,
    stateKey: key,
    codec: codec as CartridgeCodec,
    codecParams,
    digests: digests as Record<string, string>,
    receipts,
    parent,
    metadata: meta,
    tensors,
    decoded,
    state: parent || !decoded ? null : { tokens: ids, tensors: decoded },
    quality,
  };
}

/**
 * Rebuilds the whole state of a delta cartridge from its parent's state
 * (the caller finds the parent by `parsed.parent.stateKey`).
 */
export function resolveDelta(parsed: ParsedCartridge, parent: ModelState): ModelState {
  if (!parsed.parent) {
    if (!parsed.state) throw new InvalidInput('this cartridge has no state to resolve');
    return parsed.state;
  }
  const p = parsed.parent;
  if (!parent || parent.tokens.length !== p.tokens || parent.tokens.some((t, i) => t !== parsed.tokens[i])) {
    throw new MissingParent({
      kind: 'decode',
      problem: `this cartridge continues state ${p.stateKey} (${p.tokens} tokens); the state given is not it`,
      parentStateKey: p.stateKey,
    });
  }
  const parentByName = new Map(parent.tensors.map((t) => [t.name, t]));
  const tensors: StateTensor[] = [];
  for (const t of parsed.tensors) {
    const pt = parentByName.get(t.name);
    if (!pt) throw new MissingParent({ kind: 'decode', problem: `the parent state has no tensor ${t.name}`, parentStateKey: p.stateKey });
    if (parsed.codec === 'delta') {
      tensors.push({ name: t.name, dims: t.dims, data: decodeDelta(t.bytes, pt).data });
      continue;
    }
    const suffix = parsed.decoded!.find((d) => d.name === t.name)!;
    const want = dimsAt(suffix, p.tokens);
    if (!sameDims(pt.dims, want))
      throw new MissingParent({
        kind: 'decode',
        problem: `the parent's ${t.name} has dims [${pt.dims.join(', ')}], expected [${want.join(', ')}]`,
        parentStateKey: p.stateKey,
      });
    tensors.push(concatTokens([{ ...pt, tokenAxis: suffix.tokenAxis }, suffix]));
  }
  return { tokens: [...parsed.tokens], tensors };
}

/**
 * The "provenance" metadata of a cartridge (what computed its state), or
 * undefined when absent or not of the documented shape: it is informative, so
 * a malformed one is dropped, never an error.
 */
export function cartridgeProvenance(metadata: Record<string, string>): Provenance | undefined {
  const raw = metadata.provenance;
  if (raw === undefined) return undefined;
  try {
    const p = JSON.parse(raw) as Record<string, unknown>;
    const runtimes = p.runtimes as Record<string, unknown> | undefined;
    if (
      typeof p.device !== 'string' ||
      (p.adapter !== null && typeof p.adapter !== 'string') ||
      (p.dtype !== 'fp32' && p.dtype !== 'fp16' && p.dtype !== 'q8') ||
      typeof runtimes !== 'object' ||
      runtimes === null ||
      !Object.values(runtimes).every((v) => typeof v === 'string')
    )
      return undefined;
    return { device: p.device, adapter: p.adapter as string | null, dtype: p.dtype, runtimes: runtimes as Record<string, string> };
  } catch {
    return undefined;
  }
}
