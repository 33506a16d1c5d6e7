import { InvalidCartridge, InvalidInput, MissingParent, ModelMismatch, StatecartError } from '../core/errors.ts';
import { digestOf } from '../core/sha256.ts';
import { stateKey } from '../core/state-key.ts';
import type { ModelState, StateTensor } from '../models/types.ts';
import { readSafetensors, safetensorsParts, type SafetensorsFile, type TensorInput } from './safetensors.ts';
import { float16ToFloat32 } from './fp16.ts';
import { checkDelta, codecs, decodeDelta, encodeDelta, isCodecName, peekCodec, type CodecName, type CodecParams } from './codecs.ts';

/**
 * A cartridge: one state as a `.safetensors` file. The byte format is written
 * down in docs/cartridge-format.md; this file is its reference reader and
 * writer. Everything is validated before anything is returned.
 */

export const CARTRIDGE_FORMAT = 'statecart/1';

export type Arch = 'gpt2' | 'mamba';
export type CartridgeCodec = CodecName | 'delta';

/** The numbers that shape a state. GPT-2: head_dim, or n_embd from which it follows. */
export interface CartridgeConfig {
  n_layer: number;
  n_head?: number;
  head_dim?: number;
  n_embd?: number;
  d_inner?: number;
  d_state?: number;
  d_conv?: number;
  [k: string]: number | string | undefined;
}

export interface BuildInput {
  modelId: string;
  /** Hex SHA-256 model fingerprint. */
  modelFp: string;
  arch: Arch;
  config: CartridgeConfig;
  /** The whole state: tokens from the first, tensors over all of them. */
  state: ModelState;
  codec: CodecName;
  /** kivi4: `residual` (default 16 for GPT-2, 0 for Mamba); `kind` follows the tensor name. */
  codecParams?: CodecParams;
  receipts?: unknown[];
  /**
   * Makes a delta cartridge. GPT-2: only the KV of tokens after the parent's
   * are stored (pass the whole child state, or tensors already cut to the
   * new tokens). Mamba: each tensor is stored as a `delta` of `parent.state`'s,
   * with `codec` inside.
   */
  parent?: { stateKey: string; tokens: number; state?: ModelState };
}

export interface ExpectedModel {
  modelFp: string;
  modelId: string;
  arch: Arch;
  config: CartridgeConfig;
  vocabSize: number;
  /** Most tokens a state may hold (GPT-2: n_positions; Mamba: Infinity). */
  maxTokens: number;
}

export interface CartridgeTensor {
  name: string;
  /** As stored: F32, F16 or U8 (codec bytes). */
  dtype: string;
  shape: number[];
  /** The logical tensor's dims (for GPT-2 deltas the token axis counts new tokens only). */
  dims: number[];
  /** The stored bytes (a view into the input), and their "sha256:" digest, checked. */
  bytes: Uint8Array;
  digest: string;
}

export interface ParsedCartridge {
  format: typeof CARTRIDGE_FORMAT;
  modelId: string;
  modelFp: string;
  arch: Arch;
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
   * Decoded tensors in layer order. GPT-2 delta: the new tokens' KV only.
   * Mamba delta: null (needs the parent; use `resolveDelta`).
   */
  decoded: StateTensor[] | null;
  /** The state, ready to use; null for a delta (use `resolveDelta`). */
  state: ModelState | null;
}

const HEX64 = /^[0-9a-f]{64}$/;
const KEY = /^sha256:[0-9a-f]{64}$/;

const invalid = (msg: string, details: Record<string, unknown> = {}): InvalidCartridge => new InvalidCartridge(`Invalid cartridge: ${msg}`, details);

// ---------------------------------------------------------------- shapes

interface Dims {
  n_layer: number;
  n_head: number;
  head_dim: number;
  d_inner: number;
  d_state: number;
  d_conv: number;
}

function dimsOf(arch: Arch, c: CartridgeConfig, err: (m: string) => Error): Dims {
  const num = (k: string, v: unknown): number => {
    if (!Number.isSafeInteger(v) || (v as number) <= 0) throw err(`config.${k} must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  if (!c || typeof c !== 'object') throw err('config is missing');
  const n_layer = num('n_layer', c.n_layer);
  if (arch === 'gpt2') {
    const n_head = num('n_head', c.n_head);
    const head_dim = c.head_dim !== undefined ? num('head_dim', c.head_dim) : num('n_embd', c.n_embd) / n_head;
    if (!Number.isSafeInteger(head_dim) || head_dim <= 0) throw err(`config.n_embd ${c.n_embd} is not a multiple of n_head ${n_head}`);
    return { n_layer, n_head, head_dim, d_inner: 0, d_state: 0, d_conv: 0 };
  }
  return { n_layer, n_head: 0, head_dim: 0, d_inner: num('d_inner', c.d_inner), d_state: num('d_state', c.d_state), d_conv: num('d_conv', c.d_conv) };
}

/**
 * Tensor names and dims, in layer order. GPT-2: [n_head, tokens, head_dim];
 * Mamba: conv [d_inner, d_conv − 1] (the last d_conv − 1 inputs; the oldest
 * column of Hugging Face's cache is never read), ssm [d_inner, d_state].
 */
export function expectedTensors(arch: Arch, config: CartridgeConfig, storedTokens: number): { name: string; dims: number[] }[] {
  const d = dimsOf(arch, config, (m) => new InvalidInput(m));
  const out: { name: string; dims: number[] }[] = [];
  for (let l = 0; l < d.n_layer; l++) {
    if (arch === 'gpt2') {
      out.push({ name: `layers.${l}.key`, dims: [d.n_head, storedTokens, d.head_dim] });
      out.push({ name: `layers.${l}.value`, dims: [d.n_head, storedTokens, d.head_dim] });
    } else {
      out.push({ name: `layers.${l}.conv`, dims: [d.d_inner, d.d_conv - 1] });
      out.push({ name: `layers.${l}.ssm`, dims: [d.d_inner, d.d_state] });
    }
  }
  return out;
}

const sameDims = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

function kindOf(name: string): 'key' | 'value' {
  return name.endsWith('.key') ? 'key' : 'value';
}

/** GPT-2: the KV of tokens [from, T) of a [n_head, T, head_dim] tensor. */
function sliceTokens(t: StateTensor, from: number): Float32Array {
  const [h, T, d] = t.dims as [number, number, number];
  const n = T - from;
  const out = new Float32Array(h * n * d);
  for (let i = 0; i < h; i++) out.set(t.data.subarray((i * T + from) * d, (i + 1) * T * d), i * n * d);
  return out;
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
  if (arch !== 'gpt2' && arch !== 'mamba') throw new InvalidInput(`arch must be "gpt2" or "mamba", got ${String(arch)}`);
  if (state?.arch !== arch) throw new InvalidInput(`the state is ${state?.arch}, the model ${arch}`);
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
    if (arch === 'mamba' && !parent.state) throw new InvalidInput('a Mamba delta cartridge needs parent.state');
  }
  const stored = arch === 'gpt2' ? tokens.length - parentTokens : 0;
  const specs = expectedTensors(arch, input.config, stored);
  const byName = new Map(state.tensors.map((t) => [t.name, t]));
  if (byName.size !== specs.length || specs.some((s) => !byName.has(s.name))) {
    throw new InvalidInput(`the state's tensors (${[...byName.keys()].join(', ')}) are not the ${specs.length} the config implies`);
  }
  const parentByName = new Map((parent?.state?.tensors ?? []).map((t) => [t.name, t]));

  const residual = input.codecParams?.residual ?? (arch === 'gpt2' ? 16 : 0);
  const codecParams: Record<string, unknown> = codec === 'kivi4' ? { residual } : {};
  const fileCodec: CartridgeCodec = arch === 'mamba' && parent ? 'delta' : codec;
  const tensors: TensorInput[] = [];
  const shapes: Record<string, number[]> = {};
  for (const spec of specs) {
    const t = byName.get(spec.name)!;
    let data = t.data;
    if (arch === 'gpt2' && parentTokens > 0 && sameDims(t.dims, [spec.dims[0]!, tokens.length, spec.dims[2]!])) data = sliceTokens(t, parentTokens);
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
  if (arch !== 'gpt2' && arch !== 'mamba') throw invalid(`metadata "arch" is "${arch.slice(0, 40)}"; expected "gpt2" or "mamba"`);
  if (arch !== expect.arch || modelFp !== expect.modelFp) {
    throw new ModelMismatch(
      `This cartridge holds a state of model "${modelId.slice(0, 80)}" (${arch}, fingerprint ${short(modelFp)}), but the loaded model is "${expect.modelId}" (${expect.arch}, fingerprint ${short(expect.modelFp)}). Load the cartridge's model, or recreate the state on this one.`,
      { cartridgeModelId: modelId, cartridgeModelFp: modelFp, expectedModelId: expect.modelId, expectedModelFp: expect.modelFp },
    );
  }

  const config = jsonField(meta, 'config', isObject, 'a JSON object');
  const want = dimsOf(arch, expect.config, (m) => new InvalidInput(`expected model: ${m}`));
  const got = dimsOf(arch, config as CartridgeConfig, (m) => invalid(`metadata "config": ${m}`));
  for (const k of Object.keys(want) as (keyof Dims)[]) {
    if (want[k] !== got[k])
      throw invalid(`metadata "config" says ${k} = ${got[k]} but the model has ${want[k]}, although the fingerprints match — the file was edited`, {
        field: k,
      });
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
  if (codec === 'delta' && (arch !== 'mamba' || !parent)) throw invalid('codec "delta" is only for Mamba delta cartridges (with a parent)');
  if (arch === 'mamba' && parent && codec !== 'delta') throw invalid('a Mamba cartridge with a parent must use codec "delta"');
  let inner: CodecName | null = null;
  if (codec === 'delta') {
    const i = codecParams.inner;
    if (!isCodecName(i)) throw invalid(`codec_params.inner is ${JSON.stringify(i)}; it must name a codec (${Object.keys(codecs).join(', ')})`);
    inner = i;
  }

  // The tensor set and each tensor's dtype and shape.
  const stored = arch === 'gpt2' ? ids.length - (parent?.tokens ?? 0) : 0;
  const specs = expectedTensors(arch, expect.config, stored);
  const packed = codec !== 'fp32' && codec !== 'fp16';
  const shapes = packed ? jsonField(meta, 'shapes', isObject, 'a JSON object of tensor name → dims') : {};
  for (const name of file.tensors.keys()) {
    if (!specs.some((s) => s.name === name))
      throw invalid(
        `unexpected tensor "${name.slice(0, 80)}"; a ${arch} cartridge with ${specs.length / 2} layers holds ${specs[0]?.name} … ${specs[specs.length - 1]?.name}`,
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
    tensors.push({ name: spec.name, dtype, shape: e.shape, dims: spec.dims, bytes: e.bytes, digest: d });
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
      if (codec === 'fp32') decoded.push({ name: t.name, dims: t.dims, data: new Float32Array(t.bytes.slice().buffer) });
      else if (codec === 'fp16') {
        decoded.push({ name: t.name, dims: t.dims, data: float16ToFloat32(new Uint16Array(t.bytes.slice().buffer)) });
      } else if (codec === 'delta') {
        const c = checkDelta(t.bytes);
        if (c.inner !== inner) throw invalid(`tensor "${t.name}" is a delta over ${c.inner}, metadata says ${inner}`);
        if (!sameDims(c.dims, t.dims)) throw invalid(`tensor "${t.name}" decodes to dims [${c.dims.join(', ')}], expected [${t.dims.join(', ')}]`);
      } else {
        const p = peekCodec(t.bytes);
        if (p.codec !== codec) throw invalid(`tensor "${t.name}" is encoded with ${p.codec}, metadata says ${codec}`, { tensor: t.name });
        const dec = codecs[codec].decode(t.bytes);
        if (!sameDims(dec.dims, t.dims)) throw invalid(`tensor "${t.name}" decodes to dims [${dec.dims.join(', ')}], expected [${t.dims.join(', ')}]`);
        decoded.push({ name: t.name, dims: t.dims, data: dec.data });
      }
    } catch (e) {
      if (e instanceof InvalidCartridge) throw e;
      throw invalid(`tensor "${t.name}" does not decode as ${codec}: ${(e as Error).message}`, { tensor: t.name });
    }
  }
  if (codec === 'delta') decoded = null;

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
    state: parent || !decoded ? null : { arch, tokens: ids, tensors: decoded },
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
  if (!parent || parent.arch !== parsed.arch || parent.tokens.length !== p.tokens || parent.tokens.some((t, i) => t !== parsed.tokens[i])) {
    throw new MissingParent(`this cartridge continues state ${p.stateKey} (${p.tokens} tokens); the state given is not it`, { parentStateKey: p.stateKey });
  }
  const parentByName = new Map(parent.tensors.map((t) => [t.name, t]));
  const tensors: StateTensor[] = [];
  for (const t of parsed.tensors) {
    const pt = parentByName.get(t.name);
    if (!pt) throw new MissingParent(`the parent state has no tensor ${t.name}`, { parentStateKey: p.stateKey });
    if (parsed.arch === 'mamba') {
      tensors.push({ name: t.name, dims: t.dims, data: decodeDelta(t.bytes, pt).data });
      continue;
    }
    const suffix = parsed.decoded!.find((d) => d.name === t.name)!;
    const [h, n, d] = suffix.dims as [number, number, number];
    if (!sameDims(pt.dims, [h, p.tokens, d]))
      throw new MissingParent(`the parent's ${t.name} has dims [${pt.dims.join(', ')}], expected [${h}, ${p.tokens}, ${d}]`);
    const T = p.tokens + n;
    const data = new Float32Array(h * T * d);
    for (let i = 0; i < h; i++) {
      data.set(pt.data.subarray(i * p.tokens * d, (i + 1) * p.tokens * d), i * T * d);
      data.set(suffix.data.subarray(i * n * d, (i + 1) * n * d), (i * T + p.tokens) * d);
    }
    tensors.push({ name: t.name, dims: [h, T, d], data });
  }
  return { arch: parsed.arch, tokens: [...parsed.tokens], tensors };
}
