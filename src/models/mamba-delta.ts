// A Mamba child state stored as its difference from its parent (the TenPak
// seed's idea applied to states). Pure functions over ModelState: the store
// decides when to use them (DESIGN.md, "State keys": a Mamba state cannot be
// sliced by token, so it is stored whole or as a delta of its parent).
//
// With the fp32 inner codec the difference is a bitwise XOR, so the child
// rebuilds bit for bit; the XOR is as long as the state itself, but its high
// bits are mostly zero where child and parent are close, which a general
// compressor (CompressionStream 'deflate-raw') turns into fewer bytes. A lossy
// inner codec (int8, kivi4) spends its range on child − parent, not on the
// state, which is smaller error at the same size, not fewer bytes.

import { frameParts } from '../formats/frame.ts';
import type { ModelState, StateTensor } from './types.ts';
import { decodeDelta, encodeDelta, checkDelta, type CodecName } from '../formats/codecs.ts';
import { InvalidInput, MissingParent, CorruptBlob } from '../core/errors.ts';

export interface MambaDeltaOptions {
  /** Codec of the difference; fp32 (default) is exact (XOR of the bits). */
  inner?: CodecName;
}

function sameLayout(a: StateTensor[], b: StateTensor[]): string | null {
  if (a.length !== b.length) return `${a.length} tensors against ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.name !== y.name) return `tensor ${i} is ${x.name} against ${y.name}`;
    if (x.dims.length !== y.dims.length || x.dims.some((d, j) => d !== y.dims[j])) return `${x.name} is [${x.dims}] against [${y.dims}]`;
    if (x.data.length !== y.data.length) return `${x.name} holds ${x.data.length} values against ${y.data.length}`;
  }
  return null;
}

/**
 * One encoded delta per state tensor, in the child's tensor order. The child
 * must continue the parent: same arch and layout, and the parent's tokens are
 * a prefix of the child's (a delta against an unrelated state would still
 * decode, but it would name the wrong parent in the state graph).
 */
export function encodeChildAsDelta(child: ModelState, parent: ModelState, opts: MambaDeltaOptions = {}): Uint8Array[] {
  if (child.arch !== 'mamba' || parent.arch !== 'mamba')
    throw new InvalidInput(`Only Mamba states are stored as deltas (got ${child.arch} from ${parent.arch}).`);
  const why = sameLayout(child.tensors, parent.tensors);
  if (why) throw new InvalidInput(`The child state's layout differs from its parent's: ${why}.`);
  if (parent.tokens.length > child.tokens.length || parent.tokens.some((t, i) => child.tokens[i] !== t)) {
    throw new InvalidInput("The parent state's tokens are not a prefix of the child's: it is not the child's parent.");
  }
  const inner = opts.inner ?? 'fp32';
  return child.tensors.map((t, i) => encodeDelta({ dims: t.dims, data: t.data }, { dims: parent.tensors[i]!.dims, data: parent.tensors[i]!.data }, inner));
}

/**
 * Rebuilds the child from its per-tensor deltas and the parent. `tokens` are
 * the child's (the store keeps them in the manifest). Throws MissingParent when
 * `parent` is not the state the deltas were made from (the codec checks a hash
 * of the parent's bits), CorruptBlob when the deltas do not fit the layout.
 */
export function decodeChildFromDelta(deltas: readonly Uint8Array[], parent: ModelState, tokens: readonly number[]): ModelState {
  if (parent.arch !== 'mamba') throw new MissingParent(`A Mamba delta needs a Mamba parent, got ${parent.arch}.`);
  if (deltas.length !== parent.tensors.length) throw new CorruptBlob(`A Mamba delta holds ${deltas.length} tensors, the parent has ${parent.tensors.length}.`);
  if (parent.tokens.length > tokens.length || parent.tokens.some((t, i) => tokens[i] !== t)) {
    throw new MissingParent("The parent given is not a prefix of the child's tokens: find the parent state the delta names.");
  }
  const tensors = parent.tensors.map((p, i) => {
    const d = decodeDelta(deltas[i]!, { dims: p.dims, data: p.data });
    return { name: p.name, dims: [...d.dims], data: d.data };
  });
  return { arch: 'mamba', tokens: [...tokens], tensors };
}

// One blob for the store: "SCD" 0x01, u32 count, u32 length per part, then
// the parts, each padded to 4 bytes (the codecs' headers are 4-byte aligned).
const DELTA_MAGIC = [0x53, 0x43, 0x44, 0x01];

/** Frames per-tensor deltas as one blob (what the store writes and digests). */
export function packDeltaBlob(parts: readonly Uint8Array[]): Uint8Array {
  return frameParts(DELTA_MAGIC, parts);
}

/** The inverse of packDeltaBlob; the parts are views into `bytes`. */
export function unpackDeltaBlob(bytes: Uint8Array): Uint8Array[] {
  if (bytes.length < 8 || DELTA_MAGIC.some((b, i) => bytes[i] !== b)) throw new CorruptBlob('A Mamba delta blob does not start with its magic bytes.');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = dv.getUint32(4, true);
  const head = 8 + 4 * count;
  if (head > bytes.length) throw new CorruptBlob(`A Mamba delta blob names ${count} parts but is ${bytes.length} bytes long.`);
  const parts: Uint8Array[] = [];
  let at = head;
  for (let i = 0; i < count; i++) {
    const len = dv.getUint32(8 + 4 * i, true);
    if (at + len > bytes.length) throw new CorruptBlob(`A Mamba delta blob is truncated in part ${i}.`);
    // Copied so that each part's Float32 views are aligned whatever the blob's offset.
    parts.push(bytes.slice(at, at + len));
    at += (len + 3) & ~3;
  }
  if (at !== bytes.length) throw new CorruptBlob(`A Mamba delta blob has ${bytes.length - at} bytes after its last part.`);
  return parts;
}

/** The inner codec of a set of deltas, after checking what can be checked without the parent. */
export function deltaInnerCodec(deltas: readonly Uint8Array[]): CodecName {
  let inner: CodecName | null = null;
  for (const d of deltas) {
    const c = checkDelta(d).inner;
    if (inner && c !== inner) throw new CorruptBlob(`A Mamba delta mixes inner codecs (${inner}, ${c}).`);
    inner = c;
  }
  if (!inner) throw new CorruptBlob('A Mamba delta holds no tensors.');
  return inner;
}

/** Bytes of a Uint8Array stream after deflate-raw (CompressionStream: browsers and Node ≥ 18). */
export async function deflatedSize(parts: readonly Uint8Array[]): Promise<number> {
  const cs = new CompressionStream('deflate-raw');
  const w = cs.writable.getWriter();
  const done = (async () => {
    // A state's bytes are never in a SharedArrayBuffer here; the cast only narrows the buffer type.
    for (const p of parts) await w.write(p as Uint8Array<ArrayBuffer>);
    await w.close();
  })();
  let n = 0;
  const r = cs.readable.getReader();
  for (;;) {
    const { value, done: end } = await r.read();
    if (end) break;
    n += value.byteLength;
  }
  await done;
  return n;
}
