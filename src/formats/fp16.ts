/**
 * IEEE 754 binary16 ⇄ binary32, bit-exact, round-to-nearest-even.
 *
 * float → half works on the float's bits (after F. Giesen's
 * float_to_half_fast3_rtne): adding 0xfff plus the lowest kept mantissa bit
 * before shifting rounds to nearest, ties to even, and a carry out of the
 * mantissa bumps the exponent (so 65520 becomes Infinity, as it must).
 * Subnormal halves are the float times 2^24 rounded half-even; that product
 * is exact in a double, so the rounding is too. half → float is one lookup
 * in a 65,536-entry table built once (256 KiB).
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** One float (any JS number, rounded to float32 first) to half bits. */
export function toHalf(x: number): number {
  f32[0] = x;
  return halfBits(u32[0]!, f32[0]!);
}

function halfBits(bits: number, value: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const f = bits & 0x7fffffff;
  if (f >= 0x47800000) return sign | (f > 0x7f800000 ? 0x7e00 : 0x7c00); // ≥ 65536, Inf, NaN
  if (f < 0x38800000) {
    // Below 2^-14: a subnormal half (or zero), in units of 2^-24.
    const y = Math.abs(value) * 16777216;
    let r = Math.floor(y);
    const d = y - r;
    if (d > 0.5 || (d === 0.5 && (r & 1) === 1)) r++;
    return sign | r;
  }
  const odd = (f >>> 13) & 1;
  return sign | ((f + 0xc8000fff + odd) >>> 13); // 0xc8000fff = ((15 - 127) << 23) + 0xfff, mod 2^32
}

let table: Float32Array | null = null;

function halfTable(): Float32Array {
  if (table) return table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) t[h] = s * m * 2 ** -24;
    else if (e === 31) t[h] = m ? NaN : s * Infinity;
    else t[h] = s * (1024 + m) * 2 ** (e - 25);
  }
  table = t;
  return t;
}

/** Half bits to a float. */
export function fromHalf(h: number): number {
  return halfTable()[h & 0xffff]!;
}

/** Converts a whole array; `out` may be supplied to avoid an allocation. */
export function float32ToFloat16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  if (out.length < src.length) throw new RangeError('float32ToFloat16: output too short');
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const b = bits[i]!;
    const f = b & 0x7fffffff;
    // The common case inline: a normal half.
    if (f >= 0x38800000 && f < 0x47800000) {
      out[i] = ((b >>> 16) & 0x8000) | ((f + 0xc8000fff + ((f >>> 13) & 1)) >>> 13);
    } else {
      out[i] = halfBits(b, src[i]!);
    }
  }
  return out;
}

export function float16ToFloat32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  if (out.length < src.length) throw new RangeError('float16ToFloat32: output too short');
  const t = halfTable();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]!]!;
  return out;
}

/** Largest finite half. */
export const HALF_MAX = 65504;

/**
 * A safetensors float tensor (F32, F16, BF16 or F64, as readSafetensors returns
 * it) as float32; an F32 Float32Array comes back as it is.
 */
export function tensorToFloat32(dtype: string, data: ArrayLike<number> | ArrayBufferView, what = 'a weight'): Float32Array {
  if (data instanceof Float32Array) return data;
  const src = data as ArrayLike<number>;
  if (dtype === 'F16') return float16ToFloat32(src instanceof Uint16Array ? src : Uint16Array.from(src));
  const out = new Float32Array(src.length);
  if (dtype === 'BF16') {
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) u32[i] = src[i]! << 16;
  } else if (dtype === 'F64' || dtype === 'F32') for (let i = 0; i < src.length; i++) out[i] = src[i]!;
  else throw new Error(`unsupported safetensors dtype ${dtype} for ${what}`);
  return out;
}
