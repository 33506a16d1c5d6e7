import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  codecs,
  decodeAny,
  decodeDelta,
  decodeInt8Into,
  encodeDelta,
  encodedSize,
  maxErrorBound,
  peekCodec,
  type CodecName,
  type Tensor,
} from '../../src/formats/codecs.ts';
import { float16ToFloat32, float32ToFloat16, fromHalf, toHalf } from '../../src/formats/fp16.ts';
import { CorruptBlob, InvalidInput, MissingParent, StatecartError } from '../../src/core/errors.ts';
import { mulberry32 } from '../../src/core/prng.ts';

/** mulberry32: a seeded generator so every failure can be replayed. */
const rng = mulberry32;

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** Random KV-like data with outlier channels, zero channels and constant channels. */
function tensor(dims: number[], seed: number, scale = 1): Tensor {
  const r = rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  const C = dims.length ? dims[dims.length - 1]! : 1;
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % C;
    if (c === 1)
      data[i] = 0; // an all-zero channel
    else if (c === 2)
      data[i] = 0.75; // a constant channel
    else if (c === 3)
      data[i] = gauss(r) * 40 * scale; // an outlier channel
    else data[i] = gauss(r) * scale;
  }
  if (n > 5) data[5] = 300 * scale; // a lone outlier
  return { dims, data };
}

const SHAPES = [[4, 1, 8], [2, 5, 16], [3, 17, 8], [12, 33, 64], [1, 16, 4], [7], [], [2, 3, 0, 4], [2, 2, 3, 5]];

function within(name: CodecName, t: Tensor, params?: { kind?: 'key' | 'value'; residual?: number }): void {
  const enc = codecs[name].encode(t, params);
  expect(enc.length).toBe(encodedSize(name, t.dims, params));
  const dec = codecs[name].decode(enc);
  expect(dec.dims).toEqual(t.dims);
  expect(dec.data.length).toBe(t.data.length);
  const bound = maxErrorBound(name, t, params);
  for (let i = 0; i < t.data.length; i++) {
    const err = Math.abs(dec.data[i]! - t.data[i]!);
    if (!(err <= bound[i]!))
      throw new Error(`${name} ${JSON.stringify(params)} dims [${t.dims}] element ${i}: ${t.data[i]} → ${dec.data[i]}, error ${err} > bound ${bound[i]}`);
  }
}

describe('fp16 conversion', () => {
  it('every half survives half → float → half', () => {
    for (let h = 0; h < 65536; h++) {
      const x = fromHalf(h);
      if (Number.isNaN(x)) expect(Number.isNaN(fromHalf(toHalf(x)))).toBe(true);
      else expect(toHalf(x)).toBe(h);
    }
  });
  it('rounds to nearest, ties to even, at the edges', () => {
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // tie → even (down)
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(toHalf(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    expect(toHalf(65504)).toBe(0x7bff);
    expect(toHalf(65519)).toBe(0x7bff);
    expect(toHalf(65520)).toBe(0x7c00); // rounds up into Infinity
    expect(toHalf(-Infinity)).toBe(0xfc00);
    expect(toHalf(NaN) & 0x7c00).toBe(0x7c00);
    expect(toHalf(2 ** -24)).toBe(1);
    expect(toHalf(2 ** -25)).toBe(0); // tie → even (zero)
    expect(toHalf(3 * 2 ** -25)).toBe(2); // tie → even (2)
    expect(toHalf(2 ** -14 - 2 ** -26)).toBe(0x0400); // the largest subnormal rounds up into the smallest normal
    expect(toHalf(-0)).toBe(0x8000);
  });
  it('matches a brute-force nearest-even reference on random floats', () => {
    const halves: number[] = [];
    for (let h = 0; h < 0x7c00; h++) halves.push(fromHalf(h));
    const ref = (x: number): number => {
      const s = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
      const a = Math.abs(x);
      if (a >= 65520) return s | 0x7c00;
      let lo = 0;
      let hi = halves.length - 1;
      while (hi - lo > 1) {
        const m = (lo + hi) >> 1;
        if (halves[m]! <= a) lo = m;
        else hi = m;
      }
      if (a >= halves[hi]!) return s | hi;
      const dl = a - halves[lo]!;
      const dh = halves[hi]! - a;
      return s | (dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi);
    };
    const r = rng(7);
    const f = new Float32Array(200_000);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < f.length; i++) {
      if (i % 2) u[i] = (r() * 2 ** 32) >>> 0;
      else f[i] = (r() - 0.5) * 2 ** Math.floor(r() * 44 - 30);
    }
    const h = float32ToFloat16(f);
    for (let i = 0; i < f.length; i++) {
      if (Number.isNaN(f[i]!)) continue;
      if (h[i] !== ref(f[i]!)) throw new Error(`${f[i]}: got ${h[i]}, want ${ref(f[i]!)}`);
    }
    const back = float16ToFloat32(h);
    expect(back.length).toBe(f.length);
  });
});

describe('codecs round-trip within their stated bounds', () => {
  it('fp32 is exact, bit for bit', () => {
    for (const [k, dims] of SHAPES.entries()) {
      const t = tensor(dims, k + 1);
      t.data[0] = -0 as number;
      const dec = codecs.fp32.decode(codecs.fp32.encode(t));
      expect(Buffer.from(dec.data.buffer)).toEqual(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
  });
  for (const name of ['fp16', 'int8'] as const) {
    it(`${name} on ${SHAPES.length} shapes and 3 scales`, () => {
      for (const [k, dims] of SHAPES.entries()) for (const s of [1, 1e-6, 100]) within(name, tensor(dims, 100 + k, s));
    });
  }
  it('kivi4 keys and values, with residual windows 16, 0, 3 and longer than the tensor', () => {
    for (const [k, dims] of SHAPES.entries())
      for (const kind of ['key', 'value'] as const) for (const residual of [undefined, 0, 3, 1000]) within('kivi4', tensor(dims, 200 + k), { kind, residual });
  });
  it('keeps the residual window exactly as fp16 and quantizes the rest', () => {
    const t = tensor([2, 20, 8], 9);
    const dec = codecs.kivi4.decode(codecs.kivi4.encode(t, { kind: 'value', residual: 4 }));
    for (let g = 0; g < 2; g++)
      for (let tt = 16; tt < 20; tt++)
        for (let c = 0; c < 8; c++) {
          const i = (g * 20 + tt) * 8 + c;
          expect(dec.data[i]).toBe(fromHalf(toHalf(t.data[i]!)));
        }
  });
  it('constant and zero groups decode exactly', () => {
    const t = { dims: [2, 4, 3], data: new Float32Array(24).fill(0.3) };
    for (const name of ['int8', 'kivi4'] as const) {
      const dec = codecs[name].decode(codecs[name].encode(t, { residual: 0 }));
      if (name === 'kivi4') expect(Array.from(dec.data)).toEqual(Array.from(t.data));
    }
    const z = { dims: [2, 4, 3], data: new Float32Array(24) };
    expect(Array.from(codecs.int8.decode(codecs.int8.encode(z)).data)).toEqual(Array.from(z.data));
    expect(Array.from(codecs.kivi4.decode(codecs.kivi4.encode(z, { residual: 0 })).data)).toEqual(Array.from(z.data));
  });
  it('tiny (subnormal) values stay within bounds', () => {
    const t = { dims: [1, 3, 2], data: Float32Array.from([1e-44, -3e-45, 1e-40, 0, 7e-39, -1e-45]) };
    within('int8', t);
    within('kivi4', t, { residual: 0 });
    within('kivi4', t, { residual: 0, kind: 'value' });
    within('fp16', t);
  });
  it('refuses values that cannot be represented', () => {
    const inf = { dims: [2], data: Float32Array.from([1, Infinity]) };
    const nan = { dims: [2], data: Float32Array.from([1, NaN]) };
    const big = { dims: [2], data: Float32Array.from([1, 70000]) };
    expect(() => codecs.int8.encode(inf)).toThrow(InvalidInput);
    expect(() => codecs.kivi4.encode(nan)).toThrow(InvalidInput);
    expect(() => codecs.fp16.encode(big)).toThrow(/half-precision range/);
    expect(() => codecs.fp32.encode({ dims: [3], data: new Float32Array(2) })).toThrow(InvalidInput);
    expect(() => codecs.kivi4.encode({ dims: [2], data: new Float32Array(2) }, { residual: -1 })).toThrow(InvalidInput);
  });
});

describe('encoded sizes', () => {
  const dims = [12, 1024, 64];
  const n = 12 * 1024 * 64;
  it('fp32 = 4n, fp16 = 2n, int8 = n + 1 per channel + 4, kivi4 = n/2 + 2 per group + 12 (+ residual)', () => {
    const header = 8 + 12;
    expect(encodedSize('fp32', dims)).toBe(header + 4 * n);
    expect(encodedSize('fp16', dims)).toBe(header + 2 * n);
    expect(encodedSize('int8', dims)).toBe(header + 4 + 12 * 64 + n);
    // keys per channel: 2 bytes per (head, channel); values per token: 2 bytes per (head, token); 12 bytes of bases.
    expect(encodedSize('kivi4', dims, { kind: 'key', residual: 0 })).toBe(header + 8 + 12 + 2 * 12 * 64 + n / 2);
    expect(encodedSize('kivi4', dims, { kind: 'value', residual: 0 })).toBe(header + 8 + 12 + 2 * 12 * 1024 + n / 2);
    expect(encodedSize('kivi4', dims, { kind: 'key' })).toBe(header + 8 + 12 + 2 * 12 * 64 + 2 * 12 * 16 * 64 + (12 * 1008 * 64) / 2);
    const ratio = (c: CodecName, p?: { kind: 'key' | 'value' }) => encodedSize(c, dims, p) / encodedSize('fp32', dims);
    expect(ratio('fp16')).toBeCloseTo(0.5, 3);
    expect(ratio('int8')).toBeCloseTo(0.25, 2);
    expect(ratio('kivi4', { kind: 'key' })).toBeLessThan(0.14);
    expect(ratio('kivi4', { kind: 'value' })).toBeLessThan(0.14);
  });

  it('a 16-token KV block slice: int8 ≤ 0.56× and kivi4 ≤ 0.35× its fp16 size, parameters included', () => {
    // The store's unit: one layer's key or value for 16 tokens, [n_head, 16, head_dim] (micro-gpt2: 4 × 16 × 16; gpt2: 12 × 16 × 64).
    for (const d of [
      [4, 16, 16],
      [12, 16, 64],
    ]) {
      const fp16 = encodedSize('fp16', d);
      expect(encodedSize('int8', d) / fp16).toBeLessThanOrEqual(0.56);
      for (const kind of ['key', 'value'] as const) expect(encodedSize('kivi4', d, { kind, residual: 0 }) / fp16).toBeLessThanOrEqual(0.35);
      // and what the encoder writes is that size
      const t = tensor(d, 5);
      expect(codecs.int8.encode(t).length).toBe(encodedSize('int8', d));
      expect(codecs.kivi4.encode(t, { kind: 'value', residual: 0 }).length).toBe(encodedSize('kivi4', d, { kind: 'value', residual: 0 }));
    }
  });
});

describe('the earlier int8 / kivi4 layouts (codec ids 3 and 4)', () => {
  // Bytes written by the codecs before their parameters shrank, and what those codecs decoded them to.
  const fx = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures/codecs-v1.json'), 'utf8')) as Record<string, { hex: string; decoded: number[] }> & {
    dims: number[];
  };
  for (const name of ['int8', 'kivi4-key', 'kivi4-value'] as const) {
    it(`${name} still decodes to the same bits`, () => {
      const bytes = new Uint8Array(Buffer.from(fx[name]!.hex, 'hex'));
      expect(bytes[4]).toBe(name === 'int8' ? 3 : 4);
      const codec = name === 'int8' ? codecs.int8 : codecs.kivi4;
      const t = codec.decode(bytes);
      expect(t.dims).toEqual(fx.dims);
      expect(Array.from(t.data)).toEqual(fx[name]!.decoded);
      expect(Array.from(decodeAny(bytes).data)).toEqual(fx[name]!.decoded);
      if (name === 'int8') {
        const out = new Float32Array(t.data.length + 3);
        decodeInt8Into(bytes, out, 3);
        expect(Array.from(out.subarray(3))).toEqual(fx[name]!.decoded);
      }
      // New encodings use the new ids, and a truncated old one is refused.
      expect(codec.encode({ dims: fx.dims, data: new Float32Array(fx.dims.reduce((a, b) => a * b, 1)) })[4]).toBe(name === 'int8' ? 6 : 7);
      expect(() => codec.decode(bytes.subarray(0, bytes.length - 1))).toThrow(CorruptBlob);
    });
  }
});

describe('delta', () => {
  const parent = tensor([24, 16], 31);
  const child = { dims: [24, 16], data: parent.data.map((x, i) => x * 0.9 + (i % 7) * 0.01) };
  it('fp32 inner is exact (XOR of bits)', () => {
    const enc = encodeDelta(child, parent, 'fp32');
    expect(peekCodec(enc).codec).toBe('delta');
    expect(Array.from(decodeDelta(enc, parent).data)).toEqual(Array.from(child.data));
    expect(Array.from(decodeAny(enc, parent).data)).toEqual(Array.from(child.data));
  });
  it('lossy inners stay within the bound, and beat the direct encoding on error', () => {
    for (const inner of ['fp16', 'int8', 'kivi4'] as const) {
      const enc = encodeDelta(child, parent, inner, { residual: 0 });
      const dec = decodeDelta(enc, parent);
      const bound = maxErrorBound('delta', child, { inner, residual: 0 }, parent);
      for (let i = 0; i < child.data.length; i++) expect(Math.abs(dec.data[i]! - child.data[i]!)).toBeLessThanOrEqual(bound[i]!);
    }
    const direct = codecs.int8.decode(codecs.int8.encode(child));
    const viaDelta = decodeDelta(encodeDelta(child, parent, 'int8'), parent);
    const err = (d: Float32Array) => d.reduce((m, x, i) => Math.max(m, Math.abs(x - child.data[i]!)), 0);
    expect(err(viaDelta.data)).toBeLessThan(err(direct.data));
  });
  it('refuses the wrong parent or none', () => {
    const enc = encodeDelta(child, parent, 'int8');
    const other = tensor([24, 16], 32);
    expect(() => decodeDelta(enc, other)).toThrow(MissingParent);
    expect(() => decodeDelta(enc, { dims: [24, 15], data: new Float32Array(360) })).toThrow(MissingParent);
    expect(() => decodeAny(enc)).toThrow(MissingParent);
    expect(() => encodeDelta(child, { dims: [16, 24], data: parent.data })).toThrow(InvalidInput);
  });
});

describe('decoding damaged bytes throws typed errors, never RangeError', () => {
  const r = rng(99);
  const samples: { name: CodecName; enc: Uint8Array }[] = [];
  for (const name of ['fp32', 'fp16', 'int8', 'kivi4'] as const)
    for (const dims of [[2, 5, 4], [3], [2, 17, 8]]) samples.push({ name, enc: codecs[name].encode(tensor(dims, 5), { kind: 'value', residual: 2 }) });

  function decodeOrTyped(bytes: Uint8Array): 'ok' | 'typed' {
    try {
      decodeAny(bytes);
      return 'ok';
    } catch (e) {
      if (e instanceof CorruptBlob || e instanceof MissingParent) return 'typed';
      throw e;
    }
  }

  it('every truncation', () => {
    for (const { enc } of samples) for (let l = 0; l < enc.length; l++) expect(decodeOrTyped(enc.subarray(0, l))).toBe('typed');
  });
  it('trailing bytes', () => {
    for (const { enc } of samples) {
      const longer = new Uint8Array(enc.length + 1);
      longer.set(enc);
      expect(decodeOrTyped(longer)).toBe('typed');
    }
  });
  it('2,000 random bit flips and byte garbles, at odd offsets too', () => {
    let typed = 0;
    for (let k = 0; k < 2000; k++) {
      const { enc } = samples[k % samples.length]!;
      const buf = new Uint8Array(enc.length + 1);
      const m = buf.subarray(1); // unaligned on purpose
      m.set(enc);
      const flips = 1 + Math.floor(r() * 3);
      for (let f = 0; f < flips; f++) {
        // Bias towards the header, where the interesting failures are.
        const at = r() < 0.6 ? Math.floor(r() * Math.min(48, m.length)) : Math.floor(r() * m.length);
        if (r() < 0.5) m[at]! ^= 1 << Math.floor(r() * 8);
        else m[at] = Math.floor(r() * 256);
      }
      if (decodeOrTyped(m) === 'typed') typed++;
    }
    expect(typed).toBeGreaterThan(100);
  });
  it('non-bytes input', () => {
    expect(() => decodeAny('x' as unknown as Uint8Array)).toThrow(StatecartError);
  });
});

describe('speed (report)', () => {
  it('1024-token gpt2-shape layer KV (12 × 1024 × 64, key + value)', () => {
    const k = tensor([12, 1024, 64], 1);
    const v = tensor([12, 1024, 64], 2);
    const mb = (2 * k.data.byteLength) / 1e6;
    const rows: string[] = [];
    for (const name of ['fp32', 'fp16', 'int8', 'kivi4'] as const) {
      const enc = () => [codecs[name].encode(k, { kind: 'key' }), codecs[name].encode(v, { kind: 'value' })];
      let e = enc();
      e.forEach((b) => codecs[name].decode(b)); // warm up
      const reps = 5;
      let t0 = performance.now();
      for (let i = 0; i < reps; i++) e = enc();
      const te = (performance.now() - t0) / reps;
      t0 = performance.now();
      for (let i = 0; i < reps; i++) e.forEach((b) => codecs[name].decode(b));
      const td = (performance.now() - t0) / reps;
      const size = e[0]!.length + e[1]!.length;
      rows.push(
        `${name.padEnd(6)} encode ${te.toFixed(2).padStart(7)} ms (${(mb / (te / 1e3)).toFixed(0)} MB/s)  decode ${td.toFixed(2).padStart(7)} ms (${(mb / (td / 1e3)).toFixed(0)} MB/s)  ${size} bytes (${((100 * size) / (mb * 1e6)).toFixed(1)}% of fp32)`,
      );
    }
    console.log(`codec speed, one gpt2 layer at 1024 tokens (${mb.toFixed(2)} MB fp32):\n` + rows.join('\n'));
  });
});
