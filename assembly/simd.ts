// Small SIMD helpers shared by the kernels.

/** Round-to-nearest-even of |x| < 2^22 to i32 lanes: adding 1.5·2^23 leaves the integer in the low
 *  mantissa bits (the f32 addition rounds to nearest even), two instructions instead of the long
 *  x64 sequences behind f32x4.nearest + i32x4.trunc_sat_f32x4_s. */
// @ts-ignore: decorator
@inline export function roundToI32(x: v128): v128 {
  return i32x4.sub(f32x4.add(x, f32x4.splat(12582912.0)), i32x4.splat(0x4b400000));
}

/** roundToI32 with the magic constant (constant(Constant.ROUND_MAGIC)) held in a local. */
// @ts-ignore: decorator
@inline export function roundWith(x: v128, vmagic: v128): v128 {
  return i32x4.sub(f32x4.add(x, vmagic), vmagic);
}

// V8 (as of Node 20) rebuilds a v128 constant at every use, inside loops too (three instructions
// for a splat, four for a shuffle mask), and the optimizer copies constants held in locals back
// into their uses. The hot loops therefore read the constants they need from this table, once per
// call, into locals the optimizer cannot see through.
const CONSTANTS: usize = memory.data<u32>([
  0x03030303, 0x03030303, 0x03030303, 0x03030303, // BYTES_3
  0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, // BYTES_15
  0x00030003, 0x00030003, 0x00030003, 0x00030003, // SHORTS_3
  0x000f000f, 0x000f000f, 0x000f000f, 0x000f000f, // SHORTS_15
  0x00ff00ff, 0x00ff00ff, 0x00ff00ff, 0x00ff00ff, // SHORTS_255
  0x4b400000, 0x4b400000, 0x4b400000, 0x4b400000, // ROUND_MAGIC (f32 1.5·2^23)
  0x00000080, 0x00000080, 0x00000080, 0x00000080, // INTS_128
  0x0d090501, 0x0d090501, 0x0d090501, 0x0d090501, // BYTE_1_OF_INTS: byte 1 of each i32 lane, ×4
  0x0c080400, 0x0c080400, 0x0c080400, 0x0c080400, // BYTE_0_OF_INTS: byte 0 of each i32 lane, ×4
  0x09080100, 0x09080100, 0x09080100, 0x09080100, // SHORTS_0_2_OF_INTS: low i16 of lanes 0 and 2, ×4
  0x0d0c0504, 0x0d0c0504, 0x0d0c0504, 0x0d0c0504, // SHORTS_1_3_OF_INTS: low i16 of lanes 1 and 3, ×4
  0x77800000, 0x77800000, 0x77800000, 0x77800000, // TWO_POW_112 (f32 2^112, half → f32 rescale)
  0x8fffffff, 0x8fffffff, 0x8fffffff, 0x8fffffff, // ZERO_HALF_KEEP (see zeroHalvesToF32)
  0x00800080, 0x00800080, 0x00800080, 0x00800080, // SHORTS_128
  0x3fb8aa3b, 0x3fb8aa3b, 0x3fb8aa3b, 0x3fb8aa3b, // LOG2E (f32 1.442695041)
  0xc2fa0000, 0xc2fa0000, 0xc2fa0000, 0xc2fa0000, // EXP2_MIN (f32 -125.0)
  0x3f317218, 0x3f317218, 0x3f317218, 0x3f317218, // EXP2_C1 (f32 0.6931471806)
  0x3e75fdf0, 0x3e75fdf0, 0x3e75fdf0, 0x3e75fdf0, // EXP2_C2 (f32 0.240226507)
  0x3d635847, 0x3d635847, 0x3d635847, 0x3d635847, // EXP2_C3 (f32 0.05550410866)
  0x3c1d955b, 0x3c1d955b, 0x3c1d955b, 0x3c1d955b, // EXP2_C4 (f32 0.009618129108)
  0x3aaec3ff, 0x3aaec3ff, 0x3aaec3ff, 0x3aaec3ff, // EXP2_C5 (f32 0.001333355815)
  0x39218489, 0x39218489, 0x39218489, 0x39218489, // EXP2_C6 (f32 0.0001540353039)
  0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, // ONE (f32 1.0)
], 16);

/** Rows of the constant table (16 bytes each). */
export const enum Constant {
  BYTES_3 = 0, BYTES_15, SHORTS_3, SHORTS_15, SHORTS_255, ROUND_MAGIC, INTS_128,
  BYTE_1_OF_INTS, BYTE_0_OF_INTS, SHORTS_0_2_OF_INTS, SHORTS_1_3_OF_INTS,
  TWO_POW_112, ZERO_HALF_KEEP, SHORTS_128,
  LOG2E, EXP2_MIN, EXP2_C1, EXP2_C2, EXP2_C3, EXP2_C4, EXP2_C5, EXP2_C6, ONE,
}

/** One row of the constant table. */
// @ts-ignore: decorator
@inline export function constant(row: Constant): v128 {
  return v128.load(CONSTANTS + (<usize>row << 4));
}

/** The mask of a b-bit code in each byte (b = 2 or 4; 8 needs none). */
// @ts-ignore: decorator
@inline export function byteMask(BITS: i32): v128 {
  return constant(BITS == 2 ? Constant.BYTES_3 : Constant.BYTES_15);
}

/** The mask of a b-bit code in each 16-bit lane (b = 2, 4 or 8). */
// @ts-ignore: decorator
@inline export function shortMask(BITS: i32): v128 {
  return constant(BITS == 2 ? Constant.SHORTS_3 : BITS == 4 ? Constant.SHORTS_15 : Constant.SHORTS_255);
}

/** The bytes of v that the table row `row` names, `mask` being that row (loaded once, outside the
 *  loop): one pshufb in the relaxed build, where relaxed_swizzle needs no range fix-up; the SIMD
 *  build, where i8x16.swizzle does, uses the same pattern as a constant shuffle. */
// @ts-ignore: decorator
@inline export function pickBytes(v: v128, mask: v128, row: Constant): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i8x16.relaxed_swizzle(v, mask);
  if (row == Constant.BYTE_1_OF_INTS) return i8x16.shuffle(v, v, 1, 5, 9, 13, 1, 5, 9, 13, 1, 5, 9, 13, 1, 5, 9, 13);
  if (row == Constant.BYTE_0_OF_INTS) return i8x16.shuffle(v, v, 0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12);
  if (row == Constant.SHORTS_0_2_OF_INTS) return i8x16.shuffle(v, v, 0, 1, 8, 9, 0, 1, 8, 9, 0, 1, 8, 9, 0, 1, 8, 9);
  return i8x16.shuffle(v, v, 4, 5, 12, 13, 4, 5, 12, 13, 4, 5, 12, 13, 4, 5, 12, 13);
}
