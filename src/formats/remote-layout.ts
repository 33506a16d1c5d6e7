/**
 * The layout of a remote state host: plain files on any static host, no
 * server code, every file named by what it holds.
 *
 *   <remote>/<model_fp>/index.json              the states this host holds for one model
 *   <remote>/<model_fp>/<key-hex>.safetensors   one state, as a whole cartridge (docs/cartridge-format.md)
 *
 * `key-hex` is the state key without its "sha256:" prefix. A file's address
 * says which tokens of which model it holds, so it never changes: any HTTP
 * cache or CDN may keep it forever. Only index.json changes (when states are
 * added), and a client keeps it for a short while only.
 */

import { CARTRIDGE_FORMAT } from './cartridge.ts';
import { parseSafetensorsHeader } from './safetensors.ts';

export const REMOTE_INDEX_FORMAT = 'statecart-remote/1';
export const CATALOG_FORMAT = 'statecart-catalog/1';

/** One state a remote holds. */
export interface RemoteIndexEntry {
  /** The state key ("sha256:" + 64 hex): the chain key of its tokens. */
  key: string;
  /** Tokens in the state. */
  tokens: number;
  /** Bytes of its cartridge file. */
  bytes: number;
  /** The codec of the tensors inside the cartridge (fp32, fp16, int8, kivi4). */
  codec: string;
  label?: string;
}

export interface RemoteIndex {
  format: typeof REMOTE_INDEX_FORMAT;
  model_fp: string;
  model_id: string;
  states: RemoteIndexEntry[];
}

/** One line of the page's catalog.json (src/ui/cartridges.ts reads it). */
export interface CatalogEntry {
  name: string;
  description?: string;
  model?: string;
  size?: number;
  /** The cartridge, relative to catalog.json. */
  url: string;
  key?: string;
  tokens?: number;
}

export interface Catalog {
  format: typeof CATALOG_FORMAT;
  /** A remote state host published with the catalog, relative to catalog.json: the page uses it as its default remote. */
  remote?: string;
  cartridges: CatalogEntry[];
}

const KEY = /^sha256:[0-9a-f]{64}$/;
const FP = /^[0-9a-f]{64}$/;

export function isStateKey(k: unknown): k is string {
  return typeof k === 'string' && KEY.test(k);
}

/** A remote's base URL with the trailing slash relative URLs need. */
export function remoteBase(remote: string | URL, against?: string): string {
  const u = new URL(String(remote), against);
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  u.search = '';
  u.hash = '';
  return u.href;
}

/** `<model_fp>/index.json`, relative to the remote. */
export function indexPath(modelFp: string): string {
  return `${modelFp}/index.json`;
}

/** `<model_fp>/<key-hex>.safetensors`, relative to the remote. */
export function cartridgePath(modelFp: string, key: string): string {
  if (!isStateKey(key)) throw new RangeError(`not a state key: ${String(key).slice(0, 80)}`);
  return `${modelFp}/${key.slice('sha256:'.length)}.safetensors`;
}

export function indexUrl(remote: string, modelFp: string): string {
  return new URL(indexPath(modelFp), remoteBase(remote)).href;
}

export function cartridgeUrl(remote: string, modelFp: string, key: string): string {
  return new URL(cartridgePath(modelFp, key), remoteBase(remote)).href;
}

/**
 * Reads an index.json: the entries it holds by key, or a sentence saying why
 * it is not one. Entries that are malformed are left out (a host may hold
 * newer kinds of entries); an index for another model is refused whole.
 */
export function parseRemoteIndex(json: unknown, modelFp: string): { entries: Map<string, RemoteIndexEntry> } | { problem: string } {
  if (!json || typeof json !== 'object') return { problem: 'it is not a JSON object' };
  const o = json as Partial<RemoteIndex>;
  if (o.format !== REMOTE_INDEX_FORMAT) return { problem: `its format is ${JSON.stringify(o.format ?? null)}, not "${REMOTE_INDEX_FORMAT}"` };
  if (typeof o.model_fp !== 'string' || !FP.test(o.model_fp)) return { problem: 'it names no model fingerprint' };
  if (o.model_fp !== modelFp) return { problem: `it lists states of model ${o.model_fp.slice(0, 16)}…, not ${modelFp.slice(0, 16)}…` };
  if (!Array.isArray(o.states)) return { problem: 'it has no list of states' };
  const entries = new Map<string, RemoteIndexEntry>();
  for (const s of o.states as unknown[]) {
    const e = s as Partial<RemoteIndexEntry> | null;
    if (!e || !isStateKey(e.key)) continue;
    if (!Number.isInteger(e.tokens) || (e.tokens as number) < 1) continue;
    if (!Number.isInteger(e.bytes) || (e.bytes as number) < 8) continue;
    entries.set(e.key, {
      key: e.key,
      tokens: e.tokens as number,
      bytes: e.bytes as number,
      codec: typeof e.codec === 'string' ? e.codec : 'fp32',
      ...(typeof e.label === 'string' ? { label: e.label } : {}),
    });
  }
  return { entries };
}

/** An index with these entries (sorted by key, so the same states give the same bytes). */
export function makeRemoteIndex(modelFp: string, modelId: string, states: RemoteIndexEntry[]): RemoteIndex {
  const byKey = new Map(states.map((s) => [s.key, s]));
  return {
    format: REMOTE_INDEX_FORMAT,
    model_fp: modelFp,
    model_id: modelId,
    states: [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)),
  };
}

/** What a cartridge's header says about it: enough to place it in the layout (its contents are checked by the importer). */
export interface CartridgeFacts {
  modelFp: string;
  modelId: string;
  key: string;
  tokens: number;
  codec: string;
  /** A delta cartridge's parent (a remote publishes whole states only). */
  parent: string | null;
}

export function describeCartridge(bytes: Uint8Array): CartridgeFacts {
  const h = parseSafetensorsHeader(bytes, bytes.length);
  const m = h.metadata;
  if (m.format !== CARTRIDGE_FORMAT) throw new RangeError(`not a statecart cartridge (format ${JSON.stringify(m.format ?? null)})`);
  const tokens = JSON.parse(m.tokens ?? 'null') as unknown;
  if (!Array.isArray(tokens) || !isStateKey(m.state_key) || typeof m.model_fp !== 'string' || !FP.test(m.model_fp)) {
    throw new RangeError('the cartridge header lacks its state key, model fingerprint or tokens');
  }
  return {
    modelFp: m.model_fp,
    modelId: m.model_id ?? '',
    key: m.state_key,
    tokens: tokens.length,
    codec: m.codec ?? 'fp32',
    parent: m.parent_state_key ?? null,
  };
}
