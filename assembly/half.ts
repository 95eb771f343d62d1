import { constant, Constant } from './simd';

// IEEE binary16 <-> binary32 conversions.
//
// The quantizer stores every group's scale and zero as a half (SPEC.md), and every kernel variant
// must produce the same bits, so the f32 -> f16 rounding is written once, bit by bit, round to
// nearest even, in a scalar and a 4-lane form that compute the same function.
//
//   binary32: | s:1 | exponent:8 (bias 127) | mantissa:23 |
//   binary16: | s:1 | exponent:5 (bias 15)  | mantissa:10 |

// f32 bits of 2^16: every |x| at or above it overflows to Inf (65520 <= |x| < 2^16 rounds up to it too).
@inline const F32_HALF_OVERFLOW: u32 = 0x47800000;
// f32 bits of 2^-14, the smallest normal half: below it the half is subnormal or zero.
@inline const F32_HALF_MIN_NORMAL: u32 = 0x38800000;
// Adding 0.5 (f32 bits 0x3f000000) to a value below 2^-14 leaves the half's subnormal mantissa in
// the low bits of the sum, rounded to nearest even by the f32 addition itself.
@inline const F32_SUBNORMAL_MAGIC: u32 = 0x3f000000;
// Rebias the exponent from 127 to 15 (in f32 bit position 23) and add just under half an ulp of
// the half mantissa (bit 13), so that the carry rounds; the odd bit added separately breaks ties to even.
@inline const F32_REBIAS_ROUND: u32 = ((15 - 127) << 23) + 0xfff;
@inline const F32_EXPONENT_MASK: u32 = 0x7f800000;
// 2^112 = 2^(127 - 15): rescales a half's bits shifted into f32 position into its value.
@inline const F32_TWO_POW_112: u32 = 0x77800000;

/** Half bits of `x`, round to nearest even; overflow to Inf, NaN to a quiet NaN. */
export function f32ToF16(x: f32): u16 {
  let bits = reinterpret<u32>(x);
  const sign = (bits >>> 16) & 0x8000;
  bits &= 0x7fffffff;
  let half: u32;
  if (bits >= F32_HALF_OVERFLOW) {
    half = bits > F32_EXPONENT_MASK ? 0x7e00 : 0x7c00;
  } else if (bits < F32_HALF_MIN_NORMAL) {
    half = reinterpret<u32>(reinterpret<f32>(bits) + reinterpret<f32>(F32_SUBNORMAL_MAGIC)) - F32_SUBNORMAL_MAGIC;
  } else {
    const mantissaOdd = (bits >>> 13) & 1;
    half = (bits + F32_REBIAS_ROUND + mantissaOdd) >>> 13;
  }
  return <u16>(half | sign);
}

/** Value of half bits `h`, exactly. */
export function f16ToF32(h: u32): f32 {
  const sign = (h & 0x8000) << 16;
  const magnitude = h & 0x7fff;
  if (magnitude >= 0x7c00) return reinterpret<f32>(sign | F32_EXPONENT_MASK | ((magnitude & 0x3ff) << 13));
  return reinterpret<f32>(reinterpret<u32>(reinterpret<f32>(magnitude << 13) * reinterpret<f32>(F32_TWO_POW_112)) | sign);
}

/** Four f32 lanes to four half bit patterns in the low 16 bits of each i32 lane; same function as f32ToF16. */
// @ts-ignore: decorator
@inline export function f32x4ToF16(x: v128): v128 {
  const sign = v128.and(i32x4.shr_u(x, 16), i32x4.splat(0x8000));
  const bits = v128.and(x, i32x4.splat(0x7fffffff));
  const overflow = i32x4.ge_u(bits, i32x4.splat(F32_HALF_OVERFLOW));
  const nan = i32x4.gt_u(bits, i32x4.splat(F32_EXPONENT_MASK));
  const subnormal = i32x4.lt_u(bits, i32x4.splat(F32_HALF_MIN_NORMAL));
  const special = v128.bitselect(i32x4.splat(0x7e00), i32x4.splat(0x7c00), nan);
  const magic = i32x4.splat(F32_SUBNORMAL_MAGIC);
  const small = i32x4.sub(f32x4.add(bits, magic), magic);
  const mantissaOdd = v128.and(i32x4.shr_u(bits, 13), i32x4.splat(1));
  const normal = i32x4.shr_u(i32x4.add(i32x4.add(bits, i32x4.splat(F32_REBIAS_ROUND)), mantissaOdd), 13);
  const finite = v128.bitselect(small, normal, subnormal);
  return v128.or(v128.bitselect(special, finite, overflow), sign);
}

/** Four halves (low 16 bits of each i32 lane) to f32. Stored scales and zeros are always finite
 *  (inputs are at most 65504 and a scale at most 131008/3), so Inf/NaN halves are not handled here. */
// @ts-ignore: decorator
@inline export function f16x4ToF32(h: v128): v128 {
  const sign = i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16);
  const magnitude = i32x4.shl(v128.and(h, i32x4.splat(0x7fff)), 13);
  return v128.or(f32x4.mul(magnitude, f32x4.splat(reinterpret<f32>(F32_TWO_POW_112))), sign);
}

/** Four of eight scale halves (lanes 0-3, or 4-7 if `high`) to f32. Scales are never negative
 *  ((max - min) / levels), so the conversion drops the sign handling: shift into place, rescale by
 *  vrescale = 2^112 (constant(Constant.TWO_POW_112)). */
// @ts-ignore: decorator
@inline export function scaleHalvesToF32(vh: v128, high: bool, vrescale: v128): v128 {
  const widened = high ? i32x4.extend_high_i16x8_u(vh) : i32x4.extend_low_i16x8_u(vh);
  return f32x4.mul(i32x4.shl(widened, 13), vrescale);
}

/** Four of eight zero halves (any sign) to f32: widened with sign extension; the mask vkeep =
 *  0x8fffffff (constant(Constant.ZERO_HALF_KEEP)) keeps the sign bit and clears the three bits the
 *  extension copied above the half's own sign. */
// @ts-ignore: decorator
@inline export function zeroHalvesToF32(vz: v128, high: bool, vrescale: v128, vkeep: v128): v128 {
  const widened = high ? i32x4.extend_high_i16x8_s(vz) : i32x4.extend_low_i16x8_s(vz);
  return f32x4.mul(v128.and(i32x4.shl(widened, 13), vkeep), vrescale);
}

/** A group block's `count` scale halves followed by `count` zero halves (at src) to `count` f32
 *  scales followed by `count` f32 zeros (at dst). */
export function scalesZerosToF32(count: i32, src: usize, dst: usize): void {
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    const vrescale = constant(Constant.TWO_POW_112);
    const vkeep = constant(Constant.ZERO_HALF_KEEP);
    for (; i + 8 <= count; i += 8) {
      const vh = v128.load(src + (<usize>i << 1));
      const out = dst + (<usize>i << 2);
      v128.store(out, scaleHalvesToF32(vh, false, vrescale));
      v128.store(out, scaleHalvesToF32(vh, true, vrescale), 16);
      const vz = v128.load(src + (<usize>(count + i) << 1));
      const zout = dst + (<usize>(count + i) << 2);
      v128.store(zout, zeroHalvesToF32(vz, false, vrescale, vkeep));
      v128.store(zout, zeroHalvesToF32(vz, true, vrescale, vkeep), 16);
    }
  }
  for (; i < count; i++) {
    store<f32>(dst + (<usize>i << 2), f16ToF32(load<u16>(src + (<usize>i << 1))));
    store<f32>(dst + (<usize>(count + i) << 2), f16ToF32(load<u16>(src + (<usize>(count + i) << 1))));
  }
}
