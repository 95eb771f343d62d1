// Small SIMD helpers shared by the kernels.

/** Round-to-nearest-even of |x| < 2^22 to i32 lanes: adding 1.5·2^23 leaves the integer in the low
 *  mantissa bits (the f32 addition rounds to nearest even), two instructions instead of the long
 *  x64 sequences behind f32x4.nearest + i32x4.trunc_sat_f32x4_s. */
// @ts-ignore: decorator
@inline export function roundToI32(x: v128): v128 {
  return i32x4.sub(f32x4.add(x, f32x4.splat(12582912.0)), i32x4.splat(0x4b400000));
}
