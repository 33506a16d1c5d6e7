import type { StateStore } from '../store/store.ts';
import type { Manifest } from '../store/records.ts';
import type { ModelState, StateModel } from '../models/types.ts';
import {
  buildCartridge,
  cartridgeProvenance,
  parseCartridge,
  resolveDelta,
  CARTRIDGE_FORMAT,
  type CartridgeCodec,
  type CartridgeConfig,
  type ExpectedModel,
} from '../formats/cartridge.ts';
import { parseSafetensorsHeader } from '../formats/safetensors.ts';
import { isCodecName, codecs, type CodecName, type CodecParams } from '../formats/codecs.ts';
import { KeyChain } from '../core/key-chain.ts';
import { dimsAt } from '../core/state.ts';
import { InvalidCartridge, InvalidInput, MissingParent, ModelMismatch, StateNotFound, StatecartError, throwIfAborted } from '../core/errors.ts';
import { signReceipt, verifyReceipts, type Receipt, type SignedReceipt } from '../core/receipts.ts';

/**
 * Cartridges on the engine side: a stored state out to a `.safetensors` Blob,
 * and a file (bytes, Blob or URL) in to the store. The byte format and its
 * validation live in src/formats/cartridge.ts; this file adds what needs the
 * store and the loaded model: finding states and parents, bounding memory
 * before a large file is read, and writing nothing until everything checked.
 */

/** What export and import need: the store, and the model (the loaded one, or by id). */
export interface CartridgeHost {
  store: StateStore;
  getModel(id?: string): Promise<StateModel>;
}

export interface ExportOptions {
  /** Makes a delta cartridge against this state key: a prefix of the state (GPT-2), or a stored state it continues (Mamba). */
  delta?: string;
  /** Default fp32 (lossless). For a Mamba delta, the codec inside the delta. */
  codec?: CodecName;
  codecParams?: CodecParams;
}

export interface ExportedCartridge {
  blob: Blob;
  bytes: number;
  stateKey: string;
  tokens: number;
  codec: CartridgeCodec;
  parent: string | null;
  /** Receipts in the file, oldest first. */
  receipts: number;
}

export interface ImportResult {
  stateKey: string;
  tokens: number;
  /** Bytes of the stored state (as the store holds it). */
  bytes: number;
  /** The cartridge's codec. */
  codec: CartridgeCodec;
  /** True when the state was already stored: nothing was written. */
  reused: boolean;
  parent: string | null;
  /** The receipt of the import (null when nothing was written). */
  receipt: SignedReceipt | null;
  /** Whether the cartridge's receipt chain verified and ends at this state. */
  receiptsVerified: boolean;
}

export type CartridgeSource = Uint8Array | ArrayBuffer | Blob | string | URL;

const HEADER_LIMIT = 16 * 1024 * 1024;
// Per tensor: codec header, scales and the delta's inner header; far above what any codec adds.
const TENSOR_SLACK = 64 * 1024;
const MAX_RECEIPTS = 4096;

// ---------------------------------------------------------------- model

/** What a cartridge of this model must be: its identity and its state tensors. */
export function expectedModel(model: StateModel): ExpectedModel {
  return {
    modelFp: model.fingerprint,
    modelId: model.id,
    arch: model.arch,
    config: model.identity.config as CartridgeConfig,
    specs: model.stateSpecs,
    vocabSize: model.vocabSize,
    maxTokens: model.maxTokens,
  };
}

/** The most data bytes a cartridge of this model can hold (a sliceable state grows with its tokens, up to the context). */
function maxDataBytes(model: StateModel): number {
  let elems = 0;
  for (const s of model.stateSpecs) elems += dimsAt(s, Number.isFinite(model.maxTokens) ? model.maxTokens : 0).reduce((a, b) => a * b, 1);
  return elems * 4 + model.stateSpecs.length * TENSOR_SLACK;
}

// ---------------------------------------------------------------- export

/**
 * A stored state as a cartridge Blob. The Blob is made from the writer's
 * parts: the header, then each tensor's bytes. For fp32 those parts are views
 * of the state's own arrays, so the only copy made is the Blob itself; other
 * codecs add their (smaller) encodings, released once the Blob holds them.
 */
export async function exportCartridge(host: CartridgeHost, key: string, opts: ExportOptions = {}): Promise<ExportedCartridge> {
  const codec = opts.codec ?? 'fp32';
  if (!isCodecName(codec)) throw new InvalidInput(`exportCartridge: unknown codec "${String(codec)}" (known: ${Object.keys(codecs).join(', ')})`);
  const m = await host.store.getManifest(key);
  if (!m) throw new StateNotFound(key, 'exportCartridge');
  const model = await host.getModel(m.modelId);
  if (model.fingerprint !== m.modelFp) throw new ModelMismatch({ kind: 'state', key, modelId: m.modelId, stateFp: m.modelFp, loadedFp: model.fingerprint });
  let parent: { stateKey: string; tokens: number; state?: ModelState } | undefined;
  if (opts.delta !== undefined) {
    if (opts.delta === key) throw new InvalidInput('exportCartridge: a delta cartridge needs a parent shorter than the state itself; export it whole instead.');
    const chain = await KeyChain.create(m.modelFp, m.tokens);
    let L = 0;
    for (let n = 1; n < m.tokens.length && L === 0; n++) if (chain.keyAt(n) === opts.delta) L = n;
    if (L === 0) {
      throw new InvalidInput(
        `exportCartridge: state ${key} does not continue ${opts.delta} (that key is not the key of any prefix of its ${m.tokens.length} tokens); pick one of its ancestors, e.g. its parent ${m.parent ?? '(none recorded)'}.`,
        { key, parent: opts.delta },
      );
    }
    parent = { stateKey: opts.delta, tokens: L };
    if (!model.sliceable) {
      // A fixed-size state cannot be cut by token: the delta is against the parent's stored tensors.
      if (!(await host.store.getManifest(opts.delta))) throw new MissingParent({ kind: 'export', parentStateKey: opts.delta, parentTokens: L });
      parent.state = (await host.store.getState(opts.delta)).state;
    }
  }
  const { state } = await host.store.getState(key);
  const receipts = await receiptChain(host.store, m);
  const built = await buildCartridge({
    modelId: m.modelId,
    modelFp: m.modelFp,
    arch: model.arch,
    config: model.identity.config as CartridgeConfig,
    specs: model.stateSpecs,
    state,
    codec,
    ...(opts.codecParams ? { codecParams: opts.codecParams } : {}),
    receipts,
    ...(m.provenance ? { provenance: m.provenance } : {}),
    ...(parent ? { parent } : {}),
  });
  const blob = new Blob(built.parts as BlobPart[], { type: 'application/octet-stream' });
  built.parts.length = 0;
  return {
    blob,
    bytes: blob.size,
    stateKey: key,
    tokens: m.tokens.length,
    codec: built.metadata.codec as CartridgeCodec,
    parent: parent?.stateKey ?? null,
    receipts: receipts.length,
  };
}

/**
 * The receipts that made a state, oldest first, as `{ json, hash }` (the exact
 * RFC 8785 text, so anyone can rehash it): followed through each manifest's
 * parent while each receipt's `prev` is the parent's receipt.
 */
async function receiptChain(store: StateStore, m: Manifest): Promise<{ json: string; hash: string }[]> {
  const chain: { json: string; hash: string }[] = [];
  let cur: Manifest | undefined = m;
  while (cur?.receipt && cur.receiptJson && chain.length < MAX_RECEIPTS) {
    chain.unshift({ json: cur.receiptJson, hash: cur.receipt });
    let prev: unknown;
    try {
      prev = (JSON.parse(cur.receiptJson) as Receipt).prev;
    } catch {
      break;
    }
    if (!prev || !cur.parent) break;
    const next: Manifest | undefined = await store.getManifest(cur.parent);
    if (!next || next.receipt !== prev) break;
    cur = next;
  }
  return chain;
}

// ---------------------------------------------------------------- import

/**
 * Validates a cartridge completely against the loaded model, then stores its
 * state in one atomic write. Nothing is written before every check passed, so
 * a refused file leaves the store exactly as it was. A state already stored
 * is not written again (`reused: true`).
 */
export async function importCartridge(host: CartridgeHost, source: CartridgeSource, opts: { signal?: AbortSignal } = {}): Promise<ImportResult> {
  const model = await host.getModel();
  const expect = expectedModel(model);
  const bytes = await readCartridge(source, model, expect, opts.signal);
  const parsed = await parseCartridge(bytes, expect);
  const existing = await host.store.getManifest(parsed.stateKey);
  const receiptsVerified = await checkReceipts(parsed.receipts, parsed.stateKey);
  if (existing) {
    return {
      stateKey: parsed.stateKey,
      tokens: parsed.tokens.length,
      bytes: existing.bytes,
      codec: parsed.codec,
      reused: true,
      parent: existing.parent,
      receipt: null,
      receiptsVerified: receiptsVerified.ok,
    };
  }
  let state: ModelState;
  if (parsed.parent) {
    const parentState = await findParent(host.store, model, parsed.parent, parsed.tokens);
    try {
      state = resolveDelta(parsed, parentState);
    } catch (e) {
      // A Mamba delta carries a hash of its parent's bits: the stored state
      // under that key holds other numbers (say, it was stored with a lossy codec).
      if (e instanceof MissingParent) {
        throw new MissingParent({ kind: 'other-bits', parentStateKey: parsed.parent.stateKey, parentTokens: parsed.parent.tokens, problem: e.message });
      }
      if (e instanceof StatecartError)
        throw new InvalidCartridge(`it does not apply to its parent ${parsed.parent.stateKey}: ${e.message}`, { parentStateKey: parsed.parent.stateKey });
      throw e;
    }
  } else {
    state = parsed.state!;
  }
  throwIfAborted(opts.signal);
  const chain = await KeyChain.create(model.fingerprint, parsed.tokens);
  const parentManifest = parsed.parent ? ((await host.store.getManifest(parsed.parent.stateKey)) ?? null) : null;
  // The receipt names the stored blobs' digests; it is written in the state's own transaction.
  const provenance = cartridgeProvenance(parsed.metadata);
  const res = await host.store.putState({
    state,
    chain,
    modelId: model.id,
    modelFp: model.fingerprint,
    arch: model.arch,
    parent: parentManifest,
    ...(provenance ? { provenance } : {}),
    receipt: (digest) =>
      signReceipt({
        op: 'import',
        model_fp: model.fingerprint,
        input_keys: parsed.parent ? [parsed.parent.stateKey] : [],
        delta_tokens: parsed.tokens.length - (parsed.parent?.tokens ?? 0),
        output_key: parsed.stateKey,
        blob_digest: digest,
        tokens_processed: 0,
        tokens_reused: 0,
        prev: receiptsVerified.ok ? receiptsVerified.last : null,
      }),
  });
  return {
    stateKey: parsed.stateKey,
    tokens: parsed.tokens.length,
    bytes: res.manifest.bytes,
    codec: parsed.codec,
    reused: !res.written,
    parent: parsed.parent?.stateKey ?? null,
    receipt: res.receipt,
    receiptsVerified: receiptsVerified.ok,
  };
}

/** Verifies the receipts a cartridge carries: a valid chain whose last link made this state. */
async function checkReceipts(receipts: unknown[], key: string): Promise<{ ok: boolean; last: string | null }> {
  if (receipts.length === 0 || receipts.length > MAX_RECEIPTS) return { ok: false, last: null };
  const links: { json: string; hash: string }[] = [];
  for (const x of receipts) {
    const o = x as { json?: unknown; hash?: unknown } | null;
    if (!o || typeof o.json !== 'string' || typeof o.hash !== 'string') return { ok: false, last: null };
    links.push({ json: o.json, hash: o.hash });
  }
  const v = await verifyReceipts(links);
  if (!v.ok) return { ok: false, last: null };
  try {
    const last = JSON.parse(links[links.length - 1]!.json) as Receipt;
    if (last.output_key !== key) return { ok: false, last: null };
  } catch {
    return { ok: false, last: null };
  }
  return { ok: true, last: links[links.length - 1]!.hash };
}

/** The parent of a delta: a stored state, or (sliceable states) its blocks, which any longer stored state may hold. */
async function findParent(store: StateStore, model: StateModel, parent: { stateKey: string; tokens: number }, tokens: number[]): Promise<ModelState> {
  if (await store.getManifest(parent.stateKey)) return (await store.getState(parent.stateKey)).state;
  if (model.sliceable && parent.tokens % 16 === 0) {
    const chain = await KeyChain.create(model.fingerprint, tokens.slice(0, parent.tokens));
    const s = await store.restoreBlockPrefix(chain, parent.tokens / 16, model.stateSpecs);
    if (s) return s;
  }
  throw new MissingParent({ kind: 'not-stored', parentStateKey: parent.stateKey, parentTokens: parent.tokens });
}

/**
 * The whole file as bytes, read only after its header passed: a Blob (or a
 * download) is sliced for the 8-byte length and the header first, so a file
 * for another model, or larger than any state of this model can be, is
 * refused without reading its data.
 */
async function readCartridge(source: CartridgeSource, model: StateModel, expect: ExpectedModel, signal?: AbortSignal): Promise<Uint8Array> {
  if (typeof source === 'string' || source instanceof URL) return readCartridge(await download(String(source), model, signal), model, expect, signal);
  if (source instanceof ArrayBuffer) source = new Uint8Array(source);
  if (source instanceof Uint8Array) {
    precheck(parseSafetensorsHeader(source, source.length, { maxHeaderBytes: HEADER_LIMIT }), source.length, model, expect);
    return source;
  }
  if (typeof Blob !== 'undefined' && source instanceof Blob) {
    const size = source.size;
    const head = await readSlice(source, 0, Math.min(8, size));
    const dv = new DataView(head.buffer, head.byteOffset, head.length);
    const n = head.length === 8 && dv.getUint32(4, true) === 0 ? dv.getUint32(0, true) : Infinity;
    // Out of bounds: the header parser says why, from the 8 bytes alone.
    const prefix = n <= HEADER_LIMIT && 8 + n <= size ? await readSlice(source, 0, 8 + n) : head;
    precheck(parseSafetensorsHeader(prefix, size, { maxHeaderBytes: HEADER_LIMIT }), size, model, expect);
    throwIfAborted(signal);
    return readSlice(source, 0, size);
  }
  throw new InvalidInput('importCartridge: give the cartridge as a Uint8Array, an ArrayBuffer, a Blob (or File), or a URL string.');
}

async function readSlice(blob: Blob, start: number, end: number): Promise<Uint8Array> {
  try {
    return new Uint8Array(await blob.slice(start, end).arrayBuffer());
  } catch (e) {
    throw new InvalidCartridge(
      `Invalid cartridge: the file could not be read (${(e as Error)?.name ?? 'error'}: ${(e as Error)?.message ?? String(e)}). If it is a local file, choose it again.`,
    );
  }
}

/** What the header alone can refuse: not a cartridge, another model, more bytes than this model's states can have. */
function precheck(h: ReturnType<typeof parseSafetensorsHeader>, size: number, model: StateModel, expect: ExpectedModel): void {
  const meta = h.metadata;
  const fp = meta.model_fp;
  const arch = meta.arch;
  // Anything else wrong with the metadata, parseCartridge reports in its own words.
  if (meta.format === CARTRIDGE_FORMAT && typeof fp === 'string' && typeof arch === 'string' && (fp !== expect.modelFp || arch !== expect.arch)) {
    throw new ModelMismatch({
      kind: 'cartridge',
      cartridgeModelId: String(meta.model_id ?? '?').slice(0, 80),
      cartridgeArch: arch.slice(0, 20),
      cartridgeFp: fp.slice(0, 64),
      loadedModelId: expect.modelId,
      loadedArch: expect.arch,
      loadedFp: expect.modelFp,
    });
  }
  const data = size - h.dataStart;
  const limit = maxDataBytes(model);
  if (data > limit) {
    throw new InvalidCartridge(`it holds ${data} bytes of tensors, more than any state of ${expect.modelId} can (${limit}) — the file is not what it claims.`, {
      dataBytes: data,
      limit,
    });
  }
}

async function download(url: string, model: StateModel, signal?: AbortSignal): Promise<Blob> {
  let r: Response;
  try {
    r = await fetch(url, signal ? { signal } : {});
  } catch (e) {
    throw new InvalidInput(
      `Could not download the cartridge from ${url}: ${(e as Error)?.message ?? String(e)}. Check the address and your connection (and, for another site, that it allows cross-origin requests).`,
      { url },
    );
  }
  if (!r.ok) {
    throw new InvalidInput(`Could not download the cartridge from ${url}: HTTP ${r.status}${r.statusText ? ' ' + r.statusText : ''}. Check the address.`, {
      url,
      status: r.status,
    });
  }
  const len = Number(r.headers.get('content-length') ?? NaN);
  const limit = HEADER_LIMIT + 8 + maxDataBytes(model);
  if (Number.isFinite(len) && len > limit) {
    await r.body?.cancel().catch(() => undefined);
    throw new InvalidCartridge(`${url} is ${len} bytes, more than any cartridge of ${model.id} can be (${limit}); nothing was read.`, {
      url,
      bytes: len,
    });
  }
  try {
    return await r.blob();
  } catch (e) {
    throw new InvalidInput(`The download of ${url} failed midway: ${(e as Error)?.message ?? String(e)}.`, { url });
  }
}
