// Mutations of valid cartridges for the fuzz tests of the format
// (tests/unit/cartridge.test.ts) and of import (tests/unit/cartridge-io.test.ts).

import { mulberry32 } from '../../../src/core/prng.ts';

/** A small seeded generator (mulberry32): the same seed gives the same mutations. */
export const rng = mulberry32;

const enc = new TextEncoder();

/** Rewrites the header JSON of a cartridge, keeping its data bytes as they are. */
// biome-ignore lint/suspicious/noExplicitAny: a test mutator edits arbitrary header JSON
export function rewriteHeader(bytes: Uint8Array, edit: (h: Record<string, any>) => void): Uint8Array {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  edit(header);
  const json = enc.encode(JSON.stringify(header));
  const data = bytes.subarray(8 + n);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

// biome-ignore lint/suspicious/noExplicitAny: as above
export const editMeta = (bytes: Uint8Array, edit: (m: Record<string, any>) => void) => rewriteHeader(bytes, (h) => edit(h.__metadata__));

export interface Mutators {
  pick: <T>(xs: readonly T[]) => T;
  mutations: ((b: Uint8Array) => Uint8Array)[];
}

/**
 * Truncations, bit flips in header and data, header lengths, tensor entries
 * (dtype, shape, offsets, names), token ids, digests, fingerprints and model
 * fields, metadata types, config and codec fields. `fps`: fingerprints to
 * swap in (the first is the model's own).
 */
export function cartridgeMutators(r: () => number, fps: readonly string[]): Mutators {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const headerLen = (b: Uint8Array) => Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  const weird = [null, 0, -1, 1.5, 'x', '', [], {}, [1, 2], true, 1e300, '{"a":1}', '[1,2]', 'sha256:' + 'f'.repeat(64)];
  const fp0 = fps[0]!;

  const mutations: ((b: Uint8Array) => Uint8Array)[] = [
    // truncation
    (b) => b.subarray(0, Math.floor(r() * b.length)),
    // bit flips in the header
    (b) => {
      const c = b.slice();
      for (let k = 1 + Math.floor(r() * 3); k > 0; k--) c[8 + Math.floor(r() * headerLen(b))]! ^= 1 << Math.floor(r() * 8);
      return c;
    },
    // bit flips in the data
    (b) => {
      const c = b.slice();
      const start = 8 + headerLen(b);
      c[start + Math.floor(r() * (b.length - start))]! ^= 1 << Math.floor(r() * 8);
      return c;
    },
    // bit flips anywhere, including the length field
    (b) => {
      const c = b.slice();
      c[Math.floor(r() * Math.min(16, b.length))]! ^= 1 << Math.floor(r() * 8);
      return c;
    },
    // oversized or undersized header length
    (b) => {
      const c = b.slice();
      const v = pick([BigInt(b.length), BigInt(b.length) * 2n, 100_000_001n, 2n ** 63n, BigInt(headerLen(b) - 1), BigInt(headerLen(b) + 8), 0n]);
      new DataView(c.buffer).setBigUint64(0, v, true);
      return c;
    },
    // tensor entries: dtype, shape, offsets
    (b) =>
      rewriteHeader(b, (h) => {
        const name = pick(Object.keys(h).filter((k) => k !== '__metadata__'));
        const e = h[name];
        const what = Math.floor(r() * 6);
        if (what === 0) e.dtype = pick(['F32', 'F16', 'U8', 'I8', 'BF16', 'F64', 'I64', 'X', 7]);
        else if (what === 1) e.shape = pick([[e.data_offsets[1] - e.data_offsets[0]], [1], [], [2, 18, 4], [0], [-1], 'x', [1e20]]);
        else if (what === 2) e.data_offsets = [e.data_offsets[0] + pick([-4, -1, 1, 4]), e.data_offsets[1]];
        else if (what === 3) e.data_offsets = [e.data_offsets[0], e.data_offsets[1] + pick([-4, -1, 1, 4])];
        else if (what === 4) h[name + pick(['x', '.0', ''])] = { ...e };
        else delete h[name];
      }),
    // token ids
    (b) =>
      editMeta(b, (m) => {
        const t = JSON.parse(m.tokens);
        const i = Math.floor(r() * t.length);
        t[i] = pick([t[i] + 1, -1, 50257, 50280, 1e9, 0.5, '3', null, 2 ** 53]);
        if (r() < 0.2) t.length = Math.floor(r() * t.length);
        m.tokens = JSON.stringify(t);
      }),
    // digests
    (b) =>
      editMeta(b, (m) => {
        const d = JSON.parse(m.digests);
        const k = pick(Object.keys(d));
        const w = Math.floor(r() * 4);
        if (w === 0) d[k] = d[k].slice(0, -1) + (d[k].endsWith('0') ? '1' : '0');
        else if (w === 1) delete d[k];
        else if (w === 2) d[k + 'x'] = d[k];
        else d[k] = pick(weird);
        m.digests = JSON.stringify(d);
      }),
    // fingerprint, model, arch
    (b) =>
      editMeta(b, (m) => {
        const k = pick(['model_fp', 'model_id', 'arch', 'state_key', 'parent_state_key', 'parent_tokens', 'format']);
        m[k] = pick([...fps, fp0.toUpperCase(), 'gpt2', 'mamba', '', '5', '0', '18', 'sha256:' + fp0, 'statecart/1']);
      }),
    // metadata types
    (b) =>
      editMeta(b, (m) => {
        const k = pick(Object.keys(m).concat(['extra']));
        if (r() < 0.5) m[k] = pick(weird);
        else m[k] = JSON.stringify(pick(weird));
      }),
    // config and codec metadata
    (b) =>
      editMeta(b, (m) => {
        const w = Math.floor(r() * 4);
        if (w === 0) {
          const c = JSON.parse(m.config);
          c[pick(Object.keys(c))] = pick(weird.concat([3, 4, 6, 1]));
          m.config = JSON.stringify(c);
        } else if (w === 1) m.codec = pick(['fp32', 'fp16', 'int8', 'kivi4', 'delta', 'zip']);
        else if (w === 2) m.codec_params = JSON.stringify({ inner: pick(['fp32', 'int8', 'kivi4', 'delta', 'x']) });
        else if (m.shapes) {
          const s = JSON.parse(m.shapes);
          s[pick(Object.keys(s))] = pick([[2, 18, 4], [2, 2, 4], [6, 3], [6, 4], [1], null]);
          m.shapes = JSON.stringify(s);
        }
      }),
  ];
  return { pick, mutations };
}
