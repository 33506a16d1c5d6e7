import { describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors, safetensorsParts, parseSafetensorsHeader } from '../../src/formats/safetensors.ts';
import { InvalidCartridge } from '../../src/core/errors.ts';

const enc = new TextEncoder();

/** A file built by hand: u64 LE length ‖ header text ‖ data, with no help from the writer. */
function file(header: string, data: Uint8Array = new Uint8Array(0), lenOverride?: bigint): Uint8Array {
  const h = enc.encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function i32(...xs: number[]): Uint8Array {
  return new Uint8Array(Int32Array.from(xs).buffer);
}

function refused(bytes: Uint8Array, pattern: RegExp): void {
  let err: unknown;
  try {
    readSafetensors(bytes);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(InvalidCartridge);
  expect((err as Error).name).toBe('InvalidCartridge');
  expect((err as Error).message).toMatch(pattern);
}

describe('safetensors reader: the spec examples', () => {
  it('reads the README-style example (I32 [2,2] plus metadata)', () => {
    const f = file('{"TEST":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"foo":"bar"}}', i32(1, 2, 3, -4));
    const st = readSafetensors(f);
    expect(st.metadata).toEqual({ foo: 'bar' });
    const t = st.tensors.get('TEST')!;
    expect(t.dtype).toBe('I32');
    expect(t.shape).toEqual([2, 2]);
    expect(t.byteLength).toBe(16);
    expect(t.dataOffsets).toEqual([0, 16]);
    expect(t.byteOffset).toBe(8 + st.headerLength);
    expect(Array.from(t.data as Int32Array)).toEqual([1, 2, 3, -4]);
  });

  it('reads the exact bytes the reference serializer emits for a small file (header padded with spaces)', () => {
    // safetensors.serialize({"test": zeros((2,2), F32)}): header padded to 8-byte alignment.
    const json = '{"test":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}';
    const padded = json + ' '.repeat((8 - (json.length % 8)) % 8);
    const f = file(padded, new Uint8Array(16));
    const st = readSafetensors(f);
    expect(st.headerLength % 8).toBe(0);
    expect(Array.from(st.tensors.get('test')!.data as Float32Array)).toEqual([0, 0, 0, 0]);
  });

  it('accepts an empty file with no tensors, zero-size tensors and scalars', () => {
    expect(readSafetensors(file('{}')).tensors.size).toBe(0);
    const st = readSafetensors(
      file(
        '{"empty":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"scalar":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"e2":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}}',
        new Uint8Array(new Float64Array([2.5]).buffer),
      ),
    );
    expect(st.tensors.get('empty')!.data.length).toBe(0);
    expect(st.tensors.get('scalar')!.shape).toEqual([]);
    expect(Array.from(st.tensors.get('scalar')!.data as Float64Array)).toEqual([2.5]);
    expect(st.tensors.get('e2')!.byteLength).toBe(0);
  });

  it('returns the right typed array per dtype, and copies unaligned data', () => {
    const f = file(
      '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"I64","shape":[1],"data_offsets":[1,9]},"c":{"dtype":"BF16","shape":[1],"data_offsets":[9,11]}}',
      (() => {
        const d = new Uint8Array(11);
        d[0] = 7;
        new DataView(d.buffer).setBigInt64(1, -5n, true);
        new DataView(d.buffer).setUint16(9, 0x3f80, true);
        return d;
      })(),
    );
    const st = readSafetensors(f);
    expect(st.tensors.get('a')!.data).toBeInstanceOf(Uint8Array);
    expect((st.tensors.get('b')!.data as BigInt64Array)[0]).toBe(-5n);
    expect((st.tensors.get('c')!.data as Uint16Array)[0]).toBe(0x3f80);
  });
});

describe('safetensors writer', () => {
  it('round-trips, aligns the header and every tensor, and keeps metadata', () => {
    const tensors = [
      { name: 'u8', dtype: 'U8', shape: [3], data: Uint8Array.from([1, 2, 3]) },
      { name: 'f32', dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6.5]) },
      { name: 'f16', dtype: 'F16', shape: [1], data: Uint16Array.from([0x3c00]) },
      { name: 'i64', dtype: 'I64', shape: [2], data: BigInt64Array.from([1n, -2n]) },
      { name: 'scalar', dtype: 'F32', shape: [], data: Float32Array.from([9]) },
      { name: 'zero', dtype: 'F32', shape: [0], data: new Float32Array(0) },
    ];
    const bytes = writeSafetensors(tensors, { format: 'pt', x: '{"a":1}' });
    const st = readSafetensors(bytes);
    expect((8 + st.headerLength) % 8).toBe(0);
    expect(st.metadata).toEqual({ format: 'pt', x: '{"a":1}' });
    for (const t of tensors) {
      const e = st.tensors.get(t.name)!;
      expect(e.dtype).toBe(t.dtype);
      expect(e.shape).toEqual(t.shape);
      expect(Array.from(e.data as ArrayLike<unknown>)).toEqual(Array.from(t.data as ArrayLike<unknown>));
      // Largest element first means every tensor starts aligned: the data are views, not copies.
      expect(e.byteOffset % (e.data as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT).toBe(0);
      expect(e.data.buffer).toBe(bytes.buffer);
    }
    // Padding is spaces, and the length field is the padded length.
    const headerEnd = 8 + st.headerLength;
    expect(bytes[headerEnd - 1] === 0x20 || bytes[headerEnd - 1] === 0x7d).toBe(true);
  });

  it('parts are the header then views of the inputs, equal to the one-buffer form', () => {
    const a = new Float32Array([1, 2]);
    const parts = safetensorsParts([{ name: 'a', dtype: 'F32', shape: [2], data: a }]);
    expect(parts.length).toBe(2);
    expect(parts[1]!.buffer).toBe(a.buffer);
    const whole = writeSafetensors([{ name: 'a', dtype: 'F32', shape: [2], data: a }]);
    expect(Buffer.concat(parts)).toEqual(Buffer.from(whole));
  });

  it('a prefix holding only the header is enough to read the tensor table', () => {
    const bytes = writeSafetensors([{ name: 'a', dtype: 'F32', shape: [1000], data: new Float32Array(1000) }]);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const h = parseSafetensorsHeader(bytes.subarray(0, 8 + n), bytes.length);
    expect(h.tensors.get('a')!.dataOffsets).toEqual([0, 4000]);
  });

  it('refuses bad input', () => {
    const f = new Float32Array(2);
    expect(() => writeSafetensors([{ name: 'a', dtype: 'F32', shape: [3], data: f }])).toThrow(InvalidCartridge);
    expect(() => writeSafetensors([{ name: 'a', dtype: 'Q4', shape: [2], data: f }])).toThrow(InvalidCartridge);
    expect(() =>
      writeSafetensors([
        { name: 'a', dtype: 'F32', shape: [2], data: f },
        { name: 'a', dtype: 'F32', shape: [2], data: f },
      ]),
    ).toThrow(/twice/);
    expect(() => writeSafetensors([], { a: 1 as unknown as string })).toThrow(InvalidCartridge);
  });
});

describe('safetensors reader: refusals', () => {
  const ok = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  it('too short for the length field', () => refused(new Uint8Array(5), /at least 8/));
  it('header length larger than the file', () => refused(file(ok, new Uint8Array(8), 1000n), /truncated/));
  it('header length above 100 MB', () => refused(file(ok, new Uint8Array(8), 100_000_001n), /limit/));
  it('header length with high bits set', () => refused(file(ok, new Uint8Array(8), 1n << 40n), /limit/));
  it('header that does not start with {', () => refused(file(' ' + ok, new Uint8Array(8)), /start with "\{"/));
  it('header that is not JSON', () => refused(file('{"a":', new Uint8Array(0)), /not valid JSON/));
  it('header that is a JSON array-ish value', () => refused(file('{}[]', new Uint8Array(0)), /not valid JSON/));
  it('header that is not UTF-8', () => {
    const f = file('{"a":"xx"}');
    f[8 + 6] = 0xff;
    refused(f, /UTF-8/);
  });
  it('duplicate tensor names', () =>
    refused(file('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', new Uint8Array(2)), /twice/));
  it('overlapping offsets', () =>
    refused(
      file('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', new Uint8Array(3)),
      /overlapping/,
    ));
  it('a hole between tensors', () =>
    refused(file('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}', new Uint8Array(5)), /hole/));
  it('a hole at the start', () => refused(file('{"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', new Uint8Array(3)), /hole/));
  it('bytes after the last tensor', () => refused(file(ok, new Uint8Array(12)), /after the last tensor/));
  it('data shorter than the offsets', () => refused(file(ok, new Uint8Array(4)), /truncated/));
  it('byte length that does not match the shape', () =>
    refused(file('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', new Uint8Array(8)), /needs 12 bytes/));
  it('end before begin', () => refused(file('{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}', new Uint8Array(0)), /end before begin/));
  it('unknown dtype', () => refused(file('{"a":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}}', new Uint8Array(8)), /unknown/));
  it('negative or fractional shape', () => {
    refused(file('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}'), /shape/);
    refused(file('{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,0]}}'), /shape/);
  });
  it('bad data_offsets', () => refused(file('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}}', new Uint8Array(1)), /data_offsets/));
  it('a huge shape', () => refused(file('{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', new Uint8Array(8)), /too large/));
  it('metadata with non-string values', () => {
    refused(file('{"__metadata__":{"n":1}}'), /must be strings/);
    refused(file('{"__metadata__":{"n":{"x":"y"}}}'), /must be strings/);
    refused(file('{"__metadata__":["x"]}'), /object mapping/);
  });
  it('a tensor entry that is not an object', () => refused(file('{"a":3}'), /must be an object/));
  it('keeps __proto__ in metadata as plain data', () => {
    const st = readSafetensors(file('{"__metadata__":{"__proto__":"x"}}'));
    expect(Object.getPrototypeOf(st.metadata)).toBe(Object.prototype);
    // biome-ignore lint/suspicious/noProto: the test is that a key named __proto__ is kept as data
    expect(st.metadata.__proto__).toBe('x');
  });
});
