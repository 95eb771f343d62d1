// ggml's weight encodings, scalar and exact: the normative definitions that the GGUF writer uses and
// that the wasm weight kernels are tested against.
//
//   F16    IEEE half, round to nearest even (GGML_FP32_TO_FP16)
//   Q8_0   | f16 d | i8 qs[32] |            x = qs[j]·d                               8.5 bits/weight
//   Q4_0   | f16 d | u8 qs[16] |            x = ((qs[j] & 15) - 8)·d   for j < 16      4.5 bits/weight
//                                           x = ((qs[j-16] >> 4) - 8)·d for j >= 16
//
// The quantizers are ggml's quantize_row_q8_0_ref and quantize_row_q4_0_ref (ggml-quants.c), with
// every operation rounded to f32 as C does: Q8_0 takes d = amax/127 and rounds x/d half away from
// zero (roundf); Q4_0 takes the element of largest magnitude `max` (the first on ties), d = max/-8,
// and truncates x/d + 8.5, clamped to 15. Both divide by the unrounded f32 d (id = 1/d, or 0 for an
// all-zero block), then store d as a half.

import { f16BitsToF32, f32ToF16Bits } from '../reference';

export const QK = 32;
export const Q8_0_BLOCK_BYTES = 34;
export const Q4_0_BLOCK_BYTES = 18;

const f32 = Math.fround;

/** C's roundf: half away from zero. */
function roundAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/** Writes n values of src (from srcOffset) as halves into dst at dstOffset (2 bytes each, little-endian). */
export function encodeF16(src: ArrayLike<number>, srcOffset: number, n: number, dst: Uint8Array, dstOffset: number): void {
  for (let i = 0; i < n; i++) {
    const h = f32ToF16Bits(src[srcOffset + i]!);
    dst[dstOffset + 2 * i] = h & 0xff;
    dst[dstOffset + 2 * i + 1] = h >>> 8;
  }
}

/** Quantizes n values (a multiple of 32) of src into n/32 Q8_0 blocks at dst[dstOffset]. */
export function quantizeQ8_0(src: ArrayLike<number>, srcOffset: number, n: number, dst: Uint8Array, dstOffset: number): void {
  for (let b = 0; b < n / QK; b++) {
    const base = srcOffset + b * QK;
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(f32(src[base + j]!)));
    const d = f32(amax / 127);
    const id = d !== 0 ? f32(1 / d) : 0;
    const out = dstOffset + b * Q8_0_BLOCK_BYTES;
    const h = f32ToF16Bits(d);
    dst[out] = h & 0xff;
    dst[out + 1] = h >>> 8;
    for (let j = 0; j < QK; j++) dst[out + 2 + j] = roundAway(f32(f32(src[base + j]!) * id)) & 0xff;
  }
}

/** Quantizes n values (a multiple of 32) of src into n/32 Q4_0 blocks at dst[dstOffset]. */
export function quantizeQ4_0(src: ArrayLike<number>, srcOffset: number, n: number, dst: Uint8Array, dstOffset: number): void {
  for (let b = 0; b < n / QK; b++) {
    const base = srcOffset + b * QK;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = f32(src[base + j]!);
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = f32(max / -8);
    const id = d !== 0 ? f32(1 / d) : 0;
    const out = dstOffset + b * Q4_0_BLOCK_BYTES;
    const h = f32ToF16Bits(d);
    dst[out] = h & 0xff;
    dst[out + 1] = h >>> 8;
    for (let j = 0; j < QK / 2; j++) {
      const x0 = f32(f32(src[base + j]!) * id);
      const x1 = f32(f32(src[base + QK / 2 + j]!) * id);
      const q0 = Math.min(15, Math.trunc(f32(x0 + 8.5)));
      const q1 = Math.min(15, Math.trunc(f32(x1 + 8.5)));
      dst[out + 2 + j] = q0 | (q1 << 4);
    }
  }
}

function half(bytes: Uint8Array, at: number): number {
  return f16BitsToF32(bytes[at]! | (bytes[at + 1]! << 8));
}

/** n halves at bytes[offset] into out[outOffset ..]. */
export function decodeF16(bytes: Uint8Array, offset: number, n: number, out: Float32Array | Float64Array, outOffset = 0): void {
  for (let i = 0; i < n; i++) out[outOffset + i] = half(bytes, offset + 2 * i);
}

/** n values (a multiple of 32) from Q8_0 blocks at bytes[offset], each q·d rounded to f32 (as
 *  ggml's dequantize_row_q8_0). */
export function dequantizeQ8_0(bytes: Uint8Array, offset: number, n: number, out: Float32Array | Float64Array, outOffset = 0): void {
  for (let b = 0; b < n / QK; b++) {
    const at = offset + b * Q8_0_BLOCK_BYTES;
    const d = half(bytes, at);
    for (let j = 0; j < QK; j++) out[outOffset + b * QK + j] = f32(((bytes[at + 2 + j]! << 24) >> 24) * d);
  }
}

/** n values (a multiple of 32) from Q4_0 blocks at bytes[offset], each (q - 8)·d rounded to f32. */
export function dequantizeQ4_0(bytes: Uint8Array, offset: number, n: number, out: Float32Array | Float64Array, outOffset = 0): void {
  for (let b = 0; b < n / QK; b++) {
    const at = offset + b * Q4_0_BLOCK_BYTES;
    const d = half(bytes, at);
    const o = outOffset + b * QK;
    for (let j = 0; j < QK / 2; j++) {
      const q = bytes[at + 2 + j]!;
      out[o + j] = f32(((q & 15) - 8) * d);
      out[o + QK / 2 + j] = f32(((q >> 4) - 8) * d);
    }
  }
}
