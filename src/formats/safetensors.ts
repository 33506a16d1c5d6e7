import { InvalidCartridge } from '../core/errors.ts';
import { concatBytes } from '../core/bytes.ts';

/**
 * safetensors, as the reference implementation (huggingface/safetensors)
 * reads and writes it:
 *
 *   u64 little-endian N ‖ N bytes of UTF-8 JSON header ‖ byte buffer
 *
 * The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}`
 * (offsets relative to the byte buffer) plus an optional `__metadata__`
 * string → string map. The tensors must cover the byte buffer exactly: no
 * holes, no overlaps, nothing after the last one. Data are little-endian,
 * row-major. We pad the header with spaces so the buffer starts 8-aligned,
 * as the reference writer does.
 */

const MAX_HEADER_BYTES = 100_000_000;

/** Bytes per element of every dtype we read; sub-byte dtypes (F4, F6_*) are refused. */
const DTYPE_BYTES: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
  C64: 8,
});

export type SafetensorsDtype = keyof typeof DTYPE_BYTES & string;

/** The typed array a tensor's data come back as (F16/BF16 as raw Uint16 bits; C64 as interleaved Float32 pairs). */
export type TensorData =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  /** [begin, end) relative to the byte buffer after the header, as in the file. */
  dataOffsets: [number, number];
  /** Absolute offset of the tensor's bytes in the file (8 + N + begin). */
  byteOffset: number;
  byteLength: number;
  /** The stored bytes, a view into the input (no copy). */
  bytes: Uint8Array;
  /** The elements; a view when aligned, otherwise (or with `copy`) a copy. */
  data: TensorData;
}

export interface SafetensorsFile {
  metadata: Record<string, string>;
  /** The header JSON as parsed (tensor entries and `__metadata__`). */
  header: Record<string, unknown>;
  /** N, the header's length in bytes (including any padding). */
  headerLength: number;
  /** 8 + N: where the byte buffer begins. */
  dataStart: number;
  /** In header order. */
  tensors: Map<string, SafetensorsEntry>;
}

export interface ReadOptions {
  /** Copy every tensor's data out of the input instead of viewing it. */
  copy?: boolean;
  /** Refuse larger headers (default and upper limit: 100,000,000 bytes, as the reference). */
  maxHeaderBytes?: number;
}

export interface TensorInfo {
  dtype: string;
  shape: number[];
  dataOffsets: [number, number];
}

export interface ParsedHeader {
  metadata: Record<string, string>;
  header: Record<string, unknown>;
  headerLength: number;
  dataStart: number;
  tensors: Map<string, TensorInfo>;
}

const bad = (msg: string, details: Record<string, unknown> = {}): InvalidCartridge => new InvalidCartridge(`safetensors: ${msg}`, details);

/**
 * Reads the 8-byte length and the header from the start of a file (`prefix`
 * may be just the first 8 + N bytes, e.g. sliced from a Blob) and checks the
 * tensor table against `fileSize`. Validates everything but the data.
 */
export function parseSafetensorsHeader(prefix: Uint8Array, fileSize: number = prefix.length, opts: ReadOptions = {}): ParsedHeader {
  const maxHeader = Math.min(opts.maxHeaderBytes ?? MAX_HEADER_BYTES, MAX_HEADER_BYTES);
  if (prefix.length < 8 || fileSize < 8) {
    throw bad(`the file is ${fileSize} bytes; it needs at least 8 (the header length) — is it a safetensors file, and was it downloaded completely?`);
  }
  const dv = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  // hi alone already says "too big"; avoid building numbers above 2^53.
  const n = hi === 0 ? lo : Infinity;
  if (n > maxHeader) {
    throw bad(
      `the header length field says ${dv.getBigUint64(0, true).toString()} bytes, more than the ${maxHeader}-byte limit — the file is not safetensors or its first 8 bytes are damaged`,
      { headerLength: hi === 0 ? n : null },
    );
  }
  if (8 + n > fileSize) {
    throw bad(`the header length field says ${n} bytes but the file has only ${fileSize - 8} after it — the file is truncated or not safetensors`, {
      headerLength: n,
      fileSize,
    });
  }
  if (8 + n > prefix.length) {
    throw bad(`need the first ${8 + n} bytes to read the header, got ${prefix.length}`, { headerLength: n });
  }
  if (n === 0) throw bad('the header is empty; it must be a JSON object starting with "{"');
  const raw = prefix.subarray(8, 8 + n);
  if (raw[0] !== 0x7b) {
    throw bad(`the header must start with "{" (byte 8 is 0x${raw[0]!.toString(16).padStart(2, '0')}) — the file is not safetensors or is damaged`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(raw);
  } catch {
    throw bad(`the ${n}-byte header is not valid UTF-8 — the header is damaged`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw bad(`the header is not valid JSON (${(e as Error).message}) — the header is damaged`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw bad('the header must be a JSON object of tensor entries');
  }
  const dup = findDuplicateKey(text);
  if (dup !== null) throw bad(`the header names "${dup}" twice; every key must be unique`, { key: dup });

  const obj = header as Record<string, unknown>;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, value] of Object.entries(obj)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw bad('"__metadata__" must be an object mapping strings to strings');
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          throw bad(
            `"__metadata__"."${k}" is a ${v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v}; metadata values must be strings (JSON-encode structured values)`,
            { key: k },
          );
        }
        // defineProperty: a key named __proto__ must stay data, not become a prototype.
        Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      continue;
    }
    tensors.set(name, checkInfo(name, value));
  }

  // Sorted by offsets, the tensors must tile the byte buffer exactly.
  const order = [...tensors.entries()].sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let end = 0;
  for (const [name, info] of order) {
    const [b, e] = info.dataOffsets;
    if (b !== end) {
      throw bad(
        b > end
          ? `tensor "${name}" starts at byte ${b} of the data but the previous tensor ends at ${end}: a ${b - end}-byte hole`
          : `tensor "${name}" starts at byte ${b} of the data, overlapping the previous tensor which ends at ${end}`,
        { tensor: name, begin: b, expected: end },
      );
    }
    end = e;
  }
  const dataLen = fileSize - 8 - n;
  if (end !== dataLen) {
    throw bad(
      end > dataLen
        ? `the tensors need ${end} bytes of data but the file has ${dataLen} after the header — the file is truncated`
        : `the file has ${dataLen - end} bytes after the last tensor's data; the tensors must cover the data exactly`,
      { dataBytes: dataLen, covered: end },
    );
  }
  return { metadata, header: obj, headerLength: n, dataStart: 8 + n, tensors };
}

function checkInfo(name: string, value: unknown): TensorInfo {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw bad(`tensor "${name}" must be an object {dtype, shape, data_offsets}`, { tensor: name });
  }
  const v = value as Record<string, unknown>;
  const dtype = v.dtype;
  if (typeof dtype !== 'string') throw bad(`tensor "${name}" has no string "dtype"`, { tensor: name });
  const size = Object.hasOwn(DTYPE_BYTES, dtype) ? DTYPE_BYTES[dtype]! : undefined;
  if (size === undefined) {
    throw bad(`tensor "${name}" has dtype "${dtype.slice(0, 40)}", which is unknown or unsupported (known: ${Object.keys(DTYPE_BYTES).join(', ')})`, {
      tensor: name,
      dtype,
    });
  }
  const shape = v.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad(`tensor "${name}" needs "shape" as an array of non-negative integers`, { tensor: name });
  }
  const off = v.data_offsets;
  if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad(`tensor "${name}" needs "data_offsets" as [begin, end], two non-negative integers`, { tensor: name });
  }
  const [b, e] = off as [number, number];
  if (e < b) throw bad(`tensor "${name}" has data_offsets [${b}, ${e}]: end before begin`, { tensor: name });
  let count = 1;
  for (const d of shape as number[]) {
    count *= d;
    if (!Number.isSafeInteger(count * size)) throw bad(`tensor "${name}" has a shape too large to address`, { tensor: name });
  }
  if (e - b !== count * size) {
    throw bad(
      `tensor "${name}" (${dtype}, shape [${(shape as number[]).join(', ')}]) needs ${count * size} bytes but data_offsets [${b}, ${e}] span ${e - b}`,
      {
        tensor: name,
        expected: count * size,
        actual: e - b,
      },
    );
  }
  return { dtype, shape: [...(shape as number[])], dataOffsets: [b, e] };
}

/**
 * JSON.parse keeps the last of duplicate keys silently; the reference refuses
 * them. The text is already known to be valid JSON, so a string-aware scan
 * with one key set per open object finds the first duplicate.
 */
function findDuplicateKey(text: string): string | null {
  const stack: (Set<string> | null)[] = [];
  let i = 0;
  const len = text.length;
  while (i < len) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (j < len) {
        const d = text.charCodeAt(j);
        if (d === 0x5c) j += 2;
        else if (d === 0x22) break;
        else j++;
      }
      const top = stack[stack.length - 1];
      if (top) {
        let k = j + 1;
        while (k < len && (text[k] === ' ' || text[k] === '\n' || text[k] === '\r' || text[k] === '\t')) k++;
        if (text[k] === ':') {
          const key = JSON.parse(text.slice(i, j + 1)) as string;
          if (top.has(key)) return key;
          top.add(key);
        }
      }
      i = j + 1;
    } else {
      if (c === 0x7b) stack.push(new Set());
      else if (c === 0x5b) stack.push(null);
      else if (c === 0x7d || c === 0x5d) stack.pop();
      i++;
    }
  }
  return null;
}

/** Reads and validates a whole safetensors file held in memory. */
export function readSafetensors(bytes: Uint8Array, opts: ReadOptions = {}): SafetensorsFile {
  const h = parseSafetensorsHeader(bytes, bytes.length, opts);
  const tensors = new Map<string, SafetensorsEntry>();
  for (const [name, info] of h.tensors) {
    const begin = h.dataStart + info.dataOffsets[0];
    const byteLength = info.dataOffsets[1] - info.dataOffsets[0];
    const view = bytes.subarray(begin, begin + byteLength);
    tensors.set(name, {
      dtype: info.dtype,
      shape: info.shape,
      dataOffsets: info.dataOffsets,
      byteOffset: begin,
      byteLength,
      bytes: view,
      data: typedView(info.dtype, view, opts.copy ?? false),
    });
  }
  return { metadata: h.metadata, header: h.header, headerLength: h.headerLength, dataStart: h.dataStart, tensors };
}

type ArrayCtor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): TensorData;
  BYTES_PER_ELEMENT: number;
};

function ctorOf(dtype: string): ArrayCtor {
  switch (dtype) {
    case 'I8':
      return Int8Array as unknown as ArrayCtor;
    case 'I16':
      return Int16Array as unknown as ArrayCtor;
    case 'U16':
    case 'F16':
    case 'BF16':
      return Uint16Array as unknown as ArrayCtor;
    case 'I32':
      return Int32Array as unknown as ArrayCtor;
    case 'U32':
      return Uint32Array as unknown as ArrayCtor;
    case 'F32':
    case 'C64':
      return Float32Array as unknown as ArrayCtor;
    case 'F64':
      return Float64Array as unknown as ArrayCtor;
    case 'I64':
      return BigInt64Array as unknown as ArrayCtor;
    case 'U64':
      return BigUint64Array as unknown as ArrayCtor;
    default:
      return Uint8Array as unknown as ArrayCtor;
  }
}

// Typed arrays use the platform's byte order; every platform a browser or
// Node runs on is little-endian, as safetensors is.
function typedView(dtype: string, view: Uint8Array, copy: boolean): TensorData {
  const C = ctorOf(dtype);
  const n = view.byteLength / C.BYTES_PER_ELEMENT;
  if (!copy && view.byteOffset % C.BYTES_PER_ELEMENT === 0) return new C(view.buffer, view.byteOffset, n);
  const own = view.slice();
  return new C(own.buffer, 0, n);
}

export interface TensorInput {
  name: string;
  dtype: string;
  shape: number[];
  /** Row-major little-endian elements; any typed array or DataView over exactly the tensor's bytes. */
  data: ArrayBufferView;
}

const enc = new TextEncoder();

/**
 * The file as a list of byte parts: the length+header first, then each
 * tensor's bytes (views of the inputs, not copies), ready for
 * `new Blob(parts)` or a stream. Tensors are laid out by element size,
 * largest first (stable), so every tensor starts aligned to its element size.
 */
export function safetensorsParts(tensors: TensorInput[], metadata?: Record<string, string>): Uint8Array[] {
  const seen = new Set<string>();
  const checked = tensors.map((t, i) => {
    if (typeof t.name !== 'string' || t.name === '' || t.name === '__metadata__') throw bad(`tensor #${i} has an invalid name "${t.name}"`);
    if (seen.has(t.name)) throw bad(`tensor "${t.name}" is given twice`);
    seen.add(t.name);
    const size = Object.hasOwn(DTYPE_BYTES, t.dtype) ? DTYPE_BYTES[t.dtype]! : undefined;
    if (size === undefined) throw bad(`tensor "${t.name}" has unknown dtype "${t.dtype}"`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(`tensor "${t.name}" needs a shape of non-negative integers`);
    }
    const want = t.shape.reduce((a, b) => a * b, 1) * size;
    if (t.data.byteLength !== want) {
      throw bad(`tensor "${t.name}" (${t.dtype} [${t.shape.join(', ')}]) needs ${want} bytes, got ${t.data.byteLength}`);
    }
    return { t, size, bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  });
  const order = checked.map((c, i) => ({ c, i })).sort((a, b) => b.c.size - a.c.size || a.i - b.i);
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw bad(`metadata "${k}" must be a string (JSON-encode structured values)`);
    }
    header.__metadata__ = metadata;
  }
  let off = 0;
  for (const { c } of order) {
    header[c.t.name] = { dtype: c.t.dtype, shape: c.t.shape, data_offsets: [off, off + c.bytes.length] };
    off += c.bytes.length;
  }
  const json = enc.encode(JSON.stringify(header));
  const n = Math.ceil(json.length / 8) * 8;
  if (n > MAX_HEADER_BYTES) throw bad(`the header would be ${n} bytes, above the ${MAX_HEADER_BYTES}-byte limit`);
  const head = new Uint8Array(8 + n).fill(0x20, 8 + json.length);
  const dv = new DataView(head.buffer);
  dv.setUint32(0, n, true);
  dv.setUint32(4, 0, true);
  head.set(json, 8);
  return [head, ...order.map(({ c }) => c.bytes)];
}

/** The whole file in one buffer. */
export function writeSafetensors(tensors: TensorInput[], metadata?: Record<string, string>): Uint8Array {
  return concatBytes(safetensorsParts(tensors, metadata));
}
